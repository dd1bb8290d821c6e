#!/usr/bin/env python3
"""Fails when the tests' build would compile the AWS SDK again after a plain build.

Cargo resolves features per build: a dependency that a dev-dependency gives more features
(tokio's test-util, say) is compiled again for `cargo test`, and so is everything built on
it. When that is under the SDK, the first `scripts/test.sh` after `scripts/demo.sh`
recompiles every AWS crate. This compares each crate's features in the plain build and in
the tests' build, and fails for any that differ and that an `aws-` crate depends on.
"""

import subprocess
import sys


def features(edges):
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-e", edges, "-f", "{p}|{f}", "--prefix", "none", "--target", "all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    seen = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        package, feats = line.replace(" (*)", "").split("|", 1)
        seen.setdefault(package.strip(), set()).add(feats.strip())
    return seen


def dependents(package):
    name, version = package.split()[:2]
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-e", "normal,build", "-i", f"{name}@{version.lstrip('v')}", "--prefix", "none"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def main():
    plain, tests = features("normal,build"), features("normal,build,dev")
    differ = [p for p in sorted(plain) if p in tests and plain[p] != tests[p]]
    bad = []
    for p in differ:
        sdk = sorted(d for d in dependents(p) if d.startswith("aws-"))
        if sdk:
            bad.append(f"{p}: features {sorted(plain[p])} in the plain build, {sorted(tests[p])} in the tests'; under {', '.join(sdk)}")
    if bad:
        print("check_shared_deps: the tests' build would compile the SDK again:", *bad, sep="\n  ", file=sys.stderr)
        print("  turn the same features on in [dependencies] (see Cargo.toml's tokio)", file=sys.stderr)
        sys.exit(1)
    print(f"check_shared_deps: ok ({len(differ)} crate(s) differ, none under the SDK: {', '.join(differ) or 'none'})")


if __name__ == "__main__":
    main()
