#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds the example and trains it with
# the BLAS settings this machine needs. Safe to run again; extra arguments go to the example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
source scripts/env.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target spirals
exec build/release/examples/spirals "$@"
