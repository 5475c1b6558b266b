#include "coordinator/service/coordinator_config.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/core/config.h"
#include "common/core/status.h"

namespace fedtune::coordinator {

absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path) {
  namespace fs = std::filesystem;
  ASSIGN_OR_RETURN(Config root, Config::LoadFile(path));
  const fs::path base = fs::absolute(path).parent_path();
  auto resolve = [&](const std::string& p) { return p.empty() ? p : (base / p).lexically_normal().string(); };
  RETURN_IF_ERROR(root.RejectUnknownKeys({"coordinator", "tls", "sites", "log"}));
  CoordinatorConfig c;
  ASSIGN_OR_RETURN(Config co, root.GetTable("coordinator"));
  RETURN_IF_ERROR(co.RejectUnknownKeys({"listen", "state_dir", "poll_timeout_s", "site_timeout_s", "max_update_mb"}));
  ASSIGN_OR_RETURN(c.listen, co.GetString("listen", c.listen));
  ASSIGN_OR_RETURN(std::string state, co.GetString("state_dir"));
  c.state_dir = resolve(state);
  ASSIGN_OR_RETURN(int64_t poll, co.GetIntInRange("poll_timeout_s", 1, 600, 20));
  ASSIGN_OR_RETURN(int64_t site_timeout, co.GetIntInRange("site_timeout_s", 1, 86400, 90));
  ASSIGN_OR_RETURN(int64_t max_mb, co.GetIntInRange("max_update_mb", 1, 64 * 1024, 2048));
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
  ASSIGN_OR_RETURN(std::string crl, tls.GetString("crl", ""));
  c.tls.ca_pem = resolve(ca);
  c.tls.cert_pem = resolve(cert);
  c.tls.key_pem = resolve(key);
  c.crl_pem = resolve(crl);

  ASSIGN_OR_RETURN(Config sites, root.GetTable("sites"));
  RETURN_IF_ERROR(sites.RejectUnknownKeys({"enrolled"}));
  ASSIGN_OR_RETURN(c.enrolled_sites, sites.GetStringList("enrolled"));

  ASSIGN_OR_RETURN(Config log, root.GetTableOrEmpty("log"));
  RETURN_IF_ERROR(log.RejectUnknownKeys({"level", "file"}));
  ASSIGN_OR_RETURN(c.log.level, log.GetString("level", "info"));
  ASSIGN_OR_RETURN(std::string file, log.GetString("file", ""));
  c.log.file = resolve(file);
  c.log.component = "coordinator";
  return c;
}

}  // namespace fedtune::coordinator
