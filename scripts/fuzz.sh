#!/usr/bin/env bash
# Builds the libFuzzer targets of every reader and loader (tests/fuzz) with clang and runs each
# for a bounded time, two at a time, over a corpus kept in the build directory: seeded by the
# library's own writers on every run and by the corpus checked in under tests/fuzz/corpus (what
# earlier runs grew, merged to the inputs that add coverage), grown by each run, kept for the
# next; --update-corpus merges what this run found into tests/fuzz/corpus, to commit. Exits non-zero on any
# finding: a crash, a sanitizer report, an exception that is not a batchwise::error, an
# allocation over the limit, an input slower than the timeout. The files that reproduce a
# finding are copied to tests/fuzz/findings/TARGET/, which every later run replays first.
#
#   scripts/fuzz.sh [--seconds N] [--build-dir DIR] [--parallel N] [--no-build] [TARGET...]
#
#   --seconds N    fuzzing time per target (default $BATCHWISE_FUZZ_SECONDS, else 30); 0 runs
#                  only the seeds, the kept corpus and the saved findings, once each
#   --build-dir    a clang build directory (default $BATCHWISE_FUZZ_BUILD_DIR, else build/fuzz);
#                  configured here with BATCHWISE_FUZZ=ON when it has no cache yet
#   --parallel N   targets run at once (default $BATCHWISE_FUZZ_PARALLEL, else 2: CI's cores)
#   --no-build     use the targets already built
#   --update-corpus  after fuzzing, merge the new inputs that add coverage into tests/fuzz/corpus
#   TARGET...      a subset of the targets (default: every one, see tests/fuzz/CMakeLists.txt)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

seconds="${BATCHWISE_FUZZ_SECONDS:-30}"
build_dir="${BATCHWISE_FUZZ_BUILD_DIR:-build/fuzz}"
parallel="${BATCHWISE_FUZZ_PARALLEL:-2}"
build=1
update_corpus=0
targets=()
while (($#)); do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --build-dir) build_dir="$2"; shift 2 ;;
        --parallel) parallel="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --update-corpus) update_corpus=1; shift ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds wants a whole number, not '$seconds'" >&2; exit 2; }
