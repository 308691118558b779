#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the test suite and runs it all
# (unit tests, must-not-compile checks, examples as smoke tests). Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
source scripts/env.sh
jobs="${BATCHWISE_JOBS:-$(nproc)}"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"
