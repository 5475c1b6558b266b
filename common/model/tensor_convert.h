// Conversions between fedtune::Tensor (torch-free, what files and the wire
// carry) and torch::Tensor. Torch-facing: include only inside common/model.
#pragma once

#include "absl/status/statusor.h"
#include "common/core/tensor_map.h"
#include "common/model/pch.h"

namespace fedtune::model {

// The torch dtype that holds `dtype` exactly.
torch::Dtype ToTorchDtype(DType dtype);
// INVALID_ARGUMENT for torch dtypes safetensors cannot carry here (complex, ...).
absl::StatusOr<DType> FromTorchDtype(torch::Dtype dtype);

// A CPU torch tensor owning a copy of `t`'s bytes.
absl::StatusOr<torch::Tensor> ToTorch(const Tensor& t);
// A copy of `t` (moved to CPU and made contiguous first), bit-exact.
absl::StatusOr<Tensor> FromTorch(const torch::Tensor& t);

}  // namespace fedtune::model
