#!/usr/bin/env bash
# The fashion-mnist benchmark: batchwise's main example against the same MLP trained with Keras
# (benchmarks/peers/keras_fashion_mnist.py), same data, model, optimizer, batch size, epochs and
# threads. Runs the two alternately, so that a slow spell on the machine hits both, and prints a
# markdown table. Usage: benchmarks/fashion_mnist.sh [--rounds N]   (default 1 round)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=1
while (($#)); do
    case "$1" in
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --rounds=*) rounds="${1#--rounds=}"; shift ;;
        -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
        *) echo "fashion_mnist.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "fashion_mnist.sh: --rounds must be a positive integer" >&2; exit 2; }

# The Python that has (or gets) TensorFlow: the first python3 on PATH (pyenv's here, not Debian's).
python="${PYTHON:-python3}"
# The version the recorded figures were measured with; pinned so that a rerun measures the same.
tf_pin="tensorflow-cpu==2.21.0"

# --- what the two systems need, installed only when missing --------------------------------------
scripts/setup.sh  # Debian packages: compiler, OpenBLAS, dataset-fashion-mnist, ...
if ! "$python" -c "import tensorflow" 2>/dev/null; then
    echo "fashion_mnist.sh: installing $tf_pin for $("$python" --version)" >&2
    "$python" -m pip install --quiet "$tf_pin"
fi
# OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS: read by OpenBLAS when batchwise loads it.
# shellcheck source=scripts/env.sh
source scripts/env.sh
threads="$OPENBLAS_NUM_THREADS"  # Keras gets the same thread count as batchwise's BLAS

# --- build batchwise's example, or say why it is skipped ------------------------------------------
batchwise=build/release/examples/fashion_mnist
cmake --preset release >/dev/null
if cmake --build --preset release --target help 2>/dev/null | grep -qw fashion_mnist; then
    cmake --build --preset release -j "$(nproc)" --target fashion_mnist
else
    echo "fashion_mnist.sh: the build has no fashion_mnist target (examples/fashion_mnist.cpp" \
         "not there yet); skipping batchwise, running Keras only" >&2
    batchwise=""
fi

# --- runs -----------------------------------------------------------------------------------------
logs="$(mktemp -d "${TMPDIR:-/tmp}/fashion_mnist_bench.XXXXXX")"

# The value after "<label>: " on a program's output line, trailing "s" removed.
field() { sed -n "s/^$2: *\([0-9.]*\)s\{0,1\}\$/\1/p" "$1" | tail -n1; }

# run NAME ROUND COMMAND...: runs it, keeps its output in $logs, appends "NAME ROUND acc wall fit".
results="$logs/results.txt"
: >"$results"
run() {
    local name="$1" round="$2"; shift 2
    local log="$logs/$name.$round.log"
    echo "fashion_mnist.sh: round $round/$rounds: $name" >&2
    if ! "$@" >"$log" 2>&1; then
        echo "fashion_mnist.sh: $name failed; its output:" >&2
        cat "$log" >&2
        exit 1
    fi
    local acc wall fit
    acc="$(field "$log" "Test accuracy")"
    wall="$(field "$log" "Wall time")"
    fit="$(field "$log" "Fit time")"
    if [[ -z $acc || -z $wall || -z $fit ]]; then
        echo "fashion_mnist.sh: $name did not print Test accuracy / Wall time / Fit time; see $log" >&2
        exit 1
    fi
    echo "$name $round $acc $wall $fit" >>"$results"
}

for ((r = 1; r <= rounds; r++)); do
    if [[ -n $batchwise ]]; then
        run batchwise "$r" "$batchwise"
    fi
    run keras "$r" "$python" benchmarks/peers/keras_fashion_mnist.py --threads "$threads"
done

# --- report ---------------------------------------------------------------------------------------
tf_version="$("$python" -c "import tensorflow as tf; print(tf.__version__)" 2>/dev/null)"
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
echo
echo "Fashion-MNIST MLP 784-256-256-10, dropout 0.2, Adam 1e-3, batch 128, 20 epochs;" \
     "$(date -u '+%Y-%m-%d %H:%M UTC'), CPU: ${cpu:-unknown}, nproc $(nproc)," \
     "threads $threads, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, TensorFlow $tf_version"
echo
echo "| system | round | test accuracy | wall s | fit s | Keras wall / batchwise wall |"
echo "|---|---|---|---|---|---|"
# The ratio is taken within a round (the two runs that ran back to back); with several rounds a
# median row follows each system.
awk -v rounds="$rounds" '
    { name[NR] = $1; round[NR] = $2; acc[NR] = $3; wall[NR] = $4; fit[NR] = $5
      w[$1, $2] = $4 }
    function median(sys, col,    n, i, j, t, v) {
        n = 0
        for (i = 1; i <= NR; i++) if (name[i] == sys) v[++n] = (col == 3 ? acc[i] : col == 4 ? wall[i] : fit[i])
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
        return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
    }
    END {
        for (i = 1; i <= NR; i++) {
            ratio = ""
            if (name[i] == "keras" && (("batchwise", round[i]) in w))
                ratio = sprintf("%.2f", wall[i] / w["batchwise", round[i]])
            printf "| %s | %s | %s | %.2f | %.2f | %s |\n", name[i], round[i], acc[i], wall[i], fit[i], ratio
        }
        if (rounds > 1) {
            split("batchwise keras", systems, " ")
            for (s = 1; s <= 2; s++) {
                sys = systems[s]; found = 0
                for (i = 1; i <= NR; i++) if (name[i] == sys) found = 1
                if (!found) continue
                ratio = ""
                if (sys == "keras" && (("batchwise", 1) in w))
                    ratio = sprintf("%.2f", median("keras", 4) / median("batchwise", 4))
                printf "| %s | median | %.4f | %.2f | %.2f | %s |\n", sys, median(sys, 3), median(sys, 4), median(sys, 5), ratio
            }
        }
    }' "$results"
echo
echo "Logs: $logs" >&2
