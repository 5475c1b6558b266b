#include "site-agent/runner/secure_update.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/secagg/protocol.h"

namespace fedtune::site {

absl::StatusOr<SecureDifference> EncodeDifference(const std::string& global, const std::string& trained,
                                                  const v1::SecureAggregationConfig& config) {
  if (!(config.weight() > 0 && config.weight() <= 1) || !(config.bound() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("secure aggregation: a weight of ", config.weight(),
                                                   " and a bound of ", config.bound(), " (weight in (0, 1] expected)"));
  }
  ASSIGN_OR_RETURN(SafetensorsFile g, SafetensorsFile::FromBytes(global));
  ASSIGN_OR_RETURN(SafetensorsFile t, SafetensorsFile::FromBytes(trained));
  const TensorMap base = g.ReadAll(), mine = t.ReadAll();
  std::vector<float> difference;
  difference.reserve(static_cast<size_t>(std::max<int64_t>(0, config.length())));
  for (const auto& [name, tensor] : mine) {  // name order, as the coordinator reads them back
    auto it = base.find(name);
    if (it == base.end() || it->second.shape != tensor.shape) {
      return absl::InvalidArgumentError(absl::StrCat("secure aggregation: trained tensor ", name,
                                                     " is not in the global model with this shape"));
    }
    ASSIGN_OR_RETURN(std::vector<float> a, tensor.ToFloats());
    ASSIGN_OR_RETURN(std::vector<float> b, it->second.ToFloats());
    for (size_t i = 0; i < a.size(); ++i) difference.push_back(a[i] - b[i]);
  }
  if (static_cast<int64_t>(difference.size()) != config.length()) {
    return absl::InvalidArgumentError(absl::StrCat("secure aggregation: the trained tensors hold ", difference.size(),
                                                   " values, the round expects ", config.length()));
  }
  SecureDifference out;
  if (config.clip_norm() > 0) {
    // Distributed DP: one site's contribution bounded, then its share of
    // the round's noise.
    double sq = 0;
    for (float v : difference) sq += static_cast<double>(v) * v;
    out.norm = std::sqrt(sq);
    const double scale = out.norm > config.clip_norm() ? config.clip_norm() / out.norm : 1.0;
    for (float& v : difference) v = static_cast<float>(v * scale);
  }
  if (config.noise_stddev() > 0) {
    std::random_device entropy;
    std::mt19937_64 rng((static_cast<uint64_t>(entropy()) << 32) ^ entropy());
    std::normal_distribution<double> noise(0.0, config.noise_stddev());
    for (float& v : difference) v = static_cast<float>(v + noise(rng));
  }
  out.encoded = secagg::Encode(difference, config.weight(), config.bound(), &out.clipped);
  return out;
}

}  // namespace fedtune::site
