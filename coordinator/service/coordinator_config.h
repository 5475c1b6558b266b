// coordinator.toml: see deploy/examples/coordinator.toml. Relative paths are
// resolved against the directory of the file.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/core/logging.h"
#include "common/net/tls.h"
#include "coordinator/service/services.h"

namespace fedtune::coordinator {

struct CoordinatorConfig {
  std::string listen = "127.0.0.1:7443";
  std::string state_dir;
  net::TlsFiles tls;           // tls.crl_dir is derived from crl_pem under state_dir
  std::string crl_pem;         // empty only when the file says crl = "none"
  std::vector<std::string> enrolled_sites;
  int max_threads = 256;       // gRPC's thread quota: calls beyond it are refused, not queued
  int64_t site_timeout_ms = 90'000;
  ServiceOptions service;
  LogOptions log;
  // [http]: /metrics (and the dashboard) over HTTPS with admin certificates,
  // or plain HTTP on loopback. Empty listen: not served.
  std::string http_listen;
  bool http_tls = false;
  // [dashboard] enabled: the live dashboard on the [http] endpoint (its
  // address, TLS and admin list), coordinator/dashboard/dashboard.h.
  bool dashboard = false;
};

absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path);
// The same from coordinator.toml's text: `path` names it in errors and is
// where relative paths are resolved from (nothing is read from disk).
absl::StatusOr<CoordinatorConfig> ParseCoordinatorConfig(std::string_view toml, const std::string& path);

}  // namespace fedtune::coordinator
