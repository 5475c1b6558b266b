// The aggregation strategies as pure functions over TensorMap: each result
// checked against the formula it implements, written out in the test (or, for
// the SVD re-factorisation, against numpy's LAPACK SVD).
#include "common/fl/strategy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

#include "common/core/safetensors.h"
#include "common/fl/lora_svd.h"
#include "common/fl/update_validation.h"
#include "tests/testing/python_reference.h"

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

std::vector<float> Values(const TensorMap& m, const std::string& name) { return *m.at(name).ToFloats(); }

Tensor Random(std::vector<int64_t> shape, std::mt19937_64& rng, float scale = 1) {
  std::normal_distribution<float> n(0, scale);
  std::vector<float> v(static_cast<size_t>(shape[0] * (shape.size() > 1 ? shape[1] : 1)));
  for (auto& x : v) x = n(rng);
  return *Tensor::FromFloats(std::move(shape), v);
}

// A LoRA-adapted "model": two adapted modules (rank 4) and a head.
constexpr char kQa[] = "base_model.model.dinov2.encoder.layer.0.attention.attention.query.lora_A.weight";
constexpr char kQb[] = "base_model.model.dinov2.encoder.layer.0.attention.attention.query.lora_B.weight";
constexpr char kVa[] = "base_model.model.dinov2.encoder.layer.0.attention.attention.value.lora_A.weight";
constexpr char kVb[] = "base_model.model.dinov2.encoder.layer.0.attention.attention.value.lora_B.weight";
constexpr char kHead[] = "base_model.model.classifier.weight";

TensorMap LoraModel(uint64_t seed, int rank = 4) {
  std::mt19937_64 rng(seed);
  TensorMap m;
  m[kQa] = Random({rank, 12}, rng);
  m[kQb] = Random({10, rank}, rng);
  m[kVa] = Random({rank, 12}, rng);
  m[kVb] = Random({10, rank}, rng);
  m[kHead] = Random({3, 24}, rng);
  return m;
}

Matrix AsMatrix(const Tensor& t) {
  Matrix m(t.shape[0], t.shape[1]);
  const auto f = *t.ToFloats();
  for (size_t i = 0; i < f.size(); ++i) m.v[i] = f[i];
  return m;
}

TEST(FedAvg, ExampleWeightedMean) {
  // Prepare
  const TensorMap global = Model(0), s1 = Model(1, 11), s2 = Model(2, 12), s3 = Model(3, 13);
  FedAvg avg;
  // Execute
  ASSERT_TRUE(avg.Begin(global, {}).ok());
  ASSERT_TRUE(avg.Add("a", s1, 100).ok());
  ASSERT_TRUE(avg.Add("b", s2, 300).ok());
  ASSERT_TRUE(avg.Add("c", s3, 600).ok());
  auto out = avg.Finish();
  // Assert
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->server_state.empty());
  for (const auto& [name, t] : out->global) {
    const auto v = *t.ToFloats(), v1 = Values(s1, name), v2 = Values(s2, name), v3 = Values(s3, name);
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
  ASSERT_TRUE(x.Begin(global, {}).ok());
  ASSERT_TRUE(x.Add("a", s1, 5).ok());
  ASSERT_TRUE(x.Add("b", s2, 7).ok());
  ASSERT_TRUE(y.Begin(global, {}).ok());
  ASSERT_TRUE(y.Add("b", s2, 7).ok());
  ASSERT_TRUE(y.Add("a", s1, 5).ok());
  auto ox = x.Finish(), oy = y.Finish();
  ASSERT_TRUE(ox.ok() && oy.ok());
  EXPECT_EQ(ox->global, oy->global);
  EXPECT_EQ(ox->global.begin()->second.dtype, DType::kBF16);
}

