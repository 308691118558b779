#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the test suites and runs them all
# (unit tests, must-not-compile checks, examples as smoke tests, fault injection and kill tests),
# then the sanitizer build and the fuzz targets. Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
source scripts/env.sh
jobs="${BATCHWISE_JOBS:-$(nproc)}"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"
# The second compiler, with AddressSanitizer and UndefinedBehaviorSanitizer: the thrust_host
# suite and the data tests (tests/CMakeLists.txt says why the builds are split so), then every
# fuzz target for a bounded time over the corpus kept in build/sanitize.
cmake --preset sanitize >/dev/null
cmake --build --preset sanitize -j "$jobs"
ctest --preset sanitize -j "$jobs"
scripts/fuzz.sh --build-dir build/sanitize --no-build --seconds "${BATCHWISE_FUZZ_SECONDS:-15}"
