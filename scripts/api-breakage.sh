#!/usr/bin/env bash
# Fails when the public API of a library product lost or changed something since a release,
# unless Documentation/API-breaking-changes.txt lists that break.
#
#   bash scripts/api-breakage.sh            # against the previous release, 0.1.0
#   bash scripts/api-breakage.sh TREEISH    # against another tag, branch or commit
#
# `swift package diagnose-api-breaking-changes` checks the baseline out under .build/, builds it
# (about 4 minutes the first time on 2 cores: its dependencies too), and compares the modules'
# APIs. An intended break is listed in the allowlist, one line per break exactly as printed here.
set -euo pipefail
cd "$(dirname "$0")/.."

baseline="${1:-0.1.0}"
allowlist=Documentation/API-breaking-changes.txt
products=(OCIReference OCIConnectors OCIAuth OCIProxyToken OCIClientConfig OCIBlobForwarder OCIConnectorProxy)

if ! git rev-parse --verify --quiet "$baseline^{commit}" >/dev/null; then
    echo "api-breakage: the baseline '$baseline' is not in this clone, so the API cannot be compared with it." >&2
    echo "  Fetch the release tags ('git fetch --tags', or 'git fetch --unshallow --tags' in a shallow clone)" >&2
    echo "  or name another baseline: bash scripts/api-breakage.sh TREEISH" >&2
    exit 2
fi

if ! swift package diagnose-api-breaking-changes "$baseline" --products "${products[@]}" \
    --breakage-allowlist-path "$allowlist"; then
    echo >&2
    echo "api-breakage: the public API changed incompatibly since $baseline (above)." >&2
    echo "  If the break is intended, add each 'API breakage: …' line above to $allowlist." >&2
    exit 1
fi