TEST(FedAvg, RefusesWhatCannotBeAveraged) {
  FedAvg avg;
  EXPECT_EQ(avg.Add("a", Model(1), 1).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(avg.Begin(Model(0), {}).ok());
  EXPECT_EQ(avg.Finish().status().code(), absl::StatusCode::kFailedPrecondition);  // nothing added
  ASSERT_TRUE(avg.Begin(Model(0), {}).ok());
  EXPECT_EQ(avg.Add("a", Model(1), 0).code(), absl::StatusCode::kInvalidArgument);
  TensorMap missing = Model(1);
  missing.erase(missing.begin());
  EXPECT_EQ(avg.Add("a", missing, 10).code(), absl::StatusCode::kInvalidArgument);
  // A refused update leaves no trace: the next good one alone is the result.
  ASSERT_TRUE(avg.Add("b", Model(2), 10).ok());
  EXPECT_EQ(avg.Finish()->global, Model(2));
}

TEST(StrategyOptions, EveryNameMakesItsStrategyAndBadSettingsAreRefused) {
  for (const std::string& name : StrategyNames()) {
    auto s = MakeStrategy(name);
    ASSERT_TRUE(s.ok()) << name << ": " << s.status();
    EXPECT_EQ((*s)->name(), name == "fedprox" ? "fedavg" : name);
  }
  auto unknown = MakeStrategy("krum");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("ffa-lora, lora-svd"), std::string::npos) << unknown.status();
  StrategyOptions o;
  o.name = "trimmed-mean";
  o.trim_fraction = 0.5;
  EXPECT_EQ(Validate(o).message(), "strategy.trim_fraction must be in [0, 0.5), got 0.5");
  o = {};
  o.name = "fedadam";
  o.beta2 = 1;
  EXPECT_EQ(Validate(o).message(), "strategy.beta2 must be in [0, 1), got 1");
  o.beta2 = 0.99;
  o.tau = 0;
  EXPECT_EQ(Validate(o).message(), "strategy.tau must be in (0, 1], got 0");
  EXPECT_TRUE(IsLinear("ffa-lora") && IsLinear("fedyogi") && !IsLinear("median") && !IsLinear("lora-svd"));
  EXPECT_TRUE(RequiresLora("lora-svd") && !RequiresLora("fedadam"));
}

TEST(FfaLora, AStaysAsVersionZeroMadeItAndBAndTheHeadAverage) {
  const TensorMap global = LoraModel(1);
  FfaLora ffa;
  EXPECT_FALSE(ffa.ShipsTensor(kQa));
  EXPECT_TRUE(ffa.ShipsTensor(kQb));
  EXPECT_TRUE(ffa.ShipsTensor(kHead));
  auto shipped = [&](uint64_t seed) {
    TensorMap m = LoraModel(seed);
    m.erase(kQa);
    m.erase(kVa);
    return m;
  };
  const TensorMap u1 = shipped(2), u2 = shipped(3);
  ASSERT_TRUE(ffa.Begin(global, {}).ok());
  // An update that carries A is refused: every site keeps A frozen.
  EXPECT_EQ(ffa.Add("x", LoraModel(4), 10).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(ffa.Add("a", u1, 1).ok());
  ASSERT_TRUE(ffa.Add("b", u2, 3).ok());
  auto out = ffa.Finish();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->global.at(kQa), global.at(kQa));
  EXPECT_EQ(out->global.at(kVa), global.at(kVa));
  for (const char* name : {kQb, kVb, kHead}) {
    const auto v = Values(out->global, name), a = Values(u1, name), b = Values(u2, name);
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], (a[i] + 3.0 * b[i]) / 4.0, 1e-6);
  }
  // Exact: with A shared, the mean of the adapted weights B A is mean(B) A.
  const Matrix a = AsMatrix(global.at(kQa));
  const Matrix want = Multiply(AsMatrix(out->global.at(kQb)), a);
  Matrix mean_ba(10, 12);
  for (const auto& [u, w] : {std::pair{&u1, 0.25}, std::pair{&u2, 0.75}}) {
    const Matrix ba = Multiply(AsMatrix(u->at(kQb)), a);
    for (size_t i = 0; i < ba.v.size(); ++i) mean_ba.v[i] += w * ba.v[i];
  }
  for (size_t i = 0; i < want.v.size(); ++i) EXPECT_NEAR(want.v[i], mean_ba.v[i], 1e-5);
  FfaLora no_lora;
  EXPECT_EQ(no_lora.Begin(Model(0), {}).code(), absl::StatusCode::kInvalidArgument);
}

