#!/usr/bin/env bash
# The framework's own cost per training step, A against B, in instructions (callgrind), which,
# unlike seconds on a shared 2-core VM, repeat exactly: each program runs at two sizes and the
# difference is divided by the extra steps, so start-up and data generation cancel. BLAS runs
# on one thread and does the same work on both sides, so what differs is batchwise's code.
#
#   benchmarks/ab_instructions.sh DIR_A DIR_B     (about 50 minutes on 2 cores; accum is most of it)
set -euo pipefail
a="${1:?usage: benchmarks/ab_instructions.sh DIR_A DIR_B}"
b="${2:?usage: benchmarks/ab_instructions.sh DIR_A DIR_B}"
if grep -q avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
export OPENBLAS_NUM_THREADS=1

instructions() {  # program args... -> total instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# name, extra steps between the two runs, then the two command tails (after the program).
measure() {
    local name=$1 program=$2 steps=$3 small=$4 large=$5
    local ia ib
    ia=$(( ($(instructions "$a/$program" $large) - $(instructions "$a/$program" $small)) / steps ))
    ib=$(( ($(instructions "$b/$program" $large) - $(instructions "$b/$program" $small)) / steps ))
    python3 -c "print(f'{\"$name\":34} {$ia:>14,} {$ib:>14,} {$ib / $ia:7.4f}')"
}

printf '%-34s %14s %14s %7s\n' "instructions per training step" A B "B/A"
for mode in static dynamic; do
    # tiny_step: a warm-up block and --reps blocks of --steps steps: 4 x 2000 more steps.
    measure "tiny-step $mode" tiny_step 8000 "--mode $mode --steps 1000 --reps 3" "--mode $mode --steps 3000 --reps 3"
    # mlp_bench: a warm-up epoch and one timed epoch: 2 x (1024 - 512) / batch more steps.
    for batch in 1 32 512; do
        measure "mlp-bench $mode b=$batch" mlp_bench $((2 * 512 / batch)) \
            "--mode $mode --batch $batch --reps 1 --samples 512" "--mode $mode --batch $batch --reps 1 --samples 1024"
    done
done
# accum: its three windows (1x512, 4x128, 16x32) each train a warm-up and one timed epoch; 512
# more samples are one more optimizer step of each window per epoch: 2 steps of all three.
measure "accum, one step of each window" accum 2 "--reps 1 --samples 512" "--reps 1 --samples 1024"
