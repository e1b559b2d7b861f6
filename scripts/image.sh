#!/usr/bin/env bash
# Builds an OCI image of each executable, offline, with buildah: FROM scratch, the release binary
# linked with the static Swift standard library, the few shared libraries it still needs (as ldd
# lists them, at the paths the loader looks in), the system's CA bundle for https upstreams, a
# non-root user (65532) and no shell.
#
#   bash scripts/image.sh [TAG]   # localhost/oci-connector-proxy:TAG, localhost/oci-connector-config:TAG (TAG: dev)
#
# buildah keeps its storage under IMAGE_STORAGE (default .build/images, vfs driver), apart from
# the system's. Push with the same storage, for example through the proxy itself:
#
#   buildah --root .build/images/root --runroot .build/images/run --storage-driver vfs \
#     push --creds "ci:$TOKEN" localhost/oci-connector-proxy:dev docker://PROXY/namespaces/NS/connectors/NAME/oci-connector-proxy:dev
#
# Prints the images' names on stdout, one per line; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-dev}"
storage="${IMAGE_STORAGE:-$PWD/.build/images}"
buildah=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs)
products=(oci-connector-proxy oci-connector-config)
build=(swift build -c release --static-swift-stdlib)

for product in "${products[@]}"; do
  "${build[@]}" --product "$product" >&2
done
bin="$("${build[@]}" --show-bin-path)"
version="$(git describe --tags --always 2>/dev/null || echo "$tag")"

for product in "${products[@]}"; do
  rootfs="$(mktemp -d)"
  chmod 0755 "$rootfs"  # It becomes the image's /, which user 65532 must be able to enter.
  trap 'rm -rf "$rootfs"' EXIT
  # Stripped: the symbols are most of the release binary's size, and the image needs none.
  install -D -m 0755 "$bin/$product" "$rootfs/usr/local/bin/$product"
  strip --strip-unneeded "$rootfs/usr/local/bin/$product"
  # What the binary still links dynamically (libc, libstdc++, zlib…), resolved through links.
  ldd "$bin/$product" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r library; do
    # Executable, as the kernel requires of the loader (and as the system installs them).
    install -D -m 0755 "$(readlink -f "$library")" "$rootfs$library"
  done
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' | install -D -m 0644 /dev/stdin "$rootfs/etc/passwd"
  printf 'nonroot:x:65532:\n' | install -D -m 0644 /dev/stdin "$rootfs/etc/group"
  mkdir -p "$rootfs/tmp" && chmod 1777 "$rootfs/tmp"

  container="$("${buildah[@]}" from scratch)"
  "${buildah[@]}" copy "$container" "$rootfs" / >&2
  "${buildah[@]}" config \
    --entrypoint "[\"/usr/local/bin/$product\"]" --cmd '' --user 65532:65532 --workingdir / \
    --label "org.opencontainers.image.title=$product" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.source=https://github.com/OWNER/swift-oci-connector" \
    "$container" >&2
  "${buildah[@]}" commit --rm --format oci "$container" "localhost/$product:$tag" >&2
  rm -rf "$rootfs"
  trap - EXIT
  echo "localhost/$product:$tag"
done
