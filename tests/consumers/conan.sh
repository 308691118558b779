#!/usr/bin/env bash
# The consumers.conan test: `conan create` of the recipe with the repository's profile
# (conan/profiles/debian: Debian's packages as [platform_requires]) and --no-remote, so it
# proves the package builds offline; its test_package builds and runs a training program that
# fails unless the model learned.
#
#   conan.sh SOURCE_DIR WORK_DIR
#
# Everything lives under WORK_DIR, so runs do not collide with each other or with the user's own
# Conan: a Conan home of its own (fresh each run), the test_package build, and, when no Conan
# 2.6+ is on PATH, a virtual environment with Conan 2 from PyPI (kept between runs).
set -euo pipefail
src="$1" work="$2"
mkdir -p "$work"

# Conan 2.6 or newer: the oldest release that knows everything the profile uses.
recent_conan() {
    local v major minor
    v="$("$1" --version 2>/dev/null | sed -n 's/^Conan version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
    [[ -n "$v" ]] && read -r major minor <<<"$v" && ((major == 2 && minor >= 6))
}

venv="$work/venv"
if [[ -x "$venv/bin/conan" ]]; then
    conan="$venv/bin/conan"
elif command -v conan >/dev/null && recent_conan conan; then
    conan="$(command -v conan)"
else
    echo "conan.sh: installing Conan 2 from PyPI into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "conan>=2.6,<3"
    conan="$venv/bin/conan"
fi
"$conan" --version

export CONAN_HOME="$work/home"
rm -rf "$CONAN_HOME" "$work/test_package"
"$conan" profile detect   # "default", which the repository's profile includes
"$conan" create "$src" \
    --profile:all "$src/conan/profiles/debian" \
    --no-remote \
    --conf "tools.cmake.cmake_layout:test_folder=$work/test_package"
