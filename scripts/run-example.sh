#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds the Fashion-MNIST example and
# trains it with the BLAS settings this machine needs. Safe to run again; an argument sets the
# number of epochs (default 20). With --cnn first, the second main job instead: the
# convolutional network of examples/fashion_mnist_cnn.cpp (default 20 epochs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
example=fashion_mnist
if [[ ${1:-} == --cnn ]]; then
    example=fashion_mnist_cnn
    shift
fi
scripts/setup.sh
source scripts/env.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target "$example"
exec "build/release/examples/$example" "$@"
