#!/usr/bin/env bash
# Installs what is missing, builds (RelWithDebInfo, all cores, ccache) and runs
# the whole test suite with ctest. Extra arguments go to ctest:
#   deploy/test.sh -L unit          # the quick loop
#   deploy/test.sh -R Safetensors   # one group
# Environment: FEDTUNE_BUILD_DIR (default build/), FEDTUNE_CMAKE_ARGS (extra
# configure flags, e.g. -DFEDTUNE_SANITIZE=ON), FEDTUNE_SKIP_DEPS=1 to skip apt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FEDTUNE_BUILD_DIR:-$root/build}"
jobs="$(nproc)"

if [[ "${FEDTUNE_SKIP_DEPS:-0}" != 1 ]]; then
  "$root/deploy/install-deps.sh"
fi

# shellcheck disable=SC2086  # FEDTUNE_CMAKE_ARGS is a list of flags
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${FEDTUNE_CMAKE_ARGS:-}
cmake --build "$build" --parallel "$jobs"
ctest --test-dir "$build" --output-on-failure --parallel "$jobs" "$@"
