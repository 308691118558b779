#!/usr/bin/env bash
# The batch-size study (docs/batch_sizes.md): builds examples/batch_size_study, runs it (about
# half an hour on 2 cores), and draws its plots with gnuplot, which it installs from Debian when
# it is missing. Arguments go to the example: [out_dir] [grid_epochs] [race_max_epochs]
# [race_seeds]; the plots are written next to the CSV files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
if ! command -v gnuplot >/dev/null; then
    echo "batch-size-study: installing gnuplot-nox (the plots)"
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends gnuplot-nox
fi
source scripts/env.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target batch_size_study
dir="${1:-docs/batch_size_study}"
build/release/examples/batch_size_study "$@"
gnuplot -e "dir='${dir}'; target=0.85" scripts/plot-batch-size-study.gp
echo "batch-size-study: CSV files and plots in ${dir}"
