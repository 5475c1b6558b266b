#include "coordinator/engine/promotion.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "common/metrics/pooling.h"

namespace fedtune::coordinator {
namespace {

// One finding's validation at one site: `pos` positives in bin `pos_bin`,
// `neg` negatives in bin `neg_bin`.
v1::EvaluationMetrics Val(int pos_bin, int neg_bin, int pos = 10, int neg = 30, bool suppressed = false) {
  v1::EvaluationMetrics m;
  m.set_split("val");
  m.set_examples(pos + neg);
  auto* f = m.add_findings();
  f->set_finding("Cardiomegaly");
  f->set_suppressed(suppressed);
  if (!suppressed) {
    f->mutable_logit_hist_pos()->Resize(metrics::kScoreBins, 0);
    f->mutable_logit_hist_neg()->Resize(metrics::kScoreBins, 0);
    f->set_logit_hist_pos(pos_bin, pos);
    f->set_logit_hist_neg(neg_bin, neg);
  }
  return m;
}

// A job of three aggregated rounds and its final evaluation, each site
// reporting validation of the version it started from (val_before) and the
// final version at the evaluation (val_after).
v1::JobStatus Job() {
  v1::JobStatus job;
  job.set_job_id("job-1");
  auto add_round = [&](int round, const std::string& kind, const std::vector<v1::EvaluationMetrics>& vals) {
    auto* r = job.add_rounds();
    r->set_round(round);
    r->set_kind(kind);
    r->set_state(kind == "train" ? "aggregated" : "done");
    for (size_t i = 0; i < vals.size(); ++i) {
      auto* s = r->add_sites();
      s->set_site_id("site-" + std::to_string(i));
      s->set_state("accepted");
      s->set_model_label("federated");
      *(kind == "train" ? s->mutable_val_before() : s->mutable_val_after()) = vals[i];
    }
  };
  add_round(1, "train", {Val(500, 500), Val(500, 500)});  // version 0: no separation
  add_round(2, "train", {Val(500, 520), Val(510, 500)});  // version 1: mostly wrong
  add_round(3, "train", {Val(600, 400), Val(500, 300)});  // version 2: separated at both sites
  add_round(4, "evaluate", {Val(550, 500), Val(530, 540)});  // version 3: AUROC 0.75
  return job;
}

const std::vector<std::string> kFindings = {"Cardiomegaly"};

TEST(ChoosePromotion, BestIsTheHighestPooledValidationAurocAndItsThresholdIsPooledYouden) {
  auto c = ChoosePromotion(Job(), kFindings, 0, true);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->version, 2);
  ASSERT_TRUE(c->val_macro_auroc.has_value());
  EXPECT_DOUBLE_EQ(*c->val_macro_auroc, 1.0);
  EXPECT_TRUE(absl::StrContains(c->note, "best pooled validation macro AUROC 1.0000 (round 2 of 3)")) << c->note;
  // Pooled: positives in bins 500 and 600, negatives in 300 and 400: every
  // threshold in (400, 500] separates; the highest is bin 500's lower edge.
  // (The mean of the sites' own Youden thresholds, bins 600 and 500, would
  // misclassify the second site's positives.)
  ASSERT_EQ(c->thresholds.size(), 1u);
  EXPECT_EQ(metrics::ScoreBin(c->thresholds[0].threshold()), 500);
  EXPECT_EQ(metrics::ScoreBin(c->thresholds[0].threshold() - 1e-7), 499);
}

TEST(ChoosePromotion, RoundOrLatestWithTheirOwnValidation) {
  auto latest = ChoosePromotion(Job(), kFindings, 0, false);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->version, 3);  // validated at the final evaluation
  ASSERT_TRUE(latest->val_macro_auroc.has_value());
  EXPECT_DOUBLE_EQ(*latest->val_macro_auroc, 0.75);
  auto one = ChoosePromotion(Job(), kFindings, 1, false);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->version, 1);
  EXPECT_EQ(one->note, "round 1 of 3");
  EXPECT_EQ(ChoosePromotion(Job(), kFindings, 9, false).status().code(), absl::StatusCode::kNotFound);
}

TEST(ChoosePromotion, WithheldValidationFallsBackToOneHalfAndSaysSo) {
  v1::JobStatus job = Job();
  // The final evaluation's validation was withheld (k) at both sites.
  for (auto& s : *job.mutable_rounds(3)->mutable_sites()) *s.mutable_val_after() = Val(0, 0, 1, 1, true);
  auto c = ChoosePromotion(job, kFindings, 3, false);
  ASSERT_TRUE(c.ok());
  EXPECT_DOUBLE_EQ(c->thresholds[0].threshold(), 0.5);
  EXPECT_FALSE(c->val_macro_auroc.has_value());
  EXPECT_TRUE(absl::StrContains(c->note, "without shared validation scores: threshold 0.5")) << c->note;
}

TEST(ChoosePromotion, NothingToPromote) {
  v1::JobStatus job;
  job.set_job_id("job-2");
  EXPECT_EQ(ChoosePromotion(job, kFindings, 0, false).status().code(), absl::StatusCode::kFailedPrecondition);
  auto* r = job.add_rounds();
  r->set_round(1);
  r->set_kind("train");
  r->set_state("aggregated");
  EXPECT_TRUE(ChoosePromotion(job, kFindings, 0, false).ok());
  auto best = ChoosePromotion(job, kFindings, 0, true);  // nothing validated
  EXPECT_EQ(best.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(best.status().message(), "--round")) << best.status();
}

}  // namespace
}  // namespace fedtune::coordinator
