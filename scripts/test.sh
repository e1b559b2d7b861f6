#!/usr/bin/env bash
# Sets up the machine, builds everything once (library, executables, tests) and runs the tests.
#
#   OCI_CONNECTOR_WARNINGS_AS_ERRORS=1 (set by CI) fails the build on any warning in this package's
#   own targets. SwiftPM (its native build system, Swift 6.3's default) drops -warnings-as-errors
#   for dependencies, which it builds with their warnings suppressed: they are neither failed nor
#   rebuilt when the setting changes, only this package's modules are.
set -euo pipefail
cd "$(dirname "$0")/.."

build_flags=()
if [ "${OCI_CONNECTOR_WARNINGS_AS_ERRORS:-}" = 1 ]; then
    build_flags+=(-Xswiftc -warnings-as-errors)
fi

bash scripts/setup.sh
swift build --build-tests ${build_flags[@]+"${build_flags[@]}"}
swift test --skip-build "$@"
