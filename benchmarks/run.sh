#!/usr/bin/env bash
# mlp-bench, roofline, tiny-step and memory (BENCHMARKS.md): batchwise against PyTorch, libtorch, dlib and
# TensorFlow/Keras, all in one run, alternately batch size by batch size, with the same
# OPENBLAS_CORETYPE and thread counts. Writes benchmarks/results/mlp_bench.{md,png,jsonl}.
#
#   benchmarks/run.sh            the full run (about 15-20 minutes on the 2-core machine)
#   benchmarks/run.sh --quick    a smoke run (2048 samples, 1 repetition, 3 batch sizes, 2 threads)
#                                into build/benchmarks/results-quick/
#   options: --threads "2 1"     OpenBLAS thread counts to measure (default: nproc, then 1)
#            --reps N            timed epochs per measurement after the warm-up (default 3)
#            --procs N           processes per measurement, the fastest kept (default 2)
#            --no-install        do not install missing peers; skip them instead
#
# Installs what the peers need only when missing: Debian libtorch-dev, python3-torch,
# libdlib-dev, python3-matplotlib (apt-get), and tensorflow-cpu (pip, into the first python3 on
# PATH). PyTorch runs on Debian's /usr/bin/python3; TensorFlow on $PYTHON (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start_seconds=$SECONDS
command_line="benchmarks/run.sh${*:+ $*}"

quick=0
install=1
reps=3
procs=2
thread_configs=""
while (($#)); do
    case "$1" in
        --quick) quick=1; shift ;;
        --no-install) install=0; shift ;;
        --reps) reps="${2:?--reps needs a number}"; shift 2 ;;
        --procs) procs="${2:?--procs needs a number}"; shift 2 ;;
        --threads) thread_configs="${2:?--threads needs a list such as \"2 1\"}"; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

samples=16384
batches=(1 8 32 128 512 2048)
tiny_scale=1
out=benchmarks/results
if ((quick)); then
    samples=2048
    reps=1
    procs=1
    batches=(1 32 512)
    tiny_scale=10
    out=build/benchmarks/results-quick
    thread_configs="${thread_configs:-$(nproc)}"
fi
thread_configs="${thread_configs:-$(nproc) 1}"
mkdir -p "$out"

# --- what batchwise and the peers need, installed only when missing -------------------------------
scripts/setup.sh
debian_peers=(libtorch-dev python3-torch libdlib-dev python3-matplotlib)
missing=()
for p in "${debian_peers[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})) && ((install)); then
    echo "run.sh: installing ${missing[*]}" >&2
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
py_tf="${PYTHON:-python3}"   # pyenv's interpreter on this machine, where pip may install
py_deb=/usr/bin/python3      # Debian's, which has python3-torch and python3-matplotlib
if ! "$py_tf" -c "import tensorflow" 2>/dev/null && ((install)); then
    echo "run.sh: installing tensorflow-cpu==2.21.0 for $("$py_tf" --version 2>&1)" >&2
    "$py_tf" -m pip install --quiet "tensorflow-cpu==2.21.0" ||
        echo "run.sh: could not install tensorflow-cpu; the Keras peer is skipped" >&2
fi
have_torch_py=0; "$py_deb" -c "import torch" 2>/dev/null && have_torch_py=1
have_tf=0; "$py_tf" -c "import tensorflow" 2>/dev/null && have_tf=1

# OPENBLAS_CORETYPE (SkylakeX on AVX-512) must be in the environment before OpenBLAS loads.
# shellcheck source=scripts/env.sh
source scripts/env.sh

# --- build ------------------------------------------------------------------------------------------
cmake --preset benchmarks >/dev/null
targets=(mlp_bench tiny_step roofline memory)
available="$(cmake --build --preset benchmarks --target help 2>/dev/null)"
for t in libtorch_bench dlib_bench; do
    grep -qw "$t" <<<"$available" && targets+=("$t")
done
cmake --build --preset benchmarks -j "$(nproc)" --target "${targets[@]}"
bin=build/benchmarks/benchmarks
have() { [[ -x "$bin/$1" ]]; }

# --- context for the report -------------------------------------------------------------------------
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
corename="$("$py_deb" -c "import ctypes; l = ctypes.CDLL('libopenblas.so.0'); l.openblas_get_corename.restype = ctypes.c_char_p; l.openblas_get_config.restype = ctypes.c_char_p; print(l.openblas_get_corename().decode(), '-', l.openblas_get_config().decode())" 2>/dev/null || echo unknown)"
blas_of() {  # the BLAS library a binary or shared object resolves to
    local lib
    lib="$(ldd "$1" 2>/dev/null | awk '/libblas\.so|libopenblas\.so/ {print $3; exit}')"
    [[ -n $lib ]] && readlink -f "$lib" || echo "none"
}
torch_so="$(ls /usr/lib/x86_64-linux-gnu/libtorch_cpu.so* 2>/dev/null | head -n1 || true)"
raw="$out/mlp_bench.jsonl"
: >"$raw"
log=build/benchmarks/mlp_bench.log  # stderr and output of every run
((quick)) && log=build/benchmarks/mlp_bench-quick.log
: >"$log"

