#include "common/fl/update_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune::fl {
namespace {

bool IsFloating(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64; }

}  // namespace

double L2Norm(const TensorMap& tensors) {
  double sq = 0;
  for (const auto& [name, t] : tensors) {
    auto v = t.ToFloats();
    if (!v.ok()) continue;
    for (float x : *v) sq += static_cast<double>(x) * x;
  }
  return std::sqrt(sq);
}

absl::Status ValidateUpdate(const TensorMap& global, const TensorMap& update, const UpdateLimits& limits) {
  for (const auto& [name, g] : global) {
    if (!update.count(name)) return absl::InvalidArgumentError(absl::StrCat("update lacks tensor ", name));
  }
  double delta_sq = 0;
  for (const auto& [name, u] : update) {
    auto it = global.find(name);
    if (it == global.end()) return absl::InvalidArgumentError(absl::StrCat("update has unknown tensor ", name));
    if (u.shape != it->second.shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", ShapeString(u.shape),
                                                     ", the global model ", ShapeString(it->second.shape)));
    }
    if (!IsFloating(u.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ", Sv(DTypeName(u.dtype)),
                                                     "; updates must be floating point"));
    }
    ASSIGN_OR_RETURN(std::vector<float> uv, u.ToFloats());
    ASSIGN_OR_RETURN(std::vector<float> gv, it->second.ToFloats());
    for (size_t i = 0; i < uv.size(); ++i) {
      if (!std::isfinite(uv[i])) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " holds a non-finite value (NaN or Inf)"));
      }
      const double d = static_cast<double>(uv[i]) - gv[i];
      delta_sq += d * d;
    }
  }
  const double norm = std::sqrt(delta_sq);
  if (limits.max_delta_l2 > 0 && norm > limits.max_delta_l2) {
    return absl::InvalidArgumentError(absl::StrCat("update moved ", norm, " (L2) from the global model, above the bound ",
                                                   limits.max_delta_l2, " (job.max_update_l2)"));
  }
  if (limits.max_delta_ratio > 0) {
    const double global_norm = L2Norm(global);
    int64_t values = 0;
    for (const auto& [name, g] : global) values += g.numel();
    const double floor = limits.min_reference_rms * std::sqrt(static_cast<double>(values));
    const double reference = std::max(global_norm, floor);
    const double bound = limits.max_delta_ratio * reference;
    if (norm > bound) {
      const std::string how =
          reference > global_norm
              ? absl::StrCat(limits.max_delta_ratio, " x ", reference, ", the floor ", limits.min_reference_rms,
                             " x sqrt(", values, " values) for a global model of norm ", global_norm)
              : absl::StrCat(limits.max_delta_ratio, " x the global model's norm ", global_norm);
      return absl::InvalidArgumentError(absl::StrCat("update moved ", norm, " (L2) from the global model, above the bound ",
                                                     bound, " (", how, "; job.max_update_ratio)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace fedtune::fl
