#include "common/metrics/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/metrics/evaluation.h"
#include "tests/testing/python_reference.h"

namespace fedtune::metrics {
namespace {

BinarySample Sample(std::vector<double> scores, std::vector<int> labels) {
  return BinarySample{std::move(scores), std::move(labels)};
}

// Random scores on a coarse grid (many ties), labels correlated with them.
BinarySample RandomWithTies(std::mt19937_64& rng, int n, double prevalence) {
  BinarySample s;
  std::bernoulli_distribution pos(prevalence);
  std::normal_distribution<double> noise(0.0, 1.0);
  for (int i = 0; i < n; ++i) {
    const int y = pos(rng) ? 1 : 0;
    s.labels.push_back(y);
    s.scores.push_back(std::round((y * 0.8 + noise(rng)) * 4) / 4);  // steps of 0.25
  }
  if (s.positives() == 0) s.labels[0] = 1;
  if (s.negatives() == 0) s.labels[0] = 0;
  return s;
}

TEST(Metrics, HandComputedSmallCase) {
  // Positives 0.9, 0.5 ; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5, 0.5>0.1) -> 3.5/4.
  auto s = Sample({0.9, 0.5, 0.5, 0.1}, {1, 1, 0, 0});
  EXPECT_DOUBLE_EQ(*Auroc(s), 0.875);
  // Thresholds 0.9 (P=1, R=.5), 0.5 (P=2/3, R=1): AP = .5*1 + .5*2/3.
  EXPECT_DOUBLE_EQ(*AveragePrecision(s), 0.5 + 0.5 * 2.0 / 3.0);
  const Confusion c = ConfusionAt(s, 0.5);
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.fp, 1);
  EXPECT_EQ(c.tn, 1);
  EXPECT_EQ(c.fn, 0);
  // J = .5 at both 0.9 (.5 - 0) and 0.5 (1 - .5): the tie goes to the higher threshold.
  EXPECT_DOUBLE_EQ(*YoudenThreshold(s), 0.9);
}

TEST(Metrics, MakeSampleDropsUncertainLabelsAndRefusesNan) {
  const std::vector<double> scores = {0.1, 0.2, 0.3, 0.4};
  const std::vector<float> labels = {1, -1, 0, NAN};
  auto s = MakeSample(scores, labels);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->scores, (std::vector<double>{0.1, 0.3}));
  const std::vector<double> bad = {0.1, NAN, 0.3, 0.4};
  EXPECT_FALSE(MakeSample(bad, std::vector<float>{1, 0, 1, 0}).ok());
  EXPECT_FALSE(MakeSample(scores, std::vector<float>{1, 0}).ok());
}

TEST(Metrics, SingleClassIsAnErrorNotAGuess) {
  auto s = Sample({0.1, 0.2}, {1, 1});
  EXPECT_FALSE(Auroc(s).ok());
  EXPECT_FALSE(DeLongAurocCi(s).ok());
  EXPECT_TRUE(AveragePrecision(s).ok());
  EXPECT_FALSE(AveragePrecision(Sample({0.1}, {0})).ok());
}

// DeLong's structural components computed by their O(m n) definition.
double BruteForceDeLongVariance(const BinarySample& s) {
  std::vector<double> x, y;
  for (size_t i = 0; i < s.scores.size(); ++i) (s.labels[i] ? x : y).push_back(s.scores[i]);
  auto psi = [](double a, double b) { return a > b ? 1.0 : a == b ? 0.5 : 0.0; };
  std::vector<double> v10(x.size(), 0), v01(y.size(), 0);
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t j = 0; j < y.size(); ++j) {
      v10[i] += psi(x[i], y[j]) / y.size();
      v01[j] += psi(x[i], y[j]) / x.size();
    }
  auto var = [](const std::vector<double>& v) {
    double m = 0, ss = 0;
    for (double a : v) m += a / v.size();
    for (double a : v) ss += (a - m) * (a - m);
    return ss / (v.size() - 1);
  };
  return var(v10) / x.size() + var(v01) / y.size();
}

