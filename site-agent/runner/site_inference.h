// The inference service as site.toml configures it ([inference]), and the
// promoted model the workspace holds loaded into it: shared by the daemon
// (`fedtune-site run` with [inference] enabled = true) and `fedtune-site
// serve`.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/core/metrics.h"
#include "site-agent/config/site_config.h"
#include "site-agent/inference/inference_service.h"

namespace fedtune::site {

InferenceServiceOptions InferenceOptionsFor(const SiteConfig& config);

// Loads workspace/models/current into `service` (and says so in the log),
// unless it is the model already served. Returns what is served now
// (nullptr: none held). A model that cannot be loaded leaves the service as
// it was and is an error naming why.
absl::StatusOr<std::shared_ptr<const ServingModel>> ServeHeldModel(const SiteConfig& config,
                                                                   const std::string& backbone_sha256,
                                                                   InferenceService* service);

// Writes the bound ports ("<port>\n") where asked (empty paths: skipped).
absl::Status WriteServicePorts(const InferenceService& service, const std::string& http_port_file,
                               const std::string& grpc_port_file);

}  // namespace fedtune::site
