// The live dashboard ([dashboard] in coordinator.toml), served on the
// coordinator's HTTP(S) endpoint ([http]) to the same people as /metrics:
// loopback, or HTTPS for the admin certificates on its lists. Read-only.
//   /                          jobs, and the selected job live: the rounds x
//                              sites grid (state, epoch, loss, validation
//                              AUROC), the validation-AUROC-per-round chart,
//                              site health, the events, the privacy budget
//   /api/jobs                  every job (JSON)
//   /api/jobs/{id}             one job with its rounds and sites (JSON)
//   /api/sites                 the sites: last seen, device, backbone, dataset
//   /api/jobs/{id}/stream      Server-Sent Events: "status" (the job) when it
//                              changes, "event" for each job event
//   /jobs/{id}/report.html     the cross-institution report, once evaluated
// Nothing here is new data: it is what `fedtune job status / watch`, `fedtune
// sites` and `fedtune report` show, rendered for a browser.
#pragma once

#include <chrono>

#include "common/http/http_server.h"
#include "coordinator/engine/round_engine.h"

namespace fedtune::coordinator {

struct DashboardOptions {
  // How often a stream looks for new events (and sends a keep-alive).
  std::chrono::milliseconds poll{500};
  // A stream ends after this long (the browser reconnects by itself).
  std::chrono::seconds max_stream{600};
  // Open streams at once (each holds one of the endpoint's threads; more are
  // answered 503 so that /metrics keeps its threads).
  int max_streams = 12;
};

// Adds the routes above to `server` (before it starts). `engine` must
// outlive it.
void AddDashboard(http::Server& server, RoundEngine* engine, const DashboardOptions& options = {});

}  // namespace fedtune::coordinator
