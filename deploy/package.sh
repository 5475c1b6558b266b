#!/usr/bin/env bash
# Builds the Debian packages of fedtune (Release, in build-package/ unless
# FEDTUNE_BUILD_DIR says otherwise) and checks them with lintian:
#   deploy/package.sh                  # -> packages/fedtune-site_<v>_<arch>.deb, fedtune-coordinator_...
#   sudo apt install ./packages/fedtune-site_*.deb
# Environment: FEDTUNE_SKIP_DEPS=1 skips installing what is missing;
# FEDTUNE_PACKAGE_DIR (default packages/) is where the .deb files go.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(realpath -m "${FEDTUNE_BUILD_DIR:-$root/build-package}")"
out="$(realpath -m "${FEDTUNE_PACKAGE_DIR:-$root/packages}")"

if [[ "${FEDTUNE_SKIP_DEPS:-0}" != 1 ]]; then
  "$root/deploy/install-deps.sh"
fi
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEDTUNE_BUILD_TESTS=OFF -DFEDTUNE_BUILD_BENCH=OFF \
  >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target fedtune fedtune-site fedtune-coordinator
"$root/deploy/lib/make-packages.sh" "$build" "$out"
