#!/usr/bin/env python3
"""Write a synthetic OCI image layout (index.json, oci-layout, blobs/sha256/...).

The layers are random, incompressible bytes from a seeded generator, so the same
arguments always produce the same digests.  Layers are streamed to disk in chunks
(at most --chunk bytes in memory), so multi-GiB layers are fine.

Examples:

  # one image, 8 layers of 64 MiB each
  mkimage.py --out /tmp/lay --tag v1 --layers 8 --size $((64<<20)) --seed 1

  # an image sharing two 8 MiB base layers (same --base-seed => same bytes and
  # digests in every image) plus one unique 2 MiB layer
  mkimage.py --out /tmp/lay --tag app7 --base-seed 42 --base-layers 2 \
      --base-size $((8<<20)) --layer-size $((2<<20)) --seed 7

  # reuse the bytes of an existing file as the first layer
  mkimage.py --out /tmp/lay --tag v2 --shared-layer /tmp/base.bin --layer-size 1024

  # a two-platform image: an OCI image index with one manifest per platform,
  # each with its own small layer
  mkimage.py --out /tmp/lay --tag multi --platforms linux/amd64,linux/arm64 \
      --layer-size 65536 --seed 3

Several images (different --tag) may be written into the same --out directory:
index.json gains one entry per tag (an existing entry with the same tag is
replaced) and blobs with the same digest are stored once.

Prints the digest of the tagged manifest (or image index) on stdout.  Seed a
registry with:

  skopeo copy --all --preserve-digests --dest-tls-verify=false \
      oci:DIR:TAG docker://127.0.0.1:PORT/REPO:TAG
"""

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
# Fixed, so configs (and therefore digests) are reproducible.
CREATED = "2024-01-01T00:00:00Z"


def parse_size(text):
    """Bytes, optionally with a binary suffix: 512, 64K, 8M, 1G (also KiB/MiB/GiB)."""
    t = text.strip().upper()
    for suffix in ("IB", "B"):
        if t.endswith(suffix) and len(t) > len(suffix) and t[-len(suffix) - 1] in "KMGT":
            t = t[: -len(suffix)]
            break
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1 << (10 * ("KMGT".index(t[-1]) + 1))
        t = t[:-1]
    try:
        n = int(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    if n < 0:
        raise argparse.ArgumentTypeError(f"negative size: {text!r}")
    return n


class Layout:
    def __init__(self, root):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def _commit(self, tmp, digest_hex):
        dst = os.path.join(self.blobs, digest_hex)
        if os.path.exists(dst):
            os.unlink(tmp)
        else:
            os.replace(tmp, dst)
        return "sha256:" + digest_hex

    def _tmp(self):
        fd, path = tempfile.mkstemp(dir=self.blobs, prefix=".tmp-")
        os.fchmod(fd, 0o644)
        return os.fdopen(fd, "wb"), path

    def put_bytes(self, data):
        """Store a small blob; returns (digest, size)."""
        h = hashlib.sha256(data).hexdigest()
        f, tmp = self._tmp()
        with f:
            f.write(data)
        return self._commit(tmp, h), len(data)

    def put_stream(self, chunks):
        """Store a blob from an iterable of byte chunks; returns (digest, size)."""
        h = hashlib.sha256()
        size = 0
        f, tmp = self._tmp()
        try:
            with f:
                for c in chunks:
                    h.update(c)
                    f.write(c)
                    size += len(c)
        except BaseException:
            os.unlink(tmp)
            raise
        return self._commit(tmp, h.hexdigest()), size

    def put_json(self, obj):
        return self.put_bytes(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())

    def tag(self, tag, desc):
        path = os.path.join(self.root, "index.json")
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
        if os.path.exists(path):
            with open(path) as f:
                index = json.load(f)
        index["manifests"] = [
            m for m in index.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) != tag
        ]
        d = dict(desc)
        d["annotations"] = {REF_NAME: tag}
        index["manifests"].append(d)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(index, f, indent=2)
        os.replace(tmp, path)


def random_chunks(seed_text, size, chunk):
    """`size` reproducible pseudo-random bytes, `chunk` bytes at a time."""
    rng = random.Random(seed_text)  # str seeds are hashed with SHA-512: stable across runs
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def file_chunks(path, chunk):
    with open(path, "rb") as f:
        while True:
            c = f.read(chunk)
            if not c:
                return
            yield c


