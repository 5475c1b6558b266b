// How the coordinator turns accepted site updates into the next global model.
// Strategies stream: Begin(global), then Add() one update at a time (the
// caller may free each update after Add), then Finish(); memory is O(model),
// not O(sites x model). Torch-free.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/core/tensor_map.h"

namespace fedtune::fl {

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string_view name() const = 0;
  // Starts a round from `global` (the model the sites trained from).
  virtual absl::Status Begin(const TensorMap& global) = 0;
  // Adds one validated update trained on `num_examples` examples (> 0).
  virtual absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) = 0;
  // The new global model, in the global's dtypes. FAILED_PRECONDITION when no
  // update was added (the caller keeps the old global).
  virtual absl::StatusOr<TensorMap> Finish() = 0;
};

// FedAvg (McMahan et al. 2017): the mean of the updates weighted by training
// examples, accumulated in double precision. For LoRA this averages A and B
// separately, as PEFT-based federations do.
class FedAvg final : public Strategy {
 public:
  std::string_view name() const override { return "fedavg"; }
  absl::Status Begin(const TensorMap& global) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<TensorMap> Finish() override;

 private:
  TensorMap global_;
  std::map<std::string, std::vector<double>> sums_;
  double total_weight_ = 0;
  bool begun_ = false;
};

// "fedavg" (FedProx trains differently at the sites but aggregates the same
// way, so it is "fedavg" here too). INVALID_ARGUMENT lists the known names.
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(std::string_view name);

}  // namespace fedtune::fl
