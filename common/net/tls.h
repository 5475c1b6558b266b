// Mutual TLS for every fedtune connection, and identity from the verified
// certificate. Torch-free; gRPC-facing.
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedtune::net {

// PEM files of one party (certs/fedtune-certs layout) and, for servers, a
// directory of CRLs named by subject hash (<hash>.r0; see PrepareCrlDirectory).
struct TlsFiles {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  std::string crl_dir;  // servers: empty = no revocation checking
};

// Server credentials that require a client certificate signed by the CA (and
// not revoked, with a CRL directory), TLS 1.2 or later. NOT_FOUND names a
// missing file; PERMISSION_DENIED a key file others can read (see
// CheckPrivateKeyFile); INVALID_ARGUMENT a key that is not the certificate's.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files);

// Client credentials presenting `cert_pem`/`key_pem` and trusting only the CA
// (the key checked as for servers).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeClientCredentials(const TlsFiles& files);

// INVALID_ARGUMENT unless `address` names a port: "host:port" or
// "[IPv6]:port" (gRPC would otherwise dial 443 without a word). Targets in
// gRPC's own URI syntax ("dns:///host:port", "unix:...") pass unchecked.
absl::Status CheckDialAddress(const std::string& address);

// Verifies `crl_pem` (see LoadCrl in pki.h: issuer, signature, not expired
// at `now_unix`) and writes it into `dir` under the name OpenSSL looks it up
// by (<issuer hash>.r0), for the TLS handshake's own revocation check.
absl::Status PrepareCrlDirectory(const std::string& ca_pem, const std::string& crl_pem, const std::string& dir,
                                 int64_t now_unix);
// Writes CRL bytes that were verified already into `dir` (as above).
absl::Status WriteCrlDirectory(const std::string& ca_pem, const std::string& crl_bytes, const std::string& dir);

// Who is calling, from the verified client certificate's subject.
struct PeerIdentity {
  std::string common_name;          // site id or operator name
  std::string organizational_unit;  // "site" or "admin"
  std::string serial_hex;           // the certificate's serial (CRL lookups)
  bool is_site() const { return organizational_unit == "site"; }
  bool is_admin() const { return organizational_unit == "admin"; }
};

// UNAUTHENTICATED when the call carries no verified certificate subject.
absl::StatusOr<PeerIdentity> PeerFromContext(const grpc::ServerContext& context);

// Parses an RFC 2253 subject ("CN=hospital-a,OU=site,O=fedtune"), honouring
// backslash escapes.
PeerIdentity ParseSubject(const std::string& subject);

// absl::Status codes are gRPC codes: the conversions keep code and message.
grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace fedtune::net
