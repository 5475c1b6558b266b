// Server optimisers on the pseudo-gradient (Reddi et al., "Adaptive
// Federated Optimization", ICLR 2021, Algorithm 2; FedAvgM: Hsu et al. 2019).
//
// Each round, with x the global and Delta = (example-weighted mean of the
// updates) - x, per coordinate:
//   fedavgm     m = momentum m + Delta                       x += lr m
//   fedadagrad  m = b1 m + (1-b1) Delta; v = v + Delta^2     x += lr m / (sqrt(v) + tau)
//   fedyogi     m as above; v = v - (1-b2) Delta^2 sign(v - Delta^2)
//   fedadam     m as above; v = b2 v + (1-b2) Delta^2
// m starts at 0 and v at tau^2 (the paper's v_{-1} >= tau^2). m and v are the
// strategy's server state: returned by Finish() under "m:<tensor>" and
// "v:<tensor>", stored by the engine next to the version, and handed back to
// Begin() next round, so a restarted coordinator continues exactly.
// Linear in the updates, so it composes with secure aggregation.
#pragma once

#include "common/fl/strategy.h"

namespace fedtune::fl {

class ServerOptimizer final : public Strategy {
 public:
  enum class Kind { kAvgM, kAdagrad, kYogi, kAdam };
  ServerOptimizer(Kind kind, const StrategyOptions& options);

  std::string_view name() const override;
  absl::Status Begin(const TensorMap& global, const TensorMap& server_state) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<Aggregate> Finish() override;

 private:
  Kind kind_;
  StrategyOptions options_;
  TensorMap global_;
  std::map<std::string, std::vector<double>> m_, v_;
  WeightedMean mean_;
  bool begun_ = false;
};

}  // namespace fedtune::fl
