#!/usr/bin/env bash
# Runs the Dockerfile's build stage without a container engine (scripts/dockerfile_build.py),
# then shows that the binary that stage makes runs with nothing but the shared libraries it
# links: builds a FROM scratch image holding the binary, the libraries `ldd` lists (Debian
# 12's glibc and libgcc, the same the distroless cc-debian12 runtime image ships) and a
# sample config, then runs it there as the distroless non-root user. Needs buildah
# (Debian) and root; builds no registry image and pushes nothing.
#
# Usage: scripts/image-check.sh [--built DIR]
#   --built DIR: the build stage has already run (`scripts/dockerfile_build.py --out DIR`,
#   as CI runs it beside the tests); check the binary it left in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/image
if [ "${1:-}" = --built ]; then
  OUT=$2
else
  # The Dockerfile's own build stage, on exactly the files it copies, in a clean folder (no
  # container engine or registry needed); a host release build, when there is one, seeds
  # its dependencies.
  seed=()
  [ -d target/release ] && seed=(--seed-target target/release)
  python3 scripts/dockerfile_build.py "${seed[@]}" --out "$OUT"
fi
BIN=$OUT/asg-cmk-operator
[ -x "$BIN" ] || { echo "image-check: no binary at $BIN" >&2; exit 1; }
command -v buildah >/dev/null || { echo "image-check: buildah is not installed" >&2; exit 1; }

# The runtime image is Debian 12: glibc 2.36. The binary must not need a newer one.
need=$(objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
echo "image-check: highest glibc symbol version needed: $need (Debian 12 ships GLIBC_2.36)"
[ "$(printf '%s\nGLIBC_2.36\n' "$need" | sort -V | tail -n 1)" = "GLIBC_2.36" ]

B=(buildah --storage-driver vfs)
ctr=$("${B[@]}" from scratch)
trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
"${B[@]}" copy "$ctr" "$BIN" /usr/local/bin/asg-cmk-operator >/dev/null
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  "${B[@]}" copy "$ctr" "$lib" "$lib" >/dev/null
done
"${B[@]}" copy "$ctr" config/example.yaml /etc/asg-cmk-operator/config.yaml >/dev/null
"${B[@]}" config --user 65532:65532 \
  --entrypoint '["/usr/local/bin/asg-cmk-operator"]' \
  --cmd 'run --config /etc/asg-cmk-operator/config.yaml' "$ctr"

echo "image-check: files in the image:"
mnt=$("${B[@]}" mount "$ctr")
(cd "$mnt" && find . -type f | sed 's|^\.|  |' | sort)
"${B[@]}" umount "$ctr" >/dev/null
"${B[@]}" run --isolation chroot --user 65532:65532 "$ctr" -- /usr/local/bin/asg-cmk-operator --version
"${B[@]}" run --isolation chroot --user 65532:65532 "$ctr" -- \
  /usr/local/bin/asg-cmk-operator validate --config /etc/asg-cmk-operator/config.yaml
"${B[@]}" run --isolation chroot --user 65532:65532 "$ctr" -- \
  /usr/local/bin/asg-cmk-operator iam-policy --config /etc/asg-cmk-operator/config.yaml >/dev/null
# The ECS health check runs this: no curl in the image, and nothing listening here.
if "${B[@]}" run --isolation chroot --user 65532:65532 "$ctr" -- \
  /usr/local/bin/asg-cmk-operator healthcheck --url http://127.0.0.1:9/healthz; then
  echo "image-check: healthcheck succeeded with nothing listening" >&2
  exit 1
fi
echo "image-check: the binary the Dockerfile's build stage makes runs in a scratch image with only its ldd libraries"
