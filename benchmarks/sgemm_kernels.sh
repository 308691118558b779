#!/usr/bin/env bash
# SGEMM GFLOP/s of each OpenBLAS kernel on this machine, 2 threads (or OPENBLAS_NUM_THREADS).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cmake --preset benchmarks >/dev/null
cmake --build --preset benchmarks -j "$(nproc)" --target sgemm_kernels
lscpu | grep -m1 "Model name" || true
for kernel in Prescott Haswell SkylakeX; do
    OPENBLAS_CORETYPE=$kernel OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-2}" \
        build/benchmarks/benchmarks/sgemm_kernels
done
