#!/usr/bin/env python3
"""Check regrelay's Dockerfile against the packaging rules, without a Docker engine.

The Dockerfile is parsed with the PyPI package `dockerfile`, which wraps the official
BuildKit parser (github.com/moby/buildkit/frontend/dockerfile/parser), so line
continuations, JSON forms and flags are read exactly as `docker build` reads them.

Rules (one output line each, `ok:` or `FAIL:`):
  - multi-stage: a build stage and a separate runtime stage;
  - every FROM is pinned: an exact version tag (1.95.0, a dated 20261005) or @sha256:
    never `latest`, a bare name or a floating tag (`nonroot`, `bookworm-slim`, `1.95`);
  - the final stage sets a non-root USER;
  - every `cargo build` / `cargo install` runs with --locked, and the binary is built with
    --release;
  - no ADD of a URL or a git repository; no `curl ... | sh`;
  - no ENV or ARG whose name looks like a secret (PASSWORD, TOKEN, SECRET, KEY, ...):
    secrets belong to `RUN --mount=type=secret` at build time and to the environment or
    mounted files at run time;
  - the final stage EXPOSEs a port, and ENTRYPOINT (and CMD) use the exec (JSON) form;
  - the version label default equals Cargo.toml's package version;
  - .dockerignore keeps target/ and .git out of the build context.

Usage: check_dockerfile.py [DOCKERFILE]   (default: Dockerfile at the repository root)
       check_dockerfile.py --self-test    (each rule must reject a known-bad Dockerfile)
Exit status: 0 when every rule holds, 1 otherwise, 2 when the file cannot be parsed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import dockerfile  # PyPI "dockerfile": the BuildKit parser
except ImportError:
    print(
        "FAIL: python package 'dockerfile' is not installed (pip install dockerfile); "
        "scripts/check-packaging.sh installs it",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# An exact version: three numeric components (1.95.0), or a date stamp (bookworm-20261005).
EXACT_TAG = re.compile(r"(?:^|[^0-9.])\d+\.\d+\.\d+(?:$|[^0-9.])|(?:^|\D)(?:19|20)\d{6}(?:$|\D)")
SECRET_WORDS = {
    "PASSWORD", "PASSWD", "TOKEN", "SECRET", "SECRETS", "KEY", "APIKEY", "CREDENTIAL",
    "CREDENTIALS",
}
VAR = re.compile(r"\$(?:\{(\w+)(?::?[-+][^}]*)?\}|(\w+))")


class Report:
    def __init__(self) -> None:
        self.failures = 0

    def check(self, ok: bool, what: str, why: str = "") -> None:
        if ok:
            print(f"ok: {what}")
        else:
            self.failures += 1
            print(f"FAIL: {what}" + (f": {why}" if why else ""))


def looks_secret(name: str) -> bool:
    return any(part in SECRET_WORDS for part in re.split(r"[^A-Za-z0-9]+", name.upper()))


def expand(text: str, args: dict[str, str]) -> str:
    """Substitute ${VAR} / $VAR from ARG defaults; unknown variables stay as they are."""
    return VAR.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def image_pinned(ref: str) -> tuple[bool, str]:
    if ref == "scratch":
        return True, ""
    if "$" in ref:
        return False, f"{ref!r} depends on a build argument without a default"
    if DIGEST.search(ref):
        return True, ""
    if "@" in ref:
        return False, f"{ref!r}: malformed digest (want @sha256:<64 hex>)"
    # The tag is after the last ':' that follows the last '/' (a registry may have a port).
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    if not tag:
        return False, f"{ref!r} has no tag (means latest)"
    if tag == "latest":
        return False, f"{ref!r} uses latest"
    if not EXACT_TAG.search(tag):
        return False, f"{ref!r}: tag {tag!r} is not an exact version (x.y.z or a date); add @sha256"
    return True, ""


def cargo_version() -> str | None:
    try:
        text = (ROOT / "Cargo.toml").read_text()
    except OSError:
        return None
    package = re.search(r"^\[package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    version = package and re.search(r'^version\s*=\s*"([^"]+)"', package.group(1), re.M)
    return version.group(1) if version else None


def check(path: Path, report: Report, dockerignore: Path | None) -> None:
    try:
        commands = dockerfile.parse_file(str(path))
    except (OSError, dockerfile.GoIOError, dockerfile.GoParseError) as err:
        print(f"FAIL: {path} cannot be parsed: {err}")
        sys.exit(2)

    # Split into stages; ARGs before the first FROM are global (usable in FROM lines).
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for c in commands:
        if c.cmd == "FROM":
            words = list(c.value)
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"from": c, "image": words[0], "alias": alias, "cmds": []})
        elif not stages:
            if c.cmd == "ARG":
                for v in c.value:
                    key, _, default = v.partition("=")
                    global_args[key] = default
        else:
            stages[-1]["cmds"].append(c)

    report.check(len(stages) >= 2, "multi-stage build (build and runtime stages)",
                 f"{len(stages)} FROM line(s)")
    if not stages:
        return

    aliases: set[str] = set()
    pin_problems = []
    for st in stages:
        ref = expand(st["image"], global_args)
        if ref.lower() not in aliases:
            ok, why = image_pinned(ref)
            if not ok:
                pin_problems.append(f"line {st['from'].start_line}: {why}")
        if st["alias"]:
            aliases.add(st["alias"].lower())
    report.check(not pin_problems, "every FROM is pinned (exact version tag or @sha256)",
                 "; ".join(pin_problems))

    final = stages[-1]["cmds"]
    users = [c for c in final if c.cmd == "USER"]
    if users:
        user = expand(users[-1].value[0], global_args).split(":")[0]
        report.check(user not in ("root", "0", ""), "final stage runs as a non-root USER",
                     f"USER {users[-1].value[0]}")
    else:
        report.check(False, "final stage runs as a non-root USER", "no USER in the final stage")

    runs = [c for c in commands if c.cmd == "RUN"]
    cargo_cmds = []
    for c in runs:
        text = " ".join(c.value)
        # One shell command at a time: split on && ; || | and newlines.
        for part in re.split(r"&&|\|\||;|\||\n", text):
            if re.search(r"\bcargo\s+(?:\+\S+\s+)?(?:build|install)\b", part):
                cargo_cmds.append((c.start_line, part.strip()))
    unlocked = [f"line {ln}: {cmd}" for ln, cmd in cargo_cmds if "--locked" not in cmd.split()]
    builds = [cmd for _, cmd in cargo_cmds if re.search(r"\bcargo\s+(?:\+\S+\s+)?build\b", cmd)]
    report.check(bool(cargo_cmds) and not unlocked, "cargo builds use --locked",
                 "; ".join(unlocked) or "no cargo build found")
    report.check(any("--release" in cmd.split() for cmd in builds), "the binary is built with --release",
                 "no `cargo build --release`")

    bad_add = []
    for c in commands:
        if c.cmd == "ADD":
            for src in c.value[:-1]:
                if re.match(r"^[a-z][a-z0-9+.-]*://|^git@", src, re.I):
                    bad_add.append(f"line {c.start_line}: ADD {src}")
    report.check(not bad_add, "no ADD of a URL or git repository", "; ".join(bad_add))

    piped = [
        f"line {c.start_line}"
        for c in runs
        if re.search(r"\b(?:curl|wget)\b[^|;&]*\|\s*(?:sudo\s+)?(?:ba|da|z)?sh\b", " ".join(c.value))
    ]
    report.check(not piped, "no `curl | sh` style installers", ", ".join(piped))

    secrets = []
    for c in commands:
        if c.cmd == "ENV":
            names = c.value[0::2]
            for n in names:
                if looks_secret(n):
                    secrets.append(f"line {c.start_line}: ENV {n}")
        elif c.cmd == "ARG":
            for v in c.value:
                name, eq, default = v.partition("=")
                if looks_secret(name):
                    # A build argument's value is recorded in the image history even
                    # without a default: secrets go through RUN --mount=type=secret.
                    secrets.append(f"line {c.start_line}: ARG {name}" + (" with a value" if eq else ""))
    report.check(not secrets, "no ENV/ARG that looks like a secret", "; ".join(secrets))

    exposes = [c for c in final if c.cmd == "EXPOSE"]
    report.check(bool(exposes), "final stage EXPOSEs the admin port", "no EXPOSE")

    entry = [c for c in final if c.cmd == "ENTRYPOINT"]
    report.check(bool(entry) and entry[-1].json, "ENTRYPOINT uses the exec (JSON) form",
                 "no ENTRYPOINT" if not entry else f"line {entry[-1].start_line}: shell form")
    cmd = [c for c in final if c.cmd == "CMD"]
    report.check(not cmd or cmd[-1].json, "CMD uses the exec (JSON) form",
                 cmd and f"line {cmd[-1].start_line}: shell form")

    want = cargo_version()
    if want is not None:
        stage_args = {}
        for c in final:
            if c.cmd == "ARG":
                for v in c.value:
                    key, _, default = v.partition("=")
                    stage_args[key] = default
        labels = {}
        for c in final:
            if c.cmd == "LABEL":
                vals = list(c.value)
                for k, v in zip(vals[0::2], vals[1::2]):
                    labels[k.strip('"')] = expand(v.strip('"'), {**global_args, **stage_args})
        got = labels.get("org.opencontainers.image.version")
        report.check(got == want, "org.opencontainers.image.version matches Cargo.toml",
                     f"label {got!r}, Cargo.toml {want!r}")

    if dockerignore is not None:
        try:
            lines = [l.strip() for l in dockerignore.read_text().splitlines()]
        except OSError as err:
            report.check(False, ".dockerignore excludes target/ and .git", str(err))
        else:
            rules = [l for l in lines if l and not l.startswith("#")]

            def excluded(path: str) -> bool:
                # Last matching rule wins (Docker semantics), for the top-level names we care about.
                result = False
                for r in rules:
                    neg = r.startswith("!")
                    pat = r[1:] if neg else r
                    pat = pat.rstrip("/")
                    for prefix in ("**/", "/"):
                        if pat.startswith(prefix):
                            pat = pat[len(prefix):]
                    if pat in ("*", "**", path):
                        result = not neg
                return result

            missing = [p for p in ("target", ".git") if not excluded(p)]
            report.check(not missing, ".dockerignore excludes target/ and .git",
                         "not excluded: " + ", ".join(missing))


BAD = """\
FROM rust AS build
ARG GITHUB_TOKEN=abc
ENV REGISTRY_PASSWORD=hunter2
ADD https://example.invalid/tool.tar.gz /tmp/
RUN curl -fsSL https://example.invalid/install | sh
RUN cargo build
FROM debian:bookworm-slim
USER root
CMD regrelay run
ENTRYPOINT regrelay
"""


def self_test() -> int:
    """Every rule must fail on BAD; otherwise the checker (or the parser) has regressed."""
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp, "Dockerfile")
        bad.write_text(BAD)
        ignore = Path(tmp, ".dockerignore")
        ignore.write_text("bench-out\n")
        report = Report()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            check(bad, report, ignore)
    lines = out.getvalue().splitlines()
    passed = [l for l in lines if l.startswith("ok:") and "multi-stage" not in l]
    expected = 12  # every rule but multi-stage
    fails = [l for l in lines if l.startswith("FAIL:")]
    if passed or len(fails) != expected:
        print(f"FAIL: self-test: expected {expected} rules to reject the bad Dockerfile, got:")
        print("\n".join("  " + l for l in lines))
        return 1
    print(f"ok: self-test: all {expected} rules reject a known-bad Dockerfile")
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--self-test"]:
        return self_test()
    path = Path(argv[1]) if len(argv) > 1 else ROOT / "Dockerfile"
    ignore = path.parent / ".dockerignore"
    report = Report()
    check(path, report, ignore)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