TEST(Metrics, DeLongMatchesItsDefinition) {
  std::mt19937_64 rng(3);
  for (int rep = 0; rep < 20; ++rep) {
    BinarySample s = RandomWithTies(rng, 40 + rep * 7, 0.3);
    EXPECT_NEAR(*DeLongVariance(s), BruteForceDeLongVariance(s), 1e-12);
    auto ci = DeLongAurocCi(s);
    ASSERT_TRUE(ci.ok());
    const double auc = *Auroc(s);
    EXPECT_LE(ci->lower, auc);
    EXPECT_GE(ci->upper, auc);
    // 95%: half-width is 1.959964 standard errors (unless clipped at 0 or 1).
    if (ci->upper < 1.0 && ci->lower > 0.0) {
      EXPECT_NEAR(ci->upper - auc, 1.959963984540054 * std::sqrt(*DeLongVariance(s)), 1e-9);
    }
  }
}

TEST(Metrics, BootstrapIsSeededAndBracketsTheEstimate) {
  std::mt19937_64 rng(5);
  BinarySample s = RandomWithTies(rng, 300, 0.4);
  auto a = BootstrapCi(s, F1At, 0.25, 500, 42);
  auto b = BootstrapCi(s, F1At, 0.25, 500, 42);
  auto c = BootstrapCi(s, F1At, 0.25, 500, 43);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->lower, b->lower);
  EXPECT_EQ(a->upper, b->upper);
  EXPECT_NE(a->lower, c->lower);
  const double f1 = F1At(s, 0.25);
  EXPECT_LT(a->lower, f1);
  EXPECT_GT(a->upper, f1);
}

TEST(Metrics, ThinRocKeepsEndsAndBound) {
  std::mt19937_64 rng(9);
  BinarySample s;
  std::normal_distribution<double> noise;
  for (int i = 0; i < 2000; ++i) {
    s.labels.push_back(i % 3 == 0);
    s.scores.push_back(noise(rng) + s.labels.back());
  }
  auto curve = RocCurve(s);
  ASSERT_TRUE(curve.ok());
  auto thin = ThinRoc(*curve, 50);
  EXPECT_LE(thin.size(), 50u);
  EXPECT_GE(thin.size(), 40u);
  EXPECT_EQ(thin.front().fpr, 0.0);
  EXPECT_EQ(thin.back().fpr, 1.0);
  EXPECT_EQ(thin.back().tpr, 1.0);
  for (size_t i = 1; i < thin.size(); ++i) EXPECT_GE(thin[i].fpr, thin[i - 1].fpr);
}

TEST(Evaluation, PerFindingAndMacroWithAnUnevaluableFinding) {
  // Two findings; the second has no positives.
  const std::vector<std::string> findings = {"Cardiomegaly", "Pneumothorax"};
  const std::vector<double> scores = {0.9, 0.1, 0.2, 0.3, 0.8, 0.2, 0.1, 0.4};
  const std::vector<float> labels = {1, 0, 0, 0, 1, 0, 0, -1};
  EvaluationOptions opt;
  opt.bootstrap_resamples = 100;
  auto t = ChooseThresholds(findings, scores, labels, opt);
  ASSERT_TRUE(t.ok());
  auto r = Evaluate(findings, scores, labels, *t, opt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->findings[0].evaluable);
  EXPECT_DOUBLE_EQ(r->findings[0].auroc, 1.0);
  EXPECT_FALSE(r->findings[1].evaluable);
  EXPECT_EQ(r->findings[1].negatives, 3);  // the -1 label is left out
  EXPECT_DOUBLE_EQ(r->macro_auroc, 1.0);
  EXPECT_FALSE(Evaluate(findings, scores, labels, {0.5}, opt).ok());
}

