// site.toml: everything a hospital's site agent is configured with. See
// deploy/examples/site.toml for a commented example.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/net/tls.h"
#include "site-agent/dicom_scp/store_scp.h"
#include "site-agent/ingest/ingest.h"

namespace fedtune::site {

// How the site agent reaches the coordinator and trains ([coordinator],
// [tls] and [training] in site.toml; only `fedtune-site run` needs them).
struct RunConfig {
  std::string coordinator;  // host:port
  net::TlsFiles tls;        // this site's certificate (CN = site id, OU = site)
  std::string backbone;     // base weights (safetensors); its SHA-256 must match the job's
  std::string device = "auto";
  int threads = 0;              // 0 = every usable core
  int bootstrap_resamples = 1000;  // for the confidence intervals of test metrics
  std::string log_file;
  std::string log_level = "info";
};

// The DICOM storage SCP ([scp] in site.toml): `fedtune-site receive`, and
// `fedtune-site run` when enabled.
struct ScpConfig {
  bool enabled = false;
  scp::StoreScpOptions options;
  std::string labels;  // labels CSV for received files (re-read as it changes); empty: none
};

struct SiteConfig {
  std::string site_id;
  ingest::IngestOptions ingest;  // workspace, filters, de-identification, labels, split
  int k_threshold = 5;           // counts below k are suppressed in shareable summaries
  RunConfig run;
  ScpConfig scp;
};

// Loads site.toml and starts logging as [log] says, for the long-running
// commands (run, receive); errors name the file.
absl::StatusOr<SiteConfig> LoadSiteConfigAndStartLogging(const std::string& path);

// The ingest configuration for files the SCP receives.
ingest::IngestOptions ScpIngestOptions(const SiteConfig& config);

// Reads and validates site.toml; unknown keys and wrong types are errors that
// name the file, line and key.
absl::StatusOr<SiteConfig> LoadSiteConfig(const std::string& path);
// The same from site.toml's text: `path` names it in errors and is where
// relative paths are resolved from (nothing is read from disk).
absl::StatusOr<SiteConfig> ParseSiteConfig(std::string_view toml, const std::string& path);

}  // namespace fedtune::site
