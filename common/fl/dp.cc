#include "common/fl/dp.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/status.h"
#include "common/fl/dp_accountant.h"

namespace fedtune::fl {
namespace {

absl::Status Bad(std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("privacy.", Sv(key), " ", Sv(what)));
}

Tensor ScalarF64(double v) {
  Tensor t;
  t.dtype = DType::kF64;
  t.data.resize(8);
  std::memcpy(t.data.data(), &v, 8);
  return t;
}

absl::StatusOr<double> ScalarOf(const Tensor& t) {
  ASSIGN_OR_RETURN(std::vector<float> v, t.ToFloats());
  if (v.size() != 1) return absl::InvalidArgumentError("expected a scalar");
  if (t.dtype == DType::kF64) {
    double d;
    std::memcpy(&d, t.data.data(), 8);
    return d;
  }
  return static_cast<double>(v[0]);
}

}  // namespace

absl::Status ValidateDp(const DpOptions& o, std::string_view strategy) {
  if (!o.enabled) return absl::OkStatus();
  if (!IsLinear(strategy)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "privacy.differential_privacy needs a strategy that averages (fedavg, fedprox, ffa-lora, fedavgm, fedadam, "
        "fedyogi, fedadagrad): \"",
        Sv(strategy), "\" looks at each site's update, which the noise does not protect"));
  }
  if (!(o.noise_multiplier > 0) || o.noise_multiplier > 1e4) return Bad("noise_multiplier", "must be in (0, 10000]");
  if (!(o.clip_norm > 0) || o.clip_norm > 1e6) return Bad("clip_norm", "must be in (0, 1e6]");
  if (!(o.delta > 0) || o.delta >= 0.1) return Bad("delta", "must be in (0, 0.1)");
  if (!(o.max_epsilon >= 0) || o.max_epsilon > 1e6) return Bad("max_epsilon", "must be in [0, 1e6] (0 = no limit)");
  if (o.adaptive_clipping) {
    if (!(o.target_quantile > 0 && o.target_quantile < 1)) return Bad("target_quantile", "must be in (0, 1)");
    if (!(o.clip_learning_rate > 0) || o.clip_learning_rate > 10) return Bad("clip_learning_rate", "must be in (0, 10]");
    if (!(o.clipped_count_stddev >= 0) || o.clipped_count_stddev > 1e6) {
      return Bad("clipped_count_stddev", "must be in [0, 1e6] (0 = noise_multiplier)");
    }
    // The count's release must cost less than the whole budget: 2 sigma_b > z.
    if (2 * ClippedCountStddev(o) <= o.noise_multiplier) {
      return Bad("clipped_count_stddev",
                 absl::StrCat("must be more than half of noise_multiplier (", o.noise_multiplier,
                              "): the noisy count of clipped updates would use the whole privacy budget"));
    }
  }
  return absl::OkStatus();
}

double ClippedCountStddev(const DpOptions& o) {
  return o.clipped_count_stddev > 0 ? o.clipped_count_stddev : o.noise_multiplier;
}

double UpdateNoiseMultiplier(const DpOptions& o) {
  if (!o.adaptive_clipping) return o.noise_multiplier;
  const double z = o.noise_multiplier, sb = ClippedCountStddev(o);
  return 1 / std::sqrt(1 / (z * z) - 1 / (4 * sb * sb));
}

DpStrategy::DpStrategy(std::unique_ptr<Strategy> inner, DpOptions options, uint64_t seed)
    : inner_(std::move(inner)), o_(options) {
  if (seed != 0) {
    rng_.seed(seed);
  } else {
    std::random_device entropy;
    std::seed_seq seq{entropy(), entropy(), entropy(), entropy(), entropy(), entropy(), entropy(), entropy()};
    rng_.seed(seq);
  }
}

absl::Status DpStrategy::Begin(const TensorMap& global, const TensorMap& server_state) {
  inner_state_.clear();
  clip_ = o_.clip_norm;
  rounds_ = 0;
  for (const auto& [name, t] : server_state) {
    if (name == kDpClipNormKey) {
      ASSIGN_OR_RETURN(clip_, ScalarOf(t));
    } else if (name == kDpRoundsKey) {
      ASSIGN_OR_RETURN(double r, ScalarOf(t));
      rounds_ = static_cast<int64_t>(r);
    } else {
      inner_state_.emplace(name, t);
    }
  }
  if (!o_.adaptive_clipping) clip_ = o_.clip_norm;
  if (!(clip_ > 0) || !std::isfinite(clip_)) {
    return absl::InternalError(absl::StrCat("the carried clip norm is ", clip_));
  }
  global_ = global;
  sum_.Reset(global, [this](const std::string& n) { return inner_->ShipsTensor(n); });
  sites_ = 0;
  within_clip_ = 0;
  begun_ = true;
  return absl::OkStatus();
}

