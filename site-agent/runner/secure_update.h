// What a site sends for a securely aggregated training task (TrainTask
// .secure_aggregation): weight x (its trained tensors - the global's), over
// the tensors it ships back, in name order, each value clipped to the
// round's bound and encoded in fixed point (common/secagg). With
// distributed differential privacy the difference is first scaled to the
// round's clip_norm and Gaussian noise of noise_stddev is added to each
// value. Masking follows in the round's key exchange (site_daemon.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::site {

struct SecureDifference {
  std::vector<uint32_t> encoded;
  int64_t clipped = 0;  // values beyond the bound (clipped to it)
  double norm = 0;      // the difference's L2 norm before clipping to clip_norm (when set)
};

// `global` and `trained` are safetensors images (the task's weights and the
// executor's result). INVALID_ARGUMENT when a trained tensor is not in the
// global or differs in shape, or the values do not add up to the round's
// length.
absl::StatusOr<SecureDifference> EncodeDifference(const std::string& global, const std::string& trained,
                                                  const v1::SecureAggregationConfig& config);

}  // namespace fedtune::site
