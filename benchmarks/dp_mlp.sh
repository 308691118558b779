#!/usr/bin/env bash
# dp-mlp (BENCHMARKS.md): mlp-bench under data parallelism at global batch 512 and 2048, batchwise's
# data_parallel<> over MPI against PyTorch DistributedDataParallel over gloo, on the CPU, in one run:
#
#   1 rank x 2 BLAS threads, 2 ranks x 1 thread, and the plain single-process model at 2 threads
#   (batchwise also at 1 thread; PyTorch DDP also with torch.set_num_threads(2)), alternately
#   (batchwise, PyTorch, ...), round by round in a rotating order;
#   then, batchwise only: the bare all-reduce at 2 ranks from 4 bytes to 4 MiB (latency and
#   bandwidth of the transport), and one rank's share of a P-rank step (P = 1, 2, 8, 64; and
#   32 rows per rank at global batch 128, 512, 2048) timed alone on 1 thread, the per-rank compute
#   of a larger job (dp_mlp.cpp, --mode rank).
#
#   benchmarks/dp_mlp.sh                 the full run (about 11 minutes on the 2-core machine)
#   options: --reps N       timed epochs per measurement after the warm-up (default 7)
#            --rounds N     rounds of the alternating configurations (default 5)
#            --samples N    samples per epoch (default 16384, mlp-bench's)
#            --no-install   do not install python3-torch when missing; skip the PyTorch peer
#            --no-build     use the dp_mlp already built in build/benchmarks
#
# Writes benchmarks/results/dp_mlp.md (tables, ratios, the machine, load, versions),
# benchmarks/results/dp_mlp.jsonl (every measurement) and dp_mlp.meta.json (the context), from
# which benchmarks/dp_mlp_report.py can write the report again. Open MPI refuses root unless told
# twice, so OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) are set here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start_seconds=$SECONDS
command_line="benchmarks/dp_mlp.sh${*:+ $*}"

reps=7
rounds=5
samples=16384
install=1
build=1
while (($#)); do
    case "$1" in
        --reps) reps="${2:?--reps needs a number}"; shift 2 ;;
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --samples) samples="${2:?--samples needs a number}"; shift 2 ;;
        --no-install) install=0; shift ;;
        --no-build) build=0; shift ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "dp_mlp.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
out=benchmarks/results
mkdir -p "$out" build/benchmarks
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# --- the PyTorch peer: Debian's python3-torch on Debian's interpreter ---------------------------------
py_deb=/usr/bin/python3
if ! "$py_deb" -c "import torch" 2>/dev/null && ((install)); then
    echo "dp_mlp.sh: installing python3-torch" >&2
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-torch >/dev/null
fi
have_torch=0
torch_note="PyTorch not installed (Debian python3-torch); the peer was not run"
if "$py_deb" -c "import torch" 2>/dev/null; then
    if "$py_deb" -c "import torch.distributed as d; import sys; sys.exit(0 if d.is_available() and d.is_gloo_available() else 1)"; then
        have_torch=1
        torch_note=""
    else
        torch_note="this PyTorch has no torch.distributed with gloo; the DDP peer was not run"
    fi
fi

# --- build ---------------------------------------------------------------------------------------------
bin=build/benchmarks/benchmarks/dp_mlp
if ((build)); then
    # On the shared 2-core machine a build may be running already: it writes "BUILD EXIT" into
    # /tmp/build.log when done, and every build takes the same lock, so that two never overlap.
    if [[ -f /tmp/build.log ]]; then
        until grep -q "BUILD EXIT" /tmp/build.log; do
            echo "dp_mlp.sh: waiting for the build in /tmp/build.log to end" >&2
            sleep 30
        done
    fi
    flock /tmp/batchwise-build.lock nice cmake --preset benchmarks -DBATCHWISE_BENCHMARK_PEERS=OFF >/dev/null
    flock /tmp/batchwise-build.lock nice cmake --build build/benchmarks --target dp_mlp -j 2
fi
if [[ ! -x $bin ]]; then
    echo "dp_mlp.sh: $bin was not built (it needs MPI: Debian libopenmpi-dev openmpi-bin)" >&2
    exit 1
fi

# OPENBLAS_CORETYPE must be in the environment before OpenBLAS loads.
# shellcheck source=scripts/env.sh
source scripts/env.sh

