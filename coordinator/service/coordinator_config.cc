#include "coordinator/service/coordinator_config.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/core/config.h"
#include "common/core/status.h"
#include "common/http/http_server.h"

namespace fedtune::coordinator {

namespace {

absl::StatusOr<CoordinatorConfig> CoordinatorConfigFrom(const Config& root, const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path base = fs::absolute(path).parent_path();
  auto resolve = [&](const std::string& p) { return p.empty() ? p : (base / p).lexically_normal().string(); };
  RETURN_IF_ERROR(root.RejectUnknownKeys({"coordinator", "tls", "sites", "admins", "log", "http", "dashboard"}));
  CoordinatorConfig c;
  ASSIGN_OR_RETURN(Config co, root.GetTable("coordinator"));
  RETURN_IF_ERROR(co.RejectUnknownKeys({"listen", "state_dir", "poll_timeout_s", "site_timeout_s", "max_update_mb",
                                        "upload_timeout_s", "max_threads"}));
  ASSIGN_OR_RETURN(c.listen, co.GetString("listen", c.listen));
  ASSIGN_OR_RETURN(std::string state, co.GetString("state_dir"));
  c.state_dir = resolve(state);
  ASSIGN_OR_RETURN(int64_t poll, co.GetIntInRange("poll_timeout_s", 1, 600, 20));
  ASSIGN_OR_RETURN(int64_t site_timeout, co.GetIntInRange("site_timeout_s", 1, 86400, 90));
  ASSIGN_OR_RETURN(int64_t max_mb, co.GetIntInRange("max_update_mb", 1, 64 * 1024, 2048));
  ASSIGN_OR_RETURN(int64_t upload_timeout, co.GetIntInRange("upload_timeout_s", 10, 86400, 600));
  ASSIGN_OR_RETURN(int64_t max_threads, co.GetIntInRange("max_threads", 16, 100000, 256));
  c.service.upload_timeout_ms = upload_timeout * 1000;
  c.max_threads = static_cast<int>(max_threads);
  c.service.poll_timeout_ms = poll * 1000;
  c.site_timeout_ms = site_timeout * 1000;
  c.service.max_update_bytes = max_mb << 20;
  if (c.site_timeout_ms <= c.service.poll_timeout_ms) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key 'coordinator.site_timeout_s' must exceed "
                                                         "poll_timeout_s (a polling site must count as connected)"));
  }

  ASSIGN_OR_RETURN(Config tls, root.GetTable("tls"));
  RETURN_IF_ERROR(tls.RejectUnknownKeys({"ca", "cert", "key", "crl"}));
  ASSIGN_OR_RETURN(std::string ca, tls.GetString("ca"));
  ASSIGN_OR_RETURN(std::string cert, tls.GetString("cert"));
  ASSIGN_OR_RETURN(std::string key, tls.GetString("key"));
  if (!tls.Has("crl")) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": key 'tls.crl' is missing: name the federation's CRL (crl = \"/etc/fedtune/pki/crl.pem\", from "
              "`fedtune-certs crl`), or write crl = \"none\" to run without revocation"));
  }
  ASSIGN_OR_RETURN(std::string crl, tls.GetString("crl"));
  c.tls.ca_pem = resolve(ca);
  c.tls.cert_pem = resolve(cert);
  c.tls.key_pem = resolve(key);
  c.crl_pem = crl == "none" ? "" : resolve(crl);
  if (crl.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key 'tls.crl' is empty: name the CRL file or write \"none\""));
  }

  ASSIGN_OR_RETURN(Config sites, root.GetTable("sites"));
  RETURN_IF_ERROR(sites.RejectUnknownKeys({"enrolled"}));
  ASSIGN_OR_RETURN(c.enrolled_sites, sites.GetStringList("enrolled"));

  if (!root.Has("admins")) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": section [admins] is missing: list the admin certificates (their CN) allowed on the Admin API, "
              "e.g. operators = [\"alice\"] (submit and cancel jobs) and viewers = [\"bob\"] (read only)"));
  }
  ASSIGN_OR_RETURN(Config admins, root.GetTable("admins"));
  RETURN_IF_ERROR(admins.RejectUnknownKeys({"operators", "viewers"}));
  ASSIGN_OR_RETURN(std::vector<std::string> operators, admins.GetStringList("operators", {}));
  ASSIGN_OR_RETURN(std::vector<std::string> viewers, admins.GetStringList("viewers", {}));
  for (const auto& v : viewers) c.service.admins[v] = AdminRole::kViewer;
  for (const auto& o : operators) {
    if (c.service.admins.count(o) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": [admins] \"", o, "\" is listed both as an operator and as a viewer"));
    }
    c.service.admins[o] = AdminRole::kOperator;
  }

  ASSIGN_OR_RETURN(Config log, root.GetTableOrEmpty("log"));
  RETURN_IF_ERROR(log.RejectUnknownKeys({"level", "file"}));
  ASSIGN_OR_RETURN(c.log.level, log.GetString("level", "info"));
  ASSIGN_OR_RETURN(std::string file, log.GetString("file", ""));
  c.log.file = resolve(file);
  c.log.component = "coordinator";

  ASSIGN_OR_RETURN(Config http, root.GetTableOrEmpty("http"));
  RETURN_IF_ERROR(http.RejectUnknownKeys({"listen", "tls"}));
  ASSIGN_OR_RETURN(c.http_listen, http.GetString("listen", ""));
  ASSIGN_OR_RETURN(c.http_tls, http.GetBool("tls", false));
  if (!c.http_listen.empty()) {
    std::string host;
    int port = 0;
    if (auto st = http::SplitHostPort(c.http_listen, &host, &port); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": key 'http.listen': ", st.message()));
    }
    if (!c.http_tls && !http::IsLoopbackHost(host)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": key 'http.listen' = \"", c.http_listen,
          "\" is not a loopback address: plain HTTP would let anyone who reaches it read the federation's state. "
          "Set tls = true under [http] (clients then need an admin certificate from [admins]) or listen on "
          "127.0.0.1"));
    }
  }
  ASSIGN_OR_RETURN(Config dashboard, root.GetTableOrEmpty("dashboard"));
  RETURN_IF_ERROR(dashboard.RejectUnknownKeys({"enabled"}));
  ASSIGN_OR_RETURN(c.dashboard, dashboard.GetBool("enabled", false));
  if (c.dashboard && c.http_listen.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": [dashboard] enabled = true needs [http] listen: the dashboard is served there (loopback, or "
              "HTTPS for the admin certificates with tls = true)"));
  }
  return c;
}

}  // namespace

absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path) {
  ASSIGN_OR_RETURN(Config root, Config::LoadFile(path));
  return CoordinatorConfigFrom(root, path);
}

absl::StatusOr<CoordinatorConfig> ParseCoordinatorConfig(std::string_view toml, const std::string& path) {
  ASSIGN_OR_RETURN(Config root, Config::Parse(toml, path));
  return CoordinatorConfigFrom(root, path);
}

}  // namespace fedtune::coordinator