// M = sum w_i B_i A_i / sum w_i, formed explicitly.
Matrix MeanProduct(const std::vector<TensorMap>& updates, const std::vector<double>& w, const char* a_name,
                   const char* b_name) {
  Matrix m;
  double total = 0;
  for (size_t i = 0; i < updates.size(); ++i) {
    const Matrix ba = Multiply(AsMatrix(updates[i].at(b_name)), AsMatrix(updates[i].at(a_name)));
    if (m.v.empty()) m = Matrix(ba.rows, ba.cols);
    for (size_t k = 0; k < ba.v.size(); ++k) m.v[k] += w[i] * ba.v[k];
    total += w[i];
  }
  for (double& x : m.v) x /= total;
  return m;
}

TEST(LoraSvd, OneSiteIsReproducedExactly) {
  LoraSvd svd;
  const TensorMap u = LoraModel(7);
  ASSERT_TRUE(svd.Begin(LoraModel(1), {}).ok());
  ASSERT_TRUE(svd.Add("a", u, 50).ok());
  auto out = svd.Finish();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(svd.min_energy_kept(), 1.0, 1e-12);
  const Matrix want = Multiply(AsMatrix(u.at(kQb)), AsMatrix(u.at(kQa)));
  const Matrix got = Multiply(AsMatrix(out->global.at(kQb)), AsMatrix(out->global.at(kQa)));
  for (size_t i = 0; i < want.v.size(); ++i) EXPECT_NEAR(got.v[i], want.v[i], 1e-5);
  EXPECT_EQ(out->global.at(kHead), u.at(kHead));
  // A's rows come out orthonormal.
  const Matrix a = AsMatrix(out->global.at(kQa));
  const Matrix aat = Multiply(a, Transpose(a));
  for (int64_t i = 0; i < aat.rows; ++i) {
    for (int64_t j = 0; j < aat.cols; ++j) EXPECT_NEAR(aat(i, j), i == j ? 1.0 : 0.0, 1e-6);
  }
}

TEST(LoraSvd, KeepsTheBestRankRApproximationOfTheMeanProduct) {
  const std::vector<TensorMap> updates = {LoraModel(11), LoraModel(12), LoraModel(13)};
  const std::vector<double> w = {100, 300, 600};
  LoraSvd svd;
  ASSERT_TRUE(svd.Begin(LoraModel(1), {}).ok());
  for (size_t i = 0; i < updates.size(); ++i) ASSERT_TRUE(svd.Add("s" + std::to_string(i), updates[i], w[i]).ok());
  auto out = svd.Finish();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NE(out->summary.find("kept"), std::string::npos);
  std::vector<double> energies;
  for (auto [a_name, b_name] : {std::pair{kQa, kQb}, std::pair{kVa, kVb}}) {
    const Matrix m = MeanProduct(updates, w, a_name, b_name);
    const Matrix got = Multiply(AsMatrix(out->global.at(b_name)), AsMatrix(out->global.at(a_name)));
    // Separate averaging (FedAvg) as a rank-4 approximation of the same M.
    Matrix mean_a(4, 12), mean_b(10, 4);
    for (size_t i = 0; i < updates.size(); ++i) {
      const Matrix a = AsMatrix(updates[i].at(a_name)), b = AsMatrix(updates[i].at(b_name));
      for (size_t k = 0; k < a.v.size(); ++k) mean_a.v[k] += w[i] / 1000 * a.v[k];
      for (size_t k = 0; k < b.v.size(); ++k) mean_b.v[k] += w[i] / 1000 * b.v[k];
    }
    const Matrix separate = Multiply(mean_b, mean_a);
    double err_svd = 0, err_sep = 0;
    for (size_t k = 0; k < m.v.size(); ++k) {
      err_svd += (m.v[k] - got.v[k]) * (m.v[k] - got.v[k]);
      err_sep += (m.v[k] - separate.v[k]) * (m.v[k] - separate.v[k]);
    }
    EXPECT_LT(err_svd, err_sep);
    EXPECT_GT(err_svd, 0);  // three rank-4 products do not fit in rank 4
    // The energy kept is 1 - |M - B A|^2 / |M|^2 (Eckart-Young).
    energies.push_back(1 - err_svd / FrobeniusSquared(m));
  }
  EXPECT_NEAR(svd.min_energy_kept(), std::min(energies[0], energies[1]), 1e-6);
  EXPECT_NEAR(svd.total_energy_kept(), (energies[0] + energies[1]) / 2, 1e-6);
}