def build_image(lay, args, os_name, arch, variant, layer_seed_prefix):
    """Write layers, config and manifest for one platform; return the manifest descriptor."""
    layers = []  # (descriptor, diff_id)

    def add(stream):
        digest, size = lay.put_stream(stream)
        layers.append({"mediaType": args.media_type, "digest": digest, "size": size})

    for path in args.shared_layer:
        add(file_chunks(path, args.chunk))
    for i in range(args.base_layers):
        add(random_chunks(f"mkimage-base:{args.base_seed}:{i}:{args.base_size}", args.base_size, args.chunk))
    for i, size in enumerate(args.sizes):
        add(random_chunks(f"{layer_seed_prefix}:{i}:{size}", size, args.chunk))

    config = {
        "created": CREATED,
        "architecture": arch,
        "os": os_name,
        "config": {"Labels": {"mkimage.seed": str(args.seed), "mkimage.tag": args.tag}},
        # The layers are random bytes, not real tarballs; the digests stand in for diff IDs.
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        "history": [{"created": CREATED, "created_by": "mkimage.py"} for _ in layers],
    }
    if variant:
        config["variant"] = variant
    cdigest, csize = lay.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
        "layers": layers,
    }
    mdigest, msize = lay.put_json(manifest)
    return {"mediaType": MT_MANIFEST, "digest": mdigest, "size": msize}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="OCI layout directory (created if missing)")
    p.add_argument("--tag", required=True, help="tag recorded as org.opencontainers.image.ref.name")
    p.add_argument("--seed", default="0", help="seed for this image's own layers (default 0)")
    p.add_argument("--layer-size", type=parse_size, action="append", default=[], metavar="BYTES",
                   help="add a layer of BYTES random bytes (repeatable; K/M/G suffixes allowed)")
    p.add_argument("--layers", type=int, default=0, metavar="N", help="add N layers of --size bytes")
    p.add_argument("--size", type=parse_size, default=None, metavar="BYTES", help="layer size for --layers")
    p.add_argument("--shared-layer", action="append", default=[], metavar="FILE",
                   help="use FILE's bytes as a layer (repeatable; put first, before base and own layers)")
    p.add_argument("--base-seed", default=None,
                   help="seed for shared base layers: images with the same --base-seed/--base-size share them")
    p.add_argument("--base-layers", type=int, default=None, metavar="N", help="number of base layers (default 1 with --base-seed)")
    p.add_argument("--base-size", type=parse_size, default=None, metavar="BYTES", help="size of each base layer")
    p.add_argument("--platforms", default=None, metavar="OS/ARCH[/VARIANT],...",
                   help="write an OCI image index with one manifest per platform, each with its own layers")
    p.add_argument("--media-type", default=MT_LAYER_GZIP, help=f"layer media type (default {MT_LAYER_GZIP})")
    p.add_argument("--chunk", type=parse_size, default=4 << 20, help="generation chunk size (default 4M)")
    args = p.parse_args()

    if args.layers < 0:
        p.error("--layers must be >= 0")
    if args.layers and args.size is None:
        p.error("--layers needs --size")
    if args.size is not None and not args.layers:
        p.error("--size needs --layers")
    args.sizes = list(args.layer_size) + [args.size] * args.layers
    if args.base_seed is None:
        if args.base_layers or args.base_size is not None:
            p.error("--base-layers/--base-size need --base-seed")
        args.base_layers, args.base_size = 0, 0
    else:
        if args.base_size is None:
            p.error("--base-seed needs --base-size")
        if args.base_layers is None:
            args.base_layers = 1
    for f in args.shared_layer:
        if not os.path.isfile(f):
            p.error(f"--shared-layer {f}: no such file")
    if args.chunk <= 0:
        p.error("--chunk must be > 0")
    if not args.sizes and not args.base_layers and not args.shared_layer:
        args.sizes = [1 << 20]  # one small layer by default

    lay = Layout(args.out)
    if args.platforms:
        plats = [x.strip() for x in args.platforms.split(",") if x.strip()]
        if len(set(plats)) != len(plats):
            p.error("--platforms has duplicates")
        descs = []
        for plat in plats:
            parts = plat.split("/")
            if len(parts) not in (2, 3) or not all(parts):
                p.error(f"bad platform {plat!r}: want os/arch[/variant]")
            os_name, arch = parts[0], parts[1]
            variant = parts[2] if len(parts) == 3 else None
            d = build_image(lay, args, os_name, arch, variant, f"mkimage:{args.seed}:{plat}")
            d["platform"] = {"architecture": arch, "os": os_name}
            if variant:
                d["platform"]["variant"] = variant
            descs.append(d)
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": descs}
        digest, size = lay.put_json(index)
        top = {"mediaType": MT_INDEX, "digest": digest, "size": size}
    else:
        top = build_image(lay, args, "linux", "amd64", None, f"mkimage:{args.seed}")
    lay.tag(args.tag, top)
    print(top["digest"])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(1)
