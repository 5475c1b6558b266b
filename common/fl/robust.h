// Robust aggregation: per coordinate, a statistic of the sites' values that
// a minority of outlying updates cannot drag far (Yin et al., ICML 2018).
// Unweighted (one site, one vote: example counts are what an attacker would
// inflate) and non-linear, so they need every site's update: memory is
// O(sites x model), and they cannot run under secure aggregation, which only
// ever reveals a sum.
#pragma once

#include <vector>

#include "common/fl/strategy.h"

namespace fedtune::fl {

// Collects the round's updates as float vectors (shared by the two below).
class UpdateStore {
 public:
  absl::Status Begin(const TensorMap& global);
  absl::Status Add(std::string_view strategy, const std::string& site_id, const TensorMap& update);
  size_t sites() const { return sites_; }
  // For each tensor of the global, out[i] = reduce(values of coordinate i
  // across the sites), reduce being given the values in a scratch vector it
  // may reorder.
  template <typename Reduce>
  TensorMap Apply(Reduce reduce) const;

 private:
  TensorMap global_;
  std::map<std::string, std::vector<std::vector<float>>> values_;  // name -> per site
  size_t sites_ = 0;
};

// Coordinate-wise median (the mean of the two middle values for an even
// number of sites).
class CoordinateMedian final : public Strategy {
 public:
  std::string_view name() const override { return "median"; }
  absl::Status Begin(const TensorMap& global, const TensorMap& server_state) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<Aggregate> Finish() override;

 private:
  UpdateStore store_;
  bool begun_ = false;
};

// Coordinate-wise trimmed mean: drops floor(trim_fraction x sites) values at
// each end of every coordinate and averages the rest. With fewer sites than
// 1 / trim_fraction nothing is dropped (the round's summary says so).
class TrimmedMean final : public Strategy {
 public:
  explicit TrimmedMean(double trim_fraction) : trim_fraction_(trim_fraction) {}
  std::string_view name() const override { return "trimmed-mean"; }
  absl::Status Begin(const TensorMap& global, const TensorMap& server_state) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<Aggregate> Finish() override;

 private:
  double trim_fraction_;
  UpdateStore store_;
  bool begun_ = false;
};

}  // namespace fedtune::fl
