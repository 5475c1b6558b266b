// Disclosure control at the site (site-agent/runner/disclosure.h), each rule
// tested as the curious coordinator would use what it receives: single
// cases isolated in a histogram bin or a ROC step, a small confusion count
// given back by a metric, a count derived from the others, a macro mean
// over a withheld finding.
#include "site-agent/runner/disclosure.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/metrics/evaluation.h"
#include "common/metrics/pooling.h"
#include "site-agent/config/site_config.h"
#include "site-agent/runner/task_executor.h"

namespace fedtune::site {
namespace {

constexpr int kK = 5;

int64_t Sum(const google::protobuf::RepeatedField<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// One finding: `pos` positives and `neg` negatives with scores of some
// signal, plus `outliers` positives scored far above everyone (each alone in
// its bin before protection), and `unlabelled` images without a label.
v1::EvaluationMetrics Evaluate(int pos, int neg, int outliers, int unlabelled, uint64_t seed, int k) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 1);
  std::vector<double> scores;
  std::vector<float> labels;
  auto add = [&](double logit, float y) {
    scores.push_back(1 / (1 + std::exp(-logit)));
    labels.push_back(y);
  };
  for (int i = 0; i < pos; ++i) add(1.0 + noise(rng), 1);
  for (int i = 0; i < neg; ++i) add(-1.0 + noise(rng), 0);
  for (int i = 0; i < outliers; ++i) add(9.0 + 1.5 * i, 1);
  for (int i = 0; i < unlabelled; ++i) add(noise(rng), -1);
  const std::vector<std::string> findings = {"Nodule/Mass"};
  metrics::EvaluationOptions o;
  o.bootstrap_resamples = 0;
  auto thresholds = metrics::ChooseThresholds(findings, scores, labels, o);
  EXPECT_TRUE(thresholds.ok());
  auto r = metrics::Evaluate(findings, scores, labels, *thresholds, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return ToProto(*r, scores, labels, "test", static_cast<int64_t>(labels.size()), k);
}

TEST(Disclosure, NoHistogramCellHoldsFewerThanKCases) {
  const v1::EvaluationMetrics m = Evaluate(40, 200, 3, 0, 1, kK);
  const v1::FindingMetrics& f = m.findings(0);
  ASSERT_FALSE(f.suppressed());
  ASSERT_EQ(f.logit_hist_pos_size(), metrics::kScoreBins);
  // Totals kept: pooling across sites still counts every case.
  EXPECT_EQ(Sum(f.logit_hist_pos()), 43);
  EXPECT_EQ(Sum(f.logit_hist_neg()), 200);
  for (int b = 0; b < metrics::kScoreBins; ++b) {
    EXPECT_FALSE(f.logit_hist_pos(b) > 0 && f.logit_hist_pos(b) < kK) << "bin " << b << ": " << f.logit_hist_pos(b);
    EXPECT_FALSE(f.logit_hist_neg(b) > 0 && f.logit_hist_neg(b) < kK) << "bin " << b << ": " << f.logit_hist_neg(b);
  }
  // The three outliers (logit 9 to 12) are not readable as single cases:
  // nothing of the positives sits alone above the bulk.
  const int top_bin = metrics::ScoreBin(1 / (1 + std::exp(-9.0)));
  int64_t above = 0;
  for (int b = top_bin; b < metrics::kScoreBins; ++b) above += f.logit_hist_pos(b);
  EXPECT_TRUE(above == 0 || above >= kK) << above;
  // Without protection (k = 1) they would be.
  const v1::FindingMetrics raw = Evaluate(40, 200, 3, 0, 1, 1).findings(0);
  int singles = 0;
  for (int b = 0; b < metrics::kScoreBins; ++b) singles += raw.logit_hist_pos(b) == 1 ? 1 : 0;
  EXPECT_GT(singles, 3);
}

TEST(Disclosure, PooledAurocFromCoarsenedHistogramsStaysWithinItsStatedBound) {
  const v1::EvaluationMetrics m = Evaluate(60, 300, 2, 0, 2, kK);
  const v1::FindingMetrics& f = m.findings(0);
  metrics::ScoreHistogram h;
  h.positives.assign(f.logit_hist_pos().begin(), f.logit_hist_pos().end());
  h.negatives.assign(f.logit_hist_neg().begin(), f.logit_hist_neg().end());
  // The site's exact AUROC against the coordinator's estimate and bound:
  // cells merge only adjacent bins and keep the classes together, so cases
  // of a cell become ties and the tie mass still bounds the error.
  EXPECT_LE(std::fabs(metrics::HistogramAuroc(h) - f.auroc()), metrics::HistogramAurocErrorBound(h) + 1e-12);
}

TEST(Disclosure, EveryRocStepMovesZeroOrAtLeastKCasesOfEachClass) {
  const v1::EvaluationMetrics m = Evaluate(30, 120, 2, 0, 3, kK);
  const v1::FindingMetrics& f = m.findings(0);
  ASSERT_GE(f.roc_fpr_size(), 2);
  ASSERT_LE(f.roc_fpr_size(), kSharedRocPoints);
  const double P = f.positives(), N = f.negatives();
  EXPECT_EQ(f.roc_fpr(0), 0.0f);
  EXPECT_EQ(f.roc_tpr(f.roc_tpr_size() - 1), 1.0f);
  for (int i = 1; i < f.roc_fpr_size(); ++i) {
    const long dtp = std::lround((f.roc_tpr(i) - f.roc_tpr(i - 1)) * P);
    const long dfp = std::lround((f.roc_fpr(i) - f.roc_fpr(i - 1)) * N);
    EXPECT_TRUE(dtp == 0 || dtp >= kK) << "step " << i << " moves " << dtp << " positives";
    EXPECT_TRUE(dfp == 0 || dfp >= kK) << "step " << i << " moves " << dfp << " negatives";
  }
}

TEST(Disclosure, ASmallConfusionCountIsWithheldWithEveryMetricThatGivesItBack) {
  v1::FindingMetrics f;
  f.set_finding("Pneumothorax");
  f.set_positives(20);
  f.set_negatives(80);
  f.set_tp(18);
  f.set_fn(2);  // below k: with positives known, sensitivity = 18 / 20 would give it back
  f.set_fp(10);
  f.set_tn(70);
  f.set_sensitivity(0.9);
  f.set_sensitivity_ci_lower(0.7);
  f.set_specificity(0.875);
  f.set_f1(0.75);
  f.set_mcc(0.7);
  f.set_auroc(0.93);
  ProtectFinding(&f, 100, kK);
  EXPECT_FALSE(f.suppressed());
  EXPECT_TRUE(f.confusion_withheld());
  EXPECT_EQ(f.tp() + f.fn() + f.fp() + f.tn(), 0);
  EXPECT_FALSE(f.has_sensitivity());
  EXPECT_FALSE(f.has_sensitivity_ci_lower());
  EXPECT_FALSE(f.has_specificity());
  EXPECT_FALSE(f.has_f1());
  EXPECT_FALSE(f.has_mcc());
  EXPECT_TRUE(f.has_auroc());  // rank-based, over all cases: kept
  // Counts all at least k: kept as they were.
  v1::FindingMetrics ok = f;
  ok.set_confusion_withheld(false);
  ok.set_tp(15);
  ok.set_fn(5);
  ok.set_fp(10);
  ok.set_tn(70);
  ok.set_sensitivity(0.75);
  ProtectFinding(&ok, 100, kK);
  EXPECT_FALSE(ok.confusion_withheld());
  EXPECT_EQ(ok.fn(), 5);
  EXPECT_TRUE(ok.has_sensitivity());
}

TEST(Disclosure, AFindingWhoseUnlabelledCountIsSmallIsWithheldWhole) {
  // examples - positives - negatives = 2 images without a label for this
  // finding: derivable from what is shared, so the finding is withheld.
  const v1::EvaluationMetrics m = Evaluate(30, 100, 0, 2, 4, kK);
  const v1::FindingMetrics& f = m.findings(0);
  EXPECT_TRUE(f.suppressed());
  EXPECT_EQ(f.positives() + f.negatives(), 0);
  EXPECT_FALSE(f.has_auroc());
  EXPECT_EQ(f.logit_hist_pos_size(), 0);
  EXPECT_FALSE(m.has_macro_auroc());  // nothing left to average
  // With k unlabelled, it is shared.
  EXPECT_FALSE(Evaluate(30, 100, 0, kK, 4, kK).findings(0).suppressed());
}

TEST(Disclosure, TheMacroMeanCoversOnlyTheFindingsStillShared) {
  v1::EvaluationMetrics m;
  m.set_examples(100);
  auto* a = m.add_findings();
  a->set_finding("Cardiomegaly");
  a->set_positives(30);
  a->set_negatives(70);
  a->set_auroc(0.8);
  auto* b = m.add_findings();
  b->set_finding("Pneumothorax");
  b->set_positives(30);
  b->set_negatives(67);  // 3 unlabelled: withheld
  b->set_auroc(0.6);
  m.set_macro_auroc(0.7);
  ProtectEvaluation(&m, kK);
  EXPECT_TRUE(m.findings(1).suppressed());
  ASSERT_TRUE(m.has_macro_auroc());
  EXPECT_DOUBLE_EQ(m.macro_auroc(), 0.8);
}

v1::DatasetSummary Counts(int64_t images, int64_t positives, int64_t negatives) {
  v1::DatasetSummary d;
  d.add_findings("Cardiomegaly");
  auto* sp = d.add_splits();
  sp->set_split("train");
  sp->set_images(images);
  sp->set_patients(images);
  sp->add_positives(positives);
  sp->add_negatives(negatives);
  d.set_quarantined(7);
  return d;
}

// The receiver ingests one image at a time and the site re-joins after each
// batch: differencing consecutive summaries must never isolate fewer than k
// images (the 101st image is a positive: its label would be read off).
TEST(Disclosure, SummariesMoveOnlyByKOrMore) {
  v1::DatasetSummary sent = Counts(100, 20, 80);
  std::vector<v1::DatasetSummary> seen = {sent};
  for (int extra = 1; extra <= 23; ++extra) {
    const int64_t positives = 20 + (extra + 1) / 2;  // every other new image is a positive
    const v1::DatasetSummary fresh = Counts(100 + extra, positives, 80 + extra - (positives - 20));
    sent = StableSummary(fresh, sent, kK);
    seen.push_back(sent);
  }
  for (size_t i = 1; i < seen.size(); ++i) {
    const auto& a = seen[i - 1].splits(0);
    const auto& b = seen[i].splits(0);
    for (int64_t d : {b.images() - a.images(), b.patients() - a.patients(), b.positives(0) - a.positives(0),
                      b.negatives(0) - a.negatives(0)}) {
      EXPECT_TRUE(d == 0 || std::llabs(d) >= kK) << "summary " << i << " moved a count by " << d;
    }
  }
  // It does follow the data, k at a time.
  EXPECT_GE(seen.back().splits(0).images(), 123 - kK + 1);
  // A count that becomes withheld, or a new split, is sent as it is.
  v1::DatasetSummary withheld = Counts(102, -1, -1);
  auto* val = withheld.add_splits();
  val->set_split("val");
  val->set_images(9);
  const v1::DatasetSummary out = StableSummary(withheld, Counts(100, 20, 80), kK);
  EXPECT_EQ(out.splits(0).images(), 100);
  EXPECT_EQ(out.splits(0).positives(0), -1);
  EXPECT_EQ(out.splits(1).images(), 9);
  EXPECT_EQ(out.quarantined(), 7);
}

TEST(Disclosure, SiteSettingsHaveSafeDefaultsAndNeverGoBelowK) {
  const std::string head = "[site]\nid = \"h\"\nworkspace = \"ws\"\n";
  auto plain = ParseSiteConfig(head, "/tmp/site.toml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->min_train_images, 20);
  EXPECT_EQ(plain->max_evaluations_per_job, 32);
  auto strict = ParseSiteConfig(head + "[stats]\nk = 50\n", "/tmp/site.toml");
  ASSERT_TRUE(strict.ok()) << strict.status();
  EXPECT_EQ(strict->min_train_images, 50);
  auto below = ParseSiteConfig(head + "[stats]\nk = 10\nmin_train_images = 4\n", "/tmp/site.toml");
  ASSERT_FALSE(below.ok());
  EXPECT_NE(std::string(below.status().message()).find("must be at least k (10)"), std::string::npos)
      << below.status();
}

// An update's example count goes the same way as the summary's counts.
TEST(Disclosure, HeldCountsMoveOnlyByK) {
  EXPECT_EQ(HeldCount(103, 100, kK), 100);
  EXPECT_EQ(HeldCount(96, 100, kK), 100);
  EXPECT_EQ(HeldCount(105, 100, kK), 105);
  EXPECT_EQ(HeldCount(95, 100, kK), 95);
  EXPECT_EQ(HeldCount(42, -1, kK), 42);  // nothing sent before
  EXPECT_EQ(HeldCount(-1, 100, kK), -1);  // withheld now: withheld
}

TEST(Disclosure, CoarseningKeepsOrderAndTotals) {
  std::vector<int64_t> pos = {0, 1, 0, 7, 0, 0, 2, 0, 0, 6};
  std::vector<int64_t> neg = {3, 4, 0, 0, 9, 1, 0, 0, 5, 0};
  CoarsenHistograms(pos, neg, 5);
  int64_t p = 0, n = 0;
  for (size_t b = 0; b < pos.size(); ++b) {
    EXPECT_FALSE(pos[b] > 0 && pos[b] < 5) << b;
    EXPECT_FALSE(neg[b] > 0 && neg[b] < 5) << b;
    p += pos[b];
    n += neg[b];
  }
  EXPECT_EQ(p, 16);
  EXPECT_EQ(n, 22);
}

}  // namespace
}  // namespace fedtune::site
