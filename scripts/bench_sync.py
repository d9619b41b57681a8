#!/usr/bin/env python3
"""Seed a local registry (plain HTTP, no auth) with many tiny images, for bench-sync.sh.

  bench_sync.py seed HOST:PORT --repos 100 --tags 100 [--salt S] [--prefix app]
      [--first-tag N]

Each repository gets one config blob and one 64-byte layer; each tag gets its own
manifest (an annotation names repository, tag and salt), so every tag has a distinct
digest. The same arguments always give the same digests, so seeding two registries with
the same arguments makes them identical (in sync); another --salt moves the tags.
Standard library only; 8 threads, one keep-alive connection each.
"""

import argparse
import hashlib
import http.client
import json
import sys
import threading


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Client:
    def __init__(self, host):
        self.host = host
        self.conn = http.client.HTTPConnection(host, timeout=60)

    def request(self, method, path, body=None, headers=None, ok=(200, 201, 202)):
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status not in ok:
            raise SystemExit(f"{method} {path}: {resp.status} {data[:200]!r}")
        return resp

    def blob(self, repo, data):
        d = digest(data)
        if self.request("HEAD", f"/v2/{repo}/blobs/{d}", ok=(200, 404)).status == 200:
            return d
        loc = self.request("POST", f"/v2/{repo}/blobs/uploads/").getheader("Location")
        sep = "&" if "?" in loc else "?"
        path = loc.split(self.host, 1)[-1] if loc.startswith("http") else loc
        self.request("PUT", f"{path}{sep}digest={d}", body=data,
                     headers={"Content-Type": "application/octet-stream"})
        return d


def seed_repo(client, repo, args):
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = hashlib.sha256(repo.encode()).digest() * 2
    cd, ld = client.blob(repo, config), client.blob(repo, layer)
    for t in range(args.first_tag, args.first_tag + args.tags):
        tag = f"t{t:03d}"
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": ld, "size": len(layer)}],
            "annotations": {"bench": f"{repo}:{tag}:{args.salt}"},
        }, sort_keys=True).encode()
        client.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["seed"])
    p.add_argument("host")
    p.add_argument("--repos", type=int, default=100)
    p.add_argument("--tags", type=int, default=100)
    p.add_argument("--first-tag", type=int, default=0)
    p.add_argument("--salt", default="0")
    p.add_argument("--prefix", default="app")
    p.add_argument("--first-repo", type=int, default=0)
    args = p.parse_args()
    repos = [f"{args.prefix}{r:03d}" for r in range(args.first_repo, args.first_repo + args.repos)]
    errors = []

    def worker(chunk):
        try:
            c = Client(args.host)
            for repo in chunk:
                seed_repo(c, repo, args)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(repos[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"seed failed: {errors[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
