// How the coordinator turns accepted site updates into the next global model:
// the Strategy seam. Every strategy is a plain class over TensorMap, tested
// without a network (tests/unit/fl). The round engine calls
//   Begin(global, server_state) -> Add(update) per accepted site -> Finish()
// and persists what Finish() returns: the next global model and the state
// the strategy carries to the next round (server optimiser moments). A round
// with no update keeps the old global (the engine never calls Finish then).
// Torch-free.
//
// Memory: the linear strategies (fedavg, ffa-lora, the server optimisers)
// stream, O(model) whatever the number of sites; lora-svd keeps every site's
// LoRA factors (O(sites x adapter)); median and trimmed-mean keep every
// update (O(sites x model)).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/core/tensor_map.h"

namespace fedtune::fl {

// A job's aggregation as its job file states it ([job] strategy and the
// [strategy] table). Defaults are the ones documented in
// deploy/examples/job.toml.
struct StrategyOptions {
  std::string name = "fedavg";
  // Server optimisers (Reddi et al. 2021; FedAvgM: Hsu et al. 2019): the step
  // taken along the pseudo-gradient (mean update - global).
  double server_learning_rate = 1.0;
  double server_momentum = 0.9;  // FedAvgM's beta
  double beta1 = 0.9;            // FedAdam / FedYogi / FedAdagrad first moment
  double beta2 = 0.99;           // FedAdam / FedYogi second moment
  double tau = 1e-3;             // adaptivity: v starts at tau^2 and tau is added to sqrt(v)
  // trimmed-mean: the fraction of the sites' values dropped at each end of
  // every coordinate (Yin et al. 2018), in [0, 0.5).
  double trim_fraction = 0.2;
};

// Every strategy name, in the order the documentation lists them.
const std::vector<std::string>& StrategyNames();
// INVALID_ARGUMENT naming the field when an option is out of range or the
// name is unknown (listing the known ones).
absl::Status Validate(const StrategyOptions& options);
// The learning rate a server optimiser uses when the job does not set one
// (1 for FedAvgM; the adaptive ones take small steps, see job.toml).
double DefaultServerLearningRate(std::string_view strategy);
// True for the strategies whose result is a function of the example-weighted
// sum of the updates (fedavg, fedprox, ffa-lora, the server optimisers):
// those compose with secure aggregation; median, trimmed-mean and lora-svd
// need each site's update.
bool IsLinear(std::string_view strategy);
// True for the strategies that only make sense for LoRA (ffa-lora, lora-svd).
bool RequiresLora(std::string_view strategy);

// What Finish() produces.
struct Aggregate {
  TensorMap global;        // the next global model, in the previous global's dtypes
  TensorMap server_state;  // carried to the next round's Begin (empty when stateless)
  std::string summary;     // one line for the round's event ("rank-16 SVD kept 99.2 % ...")
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string_view name() const = 0;
  // Whether a site's update carries the global tensor `name`. All do, except
  // LoRA A under ffa-lora: A stays as version 0 made it and is never sent back.
  virtual bool ShipsTensor(std::string_view name) const;
  // Starts a round from `global` (the model the sites trained from) and the
  // state the previous round's Finish() returned (empty in round 1).
  virtual absl::Status Begin(const TensorMap& global, const TensorMap& server_state) = 0;
  // Adds one validated update trained on `num_examples` examples (> 0). The
  // update holds exactly the global's shipped tensors. A refused update
  // (INVALID_ARGUMENT) leaves the round as it was.
  virtual absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) = 0;
  // FAILED_PRECONDITION when no update was added.
  virtual absl::StatusOr<Aggregate> Finish() = 0;
};

// The job's strategy; INVALID_ARGUMENT as Validate().
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& options);
// With the defaults for everything but the name.
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(std::string_view name);

// "....lora_A.weight" / "....lora_B.weight" (PEFT's names).
bool IsLoraA(std::string_view tensor_name);
bool IsLoraB(std::string_view tensor_name);

// `values` as a tensor shaped and typed like `like` (floating dtypes are
// kept; anything else becomes F32).
Tensor EncodeLike(const std::vector<double>& values, const Tensor& like);

// The example-weighted mean of the tracked tensors of a round's updates, in
// double precision, O(model) memory. Shared by the strategies above.
class WeightedMean {
 public:
  // Tracks the tensors of `global` for which `track(name)` is true.
  template <typename Pred>
  void Reset(const TensorMap& global, Pred track) {
    sums_.clear();
    total_ = 0;
    for (const auto& [name, t] : global) {
      if (track(name)) sums_[name].assign(static_cast<size_t>(t.numel()), 0.0);
    }
  }
  // All or nothing: INVALID_ARGUMENT (naming the tensor) when the update
  // lacks a tracked tensor or has one of another size.
  absl::Status Add(std::string_view site_id, const TensorMap& update, double weight);
  double total_weight() const { return total_; }
  // The mean of tracked tensor `name` (call with total_weight() > 0).
  std::vector<double> Mean(const std::string& name) const;
  const std::map<std::string, std::vector<double>>& sums() const { return sums_; }

 private:
  std::map<std::string, std::vector<double>> sums_;
  double total_ = 0;
};

// FedAvg (McMahan et al. 2017): the mean of the updates weighted by training
// examples, accumulated in double precision. For LoRA it averages A and B
// separately, as PEFT-based federations do: mean(B) mean(A) is not
// mean(B A), so it is an approximation of averaging the adapted weights
// (ffa-lora and lora-svd are exact).
class FedAvg final : public Strategy {
 public:
  std::string_view name() const override { return "fedavg"; }
  absl::Status Begin(const TensorMap& global, const TensorMap& server_state) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<Aggregate> Finish() override;

 private:
  TensorMap global_;
  WeightedMean mean_;
  bool begun_ = false;
};

// FFA-LoRA (Sun et al., ICLR 2024): every site trains only B (and the head)
// on the A that version 0 drew, so B A averages exactly as B does. A is not
// sent back by the sites and is carried over unchanged.
class FfaLora final : public Strategy {
 public:
  std::string_view name() const override { return "ffa-lora"; }
  bool ShipsTensor(std::string_view name) const override { return !IsLoraA(name); }
  absl::Status Begin(const TensorMap& global, const TensorMap& server_state) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<Aggregate> Finish() override;

 private:
  TensorMap global_;
  WeightedMean mean_;
  bool begun_ = false;
};

}  // namespace fedtune::fl
