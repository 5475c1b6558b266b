#include "common/model/tensor_convert.h"

#include <gtest/gtest.h>

#include <random>

namespace fedtune::model {
namespace {

TEST(TensorConvert, RoundTripsEveryDtypeBitExactly) {
  for (DType d : {DType::kBool, DType::kU8, DType::kI8, DType::kI16, DType::kI32, DType::kI64,
                  DType::kF16, DType::kBF16, DType::kF32, DType::kF64}) {
    Tensor t;
    t.dtype = d;
    t.shape = {3, 5};
    t.data.resize(15 * DTypeSize(d));
    for (size_t i = 0; i < t.data.size(); ++i) {
      // Bool tensors may only hold 0 or 1.
      t.data[i] = static_cast<std::byte>(d == DType::kBool ? i % 2 : (i * 37 + 11) & 0xFF);
    }
    auto tt = ToTorch(t);
    ASSERT_TRUE(tt.ok()) << DTypeName(d);
    EXPECT_EQ(tt->scalar_type(), ToTorchDtype(d));
    EXPECT_EQ(tt->sizes().vec(), t.shape);
    auto back = FromTorch(*tt);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, t) << DTypeName(d);
  }
}

TEST(TensorConvert, NonContiguousTensorsAreCopiedInRowMajorOrder) {
  torch::Tensor a = torch::arange(6, torch::kFloat32).reshape({2, 3}).t();  // [3, 2] view
  auto t = FromTorch(a);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(*t->ToFloats(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(TensorConvert, RefusesInconsistentTensors) {
  Tensor t;
  t.shape = {4};
  t.data.resize(3);
  EXPECT_FALSE(ToTorch(t).ok());
  EXPECT_FALSE(FromTorch(torch::zeros({2}, torch::kComplexFloat)).ok());
}

// The torch-free half/bfloat16 conversions (used by aggregation) agree with
// LibTorch's bit for bit, subnormals, ties and overflow included.
TEST(TensorConvert, HalfAndBFloat16MatchTorch) {
  std::mt19937 rng(7);
  std::vector<float> values;
  for (int i = 0; i < 20000; ++i) {
    std::uniform_int_distribution<int> exp(-30, 17);
    std::uniform_real_distribution<float> mant(-2.0f, 2.0f);
    values.push_back(std::ldexp(mant(rng), exp(rng)));
  }
  for (float special : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e-8f, 5.96e-8f, 2.98e-8f}) {
    values.push_back(special);
  }
  torch::Tensor f = torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}).clone();
  torch::Tensor h = f.to(torch::kFloat16);
  torch::Tensor b = f.to(torch::kBFloat16);
  const auto* hp = reinterpret_cast<const uint16_t*>(h.data_ptr());
  const auto* bp = reinterpret_cast<const uint16_t*>(b.data_ptr());
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(FloatToHalf(values[i]), hp[i]) << values[i];
    ASSERT_EQ(FloatToBFloat16(values[i]), bp[i]) << values[i];
    ASSERT_EQ(HalfToFloat(hp[i]), h[static_cast<int64_t>(i)].item<float>());
  }
}

}  // namespace
}  // namespace fedtune::model