# --- context --------------------------------------------------------------------------------------------
raw="$out/dp_mlp.jsonl"
: >"$raw"
log=build/benchmarks/dp_mlp.log
: >"$log"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
date_start="$(date -u '+%Y-%m-%d %H:%M UTC')"

# Cores busy over one second (/proc/stat), while nothing of ours runs: other processes' load.
busy_cores() {
    local a b
    a=($(head -n1 /proc/stat)); sleep 1; b=($(head -n1 /proc/stat))
    awk -v n="$(nproc)" -v u="$((b[1] + b[2] + b[3] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[6] - a[7] - a[8]))" \
        -v t="$((b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[4] - a[5] - a[6] - a[7] - a[8]))" \
        'BEGIN { printf "%.2f", (t > 0 ? n * u / t : 0) }'
}
# On a 2-core machine that others use too, one busy core halves a measurement: wait (at most
# 3 minutes) until the machine is quiet before each one.
wait_quiet() {
    local waited=0 busy
    while busy="$(busy_cores)" && awk -v b="$busy" 'BEGIN { exit !(b > 0.15) }' && ((waited < 180)); do
        ((waited == 0)) && echo "    (waiting for a quiet machine: $busy cores busy)"
        sleep 4
        waited=$((waited + 5))
    done
}

# run_one LABEL THREADS COMMAND...: one measurement with OPENBLAS_NUM_THREADS = OMP_NUM_THREADS =
# THREADS; its JSON lines go to $raw (tagged with the round), everything else to $log. A
# measurement during which other processes used more than 0.2 cores on average is run again
# (twice at most; the discarded lines stay in the log), the same rule for every system.
round=0
reruns=0
run_one() {
    local label="$1" threads="$2"; shift 2
    local t0=$SECONDS tmp others attempt
    tmp="$(mktemp)"
    for attempt in 1 2 3; do
        wait_quiet
        if ! OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" timeout 300 "$@" >"$tmp" 2>>"$log"; then
            echo "  $label FAILED (see $log)"
            echo "FAILED: $*" >>"$log"
            cat "$tmp" >>"$log"
            rm -f "$tmp"
            return 0
        fi
        others="$(grep '^{' "$tmp" | sed -n 's/.*"others_cores": \([0-9.e+-]*\).*/\1/p' | sort -g | tail -n1)"
        if ((attempt < 3)) && awk -v o="${others:-0}" 'BEGIN { exit !(o > 0.2) }'; then
            echo "    ($label: others used $others cores; run again)"
            { echo "DISCARDED (others $others cores): $*"; cat "$tmp"; } >>"$log"
            reruns=$((reruns + 1))
            continue
        fi
        break
    done
    grep '^{' "$tmp" | sed "s/^{/{\"round\": $round, \"label\": \"$label\", /" >>"$raw" || true
    printf '  %-34s %3ds  %s\n' "$label" $((SECONDS - t0)) \
        "$(grep '^{' "$tmp" | tail -n1 | sed -n 's/.*"median": \([0-9.e+]*\).*"others_cores": \([0-9.e+-]*\).*/median \1, others \2 cores/p')"
    cat "$tmp" >>"$log"
    rm -f "$tmp"
}

# Unbound: with -np 1 Open MPI would bind the rank to one core, and its second BLAS thread with it.
mpi=(mpirun --oversubscribe --bind-to none -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS)
common=(--samples "$samples" --reps "$reps")
torch_py=benchmarks/peers/torch_ddp_bench.py

