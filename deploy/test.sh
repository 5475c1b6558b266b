#!/usr/bin/env bash
# Installs what is missing, builds (RelWithDebInfo, all cores, ccache) and runs
# the whole test suite with ctest. Extra arguments go to ctest:
#   deploy/test.sh -L unit          # the quick loop
#   deploy/test.sh -R Safetensors   # one group
# Then the fuzz stage: tests/fuzz/run.sh builds the libFuzzer targets with
# clang in build-fuzz/ and runs each for 20 s (tests/fuzz/README.md).
# Environment: FEDTUNE_BUILD_DIR (default build/), FEDTUNE_CMAKE_ARGS (extra
# configure flags, e.g. -DFEDTUNE_SANITIZE=ON), FEDTUNE_SKIP_DEPS=1 to skip apt,
# FEDTUNE_SKIP_FUZZ=1 to skip the fuzz stage, FEDTUNE_FUZZ_SECONDS (per target).
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

if [[ "${FEDTUNE_SKIP_FUZZ:-0}" == 1 ]]; then
  echo "test.sh: fuzz stage skipped (FEDTUNE_SKIP_FUZZ=1)"
  exit 0
fi
fuzz_rc=0
FEDTUNE_BUILD_DIR="$build" "$root/tests/fuzz/run.sh" || fuzz_rc=$?
if [[ $fuzz_rc -eq 3 ]]; then
  # run.sh said what is missing; deploy/install-deps.sh installs it.
  echo "test.sh: fuzz stage skipped: clang or libFuzzer's runtime is not installed"
elif [[ $fuzz_rc -ne 0 ]]; then
  echo "test.sh: the fuzz stage failed (reproducers above; tests/fuzz/README.md says how to rerun one)" >&2
  exit "$fuzz_rc"
fi
