#!/usr/bin/env bash
# The main job in one command, on one machine: three synthetic hospitals that
# differ the way real ones do (one receiving from its PACS over DICOM), a
# coordinator and three site agents on loopback with mutual TLS, a LoRA job on
# a small ViT with local-only baselines, live progress, the final evaluation,
# and the cross-institution report.
#
#   deploy/demo.sh                 # installs what is missing, builds, runs
#   FEDTUNE_DEMO_DIR=/tmp/x deploy/demo.sh
#
# Environment: FEDTUNE_DEMO_DIR (default demo-workspace/ in the checkout; wiped
# and recreated on every run), FEDTUNE_BUILD_DIR (default build-release/),
# FEDTUNE_SKIP_DEPS=1 to skip apt. Every process it starts is stopped when it
# ends, also on Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FEDTUNE_BUILD_DIR:-$root/build-release}"
work="${FEDTUNE_DEMO_DIR:-$root/demo-workspace}"
sites=(hospital-a hospital-b hospital-c)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ "${FEDTUNE_SKIP_DEPS:-0}" != 1 ]]; then
  say "Installing what is missing"
  "$root/deploy/install-deps.sh"
fi

say "Building (Release)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEDTUNE_BUILD_TESTS=OFF \
  -DFEDTUNE_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target fedtune fedtune-site fedtune-coordinator
fedtune="$build/coordinator/fedtune"
site_bin="$build/site-agent/fedtune-site"
coordinator_bin="$build/coordinator/fedtune-coordinator"

pids=()
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: stopping every process this demo started"; exit 130' INT TERM

start=$(date +%s)
rm -rf "$work"
mkdir -p "$work"
cd "$work"

say "Certificates: federation CA, coordinator, three sites, one operator (pki/)"
certs="$root/certs/fedtune-certs"
{
  "$certs" init-ca pki
  "$certs" coordinator pki
  for s in "${sites[@]}"; do "$certs" site pki "$s"; done
  "$certs" admin pki operator
} >/dev/null

say "A foundation model to start from: a ViT-Ti/16 pretrained on public synthetic chest images"
# A hospital federation would start from RAD-DINO; the demo makes its own small
# stand-in, the way such models are made: on public data, outside the federation.
mkdir -p public
"$site_bin" synth --out public/pacs --site public-cxr --patients 400 --size 256 --style plain --seed 99 >/dev/null
mv public/pacs/labels.csv public/labels.csv
cat >public/site.toml <<TOML
[site]
id = "public"
workspace = "workspace"
[ingest]
image_size = 96
min_rows = 128
min_columns = 128
[labels]
findings = ["Cardiomegaly", "Pleural effusion", "Nodule/Mass", "Pneumothorax"]
TOML
"$site_bin" ingest --config public/site.toml --source public/pacs --labels public/labels.csv >/dev/null
"$fedtune" backbone pretrain --workspace public/workspace --arch vit-tiny/16 --image-size 96 --epochs 15 \
  --learning-rate 0.0005 --seed 11 --findings "Cardiomegaly,Pleural effusion,Nodule/Mass,Pneumothorax" \
  --out backbone.safetensors | tee public/pretrain.log
backbone_sha=$(tail -1 public/pretrain.log | cut -c1-64)
echo "every site holds backbone.safetensors, SHA-256 $backbone_sha"

say "Three hospitals: different scanners, sizes and prevalence (hospital-c has few positives)"
# hospital-a and hospital-b ingest a PACS export folder; hospital-c's PACS sends
# its images over DICOM (C-STORE, DCMTK's storescu) to the site agent's receiver,
# which ingests each file as it arrives, labels coming from a RIS export keyed
# by SOPInstanceUID.
# site  style  patients  seed  prevalence (Cardiomegaly, Pleural effusion, Nodule/Mass, Pneumothorax)
hospitals=(
  "hospital-a plain 150 1 0.30,0.25,0.20,0.15"
  "hospital-b mono1-rle 90 2 0.40,0.35,0.25,0.20"
  "hospital-c cr 35 3 0.10,0.08,0.08,0.06"
)
for h in "${hospitals[@]}"; do
  read -r s style patients seed prevalence <<<"$h"
  mkdir -p "$s"
  label_key=file_stem
  [[ "$s" == hospital-c ]] && label_key=sop_instance_uid
  "$site_bin" synth --out "$s/pacs" --site "$s" --patients "$patients" --size 256 --style "$style" \
    --seed "$seed" --prevalence "$prevalence" --label-key "$label_key" >/dev/null
  mv "$s/pacs/labels.csv" "$s/labels.csv"
  cat >"$s/site.toml" <<TOML
[site]
id = "$s"
workspace = "workspace"

[ingest]
image_size = 96
min_rows = 128
min_columns = 128

[labels]
findings = ["Cardiomegaly", "Pleural effusion", "Nodule/Mass", "Pneumothorax"]

[stats]
k = 3

[coordinator]
address = "127.0.0.1:PORT"

[tls]
ca = "../pki/ca.pem"
cert = "../pki/site/$s.pem"
key = "../pki/site/$s.key"

