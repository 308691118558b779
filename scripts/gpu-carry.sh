#!/usr/bin/env bash
# Prepares the GPU checks for a machine that has a GPU and its driver but not this project's
# packages or compiler: builds the CUDA test binary, the CUDA examples and gpu-mlp here with nvcc (for
# sm_90, without -march=native, so that any x86-64 host runs them) and gathers them, Debian's
# OpenBLAS and the Fashion-MNIST files into build/gpu_carry (about 55 MB, compressed where that
# helps). Then, on the GPU machine, from the repository root: scripts/gpu-run.sh.
#
#   scripts/gpu-carry.sh [--arch 90]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
arch=90
while (($#)); do
    case "$1" in
        --arch) arch="${2:?}"; shift 2 ;;
        *) echo "gpu-carry.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
scripts/setup.sh
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DBATCHWISE_BUILD_TESTS=ON -DBATCHWISE_BUILD_EXAMPLES=ON \
    -DBATCHWISE_BUILD_BENCHMARKS=ON -DBATCHWISE_BENCHMARK_PEERS=OFF -DBATCHWISE_ENABLE_CUDA=ON -DBATCHWISE_NATIVE_ARCH=OFF -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
cmake --build build/gpu -j "${BATCHWISE_JOBS:-$(nproc)}" --target batchwise_tests_cuda fashion_mnist_cuda fashion_mnist_cnn_cuda gpu_mlp
carry=build/gpu_carry
rm -rf "$carry"
mkdir -p "$carry/bin" "$carry/lib" "$carry/data"
cp build/gpu/tests/batchwise_tests_cuda build/gpu/examples/fashion_mnist_cuda build/gpu/examples/fashion_mnist_cnn_cuda \
    build/gpu/benchmarks/gpu_mlp "$carry/bin/"
strip "$carry"/bin/*
# The GPU machine has the CUDA libraries but not Debian's OpenBLAS and the Fortran runtime it needs.
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')" "$carry/lib/"
done
xz -T0 -6 "$carry/bin/batchwise_tests_cuda" "$carry/lib/libopenblas.so.0"
cp /usr/share/datasets/fashion-mnist/*.gz "$carry/data/"
du -sh "$carry"
