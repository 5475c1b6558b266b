#include "site-agent/config/site_config.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/core/config.h"
#include "common/core/logging.h"
#include "common/core/status.h"
#include "common/http/http_server.h"
#include "common/net/tls.h"

namespace fedtune::site {

namespace {

// cert, key and client_ca of a served endpoint's table, resolved.
template <typename Resolve>
absl::StatusOr<net::TlsFiles> ServerTlsFiles(const Config& table, const Resolve& resolve) {
  ASSIGN_OR_RETURN(std::string cert, table.GetString("cert", ""));
  ASSIGN_OR_RETURN(std::string key, table.GetString("key", ""));
  ASSIGN_OR_RETURN(std::string ca, table.GetString("client_ca", ""));
  return net::TlsFiles{resolve(ca), resolve(cert), resolve(key), ""};
}

// An address this site serves on: host:port, plain only on loopback, TLS
// only with its three files. Empty: not served.
absl::Status CheckListen(const std::string& path, const char* section, const char* key,
                         const std::string& listen, bool tls, const net::TlsFiles& files) {
  if (listen.empty()) return absl::OkStatus();
  std::string host;
  int port = 0;
  if (auto st = http::SplitHostPort(listen, &host, &port); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key '", section, ".", key, "': ", st.message()));
  }
  if (!tls && !http::IsLoopbackHost(host)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": key '", section, ".", key, "' = \"", listen,
        "\" is not a loopback address: plain connections are allowed on 127.0.0.1 or [::1] only; set tls = true "
        "with cert, key and client_ca under [", section, "] to serve other hosts"));
  }
  if (tls && (files.cert_pem.empty() || files.key_pem.empty() || files.ca_pem.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": [", section, "] tls = true needs cert and key (a server certificate for this host; the federation's "
              "site certificate is for client use only) and client_ca (the CA of the hospital's client "
              "certificates)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SiteConfig> SiteConfigFrom(const Config& root, const std::string& path) {
  RETURN_IF_ERROR(
      root.RejectUnknownKeys({"site", "ingest", "deid", "labels", "split", "stats", "coordinator", "tls", "training",
                              "log", "scp", "http", "inference"}));
  namespace fs = std::filesystem;
  const fs::path base = fs::absolute(path).parent_path();
  auto resolve = [&](const std::string& p) { return p.empty() ? p : (base / p).lexically_normal().string(); };
  SiteConfig c;
  ASSIGN_OR_RETURN(Config site, root.GetTable("site"));
  RETURN_IF_ERROR(site.RejectUnknownKeys({"id", "workspace"}));
  ASSIGN_OR_RETURN(c.site_id, site.GetString("id"));
  ASSIGN_OR_RETURN(c.ingest.workspace, site.GetString("workspace"));
  c.ingest.workspace = resolve(c.ingest.workspace);

  ASSIGN_OR_RETURN(Config in, root.GetTableOrEmpty("ingest"));
  RETURN_IF_ERROR(in.RejectUnknownKeys({"image_size", "fit", "modalities", "require_chest", "min_rows", "min_columns",
                                        "max_rows", "max_columns", "max_frames", "max_file_mb", "max_decoded_mb",
                                        "threads", "keep_deid_copies", "cache_bits"}));
  ASSIGN_OR_RETURN(int64_t size, in.GetIntInRange("image_size", 16, 4096, 518));
  c.ingest.image_size = static_cast<int>(size);
  ASSIGN_OR_RETURN(std::string fit, in.GetString("fit", "pad"));
  if (fit != "pad" && fit != "crop") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key 'ingest.fit': use \"pad\" or \"crop\", got \"", fit, "\""));
  }
  c.ingest.fit = fit == "pad" ? ingest::FitMode::kPad : ingest::FitMode::kCrop;
  ASSIGN_OR_RETURN(c.ingest.filters.modalities, in.GetStringList("modalities", {"CR", "DX"}));
  ASSIGN_OR_RETURN(c.ingest.filters.require_chest, in.GetBool("require_chest", false));
  ASSIGN_OR_RETURN(int64_t rows, in.GetIntInRange("min_rows", 1, 65535, 256));
  ASSIGN_OR_RETURN(int64_t cols, in.GetIntInRange("min_columns", 1, 65535, 256));
  c.ingest.filters.min_rows = static_cast<int>(rows);
  c.ingest.filters.min_columns = static_cast<int>(cols);
  ASSIGN_OR_RETURN(int64_t max_rows, in.GetIntInRange("max_rows", rows, 65535, 16384));
  ASSIGN_OR_RETURN(int64_t max_cols, in.GetIntInRange("max_columns", cols, 65535, 16384));
  ASSIGN_OR_RETURN(int64_t max_frames, in.GetIntInRange("max_frames", 1, 100000, 64));
  ASSIGN_OR_RETURN(int64_t max_file_mb, in.GetIntInRange("max_file_mb", 1, 1 << 20, 512));
  ASSIGN_OR_RETURN(int64_t max_decoded_mb, in.GetIntInRange("max_decoded_mb", 1, 1 << 20, 1024));
  c.ingest.filters.max_rows = static_cast<int>(max_rows);
  c.ingest.filters.max_columns = static_cast<int>(max_cols);
  c.ingest.filters.max_frames = static_cast<int>(max_frames);
  c.ingest.filters.max_file_bytes = max_file_mb << 20;
  c.ingest.filters.max_decoded_bytes = max_decoded_mb << 20;
  ASSIGN_OR_RETURN(int64_t threads, in.GetIntInRange("threads", 0, 1024, 0));
  c.ingest.threads = static_cast<int>(threads);
  ASSIGN_OR_RETURN(c.ingest.keep_deid_copies, in.GetBool("keep_deid_copies", true));
  ASSIGN_OR_RETURN(int64_t bits, in.GetIntInRange("cache_bits", 8, 16, 8));
  if (bits != 8 && bits != 16) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key 'ingest.cache_bits': use 8 or 16, got ", bits));
  }
  c.ingest.cache_bits = static_cast<int>(bits);

  ASSIGN_OR_RETURN(Config deid, root.GetTableOrEmpty("deid"));
  RETURN_IF_ERROR(deid.RejectUnknownKeys({"retain_patient_characteristics", "retain_device_identity",
                                          "retain_institution_identity", "modified_dates", "clean_descriptors",
                                          "burned_in", "burned_in_markers", "burned_in_min_confidence",
                                          "tessdata_dir"}));
  ASSIGN_OR_RETURN(c.ingest.deid.retain_patient_characteristics, deid.GetBool("retain_patient_characteristics", false));
  ASSIGN_OR_RETURN(c.ingest.deid.retain_device_identity, deid.GetBool("retain_device_identity", false));
  ASSIGN_OR_RETURN(c.ingest.deid.retain_institution_identity, deid.GetBool("retain_institution_identity", false));
  ASSIGN_OR_RETURN(c.ingest.deid.modified_dates, deid.GetBool("modified_dates", false));
  ASSIGN_OR_RETURN(c.ingest.deid.clean_descriptors, deid.GetBool("clean_descriptors", false));
  ASSIGN_OR_RETURN(std::string burned_in, deid.GetString("burned_in", "quarantine"));
  auto burned_in_mode = ingest::ParseBurnedInMode(burned_in);
  if (!burned_in_mode.ok()) return Annotate(burned_in_mode.status(), absl::StrCat(path, ": key 'deid.burned_in'"));
  c.ingest.burned_in.mode = *burned_in_mode;
  ASSIGN_OR_RETURN(c.ingest.burned_in.allowed_markers,
                   deid.GetStringList("burned_in_markers", ingest::DefaultAllowedMarkers()));
  ASSIGN_OR_RETURN(int64_t min_confidence, deid.GetIntInRange("burned_in_min_confidence", 0, 100, 50));
  c.ingest.burned_in.min_confidence = static_cast<int>(min_confidence);
  ASSIGN_OR_RETURN(std::string tessdata, deid.GetString("tessdata_dir", ""));
  c.ingest.burned_in.tessdata_dir = tessdata.empty() ? "" : resolve(tessdata);

  ASSIGN_OR_RETURN(Config labels, root.GetTableOrEmpty("labels"));
  RETURN_IF_ERROR(labels.RejectUnknownKeys({"layout", "key", "key_column", "aggregation", "uncertain", "findings"}));
  ASSIGN_OR_RETURN(std::string layout, labels.GetString("layout", "vindr"));
  ASSIGN_OR_RETURN(std::string key, labels.GetString("key", "file_stem"));
  ASSIGN_OR_RETURN(std::string aggregation, labels.GetString("aggregation", "any"));
  ASSIGN_OR_RETURN(std::string uncertain, labels.GetString("uncertain", "unknown"));
  auto choice = [&](const std::string& k, const std::string& v, std::initializer_list<const char*> allowed) -> absl::Status {
    for (const char* a : allowed) {
      if (v == a) return absl::OkStatus();
    }
    std::string list;
    for (const char* a : allowed) absl::StrAppend(&list, list.empty() ? "" : ", ", a);
    return absl::InvalidArgumentError(absl::StrCat(path, ": key 'labels.", k, "': \"", v, "\" is not one of ", list));
  };
  RETURN_IF_ERROR(choice("layout", layout, {"vindr", "wide"}));
  RETURN_IF_ERROR(choice("key", key, {"file_stem", "sop_instance_uid", "accession_number"}));
  RETURN_IF_ERROR(choice("aggregation", aggregation, {"any", "majority"}));
  RETURN_IF_ERROR(choice("uncertain", uncertain, {"unknown", "positive", "negative"}));
  c.ingest.labels.layout = layout == "vindr" ? dataset::LabelLayout::kVinDr : dataset::LabelLayout::kWide;
  c.ingest.label_key = key == "file_stem"          ? ingest::LabelKey::kFileStem
                       : key == "sop_instance_uid" ? ingest::LabelKey::kSopInstanceUid
                                                   : ingest::LabelKey::kAccessionNumber;
  ASSIGN_OR_RETURN(c.ingest.labels.key_column, labels.GetString("key_column", "image_id"));
  c.ingest.labels.aggregation =
      aggregation == "any" ? dataset::RaterAggregation::kAny : dataset::RaterAggregation::kMajority;
  c.ingest.labels.uncertain = uncertain == "unknown"    ? dataset::UncertainPolicy::kUnknown
                              : uncertain == "positive" ? dataset::UncertainPolicy::kPositive
                                                        : dataset::UncertainPolicy::kNegative;
  ASSIGN_OR_RETURN(c.ingest.labels.findings, labels.GetStringList("findings", {}));

  ASSIGN_OR_RETURN(Config split, root.GetTableOrEmpty("split"));
  RETURN_IF_ERROR(split.RejectUnknownKeys({"train", "val", "test", "seed"}));
  ASSIGN_OR_RETURN(c.ingest.split.train, split.GetDouble("train", 0.7));
  ASSIGN_OR_RETURN(c.ingest.split.val, split.GetDouble("val", 0.1));
  ASSIGN_OR_RETURN(c.ingest.split.test, split.GetDouble("test", 0.2));
  ASSIGN_OR_RETURN(int64_t seed, split.GetIntInRange("seed", 0, INT64_MAX, 0));
  c.ingest.split_seed = static_cast<uint64_t>(seed);
  if (auto s = dataset::Validate(c.ingest.split); !s.ok()) return Annotate(s, path);

  ASSIGN_OR_RETURN(Config stats, root.GetTableOrEmpty("stats"));
  RETURN_IF_ERROR(stats.RejectUnknownKeys({"k", "min_train_images", "max_evaluations_per_job", "share_local_model"}));
  ASSIGN_OR_RETURN(int64_t k, stats.GetIntInRange("k", 1, 1000, 5));
  c.k_threshold = static_cast<int>(k);
  // Default: 20, or k when k is larger; set below k, it is refused.
  ASSIGN_OR_RETURN(c.min_train_images,
                   stats.GetIntInRange("min_train_images", 1, int64_t{1} << 40, std::max<int64_t>(20, k)));
  if (c.min_train_images < c.k_threshold) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": [stats] min_train_images (", c.min_train_images,
                                                   ") must be at least k (", c.k_threshold, ")"));
  }
  ASSIGN_OR_RETURN(int64_t evaluations, stats.GetIntInRange("max_evaluations_per_job", 1, 100000, 32));
  c.max_evaluations_per_job = static_cast<int>(evaluations);
  ASSIGN_OR_RETURN(c.share_local_model, stats.GetBool("share_local_model", false));

  ASSIGN_OR_RETURN(Config coord, root.GetTableOrEmpty("coordinator"));
  RETURN_IF_ERROR(coord.RejectUnknownKeys({"address"}));
  ASSIGN_OR_RETURN(c.run.coordinator, coord.GetString("address", ""));
  if (!c.run.coordinator.empty()) {
    if (absl::Status st = net::CheckDialAddress(c.run.coordinator); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": [coordinator] address: ", st.message()));
    }
  }
  ASSIGN_OR_RETURN(Config tls, root.GetTableOrEmpty("tls"));
  RETURN_IF_ERROR(tls.RejectUnknownKeys({"ca", "cert", "key"}));
  ASSIGN_OR_RETURN(std::string ca, tls.GetString("ca", ""));
  ASSIGN_OR_RETURN(std::string cert, tls.GetString("cert", ""));
  ASSIGN_OR_RETURN(std::string key_pem, tls.GetString("key", ""));
  c.run.tls = {resolve(ca), resolve(cert), resolve(key_pem), ""};
  ASSIGN_OR_RETURN(Config tr, root.GetTableOrEmpty("training"));
  RETURN_IF_ERROR(tr.RejectUnknownKeys({"backbone", "device", "threads", "bootstrap_resamples"}));
  ASSIGN_OR_RETURN(std::string backbone, tr.GetString("backbone", ""));
  c.run.backbone = resolve(backbone);
  ASSIGN_OR_RETURN(c.run.device, tr.GetString("device", "auto"));
  if (c.run.device != "auto" && c.run.device != "cpu" && c.run.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": key 'training.device': use \"auto\", \"cpu\" or \"cuda\", got \"", c.run.device, "\""));
  }
  ASSIGN_OR_RETURN(int64_t run_threads, tr.GetIntInRange("threads", 0, 1024, 0));
  c.run.threads = static_cast<int>(run_threads);
  ASSIGN_OR_RETURN(int64_t boot, tr.GetIntInRange("bootstrap_resamples", 0, 100000, 1000));
  c.run.bootstrap_resamples = static_cast<int>(boot);
  ASSIGN_OR_RETURN(Config log, root.GetTableOrEmpty("log"));
  RETURN_IF_ERROR(log.RejectUnknownKeys({"level", "file"}));
  ASSIGN_OR_RETURN(c.run.log_level, log.GetString("level", "info"));
  ASSIGN_OR_RETURN(std::string log_file, log.GetString("file", ""));
  c.run.log_file = resolve(log_file);

  ASSIGN_OR_RETURN(Config scp, root.GetTableOrEmpty("scp"));
  RETURN_IF_ERROR(scp.RejectUnknownKeys({"enabled", "address", "port", "ae_title", "allowed_calling_aes",
                                         "allowed_hosts", "max_associations", "max_pending_connections",
                                         "min_free_mb", "incoming", "keep_quarantined", "quarantine_retention_days",
                                         "labels"}));
  ASSIGN_OR_RETURN(c.scp.enabled, scp.GetBool("enabled", false));
  scp::StoreScpOptions& so = c.scp.options;
  ASSIGN_OR_RETURN(so.address, scp.GetString("address", "127.0.0.1"));
  ASSIGN_OR_RETURN(int64_t port, scp.GetIntInRange("port", 0, 65535, 11112));
  so.port = static_cast<int>(port);
  ASSIGN_OR_RETURN(so.ae_title, scp.GetString("ae_title", "FEDTUNE"));
  ASSIGN_OR_RETURN(so.allowed_calling_aes, scp.GetStringList("allowed_calling_aes", {}));
  ASSIGN_OR_RETURN(so.allowed_hosts, scp.GetStringList("allowed_hosts", {}));
  ASSIGN_OR_RETURN(int64_t max_assoc, scp.GetIntInRange("max_associations", 1, 256, 8));
  so.max_associations = static_cast<int>(max_assoc);
  ASSIGN_OR_RETURN(int64_t max_pending, scp.GetIntInRange("max_pending_connections", 1, 4096, 32));
  so.max_pending_connections = static_cast<int>(max_pending);
  ASSIGN_OR_RETURN(int64_t min_free_mb, scp.GetIntInRange("min_free_mb", 0, int64_t{1} << 40, 1024));
  so.min_free_bytes = min_free_mb << 20;
  ASSIGN_OR_RETURN(std::string incoming, scp.GetString("incoming", ""));
  so.incoming_dir = incoming.empty() ? c.ingest.workspace + "/incoming" : resolve(incoming);
  ASSIGN_OR_RETURN(so.keep_quarantined, scp.GetBool("keep_quarantined", false));
  ASSIGN_OR_RETURN(int64_t retention, scp.GetIntInRange("quarantine_retention_days", 1, 3650, 7));
  so.quarantine_retention_days = static_cast<double>(retention);
  ASSIGN_OR_RETURN(std::string scp_labels, scp.GetString("labels", ""));
  c.scp.labels = resolve(scp_labels);
  if (c.scp.enabled) {  // (`fedtune-site receive` checks the same when it starts)
    if (auto st = scp::ValidateStoreScpOptions(so); !st.ok()) return Annotate(st, path);
  }
  ASSIGN_OR_RETURN(Config http_table, root.GetTableOrEmpty("http"));
  RETURN_IF_ERROR(http_table.RejectUnknownKeys({"listen", "tls", "cert", "key", "client_ca"}));
  ASSIGN_OR_RETURN(c.http.listen, http_table.GetString("listen", ""));
  ASSIGN_OR_RETURN(c.http.tls, http_table.GetBool("tls", false));
  ASSIGN_OR_RETURN(c.http.tls_files, ServerTlsFiles(http_table, resolve));
  RETURN_IF_ERROR(CheckListen(path, "http", "listen", c.http.listen, c.http.tls, c.http.tls_files));

  ASSIGN_OR_RETURN(Config inf, root.GetTableOrEmpty("inference"));
  RETURN_IF_ERROR(inf.RejectUnknownKeys({"enabled", "http_listen", "grpc_listen", "tls", "cert", "key", "client_ca",
                                         "model_name", "max_batch_size", "max_queue_delay_ms", "max_request_mb",
                                         "device"}));
  InferenceConfig& ic = c.inference;
  ASSIGN_OR_RETURN(ic.enabled, inf.GetBool("enabled", false));
  ASSIGN_OR_RETURN(ic.http_listen, inf.GetString("http_listen", ic.http_listen));
  ASSIGN_OR_RETURN(ic.grpc_listen, inf.GetString("grpc_listen", ic.grpc_listen));
  ASSIGN_OR_RETURN(ic.tls, inf.GetBool("tls", false));
  ASSIGN_OR_RETURN(ic.tls_files, ServerTlsFiles(inf, resolve));
  RETURN_IF_ERROR(CheckListen(path, "inference", "http_listen", ic.http_listen, ic.tls, ic.tls_files));
  RETURN_IF_ERROR(CheckListen(path, "inference", "grpc_listen", ic.grpc_listen, ic.tls, ic.tls_files));
  ASSIGN_OR_RETURN(ic.model_name, inf.GetString("model_name", ic.model_name));
  if (ic.model_name.empty() || ic.model_name.find_first_of("/?#% ") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": key 'inference.model_name' must be a non-empty name without '/', '?', '#', '%' or spaces"));
  }
  ASSIGN_OR_RETURN(int64_t max_batch, inf.GetIntInRange("max_batch_size", 1, 1024, ic.max_batch_size));
  ASSIGN_OR_RETURN(int64_t max_delay, inf.GetIntInRange("max_queue_delay_ms", 0, 10000, ic.max_queue_delay_ms));
  ASSIGN_OR_RETURN(int64_t max_request_mb, inf.GetIntInRange("max_request_mb", 1, 4096, 64));
  ic.max_batch_size = static_cast<int>(max_batch);
  ic.max_queue_delay_ms = static_cast<int>(max_delay);
  ic.max_request_bytes = max_request_mb << 20;
  ASSIGN_OR_RETURN(ic.device, inf.GetString("device", ""));
  if (ic.device.empty()) ic.device = c.run.device;
  if (ic.device != "auto" && ic.device != "cpu" && ic.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": key 'inference.device': use \"auto\", \"cpu\" or \"cuda\", got \"", ic.device, "\""));
  }
  if (!c.scp.labels.empty()) {
    if (c.ingest.labels.findings.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": [scp] labels needs [labels] findings = [...]"));
    }
    if (c.ingest.label_key == ingest::LabelKey::kFileStem) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": [scp] labels: received files have no meaningful file name; set [labels] key = "
                "\"sop_instance_uid\" or \"accession_number\""));
    }
  }
  return c;
}

}  // namespace

absl::StatusOr<SiteConfig> LoadSiteConfig(const std::string& path) {
  ASSIGN_OR_RETURN(Config root, Config::LoadFile(path));
  return SiteConfigFrom(root, path);
}

absl::StatusOr<SiteConfig> ParseSiteConfig(std::string_view toml, const std::string& path) {
  ASSIGN_OR_RETURN(Config root, Config::Parse(toml, path));
  return SiteConfigFrom(root, path);
}

absl::StatusOr<SiteConfig> LoadSiteConfigAndStartLogging(const std::string& path) {
  ASSIGN_OR_RETURN(SiteConfig config, LoadSiteConfig(path));
  LogOptions lo;
  lo.level = config.run.log_level;
  lo.file = config.run.log_file;
  lo.component = config.site_id;
  if (auto st = InitLogging(lo); !st.ok()) return Annotate(st, path);
  return config;
}

ingest::IngestOptions ScpIngestOptions(const SiteConfig& config) {
  ingest::IngestOptions o = config.ingest;
  o.labels_path = config.scp.labels;
  o.file_stem_is_key = false;  // received files are named by the receiver
  return o;
}

}  // namespace fedtune::site
