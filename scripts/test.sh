#!/usr/bin/env bash
# Sets up the machine, builds everything once (library, executables, tests) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build --build-tests
swift test --skip-build "$@"