TEST(LoraSvd, AgreesWithNumpysSvd) {
  if (!testing::PythonHas("numpy")) GTEST_SKIP() << "python3-numpy is not installed (deploy/install-deps.sh)";
  // Cases: three sites at rank 4; rank 8 across five sites; a wide layer.
  struct Case {
    int sites, rank, out, in;
  };
  const std::vector<Case> cases = {{3, 4, 10, 12}, {5, 8, 16, 6}, {2, 3, 5, 40}};
  TensorMap file;
  std::mt19937_64 rng(99);
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    const std::string p = "c" + std::to_string(k);
    std::vector<Matrix> wb, a;
    std::vector<float> weights;
    double total = 0;
    for (int i = 0; i < c.sites; ++i) total += i + 1;
    for (int i = 0; i < c.sites; ++i) {
      const Tensor tb = Random({c.out, c.rank}, rng), ta = Random({c.rank, c.in}, rng);
      file[p + ".b." + std::to_string(i)] = tb;
      file[p + ".a." + std::to_string(i)] = ta;
      weights.push_back(static_cast<float>(i + 1));
      Matrix b = AsMatrix(tb);
      for (double& x : b.v) x *= (i + 1) / total;
      wb.push_back(b);
      a.push_back(AsMatrix(ta));
    }
    Matrix b_out, a_out;
    double energy = 0;
    RefactorLowRank(wb, a, c.rank, &b_out, &a_out, &energy);
    file[p + ".w"] = *Tensor::FromFloats({c.sites}, weights);
    file[p + ".rank"] = *Tensor::FromFloats({1}, std::vector<float>{static_cast<float>(c.rank)});
    file[p + ".B"] = EncodeLike(b_out.v, Tensor{DType::kF64, {b_out.rows, b_out.cols}, {}});
    file[p + ".A"] = EncodeLike(a_out.v, Tensor{DType::kF64, {a_out.rows, a_out.cols}, {}});
    file[p + ".energy"] = EncodeLike({energy}, Tensor{DType::kF64, {1}, {}});
  }
  // The sites' factors are float32 in the file, as fedtune reads them.
  const std::string path = ::testing::TempDir() + "/lowrank_case.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, file).ok());
  std::string output;
  EXPECT_EQ(testing::RunPythonScript("lowrank_reference.py", path, &output), 0) << output;
  std::filesystem::remove(path);
}

// The tensors of a "model" with one coordinate each, to write the server
// optimisers' recurrences out by hand.
TensorMap Scalar(double x) {
  TensorMap m;
  m["w"] = EncodeLike({x}, Tensor{DType::kF64, {1}, {}});
  return m;
}
double Get(const TensorMap& m) { return (*m.at("w").ToFloats())[0]; }

