#!/usr/bin/env bash
# The fashion-mnist-cnn benchmark: batchwise's CNN example against the same model trained with Keras
# (benchmarks/peers/keras_fashion_mnist_cnn.py) and PyTorch (peers/torch_fashion_mnist_cnn.py): same
# data, model, optimizer, batch size, epochs and threads. Runs the three alternately, so that a slow
# spell on the machine hits all of them, and prints a markdown table.
# Usage: benchmarks/fashion_mnist_cnn.sh [--rounds N] [--epochs E]   (default 1 round, 20 epochs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=1
epochs=20
while (($#)); do
    case "$1" in
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --rounds=*) rounds="${1#--rounds=}"; shift ;;
        --epochs) epochs="${2:?--epochs needs a number}"; shift 2 ;;
        --epochs=*) epochs="${1#--epochs=}"; shift ;;
        -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "fashion_mnist_cnn.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "fashion_mnist_cnn.sh: --rounds must be a positive integer" >&2; exit 2; }
[[ $epochs =~ ^[1-9][0-9]*$ ]] || { echo "fashion_mnist_cnn.sh: --epochs must be a positive integer" >&2; exit 2; }

# The Python that has (or gets) TensorFlow: the first python3 on PATH (pyenv's here, not Debian's).
python="${PYTHON:-python3}"
# The version the recorded figures are measured with; pinned so that a rerun measures the same.
tf_pin="tensorflow-cpu==2.21.0"
# The Python that has PyTorch: Debian's, with python3-torch (1.13; pyenv's python3 has no torch).
# Its GEMMs go through the same OpenBLAS as batchwise, as in benchmarks/run.sh.
torch_python="${TORCH_PYTHON:-/usr/bin/python3}"

# --- what the three systems need, installed only when missing ------------------------------------
scripts/setup.sh  # Debian packages: compiler, OpenBLAS, dataset-fashion-mnist, ...
if ! "$python" -c "import tensorflow" 2>/dev/null; then
    echo "fashion_mnist_cnn.sh: installing $tf_pin for $("$python" --version)" >&2
    "$python" -m pip install --quiet "$tf_pin"
fi
if ! "$torch_python" -c "import torch" 2>/dev/null; then
    if [[ $torch_python == /usr/bin/python3 ]]; then
        echo "fashion_mnist_cnn.sh: installing Debian's python3-torch" >&2
        sudo_cmd=()
        if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
        export DEBIAN_FRONTEND=noninteractive
        "${sudo_cmd[@]}" apt-get update -qq
        "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-torch >/dev/null
    else
        echo "fashion_mnist_cnn.sh: $torch_python has no torch" >&2
        exit 1
    fi
fi
# OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS: read by OpenBLAS when batchwise loads it.
# shellcheck source=scripts/env.sh
source scripts/env.sh
threads="$OPENBLAS_NUM_THREADS"  # the peers get the same thread count as batchwise's BLAS

# --- build batchwise's example, or say why it is skipped ------------------------------------------
batchwise=build/release/examples/fashion_mnist_cnn
cmake --preset release >/dev/null
# Captured before grepping: under pipefail, grep -q closing the pipe early fails the pipeline.
targets="$(cmake --build --preset release --target help 2>/dev/null || true)"
if grep -qw fashion_mnist_cnn <<<"$targets"; then
    cmake --build --preset release -j "$(nproc)" --target fashion_mnist_cnn
else
    echo "fashion_mnist_cnn.sh: the build has no fashion_mnist_cnn target; skipping batchwise," \
         "running Keras and PyTorch only" >&2
    batchwise=""
fi

# --- runs -----------------------------------------------------------------------------------------
logs="$(mktemp -d "${TMPDIR:-/tmp}/fashion_mnist_cnn_bench.XXXXXX")"

# The number after "<label>: " on a program's last such output line (a unit after it is dropped).
field() { sed -n "s/^$2: *\([0-9.]*\).*/\1/p" "$1" | tail -n1; }

# CPU-seconds the whole machine has been busy (user..steal, /proc/stat), in clock ticks.
busy_ticks() {
    local _ user nice system irq softirq steal
    read -r _ user nice system _ _ irq softirq steal _ </proc/stat  # skips idle, iowait
    echo $((user + nice + system + irq + softirq + steal))
}
clk_tck="$(getconf CLK_TCK)"

