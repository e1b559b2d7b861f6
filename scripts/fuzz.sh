#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted input with libFuzzer: image references, digests and
# request routes (OCIReference), and WWW-Authenticate challenges and token scopes (OCIAuth).
# Each target is compiled with its module's sources (-sanitize=fuzzer,address) and started from
# the seed corpus in Tests/Fuzz/Corpus; inputs it finds go to .build/fuzz/corpus, crashes and
# broken round trips to .build/fuzz/crash-*.
#
#   bash scripts/fuzz.sh [SECONDS]          # each target for SECONDS (60), seeded at random
#   bash scripts/fuzz.sh --runs N [SEED]    # each target for N inputs from SEED (1): repeatable, as CI runs it
set -euo pipefail
cd "$(dirname "$0")/.."

arguments=(-max_total_time="${1:-60}")
if [ "${1:-}" = "--runs" ]; then arguments=(-runs="$2" -seed="${3:-1}"); fi
out=.build/fuzz
mkdir -p "$out"

build_target() {  # target, file, module sources
  local target=$1 file=$2
  shift 2
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -package-name fuzz -module-name "Fuzz_$target" \
    -suppress-warnings "Tests/Fuzz/$file" "$@" -o "$out/fuzz-$target"
}

build_target reference ReferenceFuzz.swift Sources/OCIReference/*.swift
build_target auth AuthFuzz.swift Sources/OCIAuth/AuthChallenge.swift Sources/OCIAuth/Scope.swift

for target in reference auth; do
  mkdir -p "$out/corpus/$target"
  echo "fuzzing $target" >&2
  "$out/fuzz-$target" "${arguments[@]}" -artifact_prefix="$out/crash-$target-" -print_final_stats=1 \
    "$out/corpus/$target" "Tests/Fuzz/Corpus/$target" 2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|.*Fatal error|.*does not|.*round-trip)" >&2 || true
  if ls "$out"/crash-"$target"-* >/dev/null 2>&1; then
    echo "$target: crashes in $out (reproduce: $out/fuzz-$target FILE)" >&2
    exit 1
  fi
done
