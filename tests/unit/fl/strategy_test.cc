#include "common/fl/strategy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/fl/update_validation.h"

namespace fedtune::fl {
namespace {

TensorMap Model(float base, uint64_t seed = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> a(6), b(3);
  for (auto& v : a) v = base + (seed ? n(rng) : 0.f);
  for (auto& v : b) v = -base + (seed ? n(rng) : 0.f);
  TensorMap m;
  m["base_model.model.classifier.weight"] = *Tensor::FromFloats({2, 3}, a);
  m["base_model.model.classifier.bias"] = *Tensor::FromFloats({3}, b);
  return m;
}

TEST(FedAvg, ExampleWeightedMean) {
  // Prepare
  const TensorMap global = Model(0), s1 = Model(1, 11), s2 = Model(2, 12), s3 = Model(3, 13);
  FedAvg avg;
  // Execute
  ASSERT_TRUE(avg.Begin(global).ok());
  ASSERT_TRUE(avg.Add("a", s1, 100).ok());
  ASSERT_TRUE(avg.Add("b", s2, 300).ok());
  ASSERT_TRUE(avg.Add("c", s3, 600).ok());
  auto out = avg.Finish();
  // Assert
  ASSERT_TRUE(out.ok()) << out.status();
  for (const auto& [name, t] : *out) {
    const auto v = *t.ToFloats(), v1 = *s1.at(name).ToFloats(), v2 = *s2.at(name).ToFloats(),
               v3 = *s3.at(name).ToFloats();
    for (size_t i = 0; i < v.size(); ++i) {
      EXPECT_NEAR(v[i], (100.0 * v1[i] + 300.0 * v2[i] + 600.0 * v3[i]) / 1000.0, 1e-6) << name << "[" << i << "]";
    }
    EXPECT_EQ(t.shape, global.at(name).shape);
  }
}

TEST(FedAvg, OrderDoesNotMatterAndDtypeFollowsTheGlobal) {
  TensorMap global = Model(0);
  for (auto& [n, t] : global) {
    auto v = *t.ToFloats();
    t.dtype = DType::kBF16;
    t.data.resize(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t b = FloatToBFloat16(v[i]);
      std::memcpy(t.data.data() + 2 * i, &b, 2);
    }
  }
  const TensorMap s1 = Model(1, 1), s2 = Model(2, 2);
  FedAvg x, y;
  ASSERT_TRUE(x.Begin(global).ok());
  ASSERT_TRUE(x.Add("a", s1, 5).ok());
  ASSERT_TRUE(x.Add("b", s2, 7).ok());
  ASSERT_TRUE(y.Begin(global).ok());
  ASSERT_TRUE(y.Add("b", s2, 7).ok());
  ASSERT_TRUE(y.Add("a", s1, 5).ok());
  auto ox = x.Finish(), oy = y.Finish();
  ASSERT_TRUE(ox.ok() && oy.ok());
  EXPECT_EQ(*ox, *oy);
  EXPECT_EQ(ox->begin()->second.dtype, DType::kBF16);
}

TEST(FedAvg, RefusesWhatCannotBeAveraged) {
  FedAvg avg;
  EXPECT_EQ(avg.Add("a", Model(1), 1).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(avg.Begin(Model(0)).ok());
  EXPECT_EQ(avg.Finish().status().code(), absl::StatusCode::kFailedPrecondition);  // nothing added
  ASSERT_TRUE(avg.Begin(Model(0)).ok());
  EXPECT_EQ(avg.Add("a", Model(1), 0).code(), absl::StatusCode::kInvalidArgument);
  TensorMap missing = Model(1);
  missing.erase(missing.begin());
  EXPECT_EQ(avg.Add("a", missing, 10).code(), absl::StatusCode::kInvalidArgument);
  // A refused update leaves no trace: the next good one alone is the result.
  ASSERT_TRUE(avg.Add("b", Model(2), 10).ok());
  EXPECT_EQ(*avg.Finish(), Model(2));
  EXPECT_TRUE(MakeStrategy("fedavg").ok());
  EXPECT_EQ(MakeStrategy("krum").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(UpdateValidation, RefusesEachKindOfBadUpdate) {
  const TensorMap global = Model(0);
  const UpdateLimits limits{10.0};
  EXPECT_TRUE(ValidateUpdate(global, Model(1), limits).ok());

  TensorMap missing = global;
  missing.erase("base_model.model.classifier.bias");
  EXPECT_EQ(ValidateUpdate(global, missing, limits).message(), "update lacks tensor base_model.model.classifier.bias");

  TensorMap extra = global;
  extra["base_model.model.other"] = *Tensor::FromFloats({1}, std::vector<float>{0});
  EXPECT_EQ(ValidateUpdate(global, extra, limits).message(), "update has unknown tensor base_model.model.other");

  TensorMap shape = global;
  shape["base_model.model.classifier.weight"].shape = {3, 2};
  EXPECT_EQ(ValidateUpdate(global, shape, limits).message(),
            "tensor base_model.model.classifier.weight has shape [3, 2], the global model [2, 3]");

  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    TensorMap nan = global;
    std::vector<float> v = {0, 0, bad};
    nan["base_model.model.classifier.bias"] = *Tensor::FromFloats({3}, v);
    EXPECT_EQ(ValidateUpdate(global, nan, limits).message(),
              "tensor base_model.model.classifier.bias holds a non-finite value (NaN or Inf)");
  }

  TensorMap integer = global;
  integer["base_model.model.classifier.bias"].dtype = DType::kI32;
  EXPECT_NE(ValidateUpdate(global, integer, limits).message().find("must be floating point"), std::string::npos);

  const TensorMap far = Model(100);
  EXPECT_NE(ValidateUpdate(global, far, limits).message().find("above the bound 10"), std::string::npos);
  EXPECT_TRUE(ValidateUpdate(global, far, UpdateLimits{0}).ok());  // bound disabled
}

}  // namespace
}  // namespace fedtune::fl
