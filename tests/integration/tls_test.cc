// Mutual TLS with certificates made by certs/fedtune-certs, on a real gRPC
// server on 127.0.0.1: who gets in, who is refused, and that the handler sees
// the caller's identity from its certificate.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "common/net/pki.h"
#include "common/net/tls.h"
#include "fedtune/v1/federation.grpc.pb.h"

namespace fedtune::net {
namespace {

namespace fs = std::filesystem;

// A Federation service whose Join answers with the caller's certificate CN
// and refuses certificates that are not sites.
class EchoIdentity final : public v1::Federation::Service {
  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest*, v1::JoinResponse* resp) override {
    auto peer = PeerFromContext(*ctx);
    if (!peer.ok()) return ToGrpc(peer.status());
    if (!peer->is_site()) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "not a site certificate");
    resp->set_site_id(peer->common_name);
    return grpc::Status::OK;
  }
};

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // ctest runs each test in its own process, several at once: one PKI each.
    const std::string base = ::testing::TempDir() + "/tls_" + std::to_string(getpid());
    pki_ = base + "/pki";
    fs::remove_all(base);
    const std::string certs = std::string(FEDTUNE_SOURCE_DIR) + "/certs/fedtune-certs";
    const std::string other = base + "/other_pki";
    const std::string script = certs + " init-ca " + pki_ + " && " + certs + " coordinator " + pki_ + " && " + certs +
                               " site " + pki_ + " hospital-a && " + certs + " site " + pki_ + " hospital-b && " +
                               certs + " admin " + pki_ + " alice && " + certs + " site " + pki_ +
                               " hospital-old --enddate 20200102000000Z && " + certs + " revoke " + pki_ +
                               " site hospital-b && " + certs + " init-ca " + other + " && " + certs + " site " +
                               other + " intruder";
    ok_ = std::system(("(" + script + ") >/dev/null 2>&1").c_str()) == 0;
    other_ = other;
  }

  static void TearDownTestSuite() { fs::remove_all(fs::path(pki_).parent_path()); }

  void SetUp() override {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl is not installed";
    ASSERT_TRUE(ok_) << "certs/fedtune-certs failed";
    ASSERT_TRUE(PrepareCrlDirectory(pki_ + "/ca.pem", pki_ + "/crl.pem", pki_ + "/crl.d", time(nullptr)).ok());
    auto creds = MakeServerCredentials({pki_ + "/ca.pem", pki_ + "/coordinator/coordinator.pem",
                                        pki_ + "/coordinator/coordinator.key", pki_ + "/crl.d"});
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // Joins with the given client files; returns the call's status and site id.
  grpc::Status Join(const TlsFiles& files, std::string* site_id = nullptr) {
    auto creds = MakeClientCredentials(files);
    EXPECT_TRUE(creds.ok()) << creds.status();
    auto stub = v1::Federation::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), *creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::JoinResponse resp;
    grpc::Status s = stub->Join(&ctx, v1::JoinRequest(), &resp);
    if (site_id) *site_id = resp.site_id();
    return s;
  }

  TlsFiles Client(const std::string& kind, const std::string& name, const std::string& pki = "") {
    const std::string dir = pki.empty() ? pki_ : pki;
    return {pki_ + "/ca.pem", dir + "/" + kind + "/" + name + ".pem", dir + "/" + kind + "/" + name + ".key", ""};
  }

  static inline std::string pki_, other_;
  static inline bool ok_ = false;
  EchoIdentity service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(Tls, EnrolledSiteIsIdentifiedByItsCertificate) {
  std::string site;
  grpc::Status s = Join(Client("site", "hospital-a"), &site);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(site, "hospital-a");
}