// The paired DeLong test against the definition written out in numpy, on two
// correlated models with ties.
TEST(Metrics, PairedDeLongMatchesTheDefinition) {
  if (!fedtune::testing::PythonHas("numpy")) {
    GTEST_SKIP() << "python3-numpy is not installed (deploy/install-deps.sh installs it)";
  }
  std::mt19937_64 rng(21);
  std::normal_distribution<double> noise(0, 1);
  std::vector<std::pair<BinarySample, BinarySample>> pairs;
  nlohmann::json in;
  for (int rep = 0; rep < 12; ++rep) {
    BinarySample a, b;
    const int n = 30 + rep * 17;
    for (int i = 0; i < n; ++i) {
      const int y = (rng() % 4) == 0 ? 1 : 0;
      const double shared = noise(rng) + (y ? 1.0 : 0.0);
      // Rounded to create ties; b is a and some noise of its own.
      a.scores.push_back(std::round((shared + 0.3 * noise(rng)) * 4) / 4);
      b.scores.push_back(std::round((shared + (0.2 + 0.1 * rep) * noise(rng) + (y ? -0.2 : 0.0)) * 4) / 4);
      a.labels.push_back(y);
      b.labels.push_back(y);
    }
    in["cases"].push_back({{"a", a.scores}, {"b", b.scores}, {"labels", a.labels}});
    pairs.emplace_back(std::move(a), std::move(b));
  }
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "/delong_in.json") << in.dump();
  std::string out;
  ASSERT_EQ(fedtune::testing::RunPythonScript("delong_reference.py", dir + "/delong_in.json " + dir + "/delong_out.json",
                                              &out),
            0)
      << out;
  nlohmann::json ref = nlohmann::json::parse(std::ifstream(dir + "/delong_out.json"));
  int significant = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    auto t = DeLongPairedTest(pairs[i].first, pairs[i].second);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_NEAR(t->auroc_a, ref[i]["auroc_a"].get<double>(), 1e-12) << i;
    EXPECT_NEAR(t->auroc_b, ref[i]["auroc_b"].get<double>(), 1e-12) << i;
    EXPECT_NEAR(t->z, ref[i]["z"].get<double>(), 1e-9) << i;
    EXPECT_NEAR(t->p_value, ref[i]["p"].get<double>(), 1e-9) << i;
    significant += t->p_value < 0.05 ? 1 : 0;
  }
  EXPECT_GT(significant, 0);  // the cases span significant and not significant differences
  EXPECT_LT(significant, static_cast<int>(pairs.size()));
  // A model against itself: no difference, p = 1.
  auto same = DeLongPairedTest(pairs[0].first, pairs[0].first);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->difference, 0);
  EXPECT_EQ(same->p_value, 1);
  BinarySample other = pairs[0].second;
  other.labels[0] = 1 - other.labels[0];
  EXPECT_EQ(DeLongPairedTest(pairs[0].first, other).status().code(), absl::StatusCode::kInvalidArgument);
}

// Against scikit-learn on random data with ties.
TEST(Metrics, MatchScikitLearn) {
  if (!fedtune::testing::PythonHas("sklearn numpy")) {
    GTEST_SKIP() << "python3-sklearn is not installed (deploy/install-deps.sh installs it)";
  }
  std::mt19937_64 rng(11);
  std::vector<BinarySample> samples;
  std::vector<double> thresholds;
  nlohmann::json in;
  for (int rep = 0; rep < 30; ++rep) {
    samples.push_back(RandomWithTies(rng, 20 + rep * 13, 0.05 + 0.03 * rep));
    thresholds.push_back(0.25 * (rep % 5));
    in["cases"].push_back({{"scores", samples.back().scores},
                           {"labels", samples.back().labels},
                           {"threshold", thresholds.back()}});
  }
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "/sk_in.json") << in.dump();
  std::string out;
  ASSERT_EQ(fedtune::testing::RunPythonScript("sklearn_metrics.py", dir + "/sk_in.json " + dir + "/sk_out.json", &out), 0)
      << out;
  nlohmann::json ref = nlohmann::json::parse(std::ifstream(dir + "/sk_out.json"));
  for (size_t i = 0; i < samples.size(); ++i) {
    const BinarySample& s = samples[i];
    EXPECT_NEAR(*Auroc(s), ref[i]["auroc"].get<double>(), 1e-9) << i;
    EXPECT_NEAR(*AveragePrecision(s), ref[i]["ap"].get<double>(), 1e-9) << i;
    const Confusion c = ConfusionAt(s, thresholds[i]);
    EXPECT_NEAR(c.mcc(), ref[i]["mcc"].get<double>(), 1e-9) << i;
    EXPECT_NEAR(c.f1(), ref[i]["f1"].get<double>(), 1e-9) << i;
    auto curve = *RocCurve(s);
    ASSERT_EQ(curve.size(), ref[i]["fpr"].size()) << i;
    for (size_t k = 0; k < curve.size(); ++k) {
      EXPECT_NEAR(curve[k].fpr, ref[i]["fpr"][k].get<double>(), 1e-12);
      EXPECT_NEAR(curve[k].tpr, ref[i]["tpr"][k].get<double>(), 1e-12);
    }
  }
}

}  // namespace
}  // namespace fedtune::metrics

