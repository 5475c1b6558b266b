#!/usr/bin/env bash
# Builds the LibTorch-only part (FEDTUNE_MODEL_ONLY=ON) against the LibTorch of
# the machine's python torch, runs its tests, then the training benchmark:
# for GPU machines without Debian packages.
#
#   tests/bench/run_model_only.sh [train_throughput arguments...]
#
# Needs: cmake, ninja, a C++20 compiler, python3 with torch, GoogleTest,
# OpenSSL and nlohmann-json headers, and abseil: set ABSL_PREFIX to an install
# prefix of it (for example a copy of Debian 12's libabsl-dev files) when the
# machine has none. Build directory: FEDTUNE_BUILD_DIR (default build-model-only/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FEDTUNE_BUILD_DIR:-$root/build-model-only}"
python="$(command -v python3)"
torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
prefix="$torch_prefix"
if [[ -n "${ABSL_PREFIX:-}" ]]; then
  prefix="$prefix;$ABSL_PREFIX"
  export LD_LIBRARY_PATH="$ABSL_PREFIX/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEDTUNE_MODEL_ONLY=ON \
  -DCMAKE_PREFIX_PATH="$prefix" -DFEDTUNE_PYTHON3="$python" ${TORCH_CUDA_ARCH_LIST:+-DTORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST}
cmake --build "$build" --parallel "$(nproc)"
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)"
device=cpu
"$python" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' && device=cuda
"$build/tests/bench/train_throughput" --device "$device" "$@"
