#include "coordinator/engine/job_spec.h"

#include <cmath>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/core/config.h"
#include "common/core/status.h"
#include "common/fl/dp_accountant.h"
#include "common/fl/task_spec.h"

namespace fedtune::coordinator {
namespace {

absl::Status Bad(const std::string& source, std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": key '", Sv(key), "': ", Sv(what)));
}

absl::StatusOr<double> PositiveDouble(const Config& t, std::string_view key, double fallback, double hi) {
  ASSIGN_OR_RETURN(double v, t.GetDouble(key, fallback));
  if (!(v > 0) || v > hi) {
    return Bad(t.source(), absl::StrCat(t.path(), ".", Sv(key)), absl::StrCat("must be in (0, ", hi, "], got ", v));
  }
  return v;
}

absl::StatusOr<double> DoubleIn(const Config& t, std::string_view key, double fallback, double lo, double hi) {
  ASSIGN_OR_RETURN(double v, t.GetDouble(key, fallback));
  if (!(v >= lo && v <= hi)) {
    return Bad(t.source(), absl::StrCat(t.path(), ".", Sv(key)),
               absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

// [strategy]: the settings of the chosen strategy. A setting another
// strategy uses is refused rather than silently ignored.
absl::Status ParseStrategyTable(const Config& root, const std::string& source, fl::StrategyOptions* o) {
  ASSIGN_OR_RETURN(Config t, root.GetTableOrEmpty("strategy"));
  RETURN_IF_ERROR(t.RejectUnknownKeys(
      {"server_learning_rate", "server_momentum", "beta1", "beta2", "tau", "trim_fraction"}));
  const std::string& n = o->name;
  const bool adaptive = n == "fedadam" || n == "fedyogi" || n == "fedadagrad";
  const struct {
    const char* key;
    bool used;
    const char* who;
  } keys[] = {
      {"server_learning_rate", adaptive || n == "fedavgm", "fedavgm, fedadam, fedyogi and fedadagrad"},
      {"server_momentum", n == "fedavgm", "fedavgm"},
      {"beta1", adaptive, "fedadam, fedyogi and fedadagrad"},
      {"beta2", n == "fedadam" || n == "fedyogi", "fedadam and fedyogi"},
      {"tau", adaptive, "fedadam, fedyogi and fedadagrad"},
      {"trim_fraction", n == "trimmed-mean", "trimmed-mean"},
  };
  for (const auto& k : keys) {
    if (t.Has(k.key) && !k.used) {
      return Bad(source, absl::StrCat("strategy.", k.key),
                 absl::StrCat("is not used by job.strategy = \"", n, "\" (it applies to ", k.who, ")"));
    }
  }
  ASSIGN_OR_RETURN(o->server_learning_rate, t.GetDouble("server_learning_rate", fl::DefaultServerLearningRate(n)));
  ASSIGN_OR_RETURN(o->server_momentum, t.GetDouble("server_momentum", o->server_momentum));
  ASSIGN_OR_RETURN(o->beta1, t.GetDouble("beta1", o->beta1));
  ASSIGN_OR_RETURN(o->beta2, t.GetDouble("beta2", o->beta2));
  ASSIGN_OR_RETURN(o->tau, t.GetDouble("tau", o->tau));
  ASSIGN_OR_RETURN(o->trim_fraction, t.GetDouble("trim_fraction", o->trim_fraction));
  if (auto st = fl::Validate(*o); !st.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message()));
  return absl::OkStatus();
}

// [privacy]: client-level differential privacy. Settings that only matter
// when it is on (or with adaptive clipping) are refused otherwise, like the
// strategy table's.
absl::Status ParsePrivacyTable(const Config& root, const std::string& source, JobSpec* j) {
  ASSIGN_OR_RETURN(Config t, root.GetTableOrEmpty("privacy"));
  RETURN_IF_ERROR(t.RejectUnknownKeys({"differential_privacy", "noise_multiplier", "clip_norm", "adaptive_clipping",
                                       "target_quantile", "clip_learning_rate", "clipped_count_stddev", "delta",
                                       "max_epsilon", "secure_aggregation", "secure_aggregation_bound",
                                       "secure_aggregation_stage_s"}));
  SecureAggregationOptions& sa = j->secure_aggregation;
  ASSIGN_OR_RETURN(sa.enabled, t.GetBool("secure_aggregation", false));
  for (const char* key : {"secure_aggregation_bound", "secure_aggregation_stage_s"}) {
    if (t.Has(key) && !sa.enabled) {
      return Bad(source, absl::StrCat("privacy.", key), "is only used with privacy.secure_aggregation = true");
    }
  }
  ASSIGN_OR_RETURN(sa.bound, t.GetDouble("secure_aggregation_bound", sa.bound));
  ASSIGN_OR_RETURN(sa.stage_timeout_s, t.GetDouble("secure_aggregation_stage_s", sa.stage_timeout_s));
  if (sa.enabled) {
    if (!(sa.bound > 0) || sa.bound > 1e6) return Bad(source, "privacy.secure_aggregation_bound", "must be in (0, 1e6]");
    if (!(sa.stage_timeout_s >= 1)) return Bad(source, "privacy.secure_aggregation_stage_s", "must be at least 1");
    if (!fl::IsLinear(j->strategy.name)) {
      return Bad(source, "privacy.secure_aggregation",
                 absl::StrCat("cannot be used with strategy \"", j->strategy.name,
                              "\": it reads each site's update, and secure aggregation gives the coordinator only "
                              "their sum (use fedavg, fedprox, ffa-lora or a server optimiser)"));
    }
    if (j->baselines) {
      return Bad(source, "job.baselines",
                 "cannot be combined with secure aggregation: a local-only model is one site's update in the clear");
    }
    if (j->min_sites < 2) {
      return Bad(source, "job.min_sites", "must be at least 2 with secure aggregation (a sum of one is that update)");
    }
  }
  fl::DpOptions& o = j->privacy;
  ASSIGN_OR_RETURN(std::string mode, t.GetString("differential_privacy", "off"));
  if (mode != "off" && mode != "central" && mode != "distributed") {
    return Bad(source, "privacy.differential_privacy",
               absl::StrCat("\"", mode, "\" is not one of off, central, distributed"));
  }
  o.enabled = mode != "off";
  sa.distributed_dp = mode == "distributed";
  ASSIGN_OR_RETURN(o.adaptive_clipping, t.GetBool("adaptive_clipping", false));
  for (const char* key : {"noise_multiplier", "clip_norm", "adaptive_clipping", "delta", "max_epsilon",
                          "target_quantile", "clip_learning_rate", "clipped_count_stddev"}) {
    if (!t.Has(key)) continue;
    const std::string_view k(key);
    const bool adaptive_only = k == "target_quantile" || k == "clip_learning_rate" || k == "clipped_count_stddev";
    if (!o.enabled) {
      return Bad(source, absl::StrCat("privacy.", key),
                 "is only used with privacy.differential_privacy = \"central\" or \"distributed\"");
    }
    if (adaptive_only && !o.adaptive_clipping) {
      return Bad(source, absl::StrCat("privacy.", key), "is only used with privacy.adaptive_clipping = true");
    }
  }
  ASSIGN_OR_RETURN(o.noise_multiplier, t.GetDouble("noise_multiplier", o.noise_multiplier));
  ASSIGN_OR_RETURN(o.clip_norm, t.GetDouble("clip_norm", o.clip_norm));
  ASSIGN_OR_RETURN(o.target_quantile, t.GetDouble("target_quantile", o.target_quantile));
  ASSIGN_OR_RETURN(o.clip_learning_rate, t.GetDouble("clip_learning_rate", o.clip_learning_rate));
  ASSIGN_OR_RETURN(o.clipped_count_stddev, t.GetDouble("clipped_count_stddev", o.clipped_count_stddev));
  ASSIGN_OR_RETURN(o.delta, t.GetDouble("delta", o.delta));
  ASSIGN_OR_RETURN(o.max_epsilon, t.GetDouble("max_epsilon", o.max_epsilon));
  if (!o.enabled) return absl::OkStatus();
  if (sa.enabled && !sa.distributed_dp) {
    return Bad(source, "privacy.secure_aggregation",
               "cannot be combined with differential_privacy = \"central\": central DP clips each site's update at "
               "the coordinator, which secure aggregation keeps from it; use differential_privacy = \"distributed\"");
  }
  if (sa.distributed_dp && !sa.enabled) {
    return Bad(source, "privacy.differential_privacy",
               "\"distributed\" needs privacy.secure_aggregation = true: the sites add the noise, and only their "
               "sum may be seen");
  }
  if (sa.distributed_dp && o.adaptive_clipping) {
    return Bad(source, "privacy.adaptive_clipping",
               "is not available with differential_privacy = \"distributed\" (the clipped count would need a "
               "secure sum of its own)");
  }
  if (auto st = fl::ValidateDp(o, j->strategy.name); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message()));
  }
  if (j->baselines) {
    return Bad(source, "job.baselines",
               "cannot be combined with differential privacy: the local-only models are not protected by the noise");
  }
  // The bound depends on the model, the method and the learning rate (on the
  // demo's federation the median update norm was 5.4 for LoRA and 0.69 for a
  // linear probe): no default fits, unless it adapts.
  if (!o.adaptive_clipping && !t.Has("clip_norm")) {
    return Bad(source, "privacy.clip_norm",
               "must be set with differential_privacy = \"central\" (the L2 bound of one site's update; near the "
               "median update norm of a job without noise, which tests/bench/update_norms.py --norms measures), "
               "or use adaptive_clipping = true");
  }
  if (sa.distributed_dp) {
    sa.site_noise_stddev = o.noise_multiplier * o.clip_norm / std::sqrt(static_cast<double>(j->min_sites));
    // A clipped value plus its noise must stay inside the fixed point's
    // bound, or clipping it would bend the noise.
    const double needed = o.clip_norm + 6 * sa.site_noise_stddev;
    if (!t.Has("secure_aggregation_bound")) {
      sa.bound = o.clip_norm + 8 * sa.site_noise_stddev;
    } else if (sa.bound < needed) {
      return Bad(source, "privacy.secure_aggregation_bound",
                 absl::StrFormat("is %g, below clip_norm + 6 x the sites' noise (%g): leave it out (then %g) or "
                                 "raise it",
                                 sa.bound, needed, o.clip_norm + 8 * sa.site_noise_stddev));
    }
  }
  if (o.max_epsilon > 0) {
    const double eps = fl::DpEpsilon(1.0, o.noise_multiplier, j->rounds, o.delta);
    if (eps > o.max_epsilon) {
      const int fit = fl::DpMaxSteps(1.0, o.noise_multiplier, o.delta, o.max_epsilon, j->rounds);
      const double z = fl::DpNoiseFor(1.0, j->rounds, o.delta, o.max_epsilon);
      return Bad(source, "privacy.max_epsilon",
                 absl::StrFormat("is %g but %d rounds at noise_multiplier %g reach epsilon = %.3g (delta = %g): "
                                 "run at most %d round%s, or raise noise_multiplier to %g",
                                 o.max_epsilon, j->rounds, o.noise_multiplier, eps, o.delta, fit,
                                 fit == 1 ? "" : "s", z));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<fl::Strategy>> MakeJobStrategy(const JobSpec& spec, uint64_t dp_seed) {
  ASSIGN_OR_RETURN(std::unique_ptr<fl::Strategy> inner, fl::MakeStrategy(spec.strategy));
  // Distributed DP: the sites clipped and added the noise; the coordinator
  // only sees their (securely aggregated) mean.
  if (spec.secure_aggregation.distributed_dp) return inner;
  return fl::WithDifferentialPrivacy(std::move(inner), spec.privacy, dp_seed);
}

v1::PrivacyBudget PrivacyBudgetOf(const JobSpec& spec, int rounds_aggregated) {
  v1::PrivacyBudget b;
  const fl::DpOptions& o = spec.privacy;
  if (!o.enabled) return b;
  b.set_mechanism(spec.secure_aggregation.distributed_dp ? "distributed DP-FedAvg" : "central DP-FedAvg");
  b.set_noise_multiplier(o.noise_multiplier);
  b.set_clip_norm(o.clip_norm);
  b.set_adaptive_clipping(o.adaptive_clipping);
  b.set_delta(o.delta);
  b.set_rounds_accounted(rounds_aggregated);
  b.set_epsilon_spent(fl::DpEpsilon(1.0, o.noise_multiplier, rounds_aggregated, o.delta));
  b.set_epsilon_planned(fl::DpEpsilon(1.0, o.noise_multiplier, spec.rounds, o.delta));
  b.set_max_epsilon(o.max_epsilon);
  return b;
}

absl::StatusOr<JobSpec> ParseJobSpec(const std::string& toml, const std::string& source) {
  ASSIGN_OR_RETURN(Config root, Config::Parse(toml, source));
  RETURN_IF_ERROR(root.RejectUnknownKeys({"job", "backbone", "model", "train", "strategy", "privacy"}));
  JobSpec j;

  ASSIGN_OR_RETURN(Config job, root.GetTable("job"));
  RETURN_IF_ERROR(job.RejectUnknownKeys({"name", "rounds", "min_sites", "round_deadline_s", "strategy",
                                         "on_quorum_failure", "max_round_attempts", "sites", "seed",
                                         "max_update_l2", "max_update_ratio", "baselines"}));
  ASSIGN_OR_RETURN(j.name, job.GetString("name"));
  if (j.name.empty() || j.name.size() > 128) return Bad(source, "job.name", "must have 1 to 128 characters");
  ASSIGN_OR_RETURN(int64_t rounds, job.GetIntInRange("rounds", 1, 10000, 3));
  ASSIGN_OR_RETURN(int64_t min_sites, job.GetIntInRange("min_sites", 1, 100000, 2));
  j.rounds = static_cast<int>(rounds);
  j.min_sites = static_cast<int>(min_sites);
  ASSIGN_OR_RETURN(j.round_deadline_s, PositiveDouble(job, "round_deadline_s", 1800, 7 * 24 * 3600));
  ASSIGN_OR_RETURN(j.strategy.name, job.GetString("strategy", "fedavg"));
  {
    const auto& names = fl::StrategyNames();
    if (std::find(names.begin(), names.end(), j.strategy.name) == names.end()) {
      return Bad(source, "job.strategy",
                 absl::StrCat("\"", j.strategy.name, "\" is not one of ", absl::StrJoin(names, ", ")));
    }
  }
  RETURN_IF_ERROR(ParseStrategyTable(root, source, &j.strategy));
  ASSIGN_OR_RETURN(std::string policy, job.GetString("on_quorum_failure", "retry"));
  if (policy != "retry" && policy != "fail") {
    return Bad(source, "job.on_quorum_failure", absl::StrCat("\"", policy, "\" is not one of retry, fail"));
  }
  j.on_quorum_failure = policy == "retry" ? QuorumPolicy::kRetry : QuorumPolicy::kFail;
  ASSIGN_OR_RETURN(int64_t attempts, job.GetIntInRange("max_round_attempts", 1, 100, 3));
  j.max_round_attempts = static_cast<int>(attempts);
  ASSIGN_OR_RETURN(j.sites, job.GetStringList("sites", {}));
  if (!j.sites.empty() && static_cast<int>(j.sites.size()) < j.min_sites) {
    return Bad(source, "job.sites", absl::StrCat("lists ", j.sites.size(), " sites but min_sites is ", j.min_sites));
  }
  ASSIGN_OR_RETURN(int64_t seed, job.GetIntInRange("seed", 0, int64_t{1} << 53, 0));
  ASSIGN_OR_RETURN(j.max_update_l2, DoubleIn(job, "max_update_l2", 0, 0, 1e12));
  ASSIGN_OR_RETURN(j.max_update_ratio, DoubleIn(job, "max_update_ratio", kDefaultMaxUpdateRatio, 0, 1e6));
  ASSIGN_OR_RETURN(j.baselines, job.GetBool("baselines", false));

  ASSIGN_OR_RETURN(Config backbone, root.GetTable("backbone"));
  RETURN_IF_ERROR(backbone.RejectUnknownKeys({"architecture", "sha256", "image_size"}));
  ASSIGN_OR_RETURN(j.backbone_architecture, backbone.GetString("architecture"));
  ASSIGN_OR_RETURN(j.backbone_sha256, backbone.GetString("sha256"));
  j.backbone_sha256 = absl::AsciiStrToLower(j.backbone_sha256);
  if (j.backbone_sha256.size() != 64 ||
      j.backbone_sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Bad(source, "backbone.sha256",
               "must be the 64 hex digits of the base weights file's SHA-256 (sha256sum FILE)");
  }
  ASSIGN_OR_RETURN(int64_t image_size, backbone.GetIntInRange("image_size", 0, 4096, 0));

  v1::TrainConfig& t = j.train;
  t.set_seed(seed);
  t.set_image_size(static_cast<int32_t>(image_size));
  ASSIGN_OR_RETURN(Config m, root.GetTable("model"));
  RETURN_IF_ERROR(m.RejectUnknownKeys({"findings", "method", "pooling", "lora"}));
  ASSIGN_OR_RETURN(std::vector<std::string> findings, m.GetStringList("findings"));
  if (findings.empty()) return Bad(source, "model.findings", "needs at least one finding");
  for (const auto& f : findings) t.add_findings(f);
  ASSIGN_OR_RETURN(std::string method, m.GetString("method", "lora"));
  t.set_method(method);
  if (fl::RequiresLora(j.strategy.name) && method != "lora") {
    return Bad(source, "job.strategy",
               absl::StrCat("\"", j.strategy.name, "\" aggregates LoRA adapters but model.method is \"", method,
                            "\" (use fedavg, a server optimiser, median or trimmed-mean)"));
  }
  t.set_freeze_lora_a(j.strategy.name == "ffa-lora");
  // The adaptive optimisers step every coordinate by about their learning
  // rate; the default was measured for LoRA adapters and would be far too
  // large for differences of backbone weights.
  const bool adaptive = j.strategy.name == "fedadam" || j.strategy.name == "fedyogi" || j.strategy.name == "fedadagrad";
  if (adaptive && method != "lora" && !root.Has("strategy.server_learning_rate")) {
    return Bad(source, "strategy.server_learning_rate",
               absl::StrCat("must be set for \"", j.strategy.name, "\" with model.method = \"", method,
                            "\": the default (", fl::DefaultServerLearningRate(j.strategy.name),
                            ") was chosen for LoRA adapters"));
  }
  ASSIGN_OR_RETURN(std::string pooling, m.GetString("pooling", "cls_mean"));
  t.set_head_pooling(pooling);
  ASSIGN_OR_RETURN(Config lora, m.GetTableOrEmpty("lora"));
  RETURN_IF_ERROR(lora.RejectUnknownKeys({"rank", "alpha", "dropout", "targets", "rslora"}));
  ASSIGN_OR_RETURN(int64_t rank, lora.GetIntInRange("rank", 1, 1024, 16));
  t.set_lora_rank(static_cast<int32_t>(rank));
  ASSIGN_OR_RETURN(double alpha, PositiveDouble(lora, "alpha", static_cast<double>(rank), 1e6));
  t.set_lora_alpha(alpha);
  ASSIGN_OR_RETURN(double dropout, DoubleIn(lora, "dropout", 0.1, 0, 0.9));
  t.set_lora_dropout(dropout);
  ASSIGN_OR_RETURN(std::vector<std::string> targets, lora.GetStringList("targets", {"query", "value"}));
  for (const auto& x : targets) t.add_lora_targets(x);
  ASSIGN_OR_RETURN(bool rslora, lora.GetBool("rslora", false));
  t.set_use_rslora(rslora);

  ASSIGN_OR_RETURN(Config tr, root.GetTableOrEmpty("train"));
  RETURN_IF_ERROR(tr.RejectUnknownKeys({"local_epochs", "batch_size", "learning_rate", "weight_decay",
                                        "warmup_fraction", "grad_clip_norm", "fedprox_mu", "max_train_samples",
                                        "class_weights"}));
  ASSIGN_OR_RETURN(int64_t epochs, tr.GetIntInRange("local_epochs", 1, 1000, 1));
  ASSIGN_OR_RETURN(int64_t batch, tr.GetIntInRange("batch_size", 1, 4096, 16));
  t.set_local_epochs(static_cast<int32_t>(epochs));
  t.set_batch_size(static_cast<int32_t>(batch));
  ASSIGN_OR_RETURN(double lr, PositiveDouble(tr, "learning_rate", 1e-3, 10));
  t.set_learning_rate(lr);
  ASSIGN_OR_RETURN(double wd, DoubleIn(tr, "weight_decay", 0.01, 0, 10));
  t.set_weight_decay(wd);
  ASSIGN_OR_RETURN(double warmup, DoubleIn(tr, "warmup_fraction", 0.1, 0, 1));
  t.set_warmup_fraction(warmup);
  ASSIGN_OR_RETURN(double clip, DoubleIn(tr, "grad_clip_norm", 1.0, 0, 1e6));
  t.set_grad_clip_norm(clip);
  ASSIGN_OR_RETURN(double mu, DoubleIn(tr, "fedprox_mu", j.strategy.name == "fedprox" ? 0.01 : 0.0, 0, 1e6));
  if (j.strategy.name != "fedprox" && mu != 0) {
    return Bad(source, "train.fedprox_mu", "is only used with job.strategy = \"fedprox\"");
  }
  t.set_fedprox_mu(mu);
  ASSIGN_OR_RETURN(int64_t cap, tr.GetIntInRange("max_train_samples", 0, int64_t{1} << 40, 0));
  t.set_max_train_samples(cap);
  ASSIGN_OR_RETURN(std::string weights, tr.GetString("class_weights", "federation"));
  if (weights != "federation" && weights != "site" && weights != "none") {
    return Bad(source, "train.class_weights",
               absl::StrCat("\"", weights, "\" is not one of federation, site, none"));
  }
  t.set_class_weights(weights);

  // Build the model description once so inconsistent settings (unknown
  // architecture, method, pooling or LoRA target; image size not a multiple of
  // the patch) are refused at submission, not at the first site.
  auto spec = fl::ModelSpecFor(j.backbone_architecture, t);
  if (!spec.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", spec.status().message()));
  t.set_image_size(spec->vit.image_size);
  RETURN_IF_ERROR(ParsePrivacyTable(root, source, &j));
  return j;
}

}  // namespace fedtune::coordinator
