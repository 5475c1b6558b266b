#!/usr/bin/env bash
# Receive throughput: DCMTK's storescu sends synthetic 2048 x 2048 16-bit
# radiographs to `fedtune-site receive` on 127.0.0.1; measured in the same run:
#   send      storescu's wall time (each file acknowledged once on disk)
#   ingested  from the first byte sent until the last file is ingested
#   folder    `fedtune-site ingest` of the same files from a folder (reference)
#
#   tests/bench/scp_throughput.sh [--patients N] [--size PX] [--style plain|mono1-rle|inverse-jpegls] [--build DIR]
set -euo pipefail

patients=24
size=2048
style=plain
build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) patients=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --style) style=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n 2,9p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scp_throughput.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
site_bin="$root/$build/site-agent/fedtune-site"
[ -x "$site_bin" ] || { echo "scp_throughput.sh: build first: $site_bin is missing" >&2; exit 1; }
command -v storescu >/dev/null || { echo "scp_throughput.sh: storescu is missing (apt install dcmtk)" >&2; exit 1; }

work=$(mktemp -d /tmp/fedtune_scp_bench.XXXXXX)
receiver=""
cleanup() {
  [ -n "$receiver" ] && kill "$receiver" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$site_bin" synth --out "$work/pacs" --site BENCH --patients "$patients" --size "$size" --style "$style" \
  --json > "$work/synth.json"
rm -f "$work/pacs/labels.csv"
# 1-3 studies per patient: count the files.
n=$(find "$work/pacs" -name '*.dcm' | wc -l)
bytes=$(du -sb "$work/pacs" | cut -f1)
case "$style" in
  mono1-rle) propose="-xr" ;;
  inverse-jpegls) propose="-xt" ;;
  *) propose="" ;;
esac

config() {
  cat > "$1/site.toml" <<EOF
[site]
id = "bench"
workspace = "ws"
[ingest]
image_size = 518
[scp]
port = 0
allowed_calling_aes = ["BENCH"]
EOF
}

mkdir -p "$work/rx" "$work/folder"
config "$work/rx"
config "$work/folder"

now() { date +%s.%N; }

# Receive + ingest.
"$site_bin" receive --config "$work/rx/site.toml" --port-file "$work/rx/port" --json \
  > "$work/rx/out.json" 2> "$work/rx/log" &
receiver=$!
for _ in $(seq 100); do [ -s "$work/rx/port" ] && break; sleep 0.1; done
port=$(cat "$work/rx/port")
t0=$(now)
storescu $propose -aet BENCH -aec FEDTUNE 127.0.0.1 "$port" "$work"/pacs/*.dcm
t1=$(now)
# Ingested when the incoming folder is empty.
while find "$work/rx/ws/incoming" -maxdepth 1 -name 'rx-*' | grep -q .; do sleep 0.05; done
t2=$(now)
kill -TERM "$receiver"
wait "$receiver" || true
receiver=""

# Reference: the same files from a folder.
t3=$(now)
"$site_bin" ingest --config "$work/folder/site.toml" --source "$work/pacs" --json > "$work/folder/out.json"
t4=$(now)

python3 - "$n" "$bytes" "$t0" "$t1" "$t2" "$t3" "$t4" "$work/rx/out.json" "$work/folder/out.json" "$style" <<'EOF'
import json, sys
n, nbytes = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2, t3, t4 = map(float, sys.argv[3:8])
rx = json.load(open(sys.argv[8]))
folder = json.load(open(sys.argv[9]))
style = sys.argv[10]
assert rx["received"] == n and rx["ingested"] == n, rx
assert folder["ingested"] == n, folder
print(f"{n} files ({nbytes / n / 1e6:.1f} MB each, style {style})")
print(f"  send (storescu, acknowledged on disk): {t1 - t0:6.2f} s  {n / (t1 - t0):6.1f} files/s  "
      f"{nbytes / (t1 - t0) / 1e6:6.1f} MB/s")
print(f"  received and ingested:                 {t2 - t0:6.2f} s  {n / (t2 - t0):6.1f} files/s")
print(f"  folder ingest (reference):             {t4 - t3:6.2f} s  {n / (t4 - t3):6.1f} files/s")
EOF
