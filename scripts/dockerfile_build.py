#!/usr/bin/env python3
"""Runs the Dockerfile's build stage without a container engine.

CI has no registry to pull the `rust:` image from, so this does what that stage does, on
the host's toolchain: it reads the first stage of the Dockerfile (up to the second FROM),
and in a fresh temporary folder it follows its WORKDIR, ENV, COPY and RUN instructions in
order. COPY copies exactly the paths the Dockerfile names, from the repository, and nothing
else, so a file the build needs but the Dockerfile does not copy fails the build here as it
would in `docker build`. cargo runs offline (CARGO_NET_OFFLINE), on the local registry
cache. Exits with the status of the first instruction that fails.

--seed-target DIR puts a host `target/release` into the folder first, minus this
package's own artifacts: the dependencies' layer cache, which saves compiling the AWS SDK
twice in CI. The package itself is always compiled from the copied files. The cache is
hard-linked, not copied, where the filesystem allows (the folder is made under `target/`
for that): a copy doubles the release cache on disk, some gigabytes. A dependency output has
its inputs' hash in its name, so a rebuild here that rewrites a linked file writes the same
artifact the host already had.

--out DIR copies what the later stages take from the build stage (its `COPY --from`
sources: the release binary) into DIR, so the binary checked in a scratch image is the one
this stage made, and no second release build is needed.

Usage: scripts/dockerfile_build.py [--dockerfile Dockerfile] [--seed-target target/release] [--out DIR]
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def instructions(text):
    """(line number, keyword, arguments) for each instruction, continuations joined."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        out.append((start, keyword.upper(), args.strip()))
        buf = ""
    if buf:
        sys.exit(f"dockerfile-build: line {start}: unterminated continuation")
    return out


def stages(steps):
    """The instructions of the first stage after its FROM, and those of the later stages."""
    froms = [i for i, (_, k, _) in enumerate(steps) if k == "FROM"]
    if not froms:
        sys.exit("dockerfile-build: no FROM")
    end = froms[1] if len(froms) > 1 else len(steps)
    return steps[froms[0] + 1 : end], steps[end:]


def copied_from_build(later):
    """The paths the later stages COPY --from the build stage."""
    paths = []
    for line, keyword, args in later:
        words = shlex.split(args)
        if keyword == "COPY" and any(w.startswith("--from=") for w in words):
            paths.append((line, [w for w in words if not w.startswith("--")][:-1]))
    return paths


def copy_args(args):
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    if flags:
        sys.exit(f"dockerfile-build: COPY {args}: flags {flags} are not supported here")
    if len(paths) < 2:
        sys.exit(f"dockerfile-build: COPY {args}: needs a source and a destination")
    return paths[:-1], paths[-1]


def copy(sources, dest, root, workdir):
    target = root / dest.lstrip("/") if dest.startswith("/") else workdir / dest
    into_dir = dest.endswith("/") or len(sources) > 1 or target.is_dir()
    for s in sources:
        src = REPO / s
        if not src.exists():
            raise FileNotFoundError(f"COPY source {s!r} does not exist in the repository")
        if src.is_dir():
            # Docker copies a directory's contents, not the directory itself.
            shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
        elif into_dir:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / src.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def link_or_copy(src, dst):
    """A hard link where the filesystem allows one, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def seed(target_release, workdir):
    dest = workdir / "target" / "release"
    print(f"dockerfile-build: seeding the dependencies' build cache from {target_release}", flush=True)
    shutil.copytree(
        target_release,
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns("incremental", "asg-cmk-operator*", "asg_cmk_operator-*", "libasg_cmk_operator*"),
        copy_function=link_or_copy,
    )
    for sub in (".fingerprint", "build"):
        for p in (dest / sub).glob("asg-cmk-operator-*"):
            shutil.rmtree(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dockerfile", default=str(REPO / "Dockerfile"))
    ap.add_argument("--seed-target", help="a target/release to copy in first, without this package's artifacts")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--out", help="copy what the later stages take from the build stage into this folder")
    opts = ap.parse_args()

    steps, later = stages(instructions(Path(opts.dockerfile).read_text()))
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR")}
    env["CARGO_NET_OFFLINE"] = "true"
    # Under target/ when it exists: the same filesystem as the seed, so it can be linked.
    scratch = REPO / "target"
    tmp = Path(tempfile.mkdtemp(prefix="dockerfile-build-", dir=scratch if scratch.is_dir() else None))
    root = tmp / "root"
    workdir = root
    seeded = False
    status = 0
    try:
        for line, keyword, args in steps:
            print(f"dockerfile-build: line {line}: {keyword} {args}", flush=True)
            if keyword == "WORKDIR":
                workdir = root / args.lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "ENV":
                k, _, v = args.partition("=") if "=" in args.split(" ")[0] else args.partition(" ")
                env[k.strip()] = v.strip().strip('"')
            elif keyword == "COPY":
                sources, dest = copy_args(args)
                try:
                    copy(sources, dest, root, workdir)
                except FileNotFoundError as e:
                    print(f"dockerfile-build: line {line}: {e}", file=sys.stderr)
                    status = 1
                    break
            elif keyword == "RUN":
                if opts.seed_target and not seeded:
                    seed(Path(opts.seed_target), workdir)
                    seeded = True
                r = subprocess.run(["sh", "-c", args], cwd=workdir, env=env)
                if r.returncode != 0:
                    print(f"dockerfile-build: line {line}: RUN failed with exit {r.returncode}", file=sys.stderr)
                    status = r.returncode
                    break
            elif keyword in ("ARG", "LABEL", "EXPOSE", "USER", "SHELL"):
                print(f"dockerfile-build: line {line}: {keyword} not needed to build; skipped", flush=True)
            else:
                print(f"dockerfile-build: line {line}: {keyword} is not supported here", file=sys.stderr)
                status = 1
                break
        for line, sources in copied_from_build(later) if status == 0 else []:
            for s in sources:
                made = root / s.lstrip("/")
                if not made.exists():
                    print(f"dockerfile-build: line {line}: the build stage made no {s}", file=sys.stderr)
                    status = 1
                elif opts.out:
                    Path(opts.out).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(made, Path(opts.out) / made.name)
                    print(f"dockerfile-build: {s} copied to {Path(opts.out) / made.name}", flush=True)
        if status == 0:
            print("dockerfile-build: the Dockerfile's build stage succeeded on exactly the files it copies")
    finally:
        if opts.keep:
            print(f"dockerfile-build: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
