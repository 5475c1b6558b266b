// Torch-free tensors: what travels between sites and coordinator, what the
// aggregation strategies average, and what safetensors files hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune {

// Element types of the safetensors format, named as the format names them.
enum class DType { kBool, kU8, kI8, kI16, kI32, kI64, kF16, kBF16, kF32, kF64 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling: "F32", "BF16", ...
std::string_view DTypeName(DType dtype);
// Inverse of DTypeName; INVALID_ARGUMENT for a name the format does not define
// or fedtune does not support.
absl::StatusOr<DType> ParseDType(std::string_view name);

// Number of elements of `shape` (1 for a scalar); INVALID_ARGUMENT on a
// negative dimension or when the product overflows int64.
absl::StatusOr<int64_t> NumElements(std::span<const int64_t> shape);

// "[2, 3]"
std::string ShapeString(std::span<const int64_t> shape);

// A dense, row-major, little-endian tensor that owns its bytes.
struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> data;  // exactly NumElements(shape) * DTypeSize(dtype) bytes

  // A float32 tensor of `shape` holding `values`; INVALID_ARGUMENT when the
  // count does not match the shape.
  static absl::StatusOr<Tensor> FromFloats(std::vector<int64_t> shape,
                                           std::span<const float> values);
  int64_t numel() const;
  // Values converted to float32 (from F32, F16, BF16, F64 and the integer
  // types); INVALID_ARGUMENT for BOOL.
  absl::StatusOr<std::vector<float>> ToFloats() const;

  friend bool operator==(const Tensor&, const Tensor&) = default;
};

// Tensors by name, ordered by name so that serialization is deterministic.
using TensorMap = std::map<std::string, Tensor>;

// IEEE half and bfloat16 conversions (round to nearest even on narrowing).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

}  // namespace fedtune
