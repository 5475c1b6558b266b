#include "coordinator/service/http_endpoint.h"

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "coordinator/dashboard/dashboard.h"

namespace fedtune::coordinator {

void AddEngineCollectors(RoundEngine* engine, MetricsRegistry* metrics) {
  metrics->AddCollector([engine](MetricsRegistry& m) {
    if (auto jobs = engine->ListJobs(); jobs.ok()) {
      std::map<std::string, int> by_state;
      for (int s = v1::JOB_STATE_PENDING; s <= v1::JOB_STATE_CANCELLED; ++s) {
        // Every state is exported, zeros included, so a job leaving a state
        // shows as 0 rather than a series that stops.
        by_state[absl::AsciiStrToLower(v1::JobState_Name(static_cast<v1::JobState>(s)).substr(10))] = 0;
      }
      for (const auto& j : *jobs) {
        if (j.state() >= v1::JOB_STATE_PENDING && j.state() <= v1::JOB_STATE_CANCELLED) {
          ++by_state[absl::AsciiStrToLower(v1::JobState_Name(j.state()).substr(10))];
        }
      }
      for (const auto& [state, n] : by_state) {
        m.GetGauge("fedtune_coordinator_jobs", "Jobs by state", {{"state", state}}).Set(n);
      }
    }
    if (auto sites = engine->ListSites(); sites.ok()) {
      int enrolled = 0, connected = 0;
      for (const auto& s : *sites) {
        enrolled += s.enrolled() ? 1 : 0;
        connected += s.enrolled() && s.connected() ? 1 : 0;
      }
      m.GetGauge("fedtune_coordinator_sites_enrolled", "Sites enrolled in coordinator.toml [sites]").Set(enrolled);
      m.GetGauge("fedtune_coordinator_sites_connected",
                 "Enrolled sites heard from within site_timeout_s (selectable for rounds)")
          .Set(connected);
    }
  });
}

absl::StatusOr<std::unique_ptr<http::Server>> StartHttpEndpoint(const CoordinatorConfig& config,
                                                               const ServiceOptions& service,
                                                               MetricsRegistry* metrics, RoundEngine* engine) {
  if (config.http_listen.empty()) return std::unique_ptr<http::Server>();
  http::ServerOptions o;
  o.name = "coordinator http";
  o.listen = config.http_listen;
  o.tls = config.http_tls;
  o.tls_files = config.tls;
  o.revocations = service.revocations;
  // Each open dashboard holds a thread for its event stream.
  o.threads = config.dashboard ? 16 : 4;
  o.authorize = [service](const net::PeerIdentity& peer) -> absl::Status {
    return AuthorizeAdmin(service, peer, AdminRole::kViewer).status();
  };
  auto server = http::Server::Create(o);
  if (!server.ok()) return server.status();
  (*server)->ServeMetrics(metrics);
  if (config.dashboard) AddDashboard(**server, engine);
  if (auto st = (*server)->Start(); !st.ok()) return st;
  return std::move(*server);
}

}  // namespace fedtune::coordinator
