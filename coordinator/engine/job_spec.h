// A federated fine-tuning job as the operator writes it (TOML; see
// deploy/examples/job.toml) and as the round engine runs it. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/fl/dp.h"
#include "common/fl/strategy.h"
#include "fedtune/v1/admin.pb.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::coordinator {

// What the engine does when a round ends with fewer than min_sites valid
// updates.
enum class QuorumPolicy { kRetry, kFail };

// The default relative update bound ([job] max_update_ratio) and the floor of
// the norm it scales, per value shipped (fl::UpdateLimits): a global that is
// still zero (LoRA B, differences from the base weights) allows a first step
// of 4 x 0.01 x sqrt(values). On the demo's federation the largest honest
// update of any method or strategy used 0.31 of the bound
// (tests/bench/RESULTS.md).
inline constexpr double kDefaultMaxUpdateRatio = 4.0;
inline constexpr double kMinReferenceRms = 0.01;

// [privacy] secure_aggregation: the coordinator sees only the sum of the
// sites' updates (common/secagg).
struct SecureAggregationOptions {
  bool enabled = false;
  // Each value of a site's update difference (its weights minus the
  // global's) is clipped to [-bound, bound] before it is encoded; the sum's
  // resolution is bound / 2^30.
  double bound = 1.0;
  // How long each key-exchange stage waits for slow sites once the previous
  // one closed (at most an eighth of the round's deadline); those that miss
  // it are dropped (and recovered) for the round.
  double stage_timeout_s = 120;
  // differential_privacy = "distributed": each site clips its difference to
  // the job's clip_norm and adds Gaussian noise of standard deviation
  // site_noise_stddev (z x C / sqrt(min_sites)), so that any min_sites
  // sites in the sum carry at least the noise central DP would add; the
  // sites weigh equally, and the coordinator adds nothing.
  bool distributed_dp = false;
  double site_noise_stddev = 0;
};

struct JobSpec {
  std::string name;
  int rounds = 3;
  int min_sites = 2;
  double round_deadline_s = 1800;
  fl::StrategyOptions strategy;  // [job] strategy + the [strategy] table
  QuorumPolicy on_quorum_failure = QuorumPolicy::kRetry;
  int max_round_attempts = 3;      // with kRetry: attempts per round before the job fails
  std::vector<std::string> sites;  // empty = every enrolled site
  double max_update_l2 = 0;        // absolute bound on ||update - global||_2; 0 = none
  // Relative bound: ||update - global||_2 <= ratio x max(||global||_2, 1);
  // 0 = none. See fl::UpdateLimits.
  double max_update_ratio = kDefaultMaxUpdateRatio;
  // Also train one local-only model per site (alone, same budget: rounds x
  // local_epochs) and evaluate every model on every site's test split.
  bool baselines = false;
  std::string backbone_architecture;
  std::string backbone_sha256;
  v1::TrainConfig train;  // findings, method, LoRA, optimizer, image size, seed
  fl::DpOptions privacy;  // [privacy]: client-level differential privacy (off by default)
  SecureAggregationOptions secure_aggregation;  // [privacy] secure_aggregation (off by default)
};

// Parses and validates job TOML. Unknown keys, wrong types and out-of-range
// values are INVALID_ARGUMENT naming `source`, the line and the key; the model
// it describes is built once (as a spec) to catch inconsistent settings early.
absl::StatusOr<JobSpec> ParseJobSpec(const std::string& toml, const std::string& source = "job.toml");

// The job's aggregation: its strategy, wrapped in differential privacy when
// [privacy] asks for it. `dp_seed` 0 draws the noise from the system's
// entropy (tests pass a seed).
absl::StatusOr<std::unique_ptr<fl::Strategy>> MakeJobStrategy(const JobSpec& spec, uint64_t dp_seed = 0);

// The job's privacy budget after `rounds_aggregated` training rounds; an
// empty message (mechanism "") when the job has no differential privacy.
v1::PrivacyBudget PrivacyBudgetOf(const JobSpec& spec, int rounds_aggregated);

}  // namespace fedtune::coordinator
