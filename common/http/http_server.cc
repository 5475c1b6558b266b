#include "common/http/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fedtune::http {
namespace {


// The verified client certificate of a TLS connection (the handshake has
// checked the chain; here only who it is).
absl::StatusOr<net::PeerIdentity> PeerOf(const SSL* ssl) {
  if (ssl == nullptr) return absl::UnauthenticatedError("no TLS session");
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return absl::UnauthenticatedError("the client presented no certificate");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, n > 0 ? static_cast<size_t>(n) : 0);
  BIO_free(bio);
  X509_free(cert);
  auto info = net::ParseCertificatePem(pem);
  if (!info.ok()) return absl::UnauthenticatedError("the client's certificate cannot be read");
  net::PeerIdentity id;
  id.common_name = info->common_name;
  id.organizational_unit = info->organizational_unit;
  id.serial_hex = info->serial_hex;
  if (id.common_name.empty() || id.serial_hex.empty()) {
    return absl::UnauthenticatedError("the client's certificate has no CN or serial");
  }
  return id;
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

Response ErrorResponse(const absl::Status& status) {
  Response r;
  r.status = HttpStatusFor(status.code());
  r.body = absl::StrCat(status.message(), "\n");
  return r;
}

namespace {

// A Host header naming a loopback address or localhost (with or without a port).
bool LoopbackHostHeader(const std::string& value) {
  std::string host = value;
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') == std::string::npos ? std::string::npos : host.find(']') - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  return IsLoopbackHost(host);
}

}  // namespace

bool IsLoopbackHost(const std::string& host) {
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::Status SplitHostPort(const std::string& address, std::string* host, int* port) {
  std::string h, p;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", address, "\": write [IPv6]:port, for example \"[::1]:9464\""));
    }
    h = address.substr(1, close - 1);
    p = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos || address.find(':') != colon) {
      return absl::InvalidArgumentError(absl::StrCat("address \"", address,
                                                     "\" has no port: write host:port, for example "
                                                     "\"127.0.0.1:9464\" (port 0 picks a free one)"));
    }
    h = address.substr(0, colon);
    p = address.substr(colon + 1);
  }
  int n = -1;
  if (h.empty() || !absl::SimpleAtoi(p, &n) || n < 0 || n > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\": need a host and a port between 0 and 65535"));
  }
  *host = h;
  *port = n;
  return absl::OkStatus();
}

struct Server::Impl {
  ServerOptions options;
  std::string host;
  int requested_port = 0;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::atomic<int> port{0};
  bool started = false;
  std::atomic<bool> stopping{false};  // streams end at their next write

