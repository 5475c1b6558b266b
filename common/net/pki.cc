#include "common/net/pki.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/file_io.h"
#include "common/core/status.h"

namespace fedtune::net {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct CrlFree {
  void operator()(X509_CRL* c) const { X509_CRL_free(c); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using CrlPtr = std::unique_ptr<X509_CRL, CrlFree>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

Bio MemoryBio(const std::string& bytes) { return Bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()))); }

std::string SerialHex(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

// Seconds since the epoch, or 0 when the time cannot be read.
int64_t UnixTime(const ASN1_TIME* t) {
  if (t == nullptr) return 0;
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string NameEntry(X509_NAME* name, int nid) {
  char buf[256];
  const int n = X509_NAME_get_text_by_NID(name, nid, buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

std::string Date(int64_t unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

absl::StatusOr<X509Ptr> ReadX509(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadFileBytes(path));
  Bio bio = MemoryBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return absl::InvalidArgumentError(absl::StrCat(path, " is not a PEM certificate"));
  return cert;
}

absl::StatusOr<CertificateInfo> Info(X509* cert) {
  CertificateInfo info;
  X509_NAME* subject = X509_get_subject_name(cert);
  info.common_name = NameEntry(subject, NID_commonName);
  info.organizational_unit = NameEntry(subject, NID_organizationalUnitName);
  info.serial_hex = SerialHex(X509_get0_serialNumber(cert));
  info.not_after_unix = UnixTime(X509_get0_notAfter(cert));
  return info;
}

}  // namespace

absl::Status CheckPrivateKeyFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("private key ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat("private key ", path, " is not a file"));
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "private key %s has mode %04o: other users on this host can read it; run `chmod 600 %s` (and keep its "
        "owner the account the service runs as)",
        path, st.st_mode & 07777, path));
  }
  return absl::OkStatus();
}

absl::StatusOr<CertificateInfo> ParseCertificatePem(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return absl::InvalidArgumentError("not a PEM certificate");
  return Info(cert.get());
}

absl::StatusOr<CertificateInfo> ReadCertificate(const std::string& pem_path) {
  ASSIGN_OR_RETURN(X509Ptr cert, ReadX509(pem_path));
  return Info(cert.get());
}

absl::Status CheckKeyMatchesCertificate(const std::string& cert_path, const std::string& key_path) {
  ASSIGN_OR_RETURN(X509Ptr cert, ReadX509(cert_path));
  ASSIGN_OR_RETURN(std::string key_pem, ReadFileBytes(key_path));
  Bio bio = MemoryBio(key_pem);
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return absl::InvalidArgumentError(absl::StrCat(key_path, " is not a PEM private key"));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the private key ", key_path, " does not belong to the certificate ",
                                                   cert_path, " (swapped or reissued files?)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Crl> LoadCrl(const std::string& ca_path, const std::string& crl_path, int64_t now_unix) {
  ASSIGN_OR_RETURN(X509Ptr ca, ReadX509(ca_path));
  Crl out;
  ASSIGN_OR_RETURN(out.pem, ReadFileBytes(crl_path));
  Bio bio = MemoryBio(out.pem);
  CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  if (!crl) {
    return absl::InvalidArgumentError(
        absl::StrCat(crl_path, " is not a PEM certificate revocation list (expected the crl.pem that "
                               "`fedtune-certs crl` writes)"));
  }
  if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(ca.get())) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(crl_path, " was not issued by the federation CA ", ca_path, " (another PKI's CRL?)"));
  }
  EVP_PKEY* ca_key = X509_get0_pubkey(ca.get());
  if (ca_key == nullptr || X509_CRL_verify(crl.get(), ca_key) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(crl_path, ": the signature does not verify with the federation CA's key (damaged or forged)"));
  }
  out.last_update_unix = UnixTime(X509_CRL_get0_lastUpdate(crl.get()));
  out.next_update_unix = UnixTime(X509_CRL_get0_nextUpdate(crl.get()));
  if (out.next_update_unix == 0) {
    return absl::InvalidArgumentError(absl::StrCat(crl_path, " has no nextUpdate date"));
  }
  if (out.next_update_unix <= now_unix) {
    return absl::FailedPreconditionError(absl::StrCat(
        crl_path, " expired on ", Date(out.next_update_unix),
        ": every TLS handshake would fail. Issue a fresh one with `fedtune-certs crl PKI` (run it from cron) and "
        "copy it here"));
  }
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; revoked != nullptr && i < sk_X509_REVOKED_num(revoked); ++i) {
    out.revoked_serials.insert(SerialHex(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i))));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<RevocationList>> RevocationList::Open(const std::string& ca_path,
                                                                     const std::string& crl_path, int64_t now_unix) {
  std::unique_ptr<RevocationList> list(new RevocationList(ca_path, crl_path));
  if (crl_path.empty()) return list;
  ASSIGN_OR_RETURN(bool loaded, list->ReloadIfChanged(now_unix));
  (void)loaded;
  return list;
}

absl::StatusOr<bool> RevocationList::ReloadIfChanged(int64_t now_unix) {
  if (crl_path_.empty()) return false;
  struct stat st {};
  if (::stat(crl_path_.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("CRL ", crl_path_, ": ", std::strerror(errno)));
  }
  const int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  {
    std::lock_guard lock(mu_);
    if (mtime_ns == mtime_ns_ && st.st_size == size_) return false;
    if (mtime_ns == rejected_mtime_ns_ && st.st_size == rejected_size_) return false;  // reported once
  }
  absl::StatusOr<Crl> loaded = LoadCrl(ca_path_, crl_path_, now_unix);
  std::lock_guard lock(mu_);
  if (!loaded.ok()) {
    rejected_mtime_ns_ = mtime_ns;
    rejected_size_ = st.st_size;
    return loaded.status();
  }
  Crl crl = *std::move(loaded);
  crl_ = std::move(crl);
  mtime_ns_ = mtime_ns;
  size_ = st.st_size;
  return true;
}

bool RevocationList::IsRevoked(const std::string& serial_hex) const {
  std::lock_guard lock(mu_);
  return crl_.revoked_serials.count(serial_hex) > 0;
}

int64_t RevocationList::next_update_unix() const {
  std::lock_guard lock(mu_);
  return crl_.next_update_unix;
}

std::string RevocationList::pem() const {
  std::lock_guard lock(mu_);
  return crl_.pem;
}

}  // namespace fedtune::net
