#include "common/fl/robust.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune::fl {

absl::Status UpdateStore::Begin(const TensorMap& global) {
  global_ = global;
  values_.clear();
  for (const auto& [name, t] : global) values_[name];
  sites_ = 0;
  return absl::OkStatus();
}

absl::Status UpdateStore::Add(std::string_view strategy, const std::string& site_id, const TensorMap& update) {
  if (update.size() != global_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(strategy), ": site ", site_id, "'s update does not match the global"));
  }
  std::vector<std::pair<std::vector<std::vector<float>>*, std::vector<float>>> staged;
  for (auto& [name, per_site] : values_) {
    auto it = update.find(name);
    if (it == update.end()) {
      return absl::InvalidArgumentError(absl::StrCat(Sv(strategy), ": site ", site_id, "'s update lacks ", name));
    }
    ASSIGN_OR_RETURN(std::vector<float> v, it->second.ToFloats());
    if (static_cast<int64_t>(v.size()) != global_.at(name).numel()) {
      return absl::InvalidArgumentError(absl::StrCat(Sv(strategy), ": site ", site_id, "'s ", name, " has another size"));
    }
    staged.emplace_back(&per_site, std::move(v));
  }
  for (auto& [dst, v] : staged) dst->push_back(std::move(v));
  ++sites_;
  return absl::OkStatus();
}

template <typename Reduce>
TensorMap UpdateStore::Apply(Reduce reduce) const {
  TensorMap out;
  std::vector<double> scratch(sites_);
  for (const auto& [name, per_site] : values_) {
    const Tensor& g = global_.at(name);
    std::vector<double> result(static_cast<size_t>(g.numel()));
    for (size_t i = 0; i < result.size(); ++i) {
      for (size_t s = 0; s < sites_; ++s) scratch[s] = per_site[s][i];
      result[i] = reduce(scratch);
    }
    out[name] = EncodeLike(result, g);
  }
  return out;
}

absl::Status CoordinateMedian::Begin(const TensorMap& global, const TensorMap&) {
  begun_ = true;
  return store_.Begin(global);
}

absl::Status CoordinateMedian::Add(const std::string& site_id, const TensorMap& update, int64_t) {
  if (!begun_) return absl::FailedPreconditionError("median: Add before Begin");
  return store_.Add(name(), site_id, update);
}

absl::StatusOr<Aggregate> CoordinateMedian::Finish() {
  if (!begun_ || store_.sites() == 0) return absl::FailedPreconditionError("median: no update to aggregate");
  Aggregate out;
  out.global = store_.Apply([](std::vector<double>& v) {
    const size_t n = v.size(), mid = n / 2;
    std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(mid), v.end());
    const double hi = v[mid];
    if (n % 2 == 1) return hi;
    const double lo = *std::max_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(mid));
    return (lo + hi) / 2;
  });
  out.summary = absl::StrCat("coordinate-wise median of ", store_.sites(), " updates");
  begun_ = false;
  return out;
}

absl::Status TrimmedMean::Begin(const TensorMap& global, const TensorMap&) {
  begun_ = true;
  return store_.Begin(global);
}

absl::Status TrimmedMean::Add(const std::string& site_id, const TensorMap& update, int64_t) {
  if (!begun_) return absl::FailedPreconditionError("trimmed-mean: Add before Begin");
  return store_.Add(name(), site_id, update);
}

absl::StatusOr<Aggregate> TrimmedMean::Finish() {
  if (!begun_ || store_.sites() == 0) return absl::FailedPreconditionError("trimmed-mean: no update to aggregate");
  const size_t n = store_.sites();
  const size_t cut = static_cast<size_t>(std::floor(trim_fraction_ * static_cast<double>(n)));
  Aggregate out;
  out.global = store_.Apply([cut](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (size_t i = cut; i < v.size() - cut; ++i) sum += v[i];
    return sum / static_cast<double>(v.size() - 2 * cut);
  });
  out.summary = cut == 0 ? absl::StrCat("trimmed mean of ", n, " updates: nothing trimmed (", n, " sites x ",
                                        trim_fraction_, " < 1): the plain unweighted mean")
                         : absl::StrCat("trimmed mean of ", n, " updates: ", cut, " dropped at each end per coordinate");
  begun_ = false;
  return out;
}

}  // namespace fedtune::fl
