#include "site-agent/runner/secure_update.h"

#include "absl/strings/str_cat.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/secagg/protocol.h"

namespace fedtune::site {

absl::StatusOr<SecureDifference> EncodeDifference(const std::string& global, const std::string& trained,
                                                  const v1::SecureAggregationConfig& config) {
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
  out.encoded = secagg::Encode(difference, config.weight(), config.bound(), &out.clipped);
  return out;
}

}  // namespace fedtune::site
