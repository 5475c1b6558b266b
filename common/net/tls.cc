#include "common/net/tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/status.h"
#include "common/net/pki.h"

namespace fedtune::net {
namespace {

absl::StatusOr<std::string> Read(const std::string& path, std::string_view what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat("no ", Sv(what), " file configured"));
  auto s = ReadFileBytes(path);
  if (!s.ok()) return Annotate(s.status(), what);
  return s;
}

// A private key must be the owner's alone and must belong to its
// certificate; both are one clear line at start instead of a handshake that
// fails (and is retried) forever.
absl::Status CheckIdentity(const TlsFiles& f) {
  RETURN_IF_ERROR(CheckPrivateKeyFile(f.key_pem));
  return CheckKeyMatchesCertificate(f.cert_pem, f.key_pem);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& f) {
  ASSIGN_OR_RETURN(std::string ca, Read(f.ca_pem, "CA certificate"));
  ASSIGN_OR_RETURN(std::string cert, Read(f.cert_pem, "server certificate"));
  ASSIGN_OR_RETURN(std::string key, Read(f.key_pem, "server key"));
  RETURN_IF_ERROR(CheckIdentity(f));
  auto provider = std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
      ca, std::vector<grpc::experimental::IdentityKeyCertPair>{{key, cert}});
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  // TLS 1.2 is gRPC's minimum protocol version; nothing older is offered.
  if (!f.crl_dir.empty()) {
    if (!std::filesystem::is_directory(f.crl_dir)) {
      return absl::NotFoundError(absl::StrCat("CRL directory ", f.crl_dir, " does not exist"));
    }
    options.set_crl_directory(f.crl_dir);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeClientCredentials(const TlsFiles& f) {
  grpc::SslCredentialsOptions o;
  ASSIGN_OR_RETURN(o.pem_root_certs, Read(f.ca_pem, "CA certificate"));
  if (!f.cert_pem.empty() || !f.key_pem.empty()) {
    ASSIGN_OR_RETURN(o.pem_cert_chain, Read(f.cert_pem, "client certificate"));
    ASSIGN_OR_RETURN(o.pem_private_key, Read(f.key_pem, "client key"));
    RETURN_IF_ERROR(CheckIdentity(f));
  }
  return grpc::SslCredentials(o);
}

absl::Status PrepareCrlDirectory(const std::string& ca_pem, const std::string& crl_pem, const std::string& dir,
                                 int64_t now_unix) {
  ASSIGN_OR_RETURN(Crl crl, LoadCrl(ca_pem, crl_pem, now_unix));
  return WriteCrlDirectory(ca_pem, crl.pem, dir);
}

absl::Status WriteCrlDirectory(const std::string& ca_pem, const std::string& crl_bytes, const std::string& dir) {
  std::FILE* fp = std::fopen(ca_pem.c_str(), "r");
  if (fp == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", ca_pem));
  X509* ca = PEM_read_X509(fp, nullptr, nullptr, nullptr);
  std::fclose(fp);
  if (ca == nullptr) return absl::InvalidArgumentError(absl::StrCat(ca_pem, " is not a PEM certificate"));
  char name[16];
  std::snprintf(name, sizeof name, "%08lx.r0", X509_NAME_hash_ex(X509_get_subject_name(ca), nullptr, nullptr, nullptr));
  X509_free(ca);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  return WriteFileAtomically(dir + "/" + name, crl_bytes);
}

PeerIdentity ParseSubject(const std::string& subject) {
  PeerIdentity id;
  std::string key, value;
  bool in_value = false;
  auto flush = [&] {
    if (key == "CN") id.common_name = value;
    if (key == "OU") id.organizational_unit = value;
    key.clear();
    value.clear();
    in_value = false;
  };
  for (size_t i = 0; i < subject.size(); ++i) {
    const char c = subject[i];
    if (c == '\\' && i + 1 < subject.size()) {
      (in_value ? value : key).push_back(subject[++i]);
    } else if (c == '=' && !in_value) {
      in_value = true;
    } else if (c == ',' || c == '+') {
      flush();
    } else if (!(c == ' ' && !in_value && key.empty())) {
      (in_value ? value : key).push_back(c);
    }
  }
  flush();
  return id;
}

absl::Status CheckDialAddress(const std::string& address) {
  if (address.find("://") != std::string::npos || address.rfind("unix:", 0) == 0) return absl::OkStatus();
  size_t colon = std::string::npos;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close != std::string::npos && close + 1 < address.size() && address[close + 1] == ':') colon = close + 1;
  } else if (address.find(':') == address.rfind(':')) {
    colon = address.find(':');
  }
  const std::string port = colon == std::string::npos ? "" : address.substr(colon + 1);
  int number = 0;
  const bool ok = colon != std::string::npos && colon > 0 && !port.empty() && port.size() <= 5 &&
                  port.find_first_not_of("0123456789") == std::string::npos &&
                  (number = std::stoi(port)) >= 1 && number <= 65535;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "coordinator address \"", address, "\" has no port: write host:port, e.g. \"", address.empty() ? "localhost" : address,
      ":7443\" (the port of the coordinator's [coordinator] listen); an IPv6 address goes in brackets: \"[::1]:7443\""));
}

absl::StatusOr<PeerIdentity> PeerFromContext(const grpc::ServerContext& context) {
  auto auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return absl::UnauthenticatedError("the caller presented no verified certificate");
  }
  auto subjects = auth->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME);
  if (subjects.empty()) return absl::UnauthenticatedError("the caller's certificate has no subject");
  PeerIdentity id = ParseSubject(std::string(subjects.front().data(), subjects.front().size()));
  if (id.common_name.empty()) return absl::UnauthenticatedError("the caller's certificate has no CN");
  auto pems = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (!pems.empty()) {
    auto info = ParseCertificatePem(std::string(pems.front().data(), pems.front().size()));
    if (info.ok()) id.serial_hex = info->serial_hex;
  }
  if (id.serial_hex.empty()) return absl::UnauthenticatedError("the caller's certificate has no readable serial");
  return id;
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace fedtune::net