TEST(ServerOptimizer, FedAvgMWithoutMomentumAtRateOneIsFedAvg) {
  StrategyOptions o;
  o.name = "fedavgm";
  o.server_learning_rate = 1;
  o.server_momentum = 0;
  auto s = MakeStrategy(o);
  ASSERT_TRUE(s.ok());
  FedAvg avg;
  const TensorMap global = Model(0.5f, 3), u1 = Model(1, 4), u2 = Model(2, 5);
  ASSERT_TRUE((*s)->Begin(global, {}).ok() && avg.Begin(global, {}).ok());
  for (auto [u, n] : {std::pair{&u1, 3}, std::pair{&u2, 5}}) {
    ASSERT_TRUE((*s)->Add("x", *u, n).ok());
    ASSERT_TRUE(avg.Add("x", *u, n).ok());
  }
  auto a = (*s)->Finish(), b = avg.Finish();
  ASSERT_TRUE(a.ok() && b.ok());
  for (const auto& [name, t] : b->global) {
    const auto x = *t.ToFloats(), y = Values(a->global, name);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], y[i], 1e-6);
  }
}

TEST(ServerOptimizer, RecurrencesOverThreeRoundsMatchTheirFormulas) {
  // Each round the two sites (weights 1 and 3) report x + d1 and x + d2.
  const double d1[] = {0.4, -0.1, 0.3}, d2[] = {0.2, 0.05, -0.2};
  for (const std::string name : {"fedavgm", "fedadagrad", "fedyogi", "fedadam"}) {
    StrategyOptions o;
    o.name = name;
    o.server_learning_rate = 0.1;
    o.server_momentum = 0.8;
    o.beta1 = 0.9;
    o.beta2 = 0.99;
    o.tau = 0.01;
    double x = 1.0, m = 0, v = o.tau * o.tau;  // the reference
    TensorMap state;
    TensorMap global = Scalar(1.0);
    for (int r = 0; r < 3; ++r) {
      // A new strategy each round, fed the stored state: as a restarted
      // coordinator would be.
      auto s = MakeStrategy(o);
      ASSERT_TRUE(s.ok());
      ASSERT_TRUE((*s)->Begin(global, state).ok());
      ASSERT_TRUE((*s)->Add("a", Scalar(x + d1[r]), 1).ok());
      ASSERT_TRUE((*s)->Add("b", Scalar(x + d2[r]), 3).ok());
      auto out = (*s)->Finish();
      ASSERT_TRUE(out.ok()) << out.status();
      const double d = (d1[r] + 3 * d2[r]) / 4;
      if (name == "fedavgm") {
        m = o.server_momentum * m + d;
        x += o.server_learning_rate * m;
      } else {
        m = o.beta1 * m + (1 - o.beta1) * d;
        if (name == "fedadagrad") v += d * d;
        if (name == "fedyogi") v -= (1 - o.beta2) * d * d * (v - d * d > 0 ? 1 : -1);
        if (name == "fedadam") v = o.beta2 * v + (1 - o.beta2) * d * d;
        x += o.server_learning_rate * m / (std::sqrt(v) + o.tau);
      }
      EXPECT_NEAR(Get(out->global), x, 1e-6) << name << " round " << r + 1;
      EXPECT_EQ(out->server_state.count("m:w"), 1u);
      EXPECT_EQ(out->server_state.count("v:w"), name == "fedavgm" ? 0u : 1u);
      global = out->global;
      state = out->server_state;
    }
  }
}

TEST(ServerOptimizer, AStoredStateOfAnotherShapeIsDataLoss) {
  auto s = MakeStrategy("fedadam");
  ASSERT_TRUE(s.ok());
  TensorMap state;
  state["m:w"] = EncodeLike({0, 0}, Tensor{DType::kF32, {2}, {}});
  EXPECT_EQ((*s)->Begin(Scalar(1), state).code(), absl::StatusCode::kDataLoss);
}