for b in 512 2048; do
    echo "== global batch $b"
    # PyTorch at 2 threads twice: torch.set_num_threads(2) (ATen's OpenMP pool beside OpenBLAS's
    # 2 threads, which spin against each other on 2 cores) and intra-op 1 with OpenBLAS's 2
    # threads doing the GEMMs, its faster setting here; batchwise is compared with the faster.
    cmds=()
    cmds+=("batchwise data_parallel 1x2|2|${mpi[*]} -np 1 $bin --mode dp --batch $b")
    ((have_torch)) && cmds+=("PyTorch DDP gloo 1x2|2|$py_deb $torch_py --mode ddp --world 1 --intra-threads 1 --batch $b")
    cmds+=("batchwise data_parallel 2x1|1|${mpi[*]} -np 2 $bin --mode dp --batch $b")
    ((have_torch)) && cmds+=("PyTorch DDP gloo 2x1|1|$py_deb $torch_py --mode ddp --world 2 --intra-threads 1 --batch $b")
    cmds+=("batchwise plain 1x2|2|${mpi[*]} -np 1 $bin --mode plain --batch $b")
    ((have_torch)) && cmds+=("PyTorch plain 1x2|2|$py_deb $torch_py --mode plain --intra-threads 1 --batch $b")
    cmds+=("batchwise plain 1x1|1|${mpi[*]} -np 1 $bin --mode plain --batch $b")
    ((have_torch)) && cmds+=("PyTorch DDP gloo 1x2 intra-op 2|2|$py_deb $torch_py --mode ddp --world 1 --intra-threads 2 --batch $b")
    n=${#cmds[@]}
    for ((round = 1; round <= rounds; ++round)); do
        echo "-- round $round"
        # Rotate by two each round, so that batchwise and PyTorch keep alternating and no
        # configuration always runs first.
        for ((k = 0; k < n; ++k)); do
            entry="${cmds[$(((k + 2 * (round - 1)) % n))]}"
            label="${entry%%|*}"
            rest="${entry#*|}"
            # shellcheck disable=SC2086
            run_one "$label" "${rest%%|*}" ${rest#*|} "${common[@]}"
        done
    done
done

echo "== the bare all-reduce at 2 ranks, and one rank's share of a P-rank step alone on 1 thread"
# One process runs at a steady but process-specific speed on this VM, so each figure is the
# median over rounds of separate processes. The pairs 128:4, 512:16 and 2048:64 all train 32
# rows per rank: what differs is the global batch each rank is given, and checks, whole.
for ((round = 1; round <= rounds; ++round)); do
    echo "-- round $round"
    run_one "all-reduce sweep" 1 "${mpi[@]}" -np 2 "$bin" --mode allreduce
    for pair in 512:1 512:2 512:8 512:64 2048:1 2048:2 2048:8 2048:64 128:4 512:16; do
        b="${pair%%:*}"
        p="${pair#*:}"
        run_one "simulated rank $p, batch $b" 1 "${mpi[@]}" -np 1 "$bin" --mode rank --ranks "$p" --batch "$b" "${common[@]}"
    done
done

# --- report ---------------------------------------------------------------------------------------------
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
duration=$((SECONDS - start_seconds))
corename="$("$py_deb" -c "import ctypes; l = ctypes.CDLL('libopenblas.so.0'); l.openblas_get_corename.restype = ctypes.c_char_p; print(l.openblas_get_corename().decode())" 2>/dev/null || echo unknown)"
torch_version="$("$py_deb" -c "import torch; print(torch.__version__)" 2>/dev/null || echo -)"
cat >"$out/dp_mlp.meta.json" <<EOF
{
 "date": "$date_start",
 "command": "\`$command_line\`",
 "machine": "$(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores",
 "blas": "OpenBLAS $(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || echo -) (Debian, pthread), kernel $corename, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}",
 "mpi": "$(mpirun --version 2>/dev/null | head -n1), shared memory on one machine, mpirun --bind-to none",
 "torch": "PyTorch $torch_version (Debian python3-torch) on $py_deb, gloo over TCP on 127.0.0.1; GEMMs through $(ldd "$(ls /usr/lib/x86_64-linux-gnu/libtorch_cpu.so.* 2>/dev/null | head -n1)" 2>/dev/null | awk '/libblas\.so/ {print $3; exit}' | xargs -r readlink -f) (Debian's libblas.so.3 alternative); 1 inter-op thread",
 "torch_note": "$torch_note",
 "compiler": "$(c++ --version | head -n1), CMake preset benchmarks (Release)",
 "reps": "$reps timed epochs of $samples samples after a warm-up epoch, per process; $rounds rounds; $reruns measurement(s) run again because other processes used more than 0.2 cores meanwhile",
 "load_before": "$load_before",
 "load_after": "$load_after",
 "duration": "${duration}s, build included"
}
EOF
"$py_deb" benchmarks/dp_mlp_report.py "$raw" "$out/dp_mlp.meta.json" "$out/dp_mlp.md"
echo "dp_mlp.sh: ${duration}s; load average before $load_before, after $load_after"
echo "dp_mlp.sh: wrote $out/dp_mlp.md, $raw and $out/dp_mlp.meta.json (log: $log)"
