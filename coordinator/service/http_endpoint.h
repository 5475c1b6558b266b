// The coordinator's HTTP(S) endpoint ([http] in coordinator.toml): /metrics
// in Prometheus' text format and, with [dashboard] enabled, the live
// dashboard; over HTTPS for admin certificates on the [admins] list
// (viewers suffice), or plain HTTP on loopback.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/core/metrics.h"
#include "common/http/http_server.h"
#include "coordinator/engine/round_engine.h"
#include "coordinator/service/coordinator_config.h"
#include "coordinator/service/services.h"

namespace fedtune::coordinator {

// Gauges read from the engine at every scrape: jobs by state, sites
// enrolled and connected.
void AddEngineCollectors(RoundEngine* engine, MetricsRegistry* metrics);

// Starts the endpoint when config.http_listen is set (nullptr otherwise),
// with the dashboard when config.dashboard. `service` carries the admin
// list and revocations.
absl::StatusOr<std::unique_ptr<http::Server>> StartHttpEndpoint(const CoordinatorConfig& config,
                                                               const ServiceOptions& service,
                                                               MetricsRegistry* metrics, RoundEngine* engine);

}  // namespace fedtune::coordinator
