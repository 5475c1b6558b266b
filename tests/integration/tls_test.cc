// Mutual TLS with certificates made by certs/fedtune-certs, on a real gRPC
// server on 127.0.0.1: who gets in, who is refused, and that the handler sees
// the caller's identity from its certificate.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

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
    ASSERT_TRUE(PrepareCrlDirectory(pki_ + "/ca.pem", pki_ + "/crl.pem", pki_ + "/crl.d").ok());
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

TEST(TlsSubject, ParsesRfc2253) {
  PeerIdentity id = ParseSubject("CN=hospital-a,OU=site,O=fedtune");
  EXPECT_EQ(id.common_name, "hospital-a");
  EXPECT_TRUE(id.is_site());
  EXPECT_EQ(ParseSubject("CN=a\\,b,OU=admin").common_name, "a,b");
  EXPECT_TRUE(ParseSubject("O=fedtune, OU=admin, CN=alice").is_admin());
}

TEST(TlsStatus, CodesSurviveTheRoundTrip) {
  absl::Status s = absl::AbortedError("stale round 3");
  EXPECT_EQ(FromGrpc(ToGrpc(s)), s);
  EXPECT_EQ(ToGrpc(absl::PermissionDeniedError("x")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

}  // namespace
}  // namespace fedtune::net
