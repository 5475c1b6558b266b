#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan; tests/fuzz/README.md) and
# runs each for a bounded time on a copy of its seed corpus. Any crash, leak,
# timeout or out-of-memory fails the script and prints the reproducer.
#
#   tests/fuzz/run.sh                      # 20 s per target (what deploy/test.sh runs)
#   tests/fuzz/run.sh --seconds 600        # a longer campaign
#   tests/fuzz/run.sh --seconds 300 --keep-corpus config_fuzz labels_fuzz
#
# Options:
#   --seconds N      per target (FEDTUNE_FUZZ_SECONDS; default 20)
#   --jobs N         targets run at once, one core each (default: the cores)
#   --build-dir DIR  FEDTUNE_FUZZ_BUILD_DIR, default build-fuzz/
#   --no-build       use what is built there
#   --keep-corpus    keep the work directory and minimise each target's corpus
#                    into <work>/<target>/merged (inputs worth committing)
#   --work DIR       corpora, logs and reproducers (default: a new temporary
#                    directory, removed after a clean run)
#   TARGET...        only these (default: all five)
# Seeds: tests/fuzz/corpus/<target>, plus at run time deploy/examples/*.toml,
# pydicom's test files (python3-pydicom) and, when fedtune-site is built
# (FEDTUNE_SITE_BIN; default ${FEDTUNE_BUILD_DIR:-build}/site-agent/fedtune-site),
# a few synthetic radiographs and their labels.
# Exit status: 0 clean, 1 a finding (or a failed build), 2 usage,
# 3 clang or libFuzzer's runtime is missing (the message says what to install).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FEDTUNE_FUZZ_BUILD_DIR:-$root/build-fuzz}"
seconds="${FEDTUNE_FUZZ_SECONDS:-20}"
jobs="$(nproc)"
do_build=1
keep_corpus=0
work=""
all_targets=(safetensors_fuzz update_validation_fuzz dicom_ingest_fuzz model_input_fuzz config_fuzz labels_fuzz)
targets=()

usage() { sed -n '2,/^# 3 clang/p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --keep-corpus) keep_corpus=1; shift ;;
    --work) work="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ ${#targets[@]} -eq 0 ]] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "run.sh: no fuzz target $t (${all_targets[*]})" >&2; exit 2; }
done
if ! [[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 && "$jobs" =~ ^[0-9]+$ && "$jobs" -gt 0 ]]; then
  echo "run.sh: --seconds and --jobs take positive integers" >&2
  exit 2
fi

if [[ $do_build == 1 ]]; then
  if ! command -v clang++ >/dev/null || ! command -v clang >/dev/null; then
    echo "run.sh: clang is not installed (Debian 12: apt-get install clang libclang-rt-14-dev)" >&2
    exit 3
  fi
  if ! compgen -G "$(dirname "$(readlink -f "$(command -v clang)")")/../lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a" >/dev/null; then
    echo "run.sh: libFuzzer's runtime (libclang_rt.fuzzer) is not installed (Debian 12: apt-get install libclang-rt-14-dev)" >&2
    exit 3
  fi
  build_start=$SECONDS
  echo "== fuzz: configure $build (clang, -DFEDTUNE_FUZZ=ON)"
  mkdir -p "$build"
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFEDTUNE_FUZZ=ON -DFEDTUNE_BUILD_BENCH=OFF -DFEDTUNE_BUILD_TESTS=OFF >"$build/fuzz-configure.log" 2>&1 ||
    { cat "$build/fuzz-configure.log" >&2; exit 1; }
  echo "== fuzz: build fuzz_all"
  cmake --build "$build" --target fuzz_all --parallel "$(nproc)"
  echo "== fuzz: configured and built in $((SECONDS - build_start)) s"
fi

