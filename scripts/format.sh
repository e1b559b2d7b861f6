#!/usr/bin/env bash
# Formats the package's Swift files with swift-format and the top-level .swift-format.
#
#   bash scripts/format.sh            # rewrites the files in place
#   bash scripts/format.sh --check    # changes nothing; exits 1 and names the files that are not formatted
#
# Files: Package.swift and every .swift file under Sources, Tests, Examples and Benchmarks, build
# folders (.build*, .swiftpm) left out.
#
# .swift-format follows the tree's own style: 4 spaces, 130 columns (the 99th percentile of code
# lines in Sources/), existing line breaks respected, `#if` bodies not indented, trailing commas
# kept as written. Rules that would rewrite deliberate compact forms are off: DoNotUseSemicolons
# (`defer { a.stop(); b.stop() }`), OneCasePerLine (`case a, b, c(Int)`), AlwaysUseLowerCamelCase
# (wire names such as `access_token`) and ReplaceForEachWithForLoop.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=format
case "${1:-}" in
"") ;;
--check) mode=check ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 64
    ;;
esac

if swift format --version >/dev/null 2>&1; then
    swift_format=(swift format)
elif command -v swift-format >/dev/null; then
    swift_format=(swift-format)
else
    echo "swift-format not found: it comes with Swift 6 toolchains as 'swift format'" >&2
    exit 1
fi

files=()
while IFS= read -r -d '' file; do
    files+=("$file")
done < <(find Package.swift Sources Tests Examples Benchmarks \( -name '.build*' -o -name .swiftpm \) -prune \
    -o -name '*.swift' -type f -print0 | sort -z)

if [ "$mode" = format ]; then
    "${swift_format[@]}" format --configuration .swift-format --parallel --in-place "${files[@]}"
    exit 0
fi

# lint --strict reports, file by file and line by line, what `format` would change (and any rule
# that format cannot fix), and fails on the first of them.
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
if "${swift_format[@]}" lint --configuration .swift-format --parallel --strict "${files[@]}" 2>"$report"; then
    echo "swift-format: ${#files[@]} files formatted"
    exit 0
fi
cat "$report" >&2
unformatted="$(grep -oE '^[^:]+\.swift' "$report" | sort -u || true)"
echo >&2
if [ -n "$unformatted" ]; then
    echo "swift-format: $(wc -l <<<"$unformatted") of ${#files[@]} files are not formatted:" >&2
    sed 's/^/  /' <<<"$unformatted" >&2
    echo "run 'bash scripts/format.sh' and commit the result" >&2
else
    echo "swift-format lint failed (see above)" >&2
fi
exit 1
