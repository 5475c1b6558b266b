#include "common/model/tensor_convert.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace fedtune::model {

torch::Dtype ToTorchDtype(DType dtype) {
  switch (dtype) {
    case DType::kBool: return torch::kBool;
    case DType::kU8: return torch::kUInt8;
    case DType::kI8: return torch::kInt8;
    case DType::kI16: return torch::kInt16;
    case DType::kI32: return torch::kInt32;
    case DType::kI64: return torch::kInt64;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kF32: return torch::kFloat32;
    case DType::kF64: return torch::kFloat64;
  }
  return torch::kFloat32;  // unreachable: every enumerator is handled
}

absl::StatusOr<DType> FromTorchDtype(torch::Dtype dtype) {
  for (DType d : {DType::kBool, DType::kU8, DType::kI8, DType::kI16, DType::kI32, DType::kI64,
                  DType::kF16, DType::kBF16, DType::kF32, DType::kF64}) {
    if (ToTorchDtype(d) == dtype) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("torch dtype ", c10::toString(dtype), " has no safetensors equivalent"));
}

absl::StatusOr<torch::Tensor> ToTorch(const Tensor& t) {
  auto numel = NumElements(t.shape);
  if (!numel.ok()) return numel.status();
  if (static_cast<size_t>(*numel) * DTypeSize(t.dtype) != t.data.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor of shape ", ShapeString(t.shape), " holds ",
                                                   t.data.size(), " bytes"));
  }
  torch::Tensor out = torch::empty(t.shape, torch::TensorOptions().dtype(ToTorchDtype(t.dtype)));
  if (!t.data.empty()) std::memcpy(out.data_ptr(), t.data.data(), t.data.size());
  return out;
}

absl::StatusOr<Tensor> FromTorch(const torch::Tensor& t) {
  auto dtype = FromTorchDtype(t.scalar_type());
  if (!dtype.ok()) return dtype.status();
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  Tensor out;
  out.dtype = *dtype;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.data.resize(static_cast<size_t>(c.numel()) * c.element_size());
  if (!out.data.empty()) std::memcpy(out.data.data(), c.data_ptr(), out.data.size());
  return out;
}

}  // namespace fedtune::model
