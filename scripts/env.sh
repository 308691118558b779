#!/usr/bin/env bash
# Sourced by the run scripts: settings that must be in the environment before a program that
# loads OpenBLAS starts, because OpenBLAS reads them once, at load time.

# Debian's OpenBLAS 0.3.21 does not recognise recent AVX-512 CPUs and falls back to an older
# kernel: measured here (AMD EPYC, 2 threads, SGEMM 1024^2, benchmarks/sgemm_kernels.sh)
# Prescott 88, Haswell 243, SkylakeX 463 GFLOP/s. On an AVX-512 CPU, any kernel choice that
# is not an AVX-512 one is upgraded.
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    case "${OPENBLAS_CORETYPE:-}" in
        SkylakeX | Cooperlake | SapphireRapids) ;;
        "") export OPENBLAS_CORETYPE=SkylakeX ;;
        *)
            echo "batchwise: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE} does not use this CPU's AVX-512;" \
                 "using SkylakeX instead" >&2
            export OPENBLAS_CORETYPE=SkylakeX
            ;;
    esac
fi
# One BLAS thread per core, and never more than the cores we have.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$(nproc)}"
