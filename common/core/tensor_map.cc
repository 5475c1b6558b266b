#include "common/core/tensor_map.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/status.h"

namespace fedtune {
namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},     {DType::kI8, "I8", 1},
    {DType::kI16, "I16", 2},   {DType::kI32, "I32", 4},   {DType::kI64, "I64", 8},
    {DType::kF16, "F16", 2},   {DType::kBF16, "BF16", 2}, {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
};

const DTypeEntry& Entry(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  return kDTypes[0];  // unreachable: every enumerator is listed
}

template <typename T>
T LoadLe(const std::byte* p) {
  static_assert(std::endian::native == std::endian::little,
                "fedtune assumes a little-endian host, as safetensors does");
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

size_t DTypeSize(DType dtype) { return Entry(dtype).size; }
std::string_view DTypeName(DType dtype) { return Entry(dtype).name; }

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype \"", Sv(name), "\" (supported: BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64)"));
}

absl::StatusOr<int64_t> NumElements(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dimension ", d));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " has too many elements"));
    }
    n *= d;
  }
  return n;
}

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<Tensor> Tensor::FromFloats(std::vector<int64_t> shape,
                                          std::span<const float> values) {
  auto n = NumElements(shape);
  if (!n.ok()) return n.status();
  if (*n != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(absl::StrCat("shape ", ShapeString(shape), " holds ", *n,
                                                   " values, got ", values.size()));
  }
  Tensor t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.data.resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

int64_t Tensor::numel() const {
  return static_cast<int64_t>(data.size() / DTypeSize(dtype));
}

absl::StatusOr<std::vector<float>> Tensor::ToFloats() const {
  const int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  const size_t es = DTypeSize(dtype);
  const std::byte* p = data.data();
  for (int64_t i = 0; i < n; ++i, p += es) {
    float v;
    switch (dtype) {
      case DType::kF32: v = LoadLe<float>(p); break;
      case DType::kF64: v = static_cast<float>(LoadLe<double>(p)); break;
      case DType::kF16: v = HalfToFloat(LoadLe<uint16_t>(p)); break;
      case DType::kBF16: v = BFloat16ToFloat(LoadLe<uint16_t>(p)); break;
      case DType::kU8: v = static_cast<float>(LoadLe<uint8_t>(p)); break;
      case DType::kI8: v = static_cast<float>(LoadLe<int8_t>(p)); break;
      case DType::kI16: v = static_cast<float>(LoadLe<int16_t>(p)); break;
      case DType::kI32: v = static_cast<float>(LoadLe<int32_t>(p)); break;
      case DType::kI64: v = static_cast<float>(LoadLe<int64_t>(p)); break;
      case DType::kBool:
      default:
        return absl::InvalidArgumentError("a BOOL tensor has no float values");
    }
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal half: renormalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3FFu) << 13;
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | mant << 13;  // inf / nan
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  return std::bit_cast<float>(bits);
}

uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or nan (keep nan quiet and non-zero)
    return sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u);
  }
  if (abs >= 0x477FF000u) return sign | 0x7C00u;  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    // A subnormal half counts units of 2^-24; the float is M * 2^(e-150) with
    // M the 24-bit significand, so the half's count is M >> (126 - e).
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;  // nearest even
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent from 127 to 15
  const uint32_t rem = r & 0x1FFFu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return sign | static_cast<uint16_t>(r);
}

float BFloat16ToFloat(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace fedtune