# --- runs -------------------------------------------------------------------------------------------
# run_one LABEL COMMAND...: runs one measurement, keeps its JSON line, logs everything else.
# Each measurement runs in $procs separate processes and keeps the faster one's line: on this
# 2-vCPU machine a process sometimes runs at about half speed for its whole life with nothing
# else running (seen: roofline at batch 128 on 2 threads read 124k samples/s in one process and
# 231-255k in each of the next eight), so one process per figure made the tables bimodal. Every
# system gets the same treatment.
run_one() {
    local label="$1"; shift
    local t0=$SECONDS tmp line median unit best="" best_median="" p
    for ((p = 1; p <= procs; ++p)); do
        tmp="$(mktemp)"
        if timeout 300 "$@" >"$tmp" 2>>"$log"; then
            line="$(grep '^{' "$tmp" | tail -n1 || true)"
            median="$(sed -n 's/.*"median": \([0-9.e+-]*\).*/\1/p' <<<"$line")"
            unit="$(sed -n 's/.*"unit": "\([^"]*\)".*/\1/p' <<<"$line")"
            if [[ -n $median ]] && { [[ -z $best ]] ||
                awk -v a="$median" -v b="$best_median" -v u="$unit" 'BEGIN { exit !(u == "us/step" || u == "MiB" ? a < b : a > b) }'; }; then
                best="$line"
                best_median="$median"
            fi
        else
            echo "FAILED: $*" >>"$log"
        fi
        cat "$tmp" >>"$log"
        rm -f "$tmp"
    done
    if [[ -n $best ]]; then
        echo "$best" >>"$raw"
        printf '  %-44s %4ds  %s\n' "$label" $((SECONDS - t0)) \
            "$(sed -n 's/.*"median": \([0-9.e+]*\).*"others_cores": \([0-9.e+-]*\).*/median \1, others \2 cores/p' <<<"$best")"
    else
        echo "  $label FAILED (see $log)"
    fi
}

common=(--samples "$samples" --reps "$reps")
for threads in $thread_configs; do
    export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
    echo "== OPENBLAS_NUM_THREADS=$threads, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} =="
    i=0
    for b in "${batches[@]}"; do
        echo "-- batch $b"
        # PyTorch and libtorch with as many intra-op (OpenMP) threads as BLAS threads: only from
        # batch 128 up. Below that it is 3-5x slower than 1 intra-op thread on a quiet machine
        # (the issue's measurements) and 20-50x slower when anything else runs (OpenMP and
        # OpenBLAS threads spinning against each other on 2 cores: 148 s for one batch-1 run).
        intra_configs=(1)
        ((threads > 1 && b >= 128)) && intra_configs=(1 "$threads")
        cmds=()
        cmds+=("batchwise static|$bin/mlp_bench --mode static --batch $b")
        cmds+=("batchwise dynamic|$bin/mlp_bench --mode dynamic --batch $b")
        cmds+=("batchwise fit|$bin/mlp_bench --mode fit --batch $b")
        cmds+=("roofline 8 GEMMs|$bin/roofline --mode 8 --batch $b")
        cmds+=("roofline 9 GEMMs|$bin/roofline --mode 9 --batch $b")
        cmds+=("roofline 8 GEMMs, kernels (out,in)|$bin/roofline --mode 8t --batch $b")
        for intra in "${intra_configs[@]}"; do
            have libtorch_bench && cmds+=("libtorch intra $intra|$bin/libtorch_bench --mode mlp --intra-threads $intra --batch $b")
            ((have_torch_py)) && cmds+=("PyTorch intra $intra|$py_deb benchmarks/peers/torch_bench.py --mode mlp --intra-threads $intra --batch $b")
        done
        have dlib_bench && cmds+=("dlib|$bin/dlib_bench --mode mlp --batch $b")
        if ((have_tf)); then
            cmds+=("Keras tf.function|$py_tf benchmarks/peers/keras_mlp_bench.py --mode step --intra-threads $threads --batch $b")
            cmds+=("Keras tf.function XLA|$py_tf benchmarks/peers/keras_mlp_bench.py --mode step-xla --intra-threads $threads --batch $b")
            cmds+=("Keras model.fit|$py_tf benchmarks/peers/keras_mlp_bench.py --mode fit --intra-threads $threads --batch $b")
        fi
        # Rotate the order from one batch size to the next, so no system is always first.
        n=${#cmds[@]}
        for ((k = 0; k < n; ++k)); do
            entry="${cmds[$(((k + i) % n))]}"
            # shellcheck disable=SC2086
            run_one "${entry%%|*}" ${entry#*|} "${common[@]}"
        done
        i=$((i + 3))
    done
done

# tiny-step once, at the first thread setting (nproc BLAS threads; torch with 1 intra-op thread).
first_threads="${thread_configs%% *}"
export OPENBLAS_NUM_THREADS="$first_threads" OMP_NUM_THREADS="$first_threads"
echo "== tiny-step (OPENBLAS_NUM_THREADS=$first_threads)"
tiny_reps=$((reps > 3 ? reps : 5))
run_one "batchwise static" "$bin/tiny_step" --mode static --steps $((400000 / tiny_scale)) --reps "$tiny_reps"
run_one "batchwise dynamic" "$bin/tiny_step" --mode dynamic --steps $((400000 / tiny_scale)) --reps "$tiny_reps"
have dlib_bench && run_one "dlib" "$bin/dlib_bench" --mode tiny --steps $((400000 / tiny_scale)) --reps "$tiny_reps"
have libtorch_bench && run_one "libtorch" "$bin/libtorch_bench" --mode tiny --steps $((20000 / tiny_scale)) --reps "$tiny_reps"
((have_torch_py)) && run_one "PyTorch" "$py_deb" benchmarks/peers/torch_bench.py --mode tiny --steps $((10000 / tiny_scale)) --reps "$tiny_reps"
((have_tf)) && run_one "Keras tf.function" "$py_tf" benchmarks/peers/keras_mlp_bench.py --mode tiny --intra-threads "$first_threads" --steps $((5000 / tiny_scale)) --reps "$tiny_reps"

# memory at batch 2048 (the quick run's 2048 samples are one batch), one process per figure:
# memory a model frees stays resident and would hide the next one's.
echo "== memory (batch 2048, OPENBLAS_NUM_THREADS=$first_threads)"
run_one "batchwise memory" "$bin/memory" --mode full --batch 2048 --samples "$samples"
run_one "batchwise memory_budget" "$bin/memory" --mode budget --batch 2048 --samples "$samples"
have libtorch_bench && run_one "libtorch memory" "$bin/libtorch_bench" --mode memory --batch 2048 --samples "$samples"

# --- report -----------------------------------------------------------------------------------------
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
duration=$((SECONDS - start_seconds))
torch_version="$("$py_deb" -c "import torch; print(torch.__version__)" 2>/dev/null || echo -)"
tf_version="$("$py_tf" -c "import tensorflow as tf, keras; print('TF', tf.__version__, '/ Keras', keras.__version__)" 2>/dev/null || echo -)"
dlib_version="$(dpkg-query -W -f='${Version}' libdlib-dev 2>/dev/null || echo -)"
libtorch_version="$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo -)"
openblas_version="$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || echo -)"
"$py_deb" - "$out/mlp_bench.meta.json" <<EOF
import json, sys
meta = {
    "date": "$(date -u +%Y-%m-%d\ %H:%M\ UTC)",
    "command": "\`$command_line\`",
    "machine": "$(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores",
    "blas": "OpenBLAS $openblas_version (Debian, pthread), kernel $corename, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}",
    "processes": "each figure is the faster of $procs processes (each the median of $reps epochs after a warm-up), the same for every system",
    "threads": "OPENBLAS_NUM_THREADS and OMP_NUM_THREADS = $thread_configs in turn; PyTorch/libtorch: torch.set_num_threads(intra-op) 1, and also $first_threads at $first_threads BLAS threads for batch >= 128; 1 inter-op thread; Keras: tf.config intra-op = BLAS threads, inter-op 1",
    "compiler": "$(c++ --version | head -n1), CMake preset benchmarks (Release, -O3, -march=native -fno-math-errno via BATCHWISE_NATIVE_ARCH)",
    "load_before": "$load_before (1, 5, 15 min load average)",
    "load_after": "$load_after",
    "duration": "${duration}s for the whole run, build included",
    "peers": [
        {"name": "PyTorch (Python, /usr/bin/python3)", "version": "$torch_version (Debian python3-torch)", "blas": "OpenBLAS: $( [[ -n $torch_so ]] && blas_of "$torch_so" ) (Debian's libblas.so.3 alternative; torch.__config__: BLAS_INFO=generic)"},
        {"name": "libtorch (C++)", "version": "$libtorch_version (Debian libtorch-dev)", "blas": "OpenBLAS: $( [[ -n $torch_so ]] && blas_of "$torch_so" ) (libblas.so.3 alternative)"},
        {"name": "dlib", "version": "$dlib_version (Debian libdlib-dev)", "blas": "OpenBLAS: $(have dlib_bench && blas_of "$bin/dlib_bench" || echo -) (libblas.so.3 alternative)"},
        {"name": "TensorFlow/Keras ($py_tf)", "version": "$tf_version (pip tensorflow-cpu)", "blas": "its own kernels, Eigen and oneDNN (built in; oneDNN custom ops on by default); the OpenBLAS that pip's numpy bundles is loaded but does none of the training"},
        {"name": "batchwise", "version": "this tree", "blas": "OpenBLAS: $(blas_of "$bin/mlp_bench") (cxxblas -> cblas_sgemm)"},
    ],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
"$py_deb" benchmarks/report.py "$raw" "$out/mlp_bench.meta.json" "$out"
echo "run.sh: ${duration}s; load average before $load_before, after $load_after"
echo "run.sh: wrote $out/mlp_bench.md, $out/mlp_bench.png, $raw (log: $log)"
