#!/usr/bin/env bash
# Sets up the machine, builds everything once (library, executables, tests) and runs the tests.
#
#   OCI_CONNECTOR_WARNINGS_AS_ERRORS=1 (set by CI) fails the build on any warning in this package's
#   own targets. SwiftPM (its native build system, Swift 6.3's default) drops -warnings-as-errors
#   for dependencies, which it builds with their warnings suppressed: they are neither failed nor
#   rebuilt when the setting changes, only this package's modules are.
#
# A failed run ends with a summary: the tests that failed and, if the test process crashed, the
# fatal error and the crashed thread's backtrace (only that thread: every thread's would bury it).
set -euo pipefail
cd "$(dirname "$0")/.."

build_flags=()
if [ "${OCI_CONNECTOR_WARNINGS_AS_ERRORS:-}" = 1 ]; then
    build_flags+=(-Xswiftc -warnings-as-errors)
fi

bash scripts/setup.sh
swift build --build-tests ${build_flags[@]+"${build_flags[@]}"}

export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-preset=friendly}"
log="$(mktemp -t oci-connector-tests.XXXXXX)"
trap 'rm -f "$log"' EXIT
if swift test --skip-build "$@" 2>&1 | tee "$log"; then
    exit 0
fi
{
    echo
    echo "=== the tests failed; what went wrong ==="
    grep -E '✘|Fatal error|Program crashed|crashed:|error: |XCTAssert|failed \(' "$log" | cut -c1-400 | head -80 || true
    # The crashed thread's frames, up to the first blank line after them.
    sed -n '/crashed:$/,/^$/p' "$log" | head -60
} >&2
exit 1
