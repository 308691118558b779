#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds the Fashion-MNIST example and
# trains it with the BLAS settings this machine needs. Safe to run again; an argument sets the
# number of epochs (default 20).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
source scripts/env.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target fashion_mnist
exec build/release/examples/fashion_mnist "$@"