[training]
backbone = "../backbone.safetensors"
device = "cpu"
threads = 1
bootstrap_resamples = 500

[log]
file = "site.log"
TOML
  printf '%s: ' "$s"
  if [[ "$s" != hospital-c ]]; then
    "$site_bin" ingest --config "$s/site.toml" --source "$s/pacs" --labels "$s/labels.csv" --json |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["ingested"], "images ingested and de-identified,", r["quarantined"], "quarantined")'
    continue
  fi
  # The receiver: CR/DX only, from the AE title HOSPC_PACS only, on 127.0.0.1.
  sed -i 's/^findings = /key = "sop_instance_uid"\nkey_column = "sop_instance_uid"\nfindings = /' "$s/site.toml"
  printf '\n[scp]\nport = 0\nae_title = "FEDTUNE"\nallowed_calling_aes = ["HOSPC_PACS"]\nlabels = "labels.csv"\n' \
    >>"$s/site.toml"
  (cd "$s" && exec "$site_bin" receive --config site.toml --port-file receive.port --json >receive.json 2>/dev/null) &
  receiver=$!
  pids+=("$receiver")
  for _ in $(seq 100); do [[ -s "$s/receive.port" ]] && break; sleep 0.1; done
  storescu -aet HOSPC_PACS -aec FEDTUNE 127.0.0.1 "$(cat "$s/receive.port")" "$s"/pacs/*.dcm
  kill -TERM "$receiver"
  wait "$receiver"
  unset 'pids[-1]'
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["received"], "images received from its PACS (storescu), ingested and de-identified:", r["ingested"], "ingested,", r["quarantined"], "quarantined")' "$s/receive.json"
  # (`fedtune-site run` receives too with [scp] enabled = true; here the images come first.)
done

say "Coordinator on 127.0.0.1 (mutual TLS), then the three site agents"
cat >coordinator.toml <<TOML
[coordinator]
listen = "127.0.0.1:0"
state_dir = "coordinator-state"
poll_timeout_s = 5
site_timeout_s = 60

[tls]
ca = "pki/ca.pem"
cert = "pki/coordinator/coordinator.pem"
key = "pki/coordinator/coordinator.key"
crl = "pki/crl.pem"

[sites]
enrolled = ["hospital-a", "hospital-b", "hospital-c"]

[log]
file = "coordinator.log"
TOML
"$coordinator_bin" serve --config coordinator.toml --port-file coordinator.port 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do [[ -s coordinator.port ]] && break; sleep 0.1; done
port=$(cat coordinator.port)
for s in "${sites[@]}"; do
  sed -i "s/127.0.0.1:PORT/127.0.0.1:$port/" "$s/site.toml"
  (cd "$s" && exec "$site_bin" run --config site.toml 2>/dev/null) &
  pids+=($!)
done
export FEDTUNE_COORDINATOR="127.0.0.1:$port" FEDTUNE_CA=pki/ca.pem FEDTUNE_CERT=pki/admin/operator.pem \
  FEDTUNE_KEY=pki/admin/operator.key
for _ in $(seq 100); do
  [[ $("$fedtune" --json sites | grep -c '"connected": true') == 3 ]] && break
  sleep 0.2
done
"$fedtune" sites

say "Submitting the job: LoRA r=16 on a ViT-Ti/16, 8 FedAvg rounds, local-only baselines"
cat >job.toml <<TOML
[job]
name = "demo: 4 chest findings, 3 hospitals"
rounds = 8
min_sites = 2
round_deadline_s = 300
baselines = true
seed = 7

[backbone]
architecture = "vit-tiny/16"
image_size = 96
sha256 = "$backbone_sha"

[model]
findings = ["Cardiomegaly", "Pleural effusion", "Nodule/Mass", "Pneumothorax"]
method = "lora"

[model.lora]
rank = 16
targets = ["query", "key", "value", "dense", "fc1", "fc2"]

[train]
local_epochs = 2
batch_size = 16
learning_rate = 0.003
TOML
job=$("$fedtune" job submit job.toml)
echo "job $job"

say "Live progress (round, site, epoch, loss, validation AUROC)"
"$fedtune" job watch "$job" || true
"$fedtune" job status "$job"

say "Report"
"$fedtune" report "$job" --out report
python3 - report/report.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
fed = r["test"]["federated"]
print(f"federated model: pooled test macro AUROC {fed['pooled']['macro_auroc']:.3f}, "
      f"mean over sites {fed['mean_site_macro_auroc']:.3f}")
c = r.get("cross_site", {})
m = c.get("mean")
if m:
    print(f"local-only models on their own site's test split: mean {m['local_only']:.3f} "
          f"(federated {m['federated']:.3f}, gain {m['gain']:+.3f}); on every site's test split: "
          f"local-only {c['local_only_all_sites_mean']:.3f}, federated {c['model_mean']['federated']:.3f}")
PY
echo
echo "Report:   $work/report/report.html (also report.json, metrics.csv$([[ -f report/report.pdf ]] && echo ', report.pdf'))"
echo "Logs:     $work/coordinator.log, $work/hospital-*/site.log"
echo "Finished in $(($(date +%s) - start)) s (after the build)."
