// Client-level differential privacy for the linear strategies: DP-FedAvg
// (McMahan et al. 2018) with central noise, optionally with adaptive clipping
// (Andrew et al. 2021), as a decorator on the Strategy seam. Torch-free.
//
// Each round: every site's update difference (update - global) is clipped to
// L2 norm C; the clipped differences are summed with equal weight (one vote
// per site, whatever its example count, so that one site moves the sum by at
// most C); Gaussian noise of standard deviation z x C is added to the sum
// once; the noisy sum divided by the number of sites is the round's mean
// difference, handed to the wrapped strategy (fedavg, ffa-lora or a server
// optimiser) as its only update. The model weights the coordinator
// publishes (every global version, hence the promoted model) are then
// (epsilon, delta)-DP for adding or removing one site's data, with epsilon
// from the RDP accountant (dp_accountant.h). Not covered: the sites' own
// metrics (validation and test results, losses, example counts), protected
// by each site's k instead; the number of sites in a round, which is public
// to the coordinator (the noisy sum is divided by it). The coordinator itself
// sees the sites' updates in the clear: central DP trusts it.
//
// Adaptive clipping: each site also contributes one bit, whether its update
// was within C, centred to +-1/2; the noisy fraction b (noise of standard
// deviation sigma_b on the sum of the centred bits, whose sensitivity is
// then 1/2) moves C geometrically towards the target quantile gamma:
// C <- C exp(-eta (b - gamma)). The update noise grows so that the two
// releases together cost exactly what one Gaussian mechanism of noise
// multiplier z costs: z_updates = (z^-2 - (2 sigma_b)^-2)^(-1/2).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "absl/status/statusor.h"
#include "common/fl/strategy.h"

namespace fedtune::fl {

// A job's [privacy] table (see deploy/examples/job.toml for the defaults and
// why).
struct DpOptions {
  bool enabled = false;           // differential_privacy = "central"
  double noise_multiplier = 1.0;  // z: noise standard deviation / C
  double clip_norm = 1.0;         // C; a job must set it unless clipping is adaptive (then: the first C)
  bool adaptive_clipping = false;
  double target_quantile = 0.5;       // gamma: the fraction of updates meant to fit within C
  double clip_learning_rate = 0.2;    // eta
  double clipped_count_stddev = 0;    // sigma_b; 0 = noise_multiplier (updates then get 1.15 z)
  double delta = 1e-5;
  double max_epsilon = 0;  // refuse a job whose rounds would exceed it; 0 = no limit
};

// INVALID_ARGUMENT naming the [privacy] key when a setting is out of range,
// or when the wrapped strategy is not linear (median, trimmed-mean and
// lora-svd look at each update, not the noisy sum).
absl::Status ValidateDp(const DpOptions& options, std::string_view strategy);

// sigma_b as used (the default resolved).
double ClippedCountStddev(const DpOptions& options);
// The noise multiplier applied to the sum of updates: z, or with adaptive
// clipping the larger z_updates above.
double UpdateNoiseMultiplier(const DpOptions& options);

// Names of the decorator's entries in the server state (carried between
// rounds next to the wrapped strategy's own).
inline constexpr char kDpClipNormKey[] = "__dp.clip_norm";
inline constexpr char kDpRoundsKey[] = "__dp.rounds";

class DpStrategy final : public Strategy {
 public:
  // `seed` 0 draws the noise from the operating system's entropy (the
  // default, and the only safe choice in production); tests pass a seed.
  DpStrategy(std::unique_ptr<Strategy> inner, DpOptions options, uint64_t seed = 0);

  std::string_view name() const override { return inner_->name(); }
  bool ShipsTensor(std::string_view name) const override { return inner_->ShipsTensor(name); }
  absl::Status Begin(const TensorMap& global, const TensorMap& server_state) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<Aggregate> Finish() override;

 private:
  std::unique_ptr<Strategy> inner_;
  DpOptions o_;
  std::mt19937_64 rng_;
  TensorMap global_;
  TensorMap inner_state_;
  WeightedMean sum_;  // the sum of clipped differences (weight 1 each)
  double clip_ = 0;   // C this round
  int64_t rounds_ = 0;
  int sites_ = 0;
  int within_clip_ = 0;
  bool begun_ = false;
};

// `inner` wrapped in DP when options.enabled, else `inner` itself.
absl::StatusOr<std::unique_ptr<Strategy>> WithDifferentialPrivacy(std::unique_ptr<Strategy> inner,
                                                                  const DpOptions& options, uint64_t seed = 0);

}  // namespace fedtune::fl
