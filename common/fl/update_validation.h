// Every update is checked against the current global model before it may be
// aggregated; a refused update is never averaged. Torch-free, gRPC-free.
#pragma once

#include "absl/status/status.h"
#include "common/core/tensor_map.h"

namespace fedtune::fl {

// Bounds on how far one site's update may move from the global model: the L2
// norm of (update - global) over every shipped tensor. A site beyond a bound
// is refused (diverged training, or an attempt to replace the global model).
struct UpdateLimits {
  // Absolute bound; 0 = none.
  double max_delta_l2 = 0;
  // Relative bound: ratio x max(|global|, min_reference_rms x sqrt(n)), n
  // the number of values shipped; 0 = none.
  double max_delta_ratio = 0;
  // The floor of the reference norm, as a root-mean-square per value: a
  // global that is still (nearly) zero, such as version 0 of what travels
  // as differences from the base weights or LoRA B, still allows a first
  // step in proportion to how many values train.
  double min_reference_rms = 0;
};

// OK when `update` has exactly the global's tensor names, each with the same
// shape and a floating dtype (F32, F16, BF16, F64), every value finite, and
// the delta within `limits`. INVALID_ARGUMENT otherwise, naming the tensor and
// the problem, or the norm and the bound (values themselves are never quoted).
absl::Status ValidateUpdate(const TensorMap& global, const TensorMap& update, const UpdateLimits& limits);

// The L2 norm of every value of `tensors`, in double precision.
double L2Norm(const TensorMap& tensors);

}  // namespace fedtune::fl
