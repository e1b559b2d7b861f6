#!/usr/bin/env bash
# Builds the release binaries and runs the end-to-end benchmark (direct / nginx / proxy).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
for package in nginx wrk; do command -v "$package" >/dev/null || { apt-get install -y -qq nginx-light >/dev/null; break; }; done
swift build -c release --product oci-connector-proxy
swift build -c release --product oci-connector-config
python3 Benchmarks/EndToEnd/bench.py "$@"
