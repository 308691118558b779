#!/usr/bin/env bash
# The batch-size study (docs/batch_sizes.md): builds examples/batch_size_study, runs it (about
# 17 minutes on 2 cores), and draws its plots with gnuplot, which it installs from Debian when
# it is missing. Arguments go to the example: [out_dir] [grid_epochs] [race_max_epochs]
# [race_seeds]; the plots are written next to the CSV files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh gnuplot-nox  # the plots
source scripts/env.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target batch_size_study
dir="${1:-docs/batch_size_study}"
build/release/examples/batch_size_study "$@"
gnuplot -e "dir='${dir}'; target=0.85" scripts/plot-batch-size-study.gp
echo "batch-size-study: CSV files and plots in ${dir}"
