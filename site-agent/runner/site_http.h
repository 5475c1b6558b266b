// The site's HTTP(S) endpoint ([http] in site.toml): /metrics for the
// hospital's Prometheus. Metrics never leave the hospital this way: the
// endpoint is on loopback, or HTTPS for the hospital's own client
// certificates, and holds counts only (no identifiers, no per-image values).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/core/metrics.h"
#include "common/http/http_server.h"
#include "site-agent/config/site_config.h"
#include "site-agent/dicom_scp/store_scp.h"

namespace fedtune::site {

// Gauges and totals read at every scrape: the workspace's images by split
// and quarantined images by reason, and the DICOM receiver's counters when
// it runs (`receiver` may be null).
void AddSiteCollectors(const SiteConfig& config, const scp::StoreScp* receiver, MetricsRegistry* metrics);

// Starts the endpoint when config.http.listen is set (nullptr otherwise).
absl::StatusOr<std::unique_ptr<http::Server>> StartSiteHttp(const SiteConfig& config, MetricsRegistry* metrics);

}  // namespace fedtune::site
