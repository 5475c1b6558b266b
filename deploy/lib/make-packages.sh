#!/usr/bin/env bash
# Makes the .deb packages from a configured and built fedtune build folder
# and runs lintian on them (when installed):
#   deploy/lib/make-packages.sh BUILD_DIR OUT_DIR
# Prints the package paths; exits 1 when cpack fails or lintian reports an
# error or a warning.
set -euo pipefail
build="$(realpath "$1")"
out="$(realpath -m "$2")"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work" >"$work/cpack.log" 2>&1) || {
  cat "$work/cpack.log" >&2
  exit 1
}
shopt -s nullglob
debs=("$work"/*.deb)
if [[ ${#debs[@]} -ne 2 ]]; then
  echo "make-packages: expected two packages, cpack made ${#debs[@]}" >&2
  cat "$work/cpack.log" >&2
  exit 1
fi
cp "${debs[@]}" "$out/"
for d in "${debs[@]}"; do echo "$out/$(basename "$d")"; done
if command -v lintian >/dev/null; then
  # no-manual-page: the programs' manual is their --help (every command has
  # one, with an example); no other tag is tolerated.
  if ! lintian --fail-on error,warning --suppress-tags no-manual-page \
      "${debs[@]/#$work/$out}" >&2; then
    echo "make-packages: lintian reported the problems above" >&2
    exit 1
  fi
  echo "lintian: clean" >&2
else
  echo "make-packages: lintian not installed (apt-get install lintian); packages not checked" >&2
fi