TEST_F(Tls, NoClientCertificateIsRefused) {
  EXPECT_EQ(Join({pki_ + "/ca.pem", "", "", ""}).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Tls, CertificateFromAnotherCaIsRefused) {
  EXPECT_EQ(Join(Client("site", "intruder", other_)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Tls, ExpiredCertificateIsRefused) {
  EXPECT_EQ(Join(Client("site", "hospital-old")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Tls, RevokedCertificateIsRefused) {
  TlsFiles revoked = Client("site", "hospital-b");
  revoked.cert_pem += ".revoked";
  revoked.key_pem += ".revoked";
  EXPECT_EQ(Join(revoked).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// Control for the test above: without the CRL the same certificate gets in,
// so it is the revocation that refuses it.
TEST_F(Tls, RevokedCertificateGetsInWithoutTheCrl) {
  auto creds = MakeServerCredentials({pki_ + "/ca.pem", pki_ + "/coordinator/coordinator.pem",
                                      pki_ + "/coordinator/coordinator.key", ""});
  ASSERT_TRUE(creds.ok());
  EchoIdentity service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", *creds, &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  std::swap(port, port_);
  TlsFiles revoked = Client("site", "hospital-b");
  revoked.cert_pem += ".revoked";
  revoked.key_pem += ".revoked";
  std::string site;
  EXPECT_TRUE(Join(revoked, &site).ok());
  EXPECT_EQ(site, "hospital-b");
  std::swap(port, port_);
  server->Shutdown();
}

TEST_F(Tls, AdminCertificateIsNotASite) {
  EXPECT_EQ(Join(Client("admin", "alice")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

// Private keys: readable by their owner only, and belonging to their
// certificate; both checked before any connection.
TEST_F(Tls, KeysReadableByOthersOrSwappedAreRefusedAtStart) {
  const std::string key = pki_ + "/site/hospital-a.key";
  EXPECT_TRUE(CheckPrivateKeyFile(key).ok());
  const std::string loose = pki_ + "/loose.key";
  fs::copy_file(key, loose, fs::copy_options::overwrite_existing);
  fs::permissions(loose, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                             fs::perms::others_read,
                  fs::perm_options::replace);
  const absl::Status mode = CheckPrivateKeyFile(loose);
  EXPECT_EQ(mode.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(mode.message().find("chmod 600"), std::string::npos) << mode;
  TlsFiles files = Client("site", "hospital-a");
  files.key_pem = loose;
  EXPECT_EQ(MakeClientCredentials(files).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(MakeServerCredentials({pki_ + "/ca.pem", pki_ + "/coordinator/coordinator.pem", loose, ""}).status().code(),
            absl::StatusCode::kPermissionDenied);

  // A swapped pair: one line, not a retry loop.
  const absl::Status swapped = CheckKeyMatchesCertificate(pki_ + "/site/hospital-a.pem", pki_ + "/admin/alice.key");
  EXPECT_EQ(swapped.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(swapped.message().find("does not belong to the certificate"), std::string::npos) << swapped;
  files = Client("site", "hospital-a");
  files.key_pem = pki_ + "/admin/alice.key";
  EXPECT_EQ(MakeClientCredentials(files).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckKeyMatchesCertificate(pki_ + "/site/hospital-a.pem", key).ok());
}

TEST_F(Tls, CertificateIdentityIsRead) {
  auto info = ReadCertificate(pki_ + "/site/hospital-a.pem");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "hospital-a");
  EXPECT_EQ(info->organizational_unit, "site");
  EXPECT_FALSE(info->serial_hex.empty());
  EXPECT_GT(info->not_after_unix, time(nullptr));
  EXPECT_EQ(ReadCertificate(pki_ + "/crl.pem").status().code(), absl::StatusCode::kInvalidArgument);
}

// The CRL is verified, never taken on trust: another CA's, a forged one and
// an expired one are refused, each with its reason.
TEST_F(Tls, CrlIsVerifiedBeforeUse) {
  const int64_t now = time(nullptr);
  auto crl = LoadCrl(pki_ + "/ca.pem", pki_ + "/crl.pem", now);
  ASSERT_TRUE(crl.ok()) << crl.status();
  auto revoked = ReadCertificate(pki_ + "/site/hospital-b.pem.revoked");
  auto live = ReadCertificate(pki_ + "/site/hospital-a.pem");
  ASSERT_TRUE(revoked.ok() && live.ok());
  EXPECT_EQ(crl->revoked_serials.count(revoked->serial_hex), 1u);
  EXPECT_EQ(crl->revoked_serials.count(live->serial_hex), 0u);
  EXPECT_GT(crl->next_update_unix, now + 20 * 86400);  // fedtune-certs issues 30 days

  // Another federation's CRL (the other CA made one at init-ca).
  const absl::Status foreign = LoadCrl(pki_ + "/ca.pem", other_ + "/crl.pem", now).status();
  EXPECT_EQ(foreign.code(), absl::StatusCode::kInvalidArgument) << foreign;
  // A CRL whose signature does not verify: one byte of the signature changed.
  std::string der;
  {
    ASSERT_EQ(std::system(("openssl crl -in " + pki_ + "/crl.pem -outform DER -out " + pki_ + "/crl.der").c_str()), 0);
    std::ifstream in(pki_ + "/crl.der", std::ios::binary);
    der.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(der.size(), 16u);
  der[der.size() - 5] ^= 0x01;
  std::ofstream(pki_ + "/forged.der", std::ios::binary) << der;
  ASSERT_EQ(std::system(("openssl crl -inform DER -in " + pki_ + "/forged.der -out " + pki_ + "/forged.pem").c_str()), 0);
  const absl::Status forged = LoadCrl(pki_ + "/ca.pem", pki_ + "/forged.pem", now).status();
  EXPECT_EQ(forged.code(), absl::StatusCode::kInvalidArgument) << forged;
  EXPECT_NE(forged.message().find("signature"), std::string::npos) << forged;
  // Expired: checked as of a day after its nextUpdate.
  const absl::Status expired = LoadCrl(pki_ + "/ca.pem", pki_ + "/crl.pem", crl->next_update_unix + 86400).status();
  EXPECT_EQ(expired.code(), absl::StatusCode::kFailedPrecondition) << expired;
  EXPECT_NE(expired.message().find("fedtune-certs crl"), std::string::npos) << expired;
  // Not a CRL at all.
  EXPECT_EQ(LoadCrl(pki_ + "/ca.pem", pki_ + "/ca.pem", now).status().code(), absl::StatusCode::kInvalidArgument);
  // And gRPC's CRL directory is prepared only from a verified CRL.
  EXPECT_FALSE(PrepareCrlDirectory(pki_ + "/ca.pem", other_ + "/crl.pem", pki_ + "/crl-foreign.d", now).ok());
}

// While running: a changed CRL takes effect; a changed file that does not
// verify is refused and the previous CRL stays in force.
TEST_F(Tls, RevocationListReloadsWhenTheFileChanges) {
  const std::string served = pki_ + "/served-crl.pem";
  fs::copy_file(pki_ + "/crl.pem", served, fs::copy_options::overwrite_existing);
  const int64_t now = time(nullptr);
  auto list = RevocationList::Open(pki_ + "/ca.pem", served, now);
  ASSERT_TRUE(list.ok()) << list.status();
  auto a = ReadCertificate(pki_ + "/site/hospital-a.pem");
  auto b = ReadCertificate(pki_ + "/site/hospital-b.pem.revoked");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE((*list)->IsRevoked(b->serial_hex));
  EXPECT_FALSE((*list)->IsRevoked(a->serial_hex));
  auto unchanged = (*list)->ReloadIfChanged(now);
  ASSERT_TRUE(unchanged.ok());
  EXPECT_FALSE(*unchanged);

  // A wrong file put in its place is refused (once); revocations stay.
  fs::copy_file(other_ + "/crl.pem", served, fs::copy_options::overwrite_existing);
  EXPECT_FALSE((*list)->ReloadIfChanged(now).ok());
  auto again = (*list)->ReloadIfChanged(now);
  EXPECT_TRUE(again.ok() && !*again) << "a refused file is reported once per change";
  EXPECT_TRUE((*list)->IsRevoked(b->serial_hex));

  // hospital-a revoked: the new CRL takes effect without a restart.
  const std::string certs = std::string(FEDTUNE_SOURCE_DIR) + "/certs/fedtune-certs";
  ASSERT_EQ(std::system((certs + " revoke " + pki_ + " site hospital-a >/dev/null 2>&1").c_str()), 0);
  fs::copy_file(pki_ + "/crl.pem", served, fs::copy_options::overwrite_existing);
  auto reloaded = (*list)->ReloadIfChanged(now);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_TRUE(*reloaded);
  EXPECT_TRUE((*list)->IsRevoked(a->serial_hex));
  EXPECT_TRUE((*list)->IsRevoked(b->serial_hex));
}

TEST(TlsSubject, ParsesRfc2253) {
  PeerIdentity id = ParseSubject("CN=hospital-a,OU=site,O=fedtune");
  EXPECT_EQ(id.common_name, "hospital-a");
  EXPECT_TRUE(id.is_site());
  EXPECT_EQ(ParseSubject("CN=a\\,b,OU=admin").common_name, "a,b");
  EXPECT_TRUE(ParseSubject("O=fedtune, OU=admin, CN=alice").is_admin());
}

TEST(TlsDial, AnAddressMustNameItsPort) {
  for (const char* ok : {"localhost:7443", "10.1.2.3:1", "[::1]:7443", "fedtune.example.org:65535",
                         "dns:///fedtune.example.org:7443", "unix:/run/fedtune.sock"}) {
    EXPECT_TRUE(CheckDialAddress(ok).ok()) << ok;
  }
  for (const char* bad : {"localhost", "10.1.2.3", "::1", "[::1]", "host:", "host:99999", "host:44x", ":7443", ""}) {
    const absl::Status st = CheckDialAddress(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("has no port"), std::string::npos) << st;
  }
}

TEST(TlsStatus, CodesSurviveTheRoundTrip) {
  absl::Status s = absl::AbortedError("stale round 3");
  EXPECT_EQ(FromGrpc(ToGrpc(s)), s);
  EXPECT_EQ(ToGrpc(absl::PermissionDeniedError("x")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

}  // namespace
}  // namespace fedtune::net
