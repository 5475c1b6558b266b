#include "site-agent/runner/site_http.h"

#include "site-agent/ingest/site_stats.h"

namespace fedtune::site {

void AddSiteCollectors(const SiteConfig& config, const scp::StoreScp* receiver, MetricsRegistry* metrics) {
  const std::string workspace = config.ingest.workspace;
  metrics->AddCollector([workspace, receiver](MetricsRegistry& m) {
    if (auto stats = ingest::ReadSiteStats(workspace); stats.ok()) {
      for (const auto& [split, s] : stats->splits) {
        m.GetGauge("fedtune_site_images", "Ingested images in the workspace, by split", {{"split", split}})
            .Set(static_cast<double>(s.images));
      }
      for (const auto& [reason, n] : stats->quarantine_reasons) {
        m.GetGauge("fedtune_site_quarantined_images", "Images kept out of the workspace, by reason",
                   {{"reason", reason}})
            .Set(static_cast<double>(n));
      }
    }
    if (receiver == nullptr) return;
    const scp::StoreScpCounters c = receiver->Counters();
    const char* help = "DICOM receiver (storage SCP) events since the daemon started, by kind";
    const std::pair<const char*, int64_t> kinds[] = {
        {"association", c.associations}, {"association_refused", c.refused}, {"stored", c.received},
        {"store_failed", c.store_failures}, {"ingested", c.ingested},     {"already_ingested", c.already_done},
        {"quarantined", c.quarantined},  {"ingest_error", c.ingest_errors}};
    for (const auto& [kind, n] : kinds) {
      m.GetCounter("fedtune_site_receiver_events_total", help, {{"event", kind}}).Mirror(static_cast<double>(n));
    }
    m.GetGauge("fedtune_site_receiver_pending_files", "Received files waiting to be ingested")
        .Set(static_cast<double>(receiver->Pending()));
  });
}

absl::StatusOr<std::unique_ptr<http::Server>> StartSiteHttp(const SiteConfig& config, MetricsRegistry* metrics) {
  if (config.http.listen.empty()) return std::unique_ptr<http::Server>();
  http::ServerOptions o;
  o.name = "site http";
  o.listen = config.http.listen;
  o.tls = config.http.tls;
  o.tls_files = config.http.tls_files;
  auto server = http::Server::Create(o);
  if (!server.ok()) return server.status();
  (*server)->ServeMetrics(metrics);
  if (auto st = (*server)->Start(); !st.ok()) return st;
  return std::move(*server);
}

}  // namespace fedtune::site
