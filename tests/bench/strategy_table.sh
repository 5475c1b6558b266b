#!/usr/bin/env bash
# The strategy and method tables of tests/bench/RESULTS.md, measured on the
# demo's real federation: the three synthetic hospitals of deploy/demo.sh,
# ingested and de-identified, a coordinator and three site agents on
# 127.0.0.1 with mutual TLS, one job after another. Each job is the demo's
# (ViT-Ti/16 pretrained on public synthetic images, 96 px, 8 rounds of 2
# local epochs) with one strategy or fine-tuning method changed, run with
# several seeds; the jobs of fedavg and of each method also train local-only
# baselines.
#
#   tests/bench/strategy_table.sh                     # every row, 3 seeds
#   tests/bench/strategy_table.sh --seeds 1 --rows fedavg,ffa-lora
#   tests/bench/strategy_table.sh --table-only        # rebuild the table from results.tsv
#   tests/bench/strategy_table.sh --rows adam-lr0.01 \
#     --row 'adam-lr0.01|fedadam|lora|0.003|false|[strategy];server_learning_rate = 0.01'
#                                                     # a row of your own (";" = new line of the job file)
#
# Output (default bench-strategies/ in the checkout): results.tsv (one line
# per job: row, seed, federated mean of the sites' test macro AUROC, pooled
# test macro AUROC, local-only models on their own site, seconds), table.md,
# and the reports. A job already in results.tsv is not run again, so an
# interrupted run continues where it stopped. Environment: FEDTUNE_BUILD_DIR
# (default build-release/, built here like the demo's).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$(realpath -m "${FEDTUNE_BUILD_DIR:-$root/build-release}")"
out="$root/bench-strategies"
seeds=3
rows=""
table_only=0
extra_rows=()
while (($#)); do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --table-only) table_only=1; shift ;;
    --row) extra_rows+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "strategy_table: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# row | strategy | method | learning rate | baselines | extra [strategy] lines
all_rows=(
  "fedavg|fedavg|lora|0.003|true|"
  "ffa-lora|ffa-lora|lora|0.003|false|"
  "lora-svd|lora-svd|lora|0.003|false|"
  "fedadam|fedadam|lora|0.003|false|"
  "fedyogi|fedyogi|lora|0.003|false|"
  "fedavgm|fedavgm|lora|0.003|false|"
  "trimmed-mean|trimmed-mean|lora|0.003|false|"
  "median|median|lora|0.003|false|"
  "bitfit|fedavg|bitfit|0.003|true|"
  "linear_probe|fedavg|linear_probe|0.01|true|"
  "full|fedavg|full|0.0003|true|"
)
all_rows+=("${extra_rows[@]}")

out="$(realpath -m "$out")"
mkdir -p "$out"
# One run per output folder: two would share the federation's state.
exec 9>"$out/.lock"
if ! flock -n 9; then
  echo "strategy_table: another run is using $out" >&2
  exit 1
fi
results="$out/results.tsv"
[[ -f "$results" ]] ||
  printf 'row\tseed\tfederated_mean_site\tfederated_pooled\tlocal_own_site\tseconds\tjob\tepsilon\n' >"$results"

make_table() {
  python3 - "$results" "$out/table.md" <<'PY'
import csv, statistics, sys
rows, order = {}, []
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    if r["row"] not in rows:
        order.append(r["row"])
    rows.setdefault(r["row"], {})[r["seed"]] = r
def values(rs, key):
    return {s: float(r[key]) for s, r in rs.items() if r[key] not in ("", "nan", "None")}
def fmt(v):
    v = list(v)
    if not v:
        return "-"
    if len(v) == 1:
        return "%.3f" % v[0]
    return "%.3f ± %.3f" % (statistics.mean(v), statistics.stdev(v))
ref = values(rows.get("fedavg", {}), "federated_mean_site")
# The epsilon column appears when a row ran with differential privacy.
with_eps = any(r.get("epsilon") for rs in rows.values() for r in rs.values())
out = ["| row | seeds | federated: mean of sites' test macro AUROC | difference from fedavg, same seeds | "
       "federated: pooled | local-only (own site) | minutes per job |" + (" epsilon (delta) |" if with_eps else ""),
       "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_eps else "")]
for name in order:
    rs = rows[name]
    fed = values(rs, "federated_mean_site")
    diffs = [fed[s] - ref[s] for s in fed if s in ref]
    if name == "fedavg" or not diffs:
        diff = "-"
    elif len(diffs) == 1:
        diff = "%+.3f" % diffs[0]
    else:
        diff = "%+.3f ± %.3f" % (statistics.mean(diffs), statistics.stdev(diffs))
    minutes = statistics.mean(float(r["seconds"]) for r in rs.values()) / 60
    eps = sorted({r.get("epsilon") or "-" for r in rs.values()})
    out.append("| %s | %d | %s | %s | %s | %s | %.1f |" % (
        name, len(rs), fmt(fed.values()), diff, fmt(values(rs, "federated_pooled").values()),
        fmt(values(rs, "local_own_site").values()), minutes) + (" %s |" % ", ".join(eps) if with_eps else ""))
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
}

if ((table_only)); then
  make_table
  exit 0
fi

# shellcheck source=deploy/lib/federation.sh
source "$root/deploy/lib/federation.sh"
federation_build "$build"
federation_stop_on_exit
fed="$out/federation"
mkdir -p "$fed"
cd "$fed"
if [[ ! -f ready ]]; then
  rm -rf "${fed:?}"/*
  echo "== setting up the demo's federation in $fed"
  federation_certificates
  federation_backbone >/dev/null
  federation_synthesize
  for s in "${federation_sites[@]}"; do
    printf '%s: ' "$s"
    federation_ingest "$s"
  done
  echo "$backbone_sha" >ready
fi
backbone_sha=$(cat ready)
federation_start

for spec in "${all_rows[@]}"; do
  IFS='|' read -r row strategy method lr baselines extra <<<"$spec"
  extra=${extra//;/$'\n'}
  if [[ -n "$rows" && ",$rows," != *",$row,"* ]]; then continue; fi
  for ((seed = 1; seed <= seeds; seed++)); do
    if awk -F'\t' -v r="$row" -v s="$seed" '$1 == r && $2 == s { found = 1 } END { exit !found }' "$results"; then
      continue
    fi
    cat >job.toml <<TOML
[job]
name = "bench $row seed $seed"
rounds = 8
min_sites = 3
round_deadline_s = 900
baselines = $baselines
seed = $seed
strategy = "$strategy"

[backbone]
architecture = "vit-tiny/16"
image_size = 96
sha256 = "$backbone_sha"

[model]
findings = $federation_findings
method = "$method"

[model.lora]
rank = 16
targets = ["query", "key", "value", "dense", "fc1", "fc2"]

[train]
local_epochs = 2
batch_size = 16
learning_rate = $lr
$extra
TOML
    start=$(date +%s)
    job=$("$fedtune" job submit job.toml)
    "$fedtune" job watch "$job" >"watch-$row-$seed.log" 2>&1 || true
    seconds=$(($(date +%s) - start))
    "$fedtune" report "$job" --out "report-$row-$seed" --no-pdf >/dev/null
    python3 - "report-$row-$seed/report.json" "$row" "$seed" "$seconds" "$job" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["job"]["state"] != "succeeded":
    sys.exit("job %s of row %s did not succeed: %s" % (sys.argv[5], sys.argv[2], r["job"]["reason"]))
fed = r["test"]["federated"]
mean = r.get("cross_site", {}).get("mean", {})
def num(v):
    return "" if v is None else "%.6f" % v
dp = (r.get("protection") or {}).get("differential_privacy")
eps = "%.3g (%g)" % (dp["epsilon"], dp["delta"]) if dp else ""
print("\t".join([sys.argv[2], sys.argv[3], num(fed.get("mean_site_macro_auroc")),
                 num(fed["pooled"].get("macro_auroc")), num(mean.get("local_only")), sys.argv[4], sys.argv[5],
                 eps]))
PY
    tail -1 "$results"
  done
done
make_table
