#!/usr/bin/env bash
# The systemd units in deploy/systemd pass `systemd-analyze verify` with their
# ExecStart pointed at the programs just built.
#   systemd_units_test.sh SITE_BIN COORDINATOR_BIN
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/fedtune-site|$1|" "$here/deploy/systemd/fedtune-site.service" >"$tmp/fedtune-site.service"
sed "s|/usr/local/bin/fedtune-coordinator|$2|" "$here/deploy/systemd/fedtune-coordinator.service" \
  >"$tmp/fedtune-coordinator.service"
out=$(cd "$tmp" && systemd-analyze verify --man=no fedtune-site.service fedtune-coordinator.service 2>&1) || {
  echo "$out"
  exit 1
}
if [ -n "$out" ]; then
  echo "systemd-analyze verify reported:"
  echo "$out"
  exit 1
fi
# The commands they run exist and accept their arguments.
"$1" run --help >/dev/null
"$2" serve --help >/dev/null
echo "units verified"
