// Every update is checked against the current global model before it may be
// aggregated; a refused update is never averaged. Torch-free, gRPC-free.
#pragma once

#include "absl/status/status.h"
#include "common/core/tensor_map.h"

namespace fedtune::fl {

struct UpdateLimits {
  // Bound on the L2 norm of (update - global) over all tensors: a site whose
  // weights moved further than this is refused (diverged training or an
  // attack). 0 disables the bound.
  double max_delta_l2 = 1e3;
};

// OK when `update` has exactly the global's tensor names, each with the same
// shape and a floating dtype (F32, F16, BF16, F64), every value finite, and
// the delta within `limits`. INVALID_ARGUMENT otherwise, naming the tensor and
// the problem (values themselves are never quoted).
absl::Status ValidateUpdate(const TensorMap& global, const TensorMap& update, const UpdateLimits& limits);

}  // namespace fedtune::fl