  void Route(const std::string& method, const std::string& pattern, Handler handler) {
    auto wrapped = [this, handler = std::move(handler)](const httplib::Request& in, httplib::Response& out) {
      Request req;
      req.method = in.method;
      req.path = in.path;
      for (size_t i = 1; i < in.matches.size(); ++i) req.captures.push_back(in.matches[i].str());
      for (const auto& [k, v] : in.params) req.query.emplace(k, v);
      for (const auto& [k, v] : in.headers) req.headers[absl::AsciiStrToLower(k)] = v;
      req.body = in.body;
      Response resp;
      if (options.tls) {
        auto peer = PeerOf(in.ssl);
        absl::Status allowed = peer.status();
        if (allowed.ok() && options.revocations != nullptr && options.revocations->IsRevoked(peer->serial_hex)) {
          allowed = absl::PermissionDeniedError("the client's certificate has been revoked");
        }
        if (allowed.ok() && options.authorize) allowed = options.authorize(*peer);
        if (!allowed.ok()) {
          spdlog::warn("{}: {} {} refused: {}", options.name, in.method, in.path, std::string(allowed.message()));
          resp = ErrorResponse(allowed.code() == absl::StatusCode::kUnauthenticated
                                   ? allowed
                                   : absl::PermissionDeniedError(allowed.message()));
        } else {
          req.peer = *peer;
          resp = handler(req);
        }
      } else if (!LoopbackHostHeader(in.get_header_value("Host"))) {
        // Plain HTTP is served on loopback only; a Host naming anything else
        // is a browser led here by another site (DNS rebinding), refused.
        spdlog::warn("{}: {} {} refused: Host is not a loopback name", options.name, in.method, in.path);
        resp = ErrorResponse(absl::PermissionDeniedError(
            "plain HTTP answers requests for localhost, 127.0.0.1 or [::1] only"));
      } else {
        resp = handler(req);
      }
      out.status = resp.status;
      for (const auto& [k, v] : resp.headers) out.set_header(k, v);
      if (resp.stream) {
        out.set_chunked_content_provider(
            resp.content_type, [this, stream = std::move(resp.stream)](size_t, httplib::DataSink& sink) {
              stream([&](const std::string& piece) {
                return !stopping && sink.is_writable() && sink.write(piece.data(), piece.size());
              });
              sink.done();
              return true;
            });
        return;
      }
      out.set_content(resp.body, resp.content_type);
    };
    if (method == "GET") {
      server->Get(pattern, wrapped);
    } else {
      server->Post(pattern, wrapped);
    }
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Stop(); }

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (auto st = SplitHostPort(options.listen, &impl->host, &impl->requested_port); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(options.name, ": ", st.message()));
  }
  if (!options.tls && !IsLoopbackHost(impl->host)) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.name, ": plain HTTP on ", options.listen,
        " would be reachable from other hosts without a certificate; listen on 127.0.0.1 or [::1], or set tls = "
        "true (clients then need a certificate from the federation CA)"));
  }
  if (options.tls) {
    const net::TlsFiles& f = options.tls_files;
    if (f.ca_pem.empty() || f.cert_pem.empty() || f.key_pem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(options.name, ": HTTPS needs a CA, a certificate and a key"));
    }
    if (auto st = net::CheckPrivateKeyFile(f.key_pem); !st.ok()) return st;
    if (auto st = net::CheckKeyMatchesCertificate(f.cert_pem, f.key_pem); !st.ok()) return st;
    if (auto ca = net::ReadCertificate(f.ca_pem); !ca.ok()) return ca.status();
    impl->server = std::make_unique<httplib::SSLServer>([f](SSL_CTX& ctx) {
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      if (SSL_CTX_use_certificate_chain_file(&ctx, f.cert_pem.c_str()) != 1) return false;
      if (SSL_CTX_use_PrivateKey_file(&ctx, f.key_pem.c_str(), SSL_FILETYPE_PEM) != 1) return false;
      if (SSL_CTX_check_private_key(&ctx) != 1) return false;
      if (SSL_CTX_load_verify_locations(&ctx, f.ca_pem.c_str(), nullptr) != 1) return false;
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(f.ca_pem.c_str());
      if (names != nullptr) SSL_CTX_set_client_CA_list(&ctx, names);
      SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      return true;
    });
    if (!impl->server->is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.name, ": cannot set up TLS with ", f.cert_pem, " and ", f.key_pem));
    }
  } else {
    impl->server = std::make_unique<httplib::Server>();
  }
  const int threads = std::max(1, options.threads);
  impl->server->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  impl->server->set_payload_max_length(options.max_body_bytes);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would
  // let a second process (a second daemon, or another program of the same
  // user) bind the same port and take half the connections.
  impl->server->set_socket_options([](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  impl->server->set_read_timeout(std::chrono::seconds(30));
  impl->server->set_write_timeout(std::chrono::seconds(30));
  impl->server->set_keep_alive_timeout(30);
  const std::string name = options.name;
  impl->server->set_exception_handler([name](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
    spdlog::error("{}: {} {} failed inside its handler", name, req.method, req.path);
    res.status = 500;
    res.set_content("internal error\n", "text/plain; charset=utf-8");
  });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::Get(const std::string& pattern, Handler handler) { impl_->Route("GET", pattern, std::move(handler)); }

void Server::Post(const std::string& pattern, Handler handler) { impl_->Route("POST", pattern, std::move(handler)); }

absl::Status Server::Start() {
  Impl& im = *impl_;
  if (im.started) return absl::FailedPreconditionError(absl::StrCat(im.options.name, " already started"));
  int port = im.requested_port;
  if (port == 0) {
    port = im.server->bind_to_any_port(im.host);
    if (port < 0) port = 0;
  } else if (!im.server->bind_to_port(im.host, port)) {
    port = 0;
  }
  if (port == 0) {
    return absl::UnavailableError(absl::StrCat(im.options.name, ": cannot listen on ", im.options.listen,
                                               " (address in use, or not an address of this host?)"));
  }
  im.port = port;
  im.started = true;
  im.thread = std::thread([&im] { im.server->listen_after_bind(); });
  // stop() before the accept loop runs would be lost: wait for it.
  for (int i = 0; i < 500 && !im.server->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  spdlog::info("{}: serving {} on {}", im.options.name, im.options.tls ? "HTTPS (client certificates required)" : "HTTP",
               url());
  return absl::OkStatus();
}

void Server::ServeMetrics(MetricsRegistry* registry) {
  Get("/metrics", [registry](const Request&) {
    Response r;
    r.content_type = MetricsRegistry::kContentType;
    r.body = registry->Exposition();
    return r;
  });
}

int Server::port() const { return impl_->port; }

std::string Server::url() const {
  const bool v6 = impl_->host.find(':') != std::string::npos;
  return absl::StrCat(impl_->options.tls ? "https://" : "http://", v6 ? "[" : "", impl_->host, v6 ? "]" : "", ":",
                      impl_->port.load());
}

void Server::Stop() {
  if (impl_ == nullptr || !impl_->started) return;
  impl_->stopping = true;
  impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->started = false;
}

}  // namespace fedtune::http
