#include "common/fl/strategy.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune::fl {
namespace {

// `values` as a tensor of `dtype` (the global's) and `shape`.
Tensor Encode(const std::vector<double>& values, DType dtype, const std::vector<int64_t>& shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.data.resize(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    std::byte* p = t.data.data() + i * DTypeSize(dtype);
    const float f = static_cast<float>(values[i]);
    switch (dtype) {
      case DType::kF64: std::memcpy(p, &values[i], 8); break;
      case DType::kF16: {
        const uint16_t h = FloatToHalf(f);
        std::memcpy(p, &h, 2);
        break;
      }
      case DType::kBF16: {
        const uint16_t b = FloatToBFloat16(f);
        std::memcpy(p, &b, 2);
        break;
      }
      default: std::memcpy(p, &f, 4); break;
    }
  }
  return t;
}

}  // namespace

absl::Status FedAvg::Begin(const TensorMap& global) {
  global_ = global;
  sums_.clear();
  for (const auto& [name, t] : global) sums_[name].assign(static_cast<size_t>(t.numel()), 0.0);
  total_weight_ = 0;
  begun_ = true;
  return absl::OkStatus();
}

absl::Status FedAvg::Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) {
  if (!begun_) return absl::FailedPreconditionError("FedAvg: Add before Begin");
  if (num_examples <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("FedAvg: site ", site_id, " reports ", num_examples, " examples"));
  }
  if (update.size() != sums_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("FedAvg: site ", site_id, "'s update does not match the global"));
  }
  // Convert everything first so a bad update leaves the sums untouched.
  std::vector<std::pair<std::vector<double>*, std::vector<float>>> staged;
  for (auto& [name, sum] : sums_) {
    auto it = update.find(name);
    if (it == update.end()) return absl::InvalidArgumentError(absl::StrCat("FedAvg: update lacks ", name));
    ASSIGN_OR_RETURN(std::vector<float> v, it->second.ToFloats());
    if (v.size() != sum.size()) return absl::InvalidArgumentError(absl::StrCat("FedAvg: ", name, " has another size"));
    staged.emplace_back(&sum, std::move(v));
  }
  const double w = static_cast<double>(num_examples);
  for (auto& [sum, v] : staged) {
    for (size_t i = 0; i < v.size(); ++i) (*sum)[i] += w * v[i];
  }
  total_weight_ += w;
  return absl::OkStatus();
}

absl::StatusOr<TensorMap> FedAvg::Finish() {
  if (!begun_ || total_weight_ <= 0) return absl::FailedPreconditionError("FedAvg: no update to aggregate");
  TensorMap out;
  for (auto& [name, sum] : sums_) {
    for (double& s : sum) s /= total_weight_;
    const Tensor& g = global_.at(name);
    const bool floating = g.dtype == DType::kF64 || g.dtype == DType::kF16 || g.dtype == DType::kBF16;
    out[name] = Encode(sum, floating ? g.dtype : DType::kF32, g.shape);
  }
  begun_ = false;
  return out;
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(std::string_view name) {
  if (name == "fedavg" || name == "fedprox") return std::unique_ptr<Strategy>(std::make_unique<FedAvg>());
  return absl::InvalidArgumentError(absl::StrCat("unknown strategy \"", Sv(name), "\" (known: fedavg, fedprox)"));
}

}  // namespace fedtune::fl
