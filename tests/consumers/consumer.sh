#!/usr/bin/env bash
# Builds a consumer project the way its user would, in a directory of its own: a copy of the
# project (and of learn.cpp, the program it trains) outside the source tree, configured and built
# with plain cmake, then run. Used by the consumers.* tests (CMakeLists.txt here).
#
#   consumer.sh install PROJECT_BUILD_DIR PREFIX       cmake --install into an empty PREFIX
#   consumer.sh build PROJECT WORK_DIR [cmake args]    copy, configure, build, run ./learn
#   consumer.sh configure PROJECT WORK_DIR [cmake args]  copy and configure only
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
verb="$1"
shift

case "$verb" in
install)
    build_dir="$1" prefix="$2"
    rm -rf "$prefix"
    cmake --install "$build_dir" --prefix "$prefix"
    ;;
build | configure)
    project="$1" work="$2"
    shift 2
    rm -rf "$work"
    mkdir -p "$work/src"
    cp -r "$project/." "$work/src/"
    cp "$here/learn.cpp" "$work/src/"
    cmake -S "$work/src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release "$@"
    if [[ "$verb" == build ]]; then
        cmake --build "$work/build"
        "$work/build/learn"
    fi
    ;;
*)
    echo "consumer.sh: unknown verb '$verb'" >&2
    exit 2
    ;;
esac