absl::Status DpStrategy::Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) {
  if (!begun_) return absl::FailedPreconditionError("differential privacy: Add before Begin");
  if (num_examples <= 0) return absl::InvalidArgumentError(absl::StrCat("site ", site_id, " trained on no examples"));
  if (update.size() != sum_.sums().size()) {
    return absl::InvalidArgumentError(absl::StrCat("site ", site_id, "'s update does not match the global"));
  }
  // The difference from the global, in double, then its norm.
  TensorMap diff;
  double sq = 0;
  std::map<std::string, std::vector<double>> d;
  for (const auto& [name, t] : update) {
    auto g = global_.find(name);
    if (g == global_.end() || !sum_.sums().contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("site ", site_id, "'s update has ", name, ", not shipped"));
    }
    ASSIGN_OR_RETURN(std::vector<float> u, t.ToFloats());
    ASSIGN_OR_RETURN(std::vector<float> w, g->second.ToFloats());
    if (u.size() != w.size()) {
      return absl::InvalidArgumentError(absl::StrCat("site ", site_id, "'s ", name, " has another size"));
    }
    std::vector<double>& v = d[name];
    v.resize(u.size());
    for (size_t i = 0; i < u.size(); ++i) {
      v[i] = static_cast<double>(u[i]) - w[i];
      sq += v[i] * v[i];
    }
  }
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm)) return absl::InvalidArgumentError(absl::StrCat("site ", site_id, "'s update is not finite"));
  const double scale = norm > clip_ ? clip_ / norm : 1.0;
  for (auto& [name, v] : d) {
    for (double& x : v) x *= scale;
    Tensor like;
    like.dtype = DType::kF64;
    like.shape = global_.at(name).shape;
    diff[name] = EncodeLike(v, like);
  }
  RETURN_IF_ERROR(sum_.Add(site_id, diff, 1.0));
  ++sites_;
  if (norm <= clip_) ++within_clip_;
  return absl::OkStatus();
}

absl::StatusOr<Aggregate> DpStrategy::Finish() {
  if (!begun_ || sites_ == 0) return absl::FailedPreconditionError("differential privacy: no update to aggregate");
  begun_ = false;
  const double z = UpdateNoiseMultiplier(o_);
  std::normal_distribution<double> noise(0.0, z * clip_);
  // global + (sum of clipped differences + noise) / sites, for every shipped tensor.
  TensorMap mean_update;
  for (const auto& [name, s] : sum_.sums()) {
    ASSIGN_OR_RETURN(std::vector<float> g, global_.at(name).ToFloats());
    std::vector<double> v(s.size());
    for (size_t i = 0; i < s.size(); ++i) v[i] = g[i] + (s[i] + noise(rng_)) / sites_;
    mean_update[name] = EncodeLike(v, global_.at(name));
  }
  RETURN_IF_ERROR(inner_->Begin(global_, inner_state_));
  RETURN_IF_ERROR(inner_->Add("dp-mean", mean_update, 1));
  ASSIGN_OR_RETURN(Aggregate out, inner_->Finish());

  double next_clip = clip_;
  if (o_.adaptive_clipping) {
    // Each site's bit is centred to +-1/2 before the noise, so that one
    // site moves the released sum by at most 1/2: the sensitivity the
    // split of the budget (UpdateNoiseMultiplier) assumes.
    std::normal_distribution<double> count_noise(0.0, ClippedCountStddev(o_));
    const double centred = within_clip_ - 0.5 * sites_ + count_noise(rng_);
    const double fraction = centred / sites_ + 0.5;
    next_clip = clip_ * std::exp(-o_.clip_learning_rate * (fraction - o_.target_quantile));
  }
  const int64_t rounds = rounds_ + 1;
  out.server_state[kDpClipNormKey] = ScalarF64(next_clip);
  out.server_state[kDpRoundsKey] = ScalarF64(static_cast<double>(rounds));
  const double epsilon = DpEpsilon(1.0, o_.noise_multiplier, static_cast<int>(rounds), o_.delta);
  std::string line = absl::StrFormat(
      "differential privacy: clipped at C = %.4g, noise sd %.4g on the sum of %d, epsilon = %.3g after %d "
      "round%s (delta = %g)",
      clip_, z * clip_, sites_, epsilon, rounds, rounds == 1 ? "" : "s", o_.delta);
  if (o_.adaptive_clipping) absl::StrAppendFormat(&line, "; next C = %.4g", next_clip);
  out.summary = out.summary.empty() ? line : absl::StrCat(out.summary, "; ", line);
  return out;
}

absl::StatusOr<std::unique_ptr<Strategy>> WithDifferentialPrivacy(std::unique_ptr<Strategy> inner,
                                                                  const DpOptions& options, uint64_t seed) {
  if (!options.enabled) return inner;
  RETURN_IF_ERROR(ValidateDp(options, inner->name()));
  return std::unique_ptr<Strategy>(std::make_unique<DpStrategy>(std::move(inner), options, seed));
}

}  // namespace fedtune::fl