namespace fedtune::metrics {
namespace {

// The macro intervals of a study table: a perfect model's AUROC interval is
// [1, 1]; a noisy one's contains its point estimate and is narrower with more
// cases; the same seed gives the same interval.
TEST(MacroBootstrap, IntervalsCoverTheMacroMeansAndShrinkWithCases) {
  auto make = [](size_t n, double noise, uint64_t seed, std::vector<double>* scores, std::vector<float>* labels) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> z(0, 1);
    scores->clear();
    labels->clear();
    for (size_t i = 0; i < n; ++i) {
      for (int f = 0; f < 2; ++f) {
        const float y = (i + f) % 3 == 0 ? 1.0f : 0.0f;
        labels->push_back(i % 17 == 5 && f == 1 ? -1.0f : y);  // some unknown labels
        scores->push_back(static_cast<double>(y) + noise * z(rng));
      }
    }
  };
  std::vector<double> s;
  std::vector<float> y;
  make(300, 0.0, 1, &s, &y);
  auto perfect = metrics::BootstrapMacroIntervals(2, s, y, {0.5, 0.5}, 200, 7);
  ASSERT_TRUE(perfect.ok()) << perfect.status();
  EXPECT_DOUBLE_EQ(perfect->auroc.lower, 1.0);
  EXPECT_DOUBLE_EQ(perfect->auroc.upper, 1.0);
  EXPECT_DOUBLE_EQ(perfect->sensitivity.lower, 1.0);

  make(300, 1.0, 2, &s, &y);
  const double point = metrics::MacroAuroc(2, s, y);
  auto small = metrics::BootstrapMacroIntervals(2, s, y, {0.5, 0.5}, 400, 7);
  ASSERT_TRUE(small.ok());
  EXPECT_LT(small->auroc.lower, point);
  EXPECT_GT(small->auroc.upper, point);
  EXPECT_GT(small->auroc.lower, 0.6);  // a signal of one sd is well above chance
  EXPECT_LT(small->f1.lower, small->f1.upper);
  auto again = metrics::BootstrapMacroIntervals(2, s, y, {0.5, 0.5}, 400, 7);
  EXPECT_EQ(again->auroc.lower, small->auroc.lower);
  EXPECT_EQ(again->mcc.upper, small->mcc.upper);

  make(3000, 1.0, 3, &s, &y);
  auto large = metrics::BootstrapMacroIntervals(2, s, y, {0.5, 0.5}, 400, 7);
  ASSERT_TRUE(large.ok());
  EXPECT_LT(large->auroc.upper - large->auroc.lower, 0.6 * (small->auroc.upper - small->auroc.lower));

  EXPECT_FALSE(metrics::BootstrapMacroIntervals(2, s, y, {0.5}, 10, 1).ok());
}

}  // namespace
}  // namespace fedtune::metrics