if [[ -z "$work" ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/fedtune-fuzz.XXXXXX")"
fi
mkdir -p "$work"

# Seeds that are not committed: the example configs (prefixed with the byte
# that selects their parser), pydicom's test images and, when a build of
# fedtune-site is at hand, a few synthetic radiographs and their labels.
pydicom="/usr/lib/python3/dist-packages/pydicom/data/test_files"
pydicom_seeds=(CT_small.dcm MR_small.dcm MR_small_RLE.dcm MR_small_jpeg_ls_lossless.dcm MR_small_bigendian.dcm
               MR_small_implicit.dcm MR_small_padded.dcm JPEG-lossy.dcm JPGExtended.dcm image_dfl.dcm
               ExplVR_BigEndNoMeta.dcm no_meta_group_length.dcm nested_priv_SQ.dcm UN_sequence.dcm
               MR_truncated.dcm rtdose_1frame.dcm)
site_bin="${FEDTUNE_SITE_BIN:-${FEDTUNE_BUILD_DIR:-$root/build}/site-agent/fedtune-site}"
synth_styles=(plain mono1-rle inverse-jpegls cr)
# One small synthetic hospital per scanner style (64 px images), written once.
make_synth() {
  local style
  [[ -x "$site_bin" && ! -d "$work/synth" ]] || return 0
  for style in "${synth_styles[@]}"; do
    "$site_bin" synth --out "$work/synth/$style" --site "fuzz-$style" --patients 1 --size 64 --style "$style" \
      --seed 7 >/dev/null 2>&1 || echo "   ($site_bin synth --style $style failed: no synthetic seeds of that style)"
  done
}
seed_extra() {
  local target="$1" dir="$2"
  case "$target" in
    config_fuzz)
      local i=0 name
      for name in site coordinator job; do
        if [[ -f "$root/deploy/examples/$name.toml" ]]; then
          { printf '%s' "$i"; cat "$root/deploy/examples/$name.toml"; } >"$dir/example_$name.toml"
        fi
        i=$((i + 1))
      done
      ;;
    dicom_ingest_fuzz | model_input_fuzz)
      local f n=0
      if [[ -d "$pydicom" ]]; then
        for f in "${pydicom_seeds[@]}"; do
          if [[ -f "$pydicom/$f" ]]; then cp "$pydicom/$f" "$dir/pydicom_$f"; n=$((n + 1)); fi
        done
      fi
      if [[ $n -eq 0 ]]; then
        echo "   (no pydicom test files at $pydicom: apt-get install python3-pydicom for DICOM seeds)"
      fi
      ;;
  esac
  if [[ -d "$work/synth" && ( "$target" == dicom_ingest_fuzz || "$target" == model_input_fuzz ||
        "$target" == labels_fuzz ) ]]; then
    local style synth="$work/synth"
    for style in "${synth_styles[@]}"; do
      if [[ "$target" != labels_fuzz ]]; then
        for f in "$synth/$style"/*.dcm; do
          if [[ -f "$f" ]]; then cp "$f" "$dir/synth_${style}_$(basename "$f")"; fi
        done
      elif [[ -f "$synth/$style/labels.csv" ]]; then
        cp "$synth/$style/labels.csv" "$dir/synth_${style}_labels.csv"
      fi
    done
  fi
  return 0
}

# Per-target input limits: DICOM seeds are up to ~40 KB; the rest are small.
max_len() { [[ "$1" == dicom_ingest_fuzz || "$1" == model_input_fuzz ]] && echo 65536 || echo 16384; }
# The largest single allocation, in MiB (libFuzzer's default: -rss_limit_mb).
# DCMTK allocates the length an element claims (up to 4 GiB) before reading it
# when it cannot seek, as in deflated data; only the bytes present are
# written, so the allocation stays virtual (dcmdump does the same). Real
# memory is still bounded by -rss_limit_mb.
malloc_limit() { [[ "$1" == dicom_ingest_fuzz || "$1" == model_input_fuzz ]] && echo 4096 || echo 2048; }

run_one() {
  local t="$1"
  local dir="$work/$t" exe="$build/tests/fuzz/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -r "$root/tests/fuzz/corpus/$t/." "$dir/corpus/" 2>/dev/null || true
  seed_extra "$t" "$dir/corpus"
  # -timeout: one input taking longer than 10 s is a finding (a hang);
  # -rss_limit_mb: more memory than that is one (out-of-memory).
  local rc=0
  ASAN_OPTIONS="detect_leaks=1:symbolize=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
    "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb="$(malloc_limit "$t")" -timeout=10 \
      -max_len="$(max_len "$t")" -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log" 2>&1 || rc=$?
  echo "$rc" >"$dir/rc"
}

summary() {
  local t="$1" log="$work/$1/log"
  local runs execs cov ft corpus
  runs="$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")"
  execs="$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log")"
  cov="$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 | grep -o 'cov: [0-9]*' | awk '{print $2}')"
  ft="$(grep -E '^#[0-9]+.*(DONE|ft:)' "$log" | tail -1 | grep -o 'ft: [0-9]*' | awk '{print $2}')"
  corpus="$(grep -E '^#[0-9]+.*corp:' "$log" | tail -1 | grep -o 'corp: [^ ]*' | awk '{print $2}')"
  printf '%-24s %10s %8s %6s %7s %14s\n' "$t" "${runs:-?}" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}"
}

[[ $jobs -gt ${#targets[@]} ]] && jobs=${#targets[@]}
echo "== fuzz: ${#targets[@]} target(s), ${seconds} s each, $jobs at a time; work directory $work"
make_synth
run_start=$SECONDS
failed=()
running=0
for t in "${targets[@]}"; do
  if [[ ! -x "$build/tests/fuzz/$t" ]]; then
    echo "run.sh: $build/tests/fuzz/$t is not built (run without --no-build)" >&2
    exit 1
  fi
done
for t in "${targets[@]}"; do
  while [[ $running -ge $jobs ]]; do
    wait -n || true
    running=$((running - 1))
  done
  run_one "$t" &
  running=$((running + 1))
done
wait
for t in "${targets[@]}"; do
  [[ "$(cat "$work/$t/rc" 2>/dev/null)" == 0 ]] || failed+=("$t")
done

echo "== fuzz: ran in $((SECONDS - run_start)) s"
printf '%-24s %10s %8s %6s %7s %14s\n' target executions exec/s cov ft corpus
for t in "${targets[@]}"; do summary "$t"; done

if [[ $keep_corpus == 1 ]]; then
  for t in "${targets[@]}"; do
    # Merge back only inputs that add coverage, so the committed corpus stays small.
    mkdir -p "$work/$t/merged"
    "$build/tests/fuzz/$t" -merge=1 -max_len="$(max_len "$t")" -rss_limit_mb=2048 -malloc_limit_mb="$(malloc_limit "$t")" \
      -timeout=10 "$work/$t/merged" "$work/$t/corpus" >"$work/$t/merge.log" 2>&1 ||
      echo "   $t: merging failed (see $work/$t/merge.log)"
    echo "   $t: $(ls "$work/$t/merged" | wc -l) inputs cover what the run reached (in $work/$t/merged)"
  done
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  for t in "${failed[@]}"; do
    echo "FAIL $t: $(grep -m1 -E '^==[0-9]+==ERROR|^SUMMARY|ERROR: libFuzzer|runtime error' "$work/$t/log" || echo 'see the log')" >&2
    for a in "$work/$t/artifacts"/*; do
      [[ -f "$a" ]] && echo "     reproducer: $a   (rerun: $build/tests/fuzz/$t $a)" >&2
    done
    echo "     log: $work/$t/log" >&2
  done
  exit 1
fi
echo "== fuzz: no findings"
[[ $keep_corpus == 1 ]] || rm -rf "$work"