# run NAME ROUND COMMAND...: runs it, keeps its output in $logs, appends
# "NAME ROUND accuracy wall fit median_epoch other" to $results. "other" is the CPU (in cores,
# averaged over the run) that everything except the benchmark used meanwhile: on a 2-core machine
# a concurrent compile slows any system by half, so a run with other load above ~0.1 is suspect.
results="$logs/results.txt"
: >"$results"
run() {
    local name="$1" round="$2"; shift 2
    local log="$logs/$name.$round.log" times="$logs/$name.$round.time"
    echo "fashion_mnist_cnn.sh: round $round/$rounds: $name" >&2
    local busy_before busy_after status=0
    busy_before="$(busy_ticks)"
    # bash's time keyword: the command's wall, user and system seconds, children included.
    { TIMEFORMAT='%R %U %S'; time "$@" >"$log" 2>&1 || status=$?; } 2>"$times"
    busy_after="$(busy_ticks)"
    if ((status != 0)); then
        echo "fashion_mnist_cnn.sh: $name failed (exit $status); its output:" >&2
        cat "$log" >&2
        exit 1
    fi
    local acc wall fit epoch other
    acc="$(field "$log" "Test accuracy")"
    wall="$(field "$log" "Wall time")"
    fit="$(field "$log" "Fit time")"
    epoch="$(field "$log" "Median epoch")"
    if [[ -z $acc || -z $wall || -z $fit || -z $epoch ]]; then
        echo "fashion_mnist_cnn.sh: $name did not print Test accuracy / Wall time / Fit time /" \
             "Median epoch; see $log" >&2
        exit 1
    fi
    other="$(awk -v b="$((busy_after - busy_before))" -v hz="$clk_tck" '
        { o = (b / hz - $2 - $3) / $1; printf "%.2f", (o < 0 ? 0 : o) }' "$times")"
    echo "$name $round $acc $wall $fit $epoch $other" >>"$results"
}

for ((r = 1; r <= rounds; r++)); do
    if [[ -n $batchwise ]]; then
        run batchwise "$r" "$batchwise" "$epochs"
    fi
    run keras "$r" "$python" benchmarks/peers/keras_fashion_mnist_cnn.py \
        --epochs "$epochs" --threads "$threads"
    run pytorch "$r" "$torch_python" benchmarks/peers/torch_fashion_mnist_cnn.py \
        --epochs "$epochs" --threads "$threads"
done

# --- report ---------------------------------------------------------------------------------------
tf_version="$("$python" -c "import tensorflow as tf; print(tf.__version__)" 2>/dev/null)"
torch_version="$("$torch_python" -c "import torch; print(torch.__version__)" 2>/dev/null)"
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
echo
echo "Fashion-MNIST CNN: conv 3x3x32 - BN - ReLU - maxpool 2, conv 3x3x64 - BN - ReLU - maxpool 2," \
     "dropout 0.25, dense 128 - ReLU, dropout 0.5, dense 10; Adam 1e-3, batch 128, epochs $epochs;" \
     "$(date -u '+%Y-%m-%d %H:%M UTC'), CPU: ${cpu:-unknown}, nproc $(nproc)," \
     "threads $threads, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}," \
     "TensorFlow $tf_version ($("$python" --version 2>&1))," \
     "PyTorch $torch_version ($("$torch_python" --version 2>&1), $torch_python)"
echo
echo "| system | round | test accuracy | wall s | fit s | median epoch s | median epoch / batchwise's | other CPU load (cores) |"
echo "|---|---|---|---|---|---|---|---|"
# The ratio is taken within a round (runs that ran back to back); with several rounds a median row
# follows for each system, its ratio the medians' ratio.
awk -v rounds="$rounds" '
    { name[NR] = $1; round[NR] = $2; acc[NR] = $3; wall[NR] = $4; fit[NR] = $5; ep[NR] = $6
      other[NR] = $7; e[$1, $2] = $6 }
    function median(sys, col,    n, i, j, t, v) {
        n = 0
        for (i = 1; i <= NR; i++) if (name[i] == sys)
            v[++n] = (col == 3 ? acc[i] : col == 4 ? wall[i] : col == 5 ? fit[i] : ep[i])
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
        return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
    }
    END {
        for (i = 1; i <= NR; i++) {
            ratio = ""
            if (name[i] != "batchwise" && (("batchwise", round[i]) in e) && e["batchwise", round[i]] > 0)
                ratio = sprintf("%.2f", ep[i] / e["batchwise", round[i]])
            printf "| %s | %s | %s | %.2f | %.2f | %.2f | %s | %s |\n",
                   name[i], round[i], acc[i], wall[i], fit[i], ep[i], ratio, other[i]
        }
        if (rounds > 1) {
            split("batchwise keras pytorch", systems, " ")
            for (s = 1; s <= 3; s++) {
                sys = systems[s]; found = 0
                for (i = 1; i <= NR; i++) if (name[i] == sys) found = 1
                if (!found) continue
                ratio = ""
                if (sys != "batchwise" && (("batchwise", 1) in e) && median("batchwise", 6) > 0)
                    ratio = sprintf("%.2f", median(sys, 6) / median("batchwise", 6))
                printf "| %s | median | %.4f | %.2f | %.2f | %.2f | %s | |\n",
                       sys, median(sys, 3), median(sys, 4), median(sys, 5), median(sys, 6), ratio
            }
        }
    }' "$results"
echo
echo "median epoch: the median of a run's per-epoch seconds (the first epoch, with Keras's graph" \
     "tracing, included); wall: training + test-set evaluation. other CPU load: what the rest of" \
     "the machine used during the run; above ~0.1 the timing is suspect."
echo "Logs: $logs" >&2
