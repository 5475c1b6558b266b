#!/usr/bin/env bash
# certs/fedtune-certs end to end, checked with openssl itself: a CA, the
# coordinator, a site and an admin verify; identities sit in CN/OU; keys are
# 0600; a revoked site fails CRL checking; an expired certificate fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
certs="$root/certs/fedtune-certs"
pki="$(mktemp -d)"
trap 'rm -rf "$pki"' EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }

"$certs" init-ca "$pki" >/dev/null
"$certs" coordinator "$pki" --san DNS:coord.hospital.test,IP:127.0.0.1 >/dev/null
"$certs" site "$pki" hospital-a >/dev/null
"$certs" site "$pki" hospital-b >/dev/null
"$certs" admin "$pki" alice >/dev/null
"$certs" site "$pki" hospital-old --enddate 20200102000000Z >/dev/null

for c in coordinator/coordinator site/hospital-a site/hospital-b admin/alice; do
  openssl verify -CAfile "$pki/ca.pem" -crl_check -CRLfile "$pki/crl.pem" "$pki/$c.pem" >/dev/null \
    || fail "$c does not verify"
  [[ "$(stat -c %a "$pki/$c.key")" == 600 ]] || fail "$c.key is not 0600"
done
openssl x509 -in "$pki/site/hospital-a.pem" -noout -subject | grep -q "OU = site, CN = hospital-a" || fail "site subject"
openssl x509 -in "$pki/admin/alice.pem" -noout -subject | grep -q "OU = admin, CN = alice" || fail "admin subject"
openssl x509 -in "$pki/coordinator/coordinator.pem" -noout -ext subjectAltName | grep -q "DNS:coord.hospital.test" \
  || fail "coordinator SAN"
openssl x509 -in "$pki/site/hospital-a.pem" -noout -ext extendedKeyUsage | grep -q "Client Authentication" \
  || fail "site certificates are for client authentication"
openssl x509 -in "$pki/coordinator/coordinator.pem" -noout -ext extendedKeyUsage | grep -q "Server Authentication" \
  || fail "the coordinator certificate is for server authentication"

# Expired.
if openssl verify -CAfile "$pki/ca.pem" "$pki/site/hospital-old.pem" >/dev/null 2>&1; then fail "expired verifies"; fi

# Revocation is one command; the CRL then rejects the certificate.
cp "$pki/site/hospital-b.pem" "$pki/hospital-b.copy.pem"
"$certs" revoke "$pki" site hospital-b >/dev/null
if openssl verify -CAfile "$pki/ca.pem" -crl_check -CRLfile "$pki/crl.pem" "$pki/hospital-b.copy.pem" >/dev/null 2>&1; then
  fail "revoked certificate still verifies against the CRL"
fi
openssl verify -CAfile "$pki/ca.pem" -crl_check -CRLfile "$pki/crl.pem" "$pki/site/hospital-a.pem" >/dev/null \
  || fail "revoking hospital-b affected hospital-a"

# Bad input is refused with a message and exit 1 / 2.
if "$certs" site "$pki" "../evil" 2>/dev/null; then fail "a path-like site id was accepted"; fi
set +e
"$certs" site "$pki" >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "missing site id is not a usage error"
set -e
echo "certs: every check passed"
