// site.toml: everything a hospital's site agent is configured with. See
// deploy/examples/site.toml for a commented example.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "site-agent/ingest/ingest.h"

namespace fedtune::site {

struct SiteConfig {
  std::string site_id;
  ingest::IngestOptions ingest;  // workspace, filters, de-identification, labels, split
  int k_threshold = 5;           // counts below k are suppressed in shareable summaries
};

// Reads and validates site.toml; unknown keys and wrong types are errors that
// name the file, line and key.
absl::StatusOr<SiteConfig> LoadSiteConfig(const std::string& path);

}  // namespace fedtune::site
