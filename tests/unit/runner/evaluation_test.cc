// What a site sends after an evaluation (task_executor.h ToProto) and the
// paired comparisons it computes from the scores it keeps
// (evaluation_scores.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "common/metrics/evaluation.h"
#include "common/metrics/pooling.h"
#include "site-agent/runner/evaluation_scores.h"
#include "site-agent/runner/task_executor.h"

namespace fedtune::site {
namespace {

namespace fs = std::filesystem;

// [cases x 3] scores and labels: finding 0 common, finding 1 with 3
// positives, finding 2 with none.
struct Cases {
  std::vector<double> scores;
  std::vector<float> labels;
};

Cases Make(uint64_t seed, int n, double signal) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 1);
  Cases c;
  for (int i = 0; i < n; ++i) {
    const float y0 = (i % 3) == 0 ? 1.0f : 0.0f, y1 = i < 3 ? 1.0f : 0.0f, y2 = 0.0f;
    for (float y : {y0, y1, y2}) {
      c.labels.push_back(y);
      c.scores.push_back(1 / (1 + std::exp(-(signal * y + noise(rng)))));
    }
  }
  return c;
}

const std::vector<std::string> kFindings = {"Cardiomegaly", "Pneumothorax", "Nodule/Mass"};

v1::EvaluationMetrics Evaluate(const Cases& c, int k) {
  metrics::EvaluationOptions o;
  o.bootstrap_resamples = 0;
  auto thresholds = metrics::ChooseThresholds(kFindings, c.scores, c.labels, o);
  EXPECT_TRUE(thresholds.ok());
  auto r = metrics::Evaluate(kFindings, c.scores, c.labels, *thresholds, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return ToProto(*r, c.scores, c.labels, "test", static_cast<int64_t>(c.labels.size() / 3), k);
}

TEST(EvaluationProto, MacroCoversTheSharedFindingsAndUndefinedIsAbsent) {
  const Cases c = Make(1, 90, 1.5);
  const v1::EvaluationMetrics m = Evaluate(c, 5);
  ASSERT_EQ(m.findings_size(), 3);
  const auto& common = m.findings(0);
  EXPECT_FALSE(common.suppressed());
  ASSERT_TRUE(common.has_auroc());
  EXPECT_TRUE(m.findings(1).suppressed());  // 3 positives < k
  EXPECT_FALSE(m.findings(1).has_auroc());
  EXPECT_TRUE(m.findings(2).suppressed());
  // The macro mean is the one shared finding's AUROC: the suppressed finding
  // (whose AUROC is defined at the site) does not enter it.
  ASSERT_TRUE(m.has_macro_auroc());
  EXPECT_DOUBLE_EQ(m.macro_auroc(), common.auroc());
  // Wilson intervals for the proportions, from the confusion counts (k = 1:
  // none withheld; with k = 5 a confusion count below 5 withholds them,
  // tests/unit/runner/disclosure_test.cc).
  const v1::EvaluationMetrics open = Evaluate(c, 1);
  const auto& counts = open.findings(0);
  ASSERT_FALSE(counts.confusion_withheld());
  const metrics::Interval sens = metrics::WilsonInterval(counts.tp(), counts.tp() + counts.fn());
  EXPECT_DOUBLE_EQ(counts.sensitivity_ci_lower(), sens.lower);
  EXPECT_DOUBLE_EQ(counts.sensitivity_ci_upper(), sens.upper);
  const metrics::Interval spec = metrics::WilsonInterval(counts.tn(), counts.tn() + counts.fp());
  EXPECT_DOUBLE_EQ(counts.specificity_ci_lower(), spec.lower);
  // No bootstrap asked: no bootstrap intervals, absent rather than 0.
  EXPECT_FALSE(common.has_auprc_ci_lower());
  EXPECT_EQ(common.logit_hist_pos_size(), metrics::kScoreBins);
  EXPECT_EQ(common.logit_hist_pos_size() > 0, true);
  // With k = 0 nothing is suppressed: a finding without positives has its
  // counts but no metric at all.
  const v1::EvaluationMetrics all = Evaluate(c, 0);
  EXPECT_FALSE(all.findings(2).suppressed());
  EXPECT_EQ(all.findings(2).positives(), 0);
  EXPECT_FALSE(all.findings(2).has_auroc());
  EXPECT_FALSE(all.findings(2).has_sensitivity());
  EXPECT_FALSE(all.findings(2).has_mcc());
  EXPECT_NEAR(all.macro_auroc(), (all.findings(0).auroc() + all.findings(1).auroc()) / 2, 1e-12);
  // Every finding withheld: no macro AUROC.
  EXPECT_FALSE(Evaluate(c, 1000).has_macro_auroc());
}

class PairedScores : public ::testing::Test {
 protected:
  void SetUp() override {
    ws_ = ::testing::TempDir() + "/paired_" + std::to_string(getpid());
    fs::remove_all(ws_);
    fs::create_directories(ws_);
  }
  void TearDown() override { fs::remove_all(ws_); }

  ScoredCases Scored(const std::string& label, const Cases& c, const std::string& sha = "cases-1") {
    ScoredCases s;
    s.job_id = "job-1";
    s.model_label = label;
    s.split = "test";
    s.cases_sha256 = sha;
    s.findings = kFindings;
    s.scores = c.scores;
    s.labels = c.labels;
    return s;
  }
  std::string ws_;
};

TEST_F(PairedScores, FederatedAgainstEachLocalModelOnTheSameCases) {
  const Cases fed = Make(2, 120, 2.0), local_a = Make(3, 120, 0.8), local_b = Make(4, 120, 1.9);
  ASSERT_TRUE(SaveScoredCases(ws_, Scored("federated", fed)).ok());
  auto first = CompareWithOtherModels(ws_, Scored("local:a", local_a), 5);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1u) << "one shared finding (the others are below k)";
  const v1::PairedComparison& p = (*first)[0];
  EXPECT_EQ(p.finding(), "Cardiomegaly");
  EXPECT_EQ(p.model_a(), "federated");
  EXPECT_EQ(p.model_b(), "local:a");
  EXPECT_EQ(p.cases(), 120);
  // The same test computed directly.
  metrics::BinarySample a, b;
  for (size_t i = 0; i < 120; ++i) {
    a.scores.push_back(fed.scores[i * 3]);
    b.scores.push_back(local_a.scores[i * 3]);
    a.labels.push_back(fed.labels[i * 3] == 1.0f ? 1 : 0);
  }
  b.labels = a.labels;
  const auto t = metrics::DeLongPairedTest(a, b).value();
  EXPECT_DOUBLE_EQ(p.p_value(), t.p_value);
  EXPECT_DOUBLE_EQ(p.difference(), t.difference);
  EXPECT_LT(p.p_value(), 0.05) << "a strong against a weak model";
  // Kept, the local model is compared when the federated one is scored later.
  ASSERT_TRUE(SaveScoredCases(ws_, Scored("local:a", local_a)).ok());
  ASSERT_TRUE(SaveScoredCases(ws_, Scored("local:b", local_b)).ok());
  auto from_fed = CompareWithOtherModels(ws_, Scored("federated", fed), 5);
  ASSERT_TRUE(from_fed.ok());
  EXPECT_EQ(from_fed->size(), 2u);
  // Local-only models are not compared with each other; other cases never.
  auto local_c = CompareWithOtherModels(ws_, Scored("local:c", local_b), 5);
  ASSERT_EQ(local_c->size(), 1u);
  EXPECT_EQ((*local_c)[0].model_a(), "federated");
  EXPECT_TRUE(CompareWithOtherModels(ws_, Scored("local:d", local_b, "other-cases"), 5)->empty());
  EXPECT_TRUE(fs::exists(ws_ + "/evaluations/job-1"));
  EXPECT_EQ(fs::status(ws_ + "/evaluations/job-1").permissions() & fs::perms::all, fs::perms::owner_all);
}

}  // namespace
}  // namespace fedtune::site
