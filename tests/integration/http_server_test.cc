// The shared HTTP(S) layer against a real client (curl): plain HTTP on
// loopback only, HTTPS that requires a certificate from the federation CA,
// per-request authorisation and revocation.
#include "common/http/http_server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/loopback_coordinator.h"
#include "tests/testing/run_command.h"

namespace fedtune::http {
namespace {

namespace fs = std::filesystem;
using testing::RunCommand;

using testing::Curl;
using testing::HaveCurl;

Response Hello(const Request& req) {
  Response r;
  r.body = absl::StrCat("hello ", req.captures.empty() ? "" : req.captures[0],
                        req.peer ? absl::StrCat(" from ", req.peer->common_name) : "");
  return r;
}

TEST(HttpServer, PlainHttpOnLoopbackWithRoutesAndCaptures) {
  if (!HaveCurl()) GTEST_SKIP() << "curl not installed (deploy/install-deps.sh installs it)";
  ServerOptions o;
  o.name = "test";
  o.listen = "127.0.0.1:0";
  o.tls = false;
  auto server = Server::Create(o);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Get("/hello/([a-z]+)", Hello);
  (*server)->Post("/echo", [](const Request& req) {
    Response r;
    r.content_type = "application/octet-stream";
    r.body = req.body + "|" + (req.headers.count("content-type") ? req.headers.at("content-type") : "");
    return r;
  });
  (*server)->Get("/fail", [](const Request&) { return ErrorResponse(absl::InvalidArgumentError("not DICOM")); });
  ASSERT_TRUE((*server)->Start().ok());
  ASSERT_GT((*server)->port(), 0);
  const std::string url = (*server)->url();
  EXPECT_EQ(url, absl::StrCat("http://127.0.0.1:", (*server)->port()));
  std::string body;
  EXPECT_EQ(Curl(url + "/hello/world", &body), 200);
  EXPECT_EQ(body, "hello world");
  EXPECT_EQ(Curl(url + "/hello/World1", &body), 404);  // the pattern matches the whole path
  EXPECT_EQ(Curl("-X POST -H 'Content-Type: application/dicom' --data-binary abc " + url + "/echo", &body), 200);
  EXPECT_EQ(body, "abc|application/dicom");
  EXPECT_EQ(Curl(url + "/fail", &body), 400);
  EXPECT_EQ(body, "not DICOM\n");
  // A browser sent here by another site's page (DNS rebinding) names that site.
  EXPECT_EQ(Curl("-H 'Host: attacker.example:80' " + url + "/hello/world", &body), 403);
  EXPECT_EQ(Curl("-H 'Host: localhost' " + url + "/hello/world", &body), 200);
  EXPECT_EQ(Curl("-H 'Host: [::1]:8000' " + url + "/hello/world", &body), 200);
  (*server)->Stop();
  EXPECT_LT(Curl(url + "/hello/world", &body), 0);  // nobody listens any more
}

TEST(HttpServer, PlainHttpOffLoopbackIsRefused) {
  for (const char* listen : {"0.0.0.0:0", "[::]:0", "10.1.2.3:9464"}) {
    ServerOptions o;
    o.name = "site metrics";
    o.listen = listen;
    o.tls = false;
    auto server = Server::Create(o);
    ASSERT_FALSE(server.ok()) << listen;
    EXPECT_TRUE(absl::StrContains(server.status().message(), "tls = true")) << server.status();
  }
  ServerOptions o;
  o.listen = "127.0.0.1";
  o.tls = false;
  EXPECT_TRUE(absl::StrContains(Server::Create(o).status().message(), "has no port"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("127.8.9.10"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("128.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("example.org"));
}

TEST(HttpServer, BusyPortIsUnavailable) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls = false;
  auto first = Server::Create(o);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->Start().ok());
  o.listen = absl::StrCat("127.0.0.1:", (*first)->port());
  auto second = Server::Create(o);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->Start().code(), absl::StatusCode::kUnavailable);
}

class HttpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveCurl()) GTEST_SKIP() << "curl not installed (deploy/install-deps.sh installs it)";
    if (!testing::HaveOpenssl()) GTEST_SKIP() << "openssl not installed";
    dir_ = fs::temp_directory_path() / absl::StrCat("fedtune-https-", ::getpid(), "-",
                                                    std::chrono::steady_clock::now().time_since_epoch().count());
    fs::create_directories(dir_);
    std::string out;
    ASSERT_EQ(testing::MakeFederationPki(dir_.string(), {"alice", "mallory"}, {"hospital-a"}, &out), 0) << out;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string Client(const std::string& stem) const {
    const auto f = testing::PkiFiles(dir_.string(), stem);
    return absl::StrCat("--cacert ", f.ca_pem, " --cert ", f.cert_pem, " --key ", f.key_pem, " ");
  }
  fs::path dir_;
};

TEST_F(HttpsTest, ClientCertificateRequiredAndAuthorisedPerRequest) {
  ServerOptions o;
  o.name = "coordinator http";
  o.listen = "127.0.0.1:0";
  o.tls_files = testing::PkiFiles(dir_.string(), "coordinator/coordinator");
  o.authorize = [](const net::PeerIdentity& peer) {
    if (!peer.is_admin()) return absl::PermissionDeniedError("admin certificates only");
    return absl::OkStatus();
  };
  auto server = Server::Create(o);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Get("/hello/([a-z]+)", Hello);
  ASSERT_TRUE((*server)->Start().ok());
  // The coordinator's certificate names "coordinator" and localhost/127.0.0.1.
  const std::string url = absl::StrCat("https://127.0.0.1:", (*server)->port(), "/hello/metrics");
  std::string body;
  EXPECT_EQ(Curl(Client("admin/alice") + url, &body), 200);
  EXPECT_EQ(body, "hello metrics from alice");
  EXPECT_EQ(Curl(Client("site/hospital-a") + url, &body), 403);  // a site is not an admin
  EXPECT_TRUE(absl::StrContains(body, "admin certificates only"));
  const auto ca = testing::PkiFiles(dir_.string(), "admin/alice").ca_pem;
  EXPECT_LT(Curl("--cacert " + ca + " " + url, &body), 0);  // no certificate: no TLS session
  EXPECT_LT(Curl(absl::StrCat("http://127.0.0.1:", (*server)->port(), "/hello/metrics"), &body), 200);
}

TEST_F(HttpsTest, RevokedCertificateIsRefused) {
  std::string out;
  ASSERT_EQ(RunCommand("cd " + dir_.string() + " && " + FEDTUNE_SOURCE_DIR + "/certs/fedtune-certs revoke pki admin mallory", &out), 0) << out;
  const auto files = testing::PkiFiles(dir_.string(), "coordinator/coordinator");
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  auto crl = net::RevocationList::Open(files.ca_pem, (dir_ / "pki/crl.pem").string(), now);
  ASSERT_TRUE(crl.ok()) << crl.status();
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_files = files;
  o.revocations = crl->get();
  auto server = Server::Create(o);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Get("/hello/([a-z]+)", Hello);
  ASSERT_TRUE((*server)->Start().ok());
  const std::string url = absl::StrCat("https://127.0.0.1:", (*server)->port(), "/hello/x");
  std::string body;
  EXPECT_EQ(Curl(Client("admin/alice") + url, &body), 200);
  const auto m = testing::PkiFiles(dir_.string(), "admin/mallory");
  EXPECT_EQ(Curl(absl::StrCat("--cacert ", m.ca_pem, " --cert ", m.cert_pem, ".revoked --key ", m.key_pem,
                              ".revoked ", url),
                 &body),
            403);
  EXPECT_TRUE(absl::StrContains(body, "revoked"));
}

TEST_F(HttpsTest, KeyReadableByOthersIsRefused) {
  const auto files = testing::PkiFiles(dir_.string(), "coordinator/coordinator");
  fs::permissions(files.key_pem, fs::perms::others_read, fs::perm_options::add);
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_files = files;
  auto server = Server::Create(o);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace fedtune::http
