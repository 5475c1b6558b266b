# The demo's local federation, as functions: three synthetic hospitals that
# differ the way real ones do, their certificates, a small pretrained
# backbone, a coordinator and three site agents on 127.0.0.1 with mutual TLS.
# Sourced by deploy/demo.sh and tests/bench/strategy_table.sh (bash).
#
# The caller sets `root` (the checkout), calls federation_build and
# federation_stop_on_exit, and runs the other functions in its working
# directory (the federation's folder).

federation_sites=(hospital-a hospital-b hospital-c)

# Builds the three programs (Release) in BUILD_DIR and sets fedtune, site_bin
# and coordinator_bin.
federation_build() {
  local build=$1
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEDTUNE_BUILD_TESTS=OFF \
    -DFEDTUNE_BUILD_BENCH=OFF >/dev/null
  cmake --build "$build" --parallel "$(nproc)" --target fedtune fedtune-site fedtune-coordinator
  fedtune="$build/coordinator/fedtune"
  site_bin="$build/site-agent/fedtune-site"
  coordinator_bin="$build/coordinator/fedtune-coordinator"
}

# Every process started into `pids` is stopped when the caller exits, also on
# Ctrl-C (after printing MESSAGE, if given).
pids=()
federation_cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  exit "$code"
}
federation_stop_on_exit() {
  local message=${1:-}
  trap federation_cleanup EXIT
  # shellcheck disable=SC2064  # the message is fixed now
  trap "${message:+echo; echo '$message'; }exit 130" INT TERM
}
federation_findings='["Cardiomegaly", "Pleural effusion", "Nodule/Mass", "Pneumothorax"]'

# pki/: federation CA, coordinator, the three sites and one operator.
federation_certificates() {
  local certs="$root/certs/fedtune-certs"
  {
    "$certs" init-ca pki
    "$certs" coordinator pki
    for s in "${federation_sites[@]}"; do "$certs" site pki "$s"; done
    "$certs" admin pki operator
  } >/dev/null
}

# backbone.safetensors: a ViT-Ti/16 pretrained on public synthetic chest
# images (a hospital federation would start from RAD-DINO; the demo makes its
# own small stand-in, the way such models are made: on public data, outside
# the federation). Sets backbone_sha.
federation_backbone() {
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
[deid]
burned_in = "off"                          # public images, printed with nothing: no text to look for
[labels]
findings = $federation_findings
TOML
  "$site_bin" ingest --config public/site.toml --source public/pacs --labels public/labels.csv >/dev/null
  "$site_bin" backbone pretrain --workspace public/workspace --arch vit-tiny/16 --image-size 96 --epochs 15 \
    --learning-rate 0.0005 --seed 11 --findings "Cardiomegaly,Pleural effusion,Nodule/Mass,Pneumothorax" \
    --out backbone.safetensors | tee public/pretrain.log
  backbone_sha=$(tail -1 public/pretrain.log | cut -c1-64)
}

# The three hospitals' PACS exports (synthetic, with planted PHI in the
# headers, and in 3 % of the images a name, date or record number printed
# into the pixels, which ingest quarantines as burned_in_text; every image
# carries a laterality marker, which it lets pass) and
# site.toml files. site  style  patients  seed  prevalence (Cardiomegaly,
# Pleural effusion, Nodule/Mass, Pneumothorax); hospital-c's labels come from
# a RIS export keyed by SOPInstanceUID (its PACS sends over DICOM in the demo).
federation_hospitals=(
  "hospital-a plain 150 1 0.30,0.25,0.20,0.15"
  "hospital-b mono1-rle 90 2 0.40,0.35,0.25,0.20"
  "hospital-c cr 35 3 0.10,0.08,0.08,0.06"
)
federation_synthesize() {
  local h s style patients seed prevalence label_key
  for h in "${federation_hospitals[@]}"; do
    read -r s style patients seed prevalence <<<"$h"
    mkdir -p "$s"
    label_key=file_stem
    [[ "$s" == hospital-c ]] && label_key=sop_instance_uid
    "$site_bin" synth --out "$s/pacs" --site "$s" --patients "$patients" --size 256 --style "$style" \
      --seed "$seed" --prevalence "$prevalence" --label-key "$label_key" --markers --burned-in-fraction 0.03 \
      >/dev/null
    rm -f "$s/pacs/burned_in.csv"   # where the synthetic text lies: for tests, not part of a PACS export
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
findings = $federation_findings

[stats]
k = 3
share_local_model = true                  # the demo's hospitals agree to the full cross-site matrix

[coordinator]
address = "127.0.0.1:7443"                # the coordinator's real port replaces 7443 when it starts

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
    if [[ "$s" == hospital-c ]]; then
      sed -i 's/^findings = /key = "sop_instance_uid"\nkey_column = "sop_instance_uid"\nfindings = /' "$s/site.toml"
    fi
  done
}

# Ingests a hospital's export folder; prints one line.
federation_ingest() {
  local s=$1
  "$site_bin" ingest --config "$s/site.toml" --source "$s/pacs" --labels "$s/labels.csv" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); q=r["quarantine_reasons"]; print(r["ingested"], "images ingested and de-identified,", r["quarantined"], "quarantined" + (" (" + ", ".join(f"{n} {k}" for k, n in sorted(q.items())) + ")" if q else ""))'
}

# coordinator.toml, the coordinator, then the three site agents; waits until
# all three are connected. Exports FEDTUNE_* for the operator's `fedtune`;
# federation_metrics is the coordinator's /metrics address.
federation_start() {
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

[admins]
operators = ["operator"]

[log]
file = "coordinator.log"

[http]
listen = "127.0.0.1:0"

[dashboard]
enabled = true
TOML
  rm -f coordinator.port coordinator-http.port
  "$coordinator_bin" serve --config coordinator.toml --port-file coordinator.port \
    --http-port-file coordinator-http.port 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do [[ -s coordinator.port ]] && break; sleep 0.1; done
  local port s
  port=$(cat coordinator.port)
  for s in "${federation_sites[@]}"; do
    sed -i "s/^address = \"127.0.0.1:[0-9A-Z]*\"/address = \"127.0.0.1:$port\"/" "$s/site.toml"
    rm -f "$s/inference-http.port" "$s/inference-grpc.port"
    (cd "$s" && exec "$site_bin" run --config site.toml --inference-http-port-file inference-http.port \
      --inference-grpc-port-file inference-grpc.port 2>/dev/null) &
    pids+=($!)
  done
  federation_metrics="http://127.0.0.1:$(cat coordinator-http.port 2>/dev/null)/metrics"
  federation_dashboard="http://127.0.0.1:$(cat coordinator-http.port 2>/dev/null)/"
  export FEDTUNE_COORDINATOR="127.0.0.1:$port" FEDTUNE_CA=pki/ca.pem FEDTUNE_CERT=pki/admin/operator.pem \
    FEDTUNE_KEY=pki/admin/operator.key
  for _ in $(seq 100); do
    [[ $("$fedtune" --json sites | grep -c '"connected": true') == 3 ]] && break
    sleep 0.2
  done
}
