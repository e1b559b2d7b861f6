#!/usr/bin/env bash
# Installs the system packages the build and the tests need on Debian (as root, or with sudo).
# Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  zlib1g-dev       # linked by the Swift server stack
  docker-registry  # the real CNCF Distribution registry the end-to-end tests run against
  skopeo           # a real client driven through the proxy
  podman buildah   # more real clients: pull, push and build (vfs storage, no container runtime used)
  containerd       # ctr pulls and pushes through the proxy's token endpoint (OAuth2 form first)
  apache2-utils    # htpasswd, for the registry's Basic auth (bcrypt)
  openssl          # test certificates
  curl
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The oras Python client, driven through the proxy by the end-to-end tests.
python3 -c 'import oras' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check oras==0.2.43
# The Kubernetes schemas, offline, for the checks of Examples/kubernetes.
command -v kubernetes-validate >/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 PyYAML

command -v swift >/dev/null || { echo "swift is not on PATH: install Swift 6.1 or later" >&2; exit 1; }