[[ "$parallel" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --parallel wants a positive number" >&2; exit 2; }
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"

if ((build)); then
    if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
        CC=clang CXX=clang++ cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Debug -DBATCHWISE_ENABLE_CUDA=OFF \
            -DBATCHWISE_BUILD_EXAMPLES=OFF -DBATCHWISE_BUILD_TESTS=ON -DBATCHWISE_FUZZ=ON >/dev/null
    elif ! grep -q '^BATCHWISE_FUZZ:BOOL=ON' "$build_dir/CMakeCache.txt"; then
        # The top CMakeLists.txt refuses a compiler other than clang with a sentence.
        cmake -S . -B "$build_dir" -DBATCHWISE_FUZZ=ON >/dev/null
    fi
fi
fuzz_dir="$build_dir/tests/fuzz"
[[ -f "$fuzz_dir/targets.txt" ]] || { echo "fuzz.sh: $build_dir is not configured with BATCHWISE_FUZZ=ON" >&2; exit 2; }
((${#targets[@]})) || mapfile -t targets < "$fuzz_dir/targets.txt"
if ((build)); then
    start=$SECONDS
    cmake --build "$build_dir" -j "${BATCHWISE_JOBS:-$(nproc)}" --target "${targets[@]}"
    echo "fuzz.sh: built ${#targets[@]} targets in $((SECONDS - start)) s"
fi

source scripts/env.sh
# Two targets at a time on two cores: one BLAS thread each.
export OPENBLAS_NUM_THREADS=1
# A leak is a finding too; UB stops the run (the targets are built with -fno-sanitize-recover).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# The targets write their inputs to files named after their process ids; one folder per run
# keeps /tmp clean however a target ends.
TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/batchwise_fuzz.XXXXXX")"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

# The limits of every run: a reader must refuse a size its input cannot hold before allocating
# it, so an allocation over 1 GiB (or 2 GiB resident) is a finding, not a slow success.
limits=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 -print_final_stats=1)

run_target() {
    local target="$1" bin="$fuzz_dir/$1"
    local seeds="$fuzz_dir/seeds/$target" corpus="$fuzz_dir/corpus/$target"
    local artifacts="$fuzz_dir/artifacts/$target" log="$fuzz_dir/logs/$target.log"
    local saved="$root/tests/fuzz/findings/$target"
    rm -rf "$seeds" "$artifacts"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    # Seeds are written fresh each run by the library's writers, so they follow the formats.
    "$bin" --write-seeds="$seeds" >"$log" 2>&1
    mkdir -p "$seeds"
    # libFuzzer writes new inputs into the first folder only: the build's, never the checked-in one.
    local dirs=("$corpus" "$seeds")
    [[ -d "$root/tests/fuzz/corpus/$target" ]] && dirs+=("$root/tests/fuzz/corpus/$target")
    [[ -d "$saved" ]] && dirs+=("$saved")
    local mode=(-max_total_time="$seconds")
    ((seconds == 0)) && mode=(-runs=0)
    local status=0
    # The outer timeout is a backstop for a hang libFuzzer's own -timeout cannot end.
    timeout --kill-after=30 $((seconds + 300)) \
        "$bin" "${mode[@]}" "${limits[@]}" -artifact_prefix="$artifacts/" "${dirs[@]}" >>"$log" 2>&1 || status=$?
    echo "$status" >"$fuzz_dir/logs/$target.status"
}

rm -f "$fuzz_dir"/logs/*.status
running=0
for target in "${targets[@]}"; do
    [[ -x "$fuzz_dir/$target" ]] || { echo "fuzz.sh: no target $target in $fuzz_dir" >&2; exit 2; }
    if ((running >= parallel)); then
        wait -n || true
        running=$((running - 1))
    fi
    echo "fuzz.sh: running $target for ${seconds} s"
    run_target "$target" &
    running=$((running + 1))
done
wait || true

total=0
failed=()
printf '\n%-22s %12s %8s  %s\n' target inputs corpus result
for target in "${targets[@]}"; do
    log="$fuzz_dir/logs/$target.log"
    status="$(cat "$fuzz_dir/logs/$target.status" 2>/dev/null || echo missing)"
    # libFuzzer's name for the inputs it ran ("executed units"; older releases say "runs").
    runs="$(grep -Eo 'stat::number_of_executed_(units|runs): *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)"
    corpus_size="$(find "$fuzz_dir/corpus/$target" -type f | wc -l)"
    total=$((total + ${runs:-0}))
    result=ok
    if [[ "$status" != 0 ]]; then
        result="FINDING (exit $status)"
        failed+=("$target")
    fi
    printf '%-22s %12s %8s  %s\n' "$target" "${runs:-?}" "$corpus_size" "$result"
done
printf '%-22s %12s\n' total "$total"

for target in "${failed[@]}"; do
    echo
    echo "=== $target: $fuzz_dir/logs/$target.log (last 60 lines)"
    tail -n 60 "$fuzz_dir/logs/$target.log"
    shopt -s nullglob
    artifacts=("$fuzz_dir/artifacts/$target"/*)
    shopt -u nullglob
    if ((${#artifacts[@]})); then
        mkdir -p "$root/tests/fuzz/findings/$target"
        cp "${artifacts[@]}" "$root/tests/fuzz/findings/$target/"
        echo "=== reproducers copied to tests/fuzz/findings/$target/: ${artifacts[*]##*/}"
        echo "    rerun one: $fuzz_dir/$target tests/fuzz/findings/$target/FILE"
    fi
done
((${#failed[@]} == 0)) || { echo "fuzz.sh: findings in ${failed[*]}" >&2; exit 1; }
echo "fuzz.sh: no findings"
if ((update_corpus)); then
    for target in "${targets[@]}"; do
        kept="$root/tests/fuzz/corpus/$target"
        mkdir -p "$kept"
        before="$(find "$kept" -type f | wc -l)"
        "$fuzz_dir/$target" -merge=1 "${limits[@]}" "$kept" "$fuzz_dir/corpus/$target" >"$fuzz_dir/logs/$target.merge.log" 2>&1
        echo "fuzz.sh: tests/fuzz/corpus/$target: $before -> $(find "$kept" -type f | wc -l) inputs"
    done
fi
