// The federation's certificate files checked before any connection is made:
// private keys readable by their owner only, certificates that match their
// keys, identities read from certificates, and a certificate revocation list
// that is parsed and verified, never copied blindly. Torch-free, gRPC-free
// (OpenSSL only), so every program and test can use it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedtune::net {

// PERMISSION_DENIED unless `path` is a regular file that only its owner can
// read or write (mode 0600 or 0400): the sentence says which chmod fixes it.
absl::Status CheckPrivateKeyFile(const std::string& path);

struct CertificateInfo {
  std::string common_name;
  std::string organizational_unit;
  std::string serial_hex;   // upper-case hexadecimal, as OpenSSL's BN_bn2hex prints it
  int64_t not_after_unix = 0;
};

// Reads one PEM certificate. INVALID_ARGUMENT when the file is not one.
absl::StatusOr<CertificateInfo> ReadCertificate(const std::string& pem_path);
absl::StatusOr<CertificateInfo> ParseCertificatePem(const std::string& pem);

// INVALID_ARGUMENT when the private key in `key_path` is not the key of the
// certificate in `cert_path` (a swapped pair), or either file is unreadable.
absl::Status CheckKeyMatchesCertificate(const std::string& cert_path, const std::string& key_path);

// A verified certificate revocation list.
struct Crl {
  std::set<std::string> revoked_serials;  // as CertificateInfo::serial_hex
  int64_t last_update_unix = 0;
  int64_t next_update_unix = 0;
  std::string pem;  // the file as read, for gRPC's CRL directory
};

// Parses `crl_path` (PEM) and checks it: issued by the CA in `ca_path` (issuer
// name and signature), with a nextUpdate after `now_unix`. FAILED_PRECONDITION
// for an expired CRL (the sentence says how to issue a fresh one),
// INVALID_ARGUMENT for anything else wrong.
absl::StatusOr<Crl> LoadCrl(const std::string& ca_path, const std::string& crl_path, int64_t now_unix);

// The coordinator's revocation state while it runs: the CRL loaded at start,
// reloaded when the file changes (a new file that does not verify is refused
// and the previous one stays in force), and consulted on every call, so a
// certificate revoked while its connection is open is refused from the next
// call on. Thread-safe.
class RevocationList {
 public:
  // Loads and verifies the CRL; `crl_path` empty means revocation is off
  // (the operator wrote crl = "none").
  static absl::StatusOr<std::unique_ptr<RevocationList>> Open(const std::string& ca_path,
                                                              const std::string& crl_path, int64_t now_unix);

  // Re-reads the file when its modification time or size changed. Returns
  // true when a new CRL took effect; an error (the old CRL stays) when the
  // changed file does not verify, reported once per change of the file.
  absl::StatusOr<bool> ReloadIfChanged(int64_t now_unix);

  bool IsRevoked(const std::string& serial_hex) const;
  bool enabled() const { return !crl_path_.empty(); }
  int64_t next_update_unix() const;
  std::string pem() const;

 private:
  RevocationList(std::string ca_path, std::string crl_path) : ca_path_(std::move(ca_path)), crl_path_(std::move(crl_path)) {}
  const std::string ca_path_;
  const std::string crl_path_;
  mutable std::mutex mu_;
  Crl crl_;
  int64_t mtime_ns_ = 0;
  int64_t size_ = -1;
  int64_t rejected_mtime_ns_ = 0;  // a changed file that did not verify (reported once)
  int64_t rejected_size_ = -1;
};

}  // namespace fedtune::net
