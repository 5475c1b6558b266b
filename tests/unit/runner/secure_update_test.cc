// What a site masks for a securely aggregated round: its weighted
// difference, and with distributed DP, clipped and noised.
#include "site-agent/runner/secure_update.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/core/safetensors.h"
#include "common/secagg/protocol.h"

namespace fedtune::site {
namespace {

std::string Image(const std::vector<float>& head, const std::vector<float>& bias) {
  TensorMap m;
  m["head.bias"] = *Tensor::FromFloats({static_cast<int64_t>(bias.size())}, bias);
  m["head.weight"] = *Tensor::FromFloats({static_cast<int64_t>(head.size())}, head);
  return *SerializeSafetensors(m);
}

v1::SecureAggregationConfig Config(int64_t length, double weight) {
  v1::SecureAggregationConfig c;
  c.set_length(length);
  c.set_weight(weight);
  c.set_bound(16.0);
  return c;
}

TEST(SecureUpdate, TheWeightedDifferenceInNameOrder) {
  const std::string global = Image({1, 2, 3}, {0.5f});
  const std::string trained = Image({1.5f, 1, 3.25f}, {0.0f});
  auto d = EncodeDifference(global, trained, Config(4, 0.25));
  ASSERT_TRUE(d.ok()) << d.status();
  const std::vector<double> back = secagg::Decode(d->encoded, 16.0);
  const std::vector<double> expected = {0.25 * -0.5, 0.25 * 0.5, 0.25 * -1.0, 0.25 * 0.25};  // bias first
  ASSERT_EQ(back.size(), expected.size());
  for (size_t i = 0; i < back.size(); ++i) EXPECT_NEAR(back[i], expected[i], 1e-7) << i;
  EXPECT_EQ(d->clipped, 0);
  EXPECT_FALSE(EncodeDifference(global, trained, Config(5, 0.25)).ok()) << "the round's length";
  EXPECT_FALSE(EncodeDifference(Image({1, 2}, {0.5f}), trained, Config(4, 0.25)).ok()) << "shapes";
}

TEST(SecureUpdate, DistributedPrivacyClipsToTheNormAndAddsTheSitesNoise) {
  // A difference of norm 10, clipped to 1.
  std::vector<float> big(100, 1.0f);
  const std::string global = Image(std::vector<float>(100, 0.0f), {0.0f});
  std::vector<float> trained_head(100, 1.0f);
  auto c = Config(101, 1.0);
  c.set_clip_norm(1.0);
  auto d = EncodeDifference(global, Image(trained_head, {0.0f}), c);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_NEAR(d->norm, 10.0, 1e-5);
  double sq = 0;
  for (double v : secagg::Decode(d->encoded, 16.0)) sq += v * v;
  EXPECT_NEAR(std::sqrt(sq), 1.0, 1e-6);
  // Noise alone on a zero difference: its standard deviation and mean.
  const int n = 200000;
  const std::string zeros = Image(std::vector<float>(n, 0.0f), {0.0f});
  auto nc = Config(n + 1, 1.0);
  nc.set_clip_norm(1.0);
  nc.set_noise_stddev(0.1);
  auto noisy = EncodeDifference(zeros, zeros, nc);
  ASSERT_TRUE(noisy.ok()) << noisy.status();
  double sum = 0, sum_sq = 0;
  for (double v : secagg::Decode(noisy->encoded, 16.0)) {
    sum += v;
    sum_sq += v * v;
  }
  const double mean = sum / (n + 1), sd = std::sqrt(sum_sq / (n + 1) - mean * mean);
  EXPECT_NEAR(sd, 0.1, 0.002);
  EXPECT_NEAR(mean, 0.0, 0.002);
  // Two draws differ: fresh noise every time.
  auto again = EncodeDifference(zeros, zeros, nc);
  EXPECT_NE(again->encoded, noisy->encoded);
}

}  // namespace
}  // namespace fedtune::site