TEST(Robust, MedianAndTrimmedMeanIgnoreOneOutlier) {
  const TensorMap global = Model(0);
  std::vector<TensorMap> honest = {Model(1, 1), Model(1, 2), Model(1, 3), Model(1, 4)};
  TensorMap attacker = Model(1000);
  auto median = MakeStrategy("median");
  StrategyOptions o;
  o.name = "trimmed-mean";
  o.trim_fraction = 0.2;
  auto trimmed = MakeStrategy(o);
  ASSERT_TRUE(median.ok() && trimmed.ok());
  for (Strategy* s : {median->get(), trimmed->get()}) {
    ASSERT_TRUE(s->Begin(global, {}).ok());
    for (size_t i = 0; i < honest.size(); ++i) ASSERT_TRUE(s->Add("h" + std::to_string(i), honest[i], 1).ok());
    // A huge example count buys nothing: one site, one vote.
    ASSERT_TRUE(s->Add("attacker", attacker, 1'000'000).ok());
    auto out = s->Finish();
    ASSERT_TRUE(out.ok()) << out.status();
    for (const auto& [name, t] : out->global) {
      const auto v = *t.ToFloats();
      for (size_t i = 0; i < v.size(); ++i) {
        std::vector<double> col;
        for (const auto& h : honest) col.push_back(Values(h, name)[i]);
        const double lo = *std::min_element(col.begin(), col.end()), hi = *std::max_element(col.begin(), col.end());
        col.push_back(Values(attacker, name)[i]);
        std::sort(col.begin(), col.end());
        if (s->name() == "median") {
          EXPECT_NEAR(v[i], col[2], 1e-6) << name;  // five values: the third smallest
        } else {
          EXPECT_NEAR(v[i], (col[1] + col[2] + col[3]) / 3, 1e-5) << name;  // one dropped at each end
        }
        EXPECT_GE(v[i], lo - 1e-6);  // within the honest sites' range
        EXPECT_LE(v[i], hi + 1e-6);
      }
    }
  }
}

TEST(Robust, EvenCountsAndTooFewSitesToTrim) {
  auto median = MakeStrategy("median");
  ASSERT_TRUE(median.ok());
  ASSERT_TRUE((*median)->Begin(Scalar(0), {}).ok());
  ASSERT_TRUE((*median)->Add("a", Scalar(1), 1).ok());
  ASSERT_TRUE((*median)->Add("b", Scalar(4), 1).ok());
  EXPECT_NEAR(Get((*median)->Finish()->global), 2.5, 1e-12);
  auto trimmed = MakeStrategy("trimmed-mean");  // 0.2 x 3 sites < 1
  ASSERT_TRUE(trimmed.ok());
  ASSERT_TRUE((*trimmed)->Begin(Scalar(0), {}).ok());
  for (double x : {1.0, 2.0, 9.0}) ASSERT_TRUE((*trimmed)->Add("s", Scalar(x), 1).ok());
  auto out = (*trimmed)->Finish();
  EXPECT_NEAR(Get(out->global), 4.0, 1e-12);
  EXPECT_NE(out->summary.find("nothing trimmed"), std::string::npos) << out->summary;
}

TEST(UpdateValidation, RefusesEachKindOfBadUpdate) {
  const TensorMap global = Model(0);
  UpdateLimits limits;
  limits.max_delta_l2 = 10.0;
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
  EXPECT_TRUE(ValidateUpdate(global, far, UpdateLimits{}).ok());  // no bound
}

TEST(UpdateValidation, TheRelativeBoundScalesWithTheGlobalModel) {
  // |global| = sqrt(6 x 4 + 3 x 4) = 6; ratio 2 allows a move of 12.
  const TensorMap global = Model(2);
  UpdateLimits limits;
  limits.max_delta_ratio = 2;
  EXPECT_TRUE(ValidateUpdate(global, Model(6), limits).ok());  // moved 4 x sqrt(9) = 12... at the bound
  auto st = ValidateUpdate(global, Model(7), limits);          // moved 15
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("above the bound 12 (2 x the global model's norm 6;"), std::string::npos) << st;
  // A zero global (version 0 of what travels as differences) uses the floor:
  // 1/3 per value x sqrt(9 values) = 1.
  limits.min_reference_rms = 1.0 / 3;
  const auto floored = ValidateUpdate(Model(0), Model(1), limits);
  EXPECT_NE(floored.message().find("above the bound 2 (2 x 1, the floor 0.333333 x sqrt(9 values)"), std::string::npos)
      << floored;
}

}  // namespace
}  // namespace fedtune::fl
