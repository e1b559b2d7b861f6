#!/usr/bin/env bash
# Allocation thresholds of the micro-benchmarks.
#
#   bash Benchmarks/thresholds.sh check    # fails when a benchmark allocates more than Thresholds/ says
#   bash Benchmarks/thresholds.sh update   # after an intended change: rewrites Thresholds/
#
# Only allocation counts are kept: they are the same on every machine, while times are not.
set -euo pipefail
cd "$(dirname "$0")"

# Sets and dictionaries grow their storage differently with each process's hash seed: with a
# random seed, NormaliseScopeSet allocated 51 to 57 thousand times per thousand operations from
# one run to the next. A fixed seed makes every count the same on every run.
export SWIFT_DETERMINISTIC_HASHING=1

case "${1:-check}" in
update)
    rm -rf Thresholds
    swift package --allow-writing-to-package-directory benchmark thresholds update --no-progress
    for file in Thresholds/*.json; do
        python3 - "$file" <<'PY'
import json, sys
path = sys.argv[1]
kept = {key: value for key, value in json.load(open(path)).items() if key == "mallocCountTotal"}
open(path, "w").write(json.dumps(kept, indent=2, sort_keys=True) + "\n")
PY
    done
    ;;
check)
    status=0
    swift package benchmark thresholds check --no-progress || status=$?
    case "$status" in
    0) ;;
    4) echo "allocations went down: run 'bash Benchmarks/thresholds.sh update' and commit Thresholds/" ;;
    *) exit "$status" ;;
    esac
    ;;
*)
    echo "usage: $0 check|update" >&2
    exit 64
    ;;
esac
