#!/usr/bin/env bash
# Installs the Debian packages batchwise needs (and any named as arguments), and only those that
# are missing, so that running it again costs nothing. Safe to call from every other script.
set -euo pipefail

packages=(
    cmake g++ make            # the build
    clang libclang-rt-14-dev  # the second compiler: sanitizer build and fuzz targets (ASan, UBSan, libFuzzer runtimes)
    xtensor-dev               # tensors (xtensor 0.24, header-only)
    libxtensor-blas-dev       # cxxblas GEMM bindings on raw buffers
    libopenblas-dev           # the BLAS itself
    doctest-dev               # unit tests
    zlib1g-dev                # .npz archives and .gz IDX files
    libbenchmark-dev          # benchmark harness
    libopenmpi-dev openmpi-bin  # MPI for data_parallel across processes, and mpirun for its tests
    dataset-fashion-mnist     # the real Fashion-MNIST, for the main example
    python3-numpy             # checks that our .npz files are what numpy reads and writes
    python3-venv              # a virtual environment for Conan 2 from PyPI (the Conan package test)
    doxygen                   # the API reference, scripts/reference.sh
)

# Packages named on the command line are wanted too (scripts/batch-size-study.sh: gnuplot-nox).
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
