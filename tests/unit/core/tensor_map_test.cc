#include "common/core/tensor_map.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

namespace fedtune {
namespace {

TEST(DType, NamesRoundTripAndSizes) {
  for (DType d : {DType::kBool, DType::kU8, DType::kI8, DType::kI16, DType::kI32, DType::kI64,
                  DType::kF16, DType::kBF16, DType::kF32, DType::kF64}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok()) << DTypeName(d);
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_FALSE(ParseDType("F8_E4M3").ok());
  EXPECT_FALSE(ParseDType("f32").ok());
}

TEST(NumElements, ScalarsZerosNegativesOverflow) {
  EXPECT_EQ(*NumElements({}), 1);
  EXPECT_EQ(*NumElements(std::vector<int64_t>{2, 0, 5}), 0);
  EXPECT_EQ(*NumElements(std::vector<int64_t>{2, 3, 4}), 24);
  EXPECT_FALSE(NumElements(std::vector<int64_t>{2, -1}).ok());
  EXPECT_FALSE(NumElements(std::vector<int64_t>{1LL << 40, 1LL << 40}).ok());
}

TEST(Tensor, FromFloatsChecksCountAndConverts) {
  std::vector<float> v = {1.5f, -2.0f, 0.25f, 8.0f, 0.0f, 3.0f};
  auto t = Tensor::FromFloats({2, 3}, v);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->numel(), 6);
  EXPECT_EQ(*t->ToFloats(), v);
  EXPECT_FALSE(Tensor::FromFloats({4}, v).ok());
}

TEST(HalfPrecision, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      continue;
    }
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(HalfPrecision, KnownValuesAndRounding) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);                      // largest finite
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);                      // rounds to infinity
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);         // tie -> even (zero)
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);         // above the tie
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie -> even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
}

TEST(BFloat16, RoundsToNearestEvenAndKeepsNan) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3F80);
  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const float f = BFloat16ToFloat(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      EXPECT_EQ(FloatToBFloat16(f), b);
    }
  }
}

}  // namespace
}  // namespace fedtune
