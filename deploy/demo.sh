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
build="$(realpath -m "${FEDTUNE_BUILD_DIR:-$root/build-release}")"
work="$(realpath -m "${FEDTUNE_DEMO_DIR:-$root/demo-workspace}")"
# shellcheck source=deploy/lib/federation.sh
source "$root/deploy/lib/federation.sh"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ "${FEDTUNE_SKIP_DEPS:-0}" != 1 ]]; then
  say "Installing what is missing"
  "$root/deploy/install-deps.sh"
fi

say "Building (Release)"
federation_build "$build"
federation_stop_on_exit "interrupted: stopping every process this demo started"

start=$(date +%s)
rm -rf "$work"
mkdir -p "$work"
cd "$work"

say "Certificates: federation CA, coordinator, three sites, one operator (pki/)"
federation_certificates

say "A foundation model to start from: a ViT-Ti/16 pretrained on public synthetic chest images"
federation_backbone
echo "every site holds backbone.safetensors, SHA-256 $backbone_sha"

say "Three hospitals: different scanners, sizes and prevalence (hospital-c has few positives)"
# hospital-a and hospital-b ingest a PACS export folder; hospital-c's PACS sends
# its images over DICOM (C-STORE, DCMTK's storescu) to the site agent's receiver,
# which ingests each file as it arrives, labels coming from a RIS export keyed
# by SOPInstanceUID.
federation_synthesize
for s in hospital-a hospital-b; do
  printf '%s: ' "$s"
  federation_ingest "$s"
done
s=hospital-c
printf '%s: ' "$s"
# The receiver: CR/DX only, from the AE title HOSPC_PACS only, on 127.0.0.1.
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

# hospital-a also serves the federation's model to its own clients, once one is promoted.
cat >>hospital-a/site.toml <<'TOML'

[inference]
enabled = true
http_listen = "127.0.0.1:0"               # REST (Open Inference Protocol v2, /v1/predict); 8000 in production
grpc_listen = "127.0.0.1:0"               # gRPC (inference.GRPCInferenceService, fedtune.v1.Inference); 8001
model_name = "chest-findings"
TOML

say "Coordinator on 127.0.0.1 (mutual TLS), then the three site agents"
federation_start
"$fedtune" sites
echo "Dashboard while it runs: $federation_dashboard (live rounds x sites, validation AUROC, events)"
echo "Prometheus metrics while it runs: curl $federation_metrics"

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

say "Promoting the model with the best pooled validation AUROC; the sites fetch and serve it"
"$fedtune" model promote "$job" --best
for _ in $(seq 100); do
  [[ $(grep -l "serving job $job" hospital-*/site.log 2>/dev/null | wc -l) == 3 ]] && break
  sleep 0.2
done
grep -h "serving job $job" hospital-*/site.log | sed 's/^.*\] //'
for _ in $(seq 100); do grep -q "inference: answering with job $job" hospital-a/site.log && break; sleep 0.2; done

say "hospital-a's clients ask the promoted model (nothing leaves hospital-a)"
rest="http://127.0.0.1:$(cat hospital-a/inference-http.port)"
images=(hospital-a/pacs/*.dcm)
image=${images[0]}
echo "DICOM in, findings out: curl -H 'Content-Type: application/dicom' --data-binary @$image $rest/v1/predict"
curl -s -H 'Content-Type: application/dicom' --data-binary @"$image" "$rest/v1/predict" >predict.json
python3 - predict.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"model {r['job_id']} version {r['model_version']} (SHA-256 {r['model_sha256'][:16]}):")
for f in r["findings"]:
    verdict = "positive" if f["positive"] else "negative"
    print(f"  {f['finding']:<18} {f['probability']:.3f}  {verdict} at threshold {f['threshold']:.3f}")
PY
echo "The same radiograph through the Open Inference Protocol v2 over gRPC (deploy/lib/oip_predict.py):"
"${FEDTUNE_PYTHON3:-/usr/bin/python3}" "$root/deploy/lib/oip_predict.py" "127.0.0.1:$(cat hospital-a/inference-grpc.port)" chest-findings "$image" \
  "$work/oip-client"
curl -s "$federation_metrics" | grep -E '^fedtune_coordinator_(rounds_total|updates_accepted_total|jobs\{state="succeeded"\})' || true
curl -s "$rest/metrics" | grep -E '^fedtune_site_inference_requests_total' || true
echo
echo "Report:   $work/report/report.html (also report.json, metrics.csv$([[ -f report/report.pdf ]] && echo ', report.pdf'))"
echo "Logs:     $work/coordinator.log, $work/hospital-*/site.log"
echo "Finished in $(($(date +%s) - start)) s (after the build)."
