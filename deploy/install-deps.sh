#!/usr/bin/env bash
# Installs, with apt, every Debian 12 package fedtune needs to build, test and
# run its demo. Idempotent and non-interactive; a fast no-op when everything is
# already present. Run as root (or with sudo available).
#
#   deploy/install-deps.sh            # build + test (and fuzz) + demo dependencies
#   deploy/install-deps.sh --check    # exit 1 and list what is missing
set -euo pipefail

# Build toolchain and libraries (headers + CMake configs).
BUILD_PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdcmtk-dev zlib1g-dev libssl-dev libcli11-dev libgtest-dev libgmock-dev libabsl-dev
  libsqlite3-dev libspdlog-dev libfmt-dev libtomlplusplus-dev nlohmann-json3-dev
  libcpp-httplib-dev libbenchmark-dev
  libtesseract-dev libleptonica-dev tesseract-ocr-eng libfreetype-dev fonts-dejavu-core
)
# Independent references used by tests, and tools the demo and certs need.
# Tests that need one of these skip with a clear message where it is absent.
REFERENCE_PKGS=(
  openssl python3 python3-torch python3-sklearn python3-numpy python3-scipy python3-pydicom
  dcmtk libgdcm-tools chromium curl prometheus python3-grpcio python3-grpc-tools lintian dpkg-dev
)

# The fuzz stage of deploy/test.sh (tests/fuzz): clang 14 and its libFuzzer
# runtime (libclang_rt.fuzzer). Without them that stage is skipped with a message.
FUZZ_PKGS=(clang libclang-rt-14-dev)

missing=()
for p in "${BUILD_PKGS[@]}" "${REFERENCE_PKGS[@]}" "${FUZZ_PKGS[@]}"; do
  # dpkg-query reports "install ok installed" only for fully installed packages.
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ "${1:-}" == "--check" ]]; then
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null; then
    SUDO="sudo"
  else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
