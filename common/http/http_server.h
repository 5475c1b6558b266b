// The one small HTTP(S) layer both daemons serve from: /metrics now, the
// inference REST API and the dashboard next. HTTPS requires a client
// certificate from the configured CA (TLS 1.2+, the same rules as the gRPC
// services) and hands each handler the verified identity; plain HTTP is
// allowed on loopback addresses only. Built on Debian's cpp-httplib, whose
// header stays out of this one.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/core/metrics.h"
#include "common/net/pki.h"
#include "common/net/tls.h"

namespace fedtune::http {

struct Request {
  std::string method;
  std::string path;
  std::vector<std::string> captures;  // the route pattern's groups
  std::multimap<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::optional<net::PeerIdentity> peer;  // HTTPS: the verified client certificate
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::map<std::string, std::string> headers;
  // Set: the body is streamed instead (chunked), for as long as `stream`
  // runs: it calls `write` with each piece and returns when done; `write`
  // returns false once the client has gone. Server-Sent Events hold one of
  // the server's threads each.
  std::function<void(const std::function<bool(const std::string&)>& write)> stream;
};

// The HTTP status for a status code: INVALID_ARGUMENT, FAILED_PRECONDITION
// and OUT_OF_RANGE 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
// NOT_FOUND 404, ALREADY_EXISTS and ABORTED 409, the others as below.
int HttpStatusFor(absl::StatusCode code);

// A response carrying `status` as an HTTP error with its message as a short
// text body (INVALID_ARGUMENT 400, PERMISSION_DENIED 403, NOT_FOUND 404,
// UNAVAILABLE 503, others 500).
Response ErrorResponse(const absl::Status& status);

struct ServerOptions {
  std::string name = "http";  // for logs and errors: "coordinator metrics"
  std::string listen;         // host:port; port 0 picks a free one (see port())
  bool tls = true;
  // With tls: this server's certificate and key, and the CA a client's
  // certificate must chain to (crl_dir unused: see `revocations`).
  net::TlsFiles tls_files;
  // With tls: consulted on every request, so a certificate revoked while its
  // connection is open is refused from the next request on.
  const net::RevocationList* revocations = nullptr;
  // With tls: who may call (e.g. admins only); a non-OK status is answered
  // 403 with its message. Unset: any certificate the CA issued.
  std::function<absl::Status(const net::PeerIdentity&)> authorize;
  int threads = 4;
  size_t max_body_bytes = 1 << 20;
};

class Server {
 public:
  using Handler = std::function<Response(const Request&)>;

  // Checks the options (plain HTTP off loopback is refused, naming the
  // setting to change; missing or readable-by-others keys as for gRPC).
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerOptions& options);
  ~Server();  // stops

  // Routes: `pattern` is a regular expression matched against the whole
  // path; its groups arrive as Request::captures. Add before Start().
  void Get(const std::string& pattern, Handler handler);
  void Post(const std::string& pattern, Handler handler);
  // GET /metrics: `registry`'s exposition for Prometheus (it must outlive
  // the server).
  void ServeMetrics(MetricsRegistry* registry);

  // Binds and serves on a thread of its own; UNAVAILABLE when the address
  // cannot be bound.
  absl::Status Start();
  int port() const;
  // "https://127.0.0.1:port" as a client would write it.
  std::string url() const;
  void Stop();

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackHost(const std::string& host);

// Splits "host:port" / "[v6]:port"; INVALID_ARGUMENT without a port.
absl::Status SplitHostPort(const std::string& address, std::string* host, int* port);

}  // namespace fedtune::http
