#!/usr/bin/env bash
# Before/after check for a change that touches the step: runs mlp-bench (static and dynamic batch,
# b = 1, 32, 512, 2048), tiny-step and accum from two builds, alternating A and B round by round
# so that drift on the machine hits both, and prints each configuration's median samples/s (or
# microseconds per step) and the ratio B/A.
#
#   benchmarks/ab.sh DIR_A DIR_B [--rounds N] [--threads T]
#
# DIR_A and DIR_B hold mlp_bench, tiny_step and accum (for example two build/benchmarks/benchmarks
# directories, one built at the old commit with `git worktree`). Default: 3 rounds, 2 threads.
set -euo pipefail
a="${1:?usage: benchmarks/ab.sh DIR_A DIR_B [--rounds N] [--threads T]}"
b="${2:?usage: benchmarks/ab.sh DIR_A DIR_B [--rounds N] [--threads T]}"
shift 2
rounds=3
threads=2
while (($#)); do
    case "$1" in
        --rounds) rounds="${2:?}"; shift 2 ;;
        --threads) threads="${2:?}"; shift 2 ;;
        *) echo "ab.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if grep -q avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
export OPENBLAS_NUM_THREADS="$threads"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run_one() {  # side dir
    local side=$1 dir=$2
    for mode in static dynamic; do
        for batch in 1 32 512 2048; do
            "$dir/mlp_bench" --batch "$batch" --mode "$mode" --reps 3 | sed "s/^/$side /"
        done
        "$dir/tiny_step" --mode "$mode" | sed "s/^/$side /"
    done
    "$dir/accum" --reps 3 | grep '^{' | sed "s/^/$side /"
}

for ((r = 1; r <= rounds; ++r)); do
    echo "round $r/$rounds" >&2
    if ((r % 2)); then run_one A "$a" >>"$out"; run_one B "$b" >>"$out"
    else run_one B "$b" >>"$out"; run_one A "$a" >>"$out"; fi
done

python3 - "$out" "$threads" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, _, js = line.partition(" ")
    r = json.loads(js)
    key = (r["workload"], r["system"], r["batch"], r["unit"])
    rows.setdefault(key, {"A": [], "B": []})[side].append(r["median"])
print(f"OPENBLAS_NUM_THREADS={sys.argv[2]}; medians over rounds of each program's own median")
print("A and B: median over rounds [lowest, highest round]; B/A: ratio of the medians, and the")
print("median of the per-round ratios (each round runs A and B back to back)")
print(f"{'workload':10} {'system':20} {'batch':>5} {'unit':11} {'A':>28} {'B':>28} {'B/A':>6} {'rounds':>6}")
for (w, s, b, u), v in rows.items():
    ma, mb = statistics.median(v["A"]), statistics.median(v["B"])
    per_round = statistics.median(y / x for x, y in zip(v["A"], v["B"]))
    fa = f"{ma:.4g} [{min(v['A']):.4g}, {max(v['A']):.4g}]"
    fb = f"{mb:.4g} [{min(v['B']):.4g}, {max(v['B']):.4g}]"
    print(f"{w:10} {s:20} {b:>5} {u:11} {fa:>28} {fb:>28} {mb / ma:6.3f} {per_round:6.3f}")
PY
