#!/usr/bin/env bash
# The proxy shipping itself: builds the images with scripts/image.sh, pushes them through a proxy
# (the debug build in BIN_DIR) to a real registry, reads them back through it, and checks what
# is inside: the entrypoint, user 65532, no shell, and a binary that runs with nothing but the
# image's own files.
#
#   bash Tests/Scripts/check_image.sh BIN_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$(cd "$1" && pwd)"

work="$(mktemp -d /tmp/oci-connector-image.XXXXXX)"
cleanup() {
  kill "${registry_pid:-}" "${proxy_pid:-}" 2>/dev/null || true
  [ -n "${proc:-}" ] && umount "$proc" 2>/dev/null || true
  [ -n "${mounted:-}" ] && "${buildah[@]}" umount "$mounted" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
storage="${IMAGE_STORAGE:-$PWD/.build/images}"
buildah=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs)

mapfile -t images < <(bash scripts/image.sh ci)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
registry_port="$(port)"
proxy_port="$(port)"
cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: 127.0.0.1:$registry_port, secret: image-check}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
cat > "$work/connectors.yaml" <<YAML
kind: Connector
metadata: {name: releases, namespace: ci}
spec: {address: "http://127.0.0.1:$registry_port"}
YAML
"$bin/oci-connector-config" keys generate --out "$work/keys" >/dev/null
"$bin/oci-connector-proxy" --connectors "$work/connectors.yaml" --listen "127.0.0.1:$proxy_port" \
  --token-keys "$work/keys/verification-key.jwk" 2>"$work/proxy.log" &
proxy_pid=$!
for _ in $(seq 100); do
  curl -s "http://127.0.0.1:$registry_port/v2/" >/dev/null && curl -s "http://127.0.0.1:$proxy_port/v2/" >/dev/null && break
  sleep 0.1
done
token="$("$bin/oci-connector-config" token --connector ci/releases --actions pull,push --ttl 30m \
  --signing-key "$work/keys/signing-key.jwk")"
prefix="127.0.0.1:$proxy_port/namespaces/ci/connectors/releases"

for image in "${images[@]}"; do
  product="$(basename "${image%%:*}")"
  target="$prefix/$product:ci"
  "${buildah[@]}" push --quiet --tls-verify=false --creds "ci:$token" "$image" "docker://$target"
  config="$(skopeo inspect --config --tls-verify=false --creds "ci:$token" "docker://$target")"
  python3 - "$product" "$config" <<'PY'
import json, sys
product, config = sys.argv[1], json.loads(sys.argv[2])["config"]
assert config["User"] == "65532:65532", config
assert config["Entrypoint"] == [f"/usr/local/bin/{product}"], config
PY
  # Read back through the proxy, then look inside.
  container="$("${buildah[@]}" from --quiet --pull-always --tls-verify=false --creds "ci:$token" "docker://$target")"
  mounted="$container"
  root="$("${buildah[@]}" mount "$container")"
  [ ! -e "$root/bin/sh" ] && [ ! -e "$root/usr/bin/sh" ] || { echo "$product: the image has a shell" >&2; exit 1; }
  # As a container runtime would: /proc mounted (the Swift runtime reads the arguments there),
  # the image's files and nothing else, user 65532.
  mkdir -p "$root/proc" && mount -t proc proc "$root/proc" && proc="$root/proc"
  chroot --userspec=65532:65532 "$root" "/usr/local/bin/$product" --help >/dev/null \
    || { echo "$product: the binary does not run with the image's files alone" >&2; exit 1; }
  umount "$proc" && proc=""
  size="$(du -sm "$root" | cut -f1)"
  "${buildah[@]}" umount "$container" >/dev/null
  "${buildah[@]}" rm "$container" >/dev/null
  mounted=""
  echo "$product: pushed and pulled through the proxy, ${size} MiB, user 65532, no shell, runs"
done
grep -q "repository=oci-connector-proxy" "$work/proxy.log" || { echo "the push did not go through the proxy" >&2; exit 1; }
