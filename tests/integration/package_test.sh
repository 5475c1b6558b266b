#!/usr/bin/env bash
# The .deb packages: made from this build with cpack, clean under lintian,
# then installed into a throwaway root with dpkg (maintainer scripts run
# there, DPKG_ROOT set), checked, removed and purged.
#   package_test.sh BUILD_DIR
# Exit 77 (skipped) says what is missing: cpack, dpkg-deb, lintian, or root
# (useradd --root and chown need it).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
build=$(realpath "$1")
for tool in cpack dpkg dpkg-deb lintian useradd; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool not installed (deploy/install-deps.sh installs lintian; dpkg and passwd are Debian's own)"
    exit 77
  fi
done
if [[ $(id -u) != 0 ]]; then
  echo "SKIP: installing into a throwaway root runs useradd --root and chown, which need root"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "FAIL: $*"
  exit 1
}

"$here/deploy/lib/make-packages.sh" "$build" "$tmp/out" >"$tmp/packages.txt" 2>"$tmp/lintian.txt" || {
  cat "$tmp/packages.txt" "$tmp/lintian.txt"
  fail "packaging or lintian failed"
}
grep -q "lintian: clean" "$tmp/lintian.txt" || fail "lintian did not run: $(cat "$tmp/lintian.txt")"
site=$(grep '/fedtune-site_' "$tmp/packages.txt")
coordinator=$(grep '/fedtune-coordinator_' "$tmp/packages.txt")

# What each package holds.
dpkg-deb -c "$site" | awk '{print $6}' >"$tmp/site.list"
for f in ./usr/bin/fedtune-site ./lib/systemd/system/fedtune-site.service ./etc/fedtune/site.toml \
    ./usr/share/doc/fedtune-site/copyright ./usr/share/doc/fedtune-site/changelog.gz; do
  grep -qx "$f" "$tmp/site.list" || fail "fedtune-site lacks $f"
done
! grep -q "fedtune-coordinator\|usr/local" "$tmp/site.list" || fail "fedtune-site holds coordinator or /usr/local files"
dpkg-deb -c "$coordinator" | awk '{print $6}' >"$tmp/coordinator.list"
for f in ./usr/bin/fedtune-coordinator ./usr/bin/fedtune ./usr/bin/fedtune-certs \
    ./lib/systemd/system/fedtune-coordinator.service ./etc/fedtune/coordinator.toml; do
  grep -qx "$f" "$tmp/coordinator.list" || fail "fedtune-coordinator lacks $f"
done
[[ $(dpkg-deb -f "$site" Depends) == *libtorch* ]] || fail "fedtune-site does not depend on LibTorch's package"
[[ $(dpkg-deb --ctrl-tarfile "$site" | tar -xO ./conffiles) == /etc/fedtune/site.toml ]] ||
  fail "site.toml is not a conffile"

# A throwaway root: dpkg's database and the account files useradd edits.
root="$tmp/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
for f in passwd group shadow gshadow login.defs; do
  if [[ -f /etc/$f ]]; then cp -p "/etc/$f" "$root/etc/$f"; fi
done
sed -i '/^fedtune:/d' "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow" 2>/dev/null || true
# A group of that name exists already (left by an earlier install, say): the user joins it.
echo "fedtune:x:4242:" >>"$root/etc/group"
if [[ -f "$root/etc/gshadow" ]]; then echo "fedtune:!::" >>"$root/etc/gshadow"; fi
dpkg_root() {
  dpkg --root="$root" --force-script-chrootless --force-depends --force-not-root --log=/dev/null "$@"
}
dpkg_root -i "$site" "$coordinator" >"$tmp/install.log" 2>&1 || {
  cat "$tmp/install.log"
  fail "dpkg -i into the throwaway root failed"
}
grep -q '^fedtune:x:[0-9]*:[0-9]*::/var/lib/fedtune:/usr/sbin/nologin$' "$root/etc/passwd" ||
  fail "no system user fedtune: $(grep fedtune "$root/etc/passwd" || true)"
uid=$(awk -F: '$1 == "fedtune" { print $3 }' "$root/etc/passwd")
[[ $(awk -F: '$1 == "fedtune" { print $4 }' "$root/etc/passwd") == 4242 ]] || fail "the user did not join the existing group"
[[ $(stat -c '%a %u' "$root/var/lib/fedtune") == "700 $uid" ]] ||
  fail "/var/lib/fedtune is $(stat -c '%a %u' "$root/var/lib/fedtune"), not 700 owned by fedtune ($uid)"
[[ $(stat -c '%a %U' "$root/etc/fedtune") == "750 root" ]] || fail "/etc/fedtune is $(stat -c '%a %U' "$root/etc/fedtune")"
grep -q '^ExecStart=/usr/bin/fedtune-site run --config /etc/fedtune/site.toml$' \
  "$root/lib/systemd/system/fedtune-site.service" || fail "the packaged unit does not run /usr/bin/fedtune-site"
"$root/usr/bin/fedtune-site" serve --help >/dev/null || fail "the installed fedtune-site does not run"
"$root/usr/bin/fedtune" --help >/dev/null || fail "the installed fedtune does not run"
"$root/usr/bin/fedtune-coordinator" serve --help >/dev/null || fail "the installed fedtune-coordinator does not run"
# Installed twice (an upgrade to the same version): the user is not added again.
dpkg_root -i "$site" >>"$tmp/install.log" 2>&1 || fail "reinstalling fedtune-site failed: $(cat "$tmp/install.log")"
[[ $(grep -c '^fedtune:' "$root/etc/passwd") == 1 ]] || fail "reinstalling added the user again"

# Removing keeps the site's data and its configuration; purging drops the configuration only.
echo "a site's data" >"$root/var/lib/fedtune/keep"
dpkg_root -r fedtune-site >"$tmp/remove.log" 2>&1 || fail "dpkg -r failed: $(cat "$tmp/remove.log")"
[[ ! -e "$root/usr/bin/fedtune-site" ]] || fail "fedtune-site still installed after removal"
[[ -f "$root/etc/fedtune/site.toml" && -f "$root/var/lib/fedtune/keep" ]] || fail "removal lost configuration or data"
dpkg_root -P fedtune-site >>"$tmp/remove.log" 2>&1 || fail "dpkg -P failed: $(cat "$tmp/remove.log")"
[[ ! -e "$root/etc/fedtune/site.toml" ]] || fail "purging kept site.toml"
[[ -f "$root/var/lib/fedtune/keep" ]] || fail "purging deleted the site's data"
echo "packages built, lintian-clean, installed, removed and purged: $(basename "$site"), $(basename "$coordinator")"
