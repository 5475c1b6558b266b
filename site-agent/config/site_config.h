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

// The site's HTTP(S) endpoint ([http] in site.toml): /metrics for the
// hospital's Prometheus. Plain HTTP on loopback only; with tls, HTTPS with
// a server certificate and client certificates from `tls_files.ca_pem` (the
// hospital's CA). Empty listen: not served.
struct SiteHttpConfig {
  std::string listen;
  bool tls = false;
  net::TlsFiles tls_files;
};

// The site inference service ([inference] in site.toml): the federation's
// promoted model served to the hospital's own clients, over the Open
// Inference Protocol v2 (REST and gRPC) and DICOM in, findings out. Plain on
// loopback only; with tls, mutual TLS with a server certificate and client
// certificates from `tls_files.ca_pem` (the hospital's CA).
struct InferenceConfig {
  bool enabled = false;  // served by `fedtune-site run` (`fedtune-site serve` serves regardless)
  std::string http_listen = "127.0.0.1:8000";  // REST; empty: not served
  std::string grpc_listen = "127.0.0.1:8001";  // gRPC; empty: not served
  bool tls = false;
  net::TlsFiles tls_files;
  std::string model_name = "fedtune";
  int max_batch_size = 8;        // images run through the model at once
  int max_queue_delay_ms = 5;    // how long a request waits for others to share its batch
  int64_t max_request_bytes = int64_t{64} << 20;
  std::string device;  // empty: [training] device
};

struct SiteConfig {
  std::string site_id;
  ingest::IngestOptions ingest;  // workspace, filters, de-identification, labels, split
  int k_threshold = 5;           // counts below k are suppressed in shareable summaries
  int64_t min_train_images = 20;     // [stats]: a training task runs on at least this many (>= k)
  int max_evaluations_per_job = 32;  // [stats]: evaluation tasks a job may have here
  bool share_local_model = false;    // [stats]: this site's local-only baseline may be evaluated elsewhere
  RunConfig run;
  ScpConfig scp;
  SiteHttpConfig http;
  InferenceConfig inference;
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
