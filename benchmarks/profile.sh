#!/usr/bin/env bash
# Where batchwise's mlp-bench step spends its time, at batch sizes 1, 32 and 512 (or those given):
#
#   benchmarks/profile.sh [batch...]
#
# Builds mlp_bench with -g into build/profile and runs, per batch size:
#   - perf record -e cpu-clock (a timer-sampled profile; this VM exposes no hardware counters,
#     `perf stat -e instructions` says <not supported>), reported by source line of batchwise's
#     inlined code and by shared object (OpenBLAS vs batchwise vs kernel);
#   - valgrind --tool=callgrind (instruction counts, exact and free of noise) with
#     OPENBLAS_NUM_THREADS=1 and OPENBLAS_CORETYPE=Haswell: valgrind 3.19 cannot decode the
#     AVX-512 instructions of OpenBLAS's SkylakeX kernels, so its GEMM counts are those of the
#     AVX2 kernel; the rest of the step is the same code.
# Reports land in build/profile/reports/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
batches=("$@")
((${#batches[@]})) || batches=(1 32 512)

scripts/setup.sh
command -v perf >/dev/null || echo "profile.sh: perf not installed (Debian linux-perf); skipping perf" >&2
command -v valgrind >/dev/null || echo "profile.sh: valgrind not installed; skipping callgrind" >&2

cmake -S . -B build/profile -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="-g -fno-omit-frame-pointer" \
    -DBATCHWISE_BUILD_BENCHMARKS=ON -DBATCHWISE_BUILD_TESTS=OFF -DBATCHWISE_BUILD_EXAMPLES=OFF \
    -DBATCHWISE_BENCHMARK_PEERS=OFF >/dev/null
cmake --build build/profile -j "$(nproc)" --target mlp_bench
bin=build/profile/benchmarks/mlp_bench
reports=build/profile/reports
mkdir -p "$reports"
set +o pipefail  # the reports below are cut with head, which closes its pipe early

for b in "${batches[@]}"; do
    echo "== batch $b"
    if command -v perf >/dev/null; then
        (
            # shellcheck source=scripts/env.sh
            source scripts/env.sh
            perf record -q -e cpu-clock -F 4000 -o "$reports/perf_$b.data" \
                "$bin" --mode static --batch "$b" --reps 6 >"$reports/perf_$b.result"
        )
        {
            echo "# perf cpu-clock, mlp_bench --mode static --batch $b, OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}"
            cat "$reports/perf_$b.result"
            echo "## by shared object"
            perf report -i "$reports/perf_$b.data" --no-children --sort dso --stdio 2>/dev/null | grep '%'
            echo "## OpenBLAS symbols"
            perf report -i "$reports/perf_$b.data" --no-children --dsos libopenblasp-r0.3.21.so --sort sym --stdio 2>/dev/null | grep '%' | head -12
            echo "## batchwise by source line (inlined code included)"
            perf report -i "$reports/perf_$b.data" --no-children --dsos mlp_bench --sort srcline --stdio 2>/dev/null | grep '%' | head -25
        } >"$reports/perf_$b.txt"
        sed -n '1,40p' "$reports/perf_$b.txt"
    fi
    if command -v valgrind >/dev/null; then
        samples=2048
        ((b >= 512)) && samples=4096
        OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell valgrind --tool=callgrind \
            --callgrind-out-file="$reports/callgrind_$b.out" \
            "$bin" --mode static --batch "$b" --samples "$samples" --reps 1 >/dev/null 2>"$reports/callgrind_$b.log"
        callgrind_annotate --inclusive=no "$reports/callgrind_$b.out" >"$reports/callgrind_$b.txt" 2>/dev/null || true
        echo "-- callgrind, OPENBLAS_NUM_THREADS=1, Haswell kernel (instructions, self): $reports/callgrind_$b.txt"
        grep -E '^ *[0-9,]+ +\(' "$reports/callgrind_$b.txt" | head -20 | cut -c1-160
    fi
done
