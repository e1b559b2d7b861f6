#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted input with libFuzzer: image references, digests and
# request routes (OCIReference); WWW-Authenticate challenges and token scopes (OCIAuth); the
# compact JWS and the claims of a client's token (OCIProxyToken); and the connector YAML loader
# (OCIConnectors, with Yams). Each target is compiled with its module's sources
# (-sanitize=fuzzer,address), against instrumented builds of the modules it imports, and started
# from the seed corpus in Tests/Fuzz/Corpus; inputs it finds go to .build/fuzz/corpus, crashes and
# broken invariants to .build/fuzz/crash-*.
#
#   bash scripts/fuzz.sh [SECONDS]          # each target for SECONDS (60), seeded at random
#   bash scripts/fuzz.sh --runs N [SEED]    # each target for N inputs from SEED (1): repeatable, as CI runs it
set -euo pipefail
cd "$(dirname "$0")/.."

arguments=(-max_total_time="${1:-60}")
if [ "${1:-}" = "--runs" ]; then arguments=(-runs="$2" -seed="${3:-1}"); fi
out=.build/fuzz
modules=$out/modules
mkdir -p "$modules"
swift_flags=(-sanitize=fuzzer,address -parse-as-library -O -g -package-name fuzz -suppress-warnings -I "$modules")

# Yams's sources, as the package resolved them (its C part, libyaml, parses the YAML).
[ -d .build/checkouts/Yams ] || swift package resolve >/dev/null
yams=.build/checkouts/Yams/Sources
yaml_flags=(-I "$yams/CYaml/include" -Xcc -DYAML_DECLARE_STATIC)

build_module() {  # name, swiftc arguments and sources: a static library and its module
  local name=$1
  shift
  swiftc "${swift_flags[@]}" -module-name "$name" -emit-library -static -emit-module \
    -emit-module-path "$modules/$name.swiftmodule" -o "$out/lib$name.a" "$@" 2>&1 | grep -v "ld.gold: warning" >&2 || true
  [ -f "$out/lib$name.a" ]
}

build_target() {  # target, file, sources and libraries
  local target=$1 file=$2
  shift 2
  swiftc "${swift_flags[@]}" -module-name "Fuzz_$target" "Tests/Fuzz/$file" "$@" -o "$out/fuzz-$target" 2>&1 \
    | grep -v "ld.gold: warning" >&2 || true
  [ -x "$out/fuzz-$target" ]
}

rm -f "$out"/lib*.a "$out"/fuzz-*
mkdir -p "$out/cyaml"
for source in "$yams"/CYaml/src/*.c; do
  clang -c -O1 -g -fsanitize=fuzzer-no-link,address -DYAML_DECLARE_STATIC -I "$yams/CYaml/include" "$source" \
    -o "$out/cyaml/$(basename "$source" .c).o"
done
ar rcs "$out/libCYaml.a" "$out"/cyaml/*.o
build_module OCIReference Sources/OCIReference/*.swift
build_module Yams -D SWIFT_PACKAGE "${yaml_flags[@]}" "$yams"/Yams/*.swift

build_target reference ReferenceFuzz.swift Sources/OCIReference/*.swift
build_target auth AuthFuzz.swift Sources/OCIAuth/AuthChallenge.swift Sources/OCIAuth/Scope.swift
build_target token TokenFuzz.swift Sources/OCIProxyToken/CompactJWS.swift Sources/OCIProxyToken/ProxyToken.swift \
  "$out/libOCIReference.a"
build_target connectors ConnectorsFuzz.swift "${yaml_flags[@]}" Sources/OCIConnectors/*.swift \
  "$out/libYams.a" "$out/libCYaml.a" "$out/libOCIReference.a"

for target in reference auth token connectors; do
  mkdir -p "$out/corpus/$target"
  echo "fuzzing $target" >&2
  "$out/fuzz-$target" "${arguments[@]}" -artifact_prefix="$out/crash-$target-" -print_final_stats=1 \
    "$out/corpus/$target" "Tests/Fuzz/Corpus/$target" 2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|.*Fatal error|.*does not|.*round-trip)" >&2 || true
  if ls "$out"/crash-"$target"-* >/dev/null 2>&1; then
    echo "$target: crashes in $out (reproduce: $out/fuzz-$target FILE)" >&2
    exit 1
  fi
done
