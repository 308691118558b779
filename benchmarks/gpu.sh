#!/usr/bin/env bash
# gpu-mlp (BENCHMARKS.md): batchwise's cuda policy (static batch with and without captured
# graphs, dynamic batch) against PyTorch eager and PyTorch with the whole step captured
# (torch.cuda.graph) on the same GPU and the cuBLAS roofline of the step's 8 GEMMs, alternately
# batch size by batch size, in one run. Writes benchmarks/results/gpu_mlp.{jsonl,md}. Needs nvcc
# and a GPU; PyTorch with CUDA is taken from $PYTHON (default python3) and skipped when it has
# none.
#
#   benchmarks/gpu.sh [--reps N] [--batches "128 512 ..."] [--bin PATH]
#
# --bin runs a gpu_mlp built elsewhere (nvcc on a machine without a GPU, say) and skips the setup
# and the build, for a GPU machine that has the driver and PyTorch but no compiler or packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command_line="benchmarks/gpu.sh${*:+ $*}"
reps=5
bin=""
batches="128 256 512 1024 2048 8192 32768 65536"
while (($#)); do
    case "$1" in
        --reps) reps="${2:?}"; shift 2 ;;
        --batches) batches="${2:?}"; shift 2 ;;
        --bin) bin="${2:?}"; shift 2 ;;
        *) echo "gpu.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
py="${PYTHON:-python3}"
out=benchmarks/results
mkdir -p "$out" build
if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: no GPU here (nvidia-smi -L failed); gpu-mlp needs one" >&2
    exit 3
fi
if [[ -z "${bin:-}" ]]; then
    scripts/setup.sh
    cmake --preset benchmarks -DBATCHWISE_ENABLE_CUDA=ON >/dev/null
    cmake --build --preset benchmarks -j "$(nproc)" --target gpu_mlp
    bin=build/benchmarks/benchmarks/gpu_mlp
fi
have_torch=0
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && have_torch=1
((have_torch)) || echo "gpu.sh: $py has no PyTorch with CUDA; its rows stay empty" >&2

raw="$out/gpu_mlp.jsonl"
log=build/gpu_mlp.log
: >"$raw"
: >"$log"
i=0
for b in $batches; do
    cmds=("$bin --mode roofline --batch $b" "$bin --mode static --batch $b" "$bin --mode static-eager --batch $b"
          "$bin --mode static-pageable --batch $b" "$bin --mode static-resident --batch $b"
          "$bin --mode dynamic --batch $b")
    ((have_torch)) && cmds+=("$py benchmarks/peers/torch_gpu_bench.py --batch $b"
                             "$py benchmarks/peers/torch_gpu_bench.py --capture --batch $b")
    n=${#cmds[@]}
    for ((k = 0; k < n; ++k)); do  # rotated, so no system is always first
        # shellcheck disable=SC2086
        if out_line="$(timeout 300 ${cmds[$(((k + i) % n))]} --reps "$reps" 2>>"$log")"; then
            grep '^{' <<<"$out_line" | tee -a "$raw"
        else
            echo "FAILED: ${cmds[$(((k + i) % n))]}" | tee -a "$log"
        fi
    done
    i=$((i + 1))
done

"$py" - "$raw" "$out/gpu_mlp.md" "$command_line" "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n1)" <<'PY'
import json, sys, datetime
raw, md, command, gpu = sys.argv[1:5]
rows = [json.loads(l) for l in open(raw) if l.startswith("{")]
batches = sorted({r["batch"] for r in rows})
systems = ["batchwise static (graphs)", "batchwise static (graphs, device-resident uint8 data)", "batchwise static (eager)",
           "batchwise static (graphs, pageable)", "batchwise dynamic", "PyTorch eager",
           "PyTorch captured (torch.cuda.graph)", "cuBLAS roofline (8 GEMMs)"]
ours_count = 5
rate = {(r["system"], r["batch"]): r["median"] for r in rows}
def cell(v): return "-" if v is None else (f"{v/1e6:.2f}M" if v >= 1e6 else f"{v/1e3:.0f}k")
lines = [f"# gpu-mlp: samples/s (median), {gpu}, TF32 off", "",
         f"Command: `{command}`; date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
         "| system | " + " | ".join(f"b={b}" for b in batches) + " |",
         "|---|" + "---|" * len(batches)]
for s in systems:
    lines.append(f"| {s} | " + " | ".join(cell(rate.get((s, b))) for b in batches) + " |")
for ours in systems[:ours_count]:
    for ref in systems[ours_count:]:
        vals = []
        for b in batches:
            a, p = rate.get((ours, b)), rate.get((ref, b))
            vals.append("-" if not a or not p else f"{a/p:.2f}x")
        lines.append(f"| {ours} / {ref} | " + " | ".join(vals) + " |")
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
