#!/usr/bin/env bash
# The main job on a fresh machine: a real registry on loopback, the proxy in front of it, a proxy
# token, and skopeo copying an image through the proxy. The proxy keeps running until Ctrl-C.
#
#   REGISTRY_PORT (5000) and PROXY_PORT (8080) choose the ports.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build --product oci-connector-proxy
swift build --product oci-connector-config
bin="$(swift build --show-bin-path)"

registry_port="${REGISTRY_PORT:-5000}"
proxy_port="${PROXY_PORT:-8080}"
work="$(mktemp -d /tmp/oci-connector-demo.XXXXXX)"
cleanup() { kill "${registry_pid:-}" "${proxy_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# 1. A real CNCF Distribution registry, anonymous, on loopback.
cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$registry_port, secret: demo}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!

# 2. A connector for it, token keys, and the proxy.
cat > "$work/connectors.yaml" <<YAML
apiVersion: connectors.alauda.io/v1alpha1
kind: Connector
metadata: {name: local, namespace: demo}
spec:
  connectorClassName: oci
  address: http://127.0.0.1:$registry_port
YAML
"$bin/oci-connector-config" keys generate --out "$work/keys" >/dev/null
"$bin/oci-connector-proxy" --connectors "$work/connectors.yaml" --listen "127.0.0.1:$proxy_port" \
  --token-keys "$work/keys/verification-key.jwk" 2>"$work/proxy.log" &
proxy_pid=$!
for _ in $(seq 50); do curl -s "http://127.0.0.1:$proxy_port/v2/" >/dev/null && break; sleep 0.2; done

token="$("$bin/oci-connector-config" token --connector demo/local --actions pull,push,delete --ttl 2h \
  --signing-key "$work/keys/signing-key.jwk")"
image="$("$bin/oci-connector-config" reference rewrite "127.0.0.1:$registry_port/demo/hello:v1" \
  --connector demo/local --upstream "http://127.0.0.1:$registry_port" --proxy "127.0.0.1:$proxy_port")"

# 3. A small image, pushed through the proxy with skopeo, then read back.
mkdir -p "$work/image/blobs/sha256"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$work/config.json"
printf 'hello from swift-oci-connector\n' > "$work/layer"
config_digest="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
layer_digest="$(sha256sum "$work/layer" | cut -d' ' -f1)"
cp "$work/config.json" "$work/image/blobs/sha256/$config_digest"
cp "$work/layer" "$work/image/blobs/sha256/$layer_digest"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
  "$config_digest" "$(stat -c%s "$work/config.json")" "$layer_digest" "$(stat -c%s "$work/layer")" > "$work/manifest.json"
manifest_digest="$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"
cp "$work/manifest.json" "$work/image/blobs/sha256/$manifest_digest"
printf '{"imageLayoutVersion":"1.0.0"}' > "$work/image/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest_digest" "$(stat -c%s "$work/manifest.json")" > "$work/image/index.json"

echo "+ skopeo copy oci:image:v1 docker://$image"
skopeo copy --quiet --dest-tls-verify=false --dest-creds "workload:$token" "oci:$work/image:v1" "docker://$image"
echo "+ skopeo inspect docker://$image"
skopeo inspect --tls-verify=false --creds "workload:$token" "docker://$image" | head -8

cat <<TEXT

The proxy is serving on 127.0.0.1:$proxy_port in front of the registry on 127.0.0.1:$registry_port.
The workload never saw the registry's credentials; it used this proxy token (valid 2 hours):

  export TOKEN='$token'
  skopeo list-tags --tls-verify=false --creds "workload:\$TOKEN" docker://${image%:v1}

Proxy log: $work/proxy.log. Press Ctrl-C to stop.
TEXT
[ -n "${DEMO_NO_WAIT:-}" ] || wait "$proxy_pid"
