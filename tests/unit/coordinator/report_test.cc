// The report from a finished job: pooled numbers recomputed independently,
// suppression respected, the federated model's gain, escaping, CSV.
#include "coordinator/report/report.h"

#include <gtest/gtest.h>

#include "absl/strings/str_split.h"
#include "tests/testing/report_fixture.h"

namespace fedtune::report {
namespace {

using testing::FinishedJob;
using testing::ReportSites;

const std::string kSha(64, 'c');

TEST(Report, PoolsFromHistogramsLeavingOutSuppressedSites) {
  const v1::JobStatus job = FinishedJob(kSha);
  auto r = BuildReport(job, ReportSites());
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& pooled = (*r)["test"]["federated"]["pooled"]["findings"];
  // Recompute: merge the federated model's histograms for each finding.
  for (const std::string finding : {"Cardiomegaly", "Pleural effusion"}) {
    metrics::ScoreHistogram h;
    int64_t tp = 0, fn = 0;
    int sites = 0;
    for (const auto& round : job.rounds()) {
      if (round.kind() != "evaluate") continue;
      for (const auto& s : round.sites()) {
        if (s.model_label() != "federated") continue;
        for (const auto& f : s.evaluation().findings()) {
          if (f.finding() != finding || f.suppressed()) continue;
          metrics::ScoreHistogram one;
          one.positives.assign(f.logit_hist_pos().begin(), f.logit_hist_pos().end());
          one.negatives.assign(f.logit_hist_neg().begin(), f.logit_hist_neg().end());
          h.Merge(one);
          tp += f.tp();
          fn += f.fn();
          ++sites;
        }
      }
    }
    EXPECT_EQ(pooled[finding]["sites"].size(), static_cast<size_t>(sites));
    EXPECT_NEAR(pooled[finding]["auroc"]["value"].get<double>(), metrics::HistogramAuroc(h), 1e-12);
    EXPECT_NEAR(pooled[finding]["sensitivity"]["value"].get<double>(), static_cast<double>(tp) / (tp + fn), 1e-12);
    EXPECT_EQ(pooled[finding]["positives"].get<int64_t>(), h.num_positives());
  }
  EXPECT_EQ(pooled["Pleural effusion"]["sites_left_out"], nlohmann::json::array({"hospital-b"}));
  EXPECT_EQ(pooled["Cardiomegaly"]["sites_left_out"].size(), 0u);
}

// How what was shared was protected: epsilon from the job's privacy budget,
// secure aggregation off or on, each site's k; "none" without differential privacy.
TEST(Report, StatesHowWhatWasSharedWasProtected) {
  v1::JobStatus job = FinishedJob(kSha);
  auto plain = BuildReport(job, ReportSites());
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE((*plain)["protection"]["differential_privacy"].is_null());
  EXPECT_FALSE((*plain)["protection"]["secure_aggregation"].get<bool>());
  EXPECT_NE(RenderHtml(*plain).find("none: the published model carries no formal guarantee"), std::string::npos);
  auto* dp = job.mutable_privacy();
  dp->set_mechanism("central DP-FedAvg");
  dp->set_noise_multiplier(1.5);
  dp->set_clip_norm(0.7);
  dp->set_delta(1e-5);
  dp->set_rounds_accounted(3);
  dp->set_epsilon_spent(4.25);
  auto r = BuildReport(job, ReportSites());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ((*r)["protection"]["differential_privacy"]["epsilon"].get<double>(), 4.25);
  EXPECT_EQ((*r)["protection"]["differential_privacy"]["rounds"].get<int>(), 3);
  const std::string html = RenderHtml(*r);
  EXPECT_NE(html.find("&epsilon; = 4.25</b> at &delta; = 1e-05 after 3 rounds"), std::string::npos);
  EXPECT_NE(html.find("the sites' metrics below are protected by their k"), std::string::npos);
  EXPECT_NE(html.find("off: the coordinator saw each site's update"), std::string::npos);
  // A securely aggregated job says so, with its bound.
  job.set_secure_aggregation_bound(0.5);
  auto secure = BuildReport(job, ReportSites());
  ASSERT_TRUE(secure.ok()) << secure.status();
  EXPECT_TRUE((*secure)["protection"]["secure_aggregation"].get<bool>());
  EXPECT_NE(RenderHtml(*secure).find("on (SecAgg+): the coordinator saw only the sum of the sites' masked updates, "
                                     "each value clipped to &plusmn;0.5"),
            std::string::npos);
}

// A site that withheld its confusion counts (one below its k) stays in the
// pooled AUROC but not in the pooled sensitivity, and the report says so.
TEST(Report, PooledSensitivityLeavesOutSitesThatWithheldTheirConfusionCounts) {
  v1::JobStatus job = FinishedJob(kSha);
  std::string withheld_site;
  int64_t tp = 0, fn = 0;
  for (auto& round : *job.mutable_rounds()) {
    if (round.kind() != "evaluate") continue;
    for (auto& s : *round.mutable_sites()) {
      if (s.model_label() != "federated") continue;
      for (auto& f : *s.mutable_evaluation()->mutable_findings()) {
        if (f.finding() != "Cardiomegaly" || f.suppressed()) continue;
        if (withheld_site.empty()) {
          withheld_site = s.site_id();
          f.set_tp(0);
          f.set_fn(0);
          f.set_fp(0);
          f.set_tn(0);
          f.set_confusion_withheld(true);
        } else {
          tp += f.tp();
          fn += f.fn();
        }
      }
    }
  }
  ASSERT_FALSE(withheld_site.empty());
  auto r = BuildReport(job, ReportSites());
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& p = (*r)["test"]["federated"]["pooled"]["findings"]["Cardiomegaly"];
  EXPECT_EQ(p["confusion_sites_left_out"], nlohmann::json::array({withheld_site}));
  EXPECT_NEAR(p["sensitivity"]["value"].get<double>(), static_cast<double>(tp) / (tp + fn), 1e-12);
  bool in_auroc = false;
  for (const auto& s : p["sites"]) in_auroc = in_auroc || s == withheld_site;
  EXPECT_TRUE(in_auroc);
}

TEST(Report, CrossSiteMatrixAndGainOverLocalOnly) {
  auto r = BuildReport(FinishedJob(kSha), ReportSites());
  ASSERT_TRUE(r.ok());
  const auto& c = (*r)["cross_site"];
  ASSERT_EQ(c["models"].size(), 4u);
  ASSERT_EQ(c["test_sites"].size(), 3u);
  // hospital-b (index 1): federated 0.9, its local model on its own test split 0.71.
  EXPECT_NEAR(c["gain_over_local"]["hospital-b"]["gain"].get<double>(), 0.9 - 0.71, 1e-12);
  EXPECT_NEAR(c["mean"]["gain"].get<double>(), 0.9 - 0.71, 1e-12);
  EXPECT_EQ(c["macro_auroc"]["federated"].size(), 3u);
  EXPECT_NEAR(c["model_mean"]["federated"].get<double>(), 0.9, 1e-12);
  // Local models: 0.70, 0.71, 0.72 on each of the 3 sites.
  EXPECT_NEAR(c["local_only_all_sites_mean"].get<double>(), 0.71, 1e-12);
  EXPECT_EQ((*r)["provenance"]["versions"].size(), 2u);
  EXPECT_EQ((*r)["provenance"]["backbone"]["sha256"], kSha);
  EXPECT_EQ((*r)["validation"].size(), 6u);
  EXPECT_TRUE((*r)["sites"][0]["splits"]["train"]["positives"]["Pleural effusion"].is_null()) << "k-suppressed";
}

TEST(Report, HtmlIsSelfContainedAndEscapesNames) {
  auto r = BuildReport(FinishedJob(kSha), ReportSites());
  ASSERT_TRUE(r.ok());
  const std::string html = RenderHtml(*r);
  EXPECT_NE(html.find("St. &lt;Mary&#39;s&gt; &amp; Co"), std::string::npos);
  EXPECT_EQ(html.find("<Mary"), std::string::npos);
  EXPECT_EQ(html.find("report <test>"), std::string::npos);
  for (const char* external : {"http://", "https://", "src=", "<link"}) {
    EXPECT_EQ(html.find(external), std::string::npos) << external;
  }
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("Cross-site matrix"), std::string::npos);
  EXPECT_NE(html.find(kSha), std::string::npos);
}

TEST(Report, CsvHasOneRowPerMetricWithSuppressionMarked) {
  auto r = BuildReport(FinishedJob(kSha), ReportSites());
  ASSERT_TRUE(r.ok());
  const std::string csv = RenderCsv(*r);
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines[0], "model,site,finding,metric,value,ci_lower,ci_upper,positives,negatives");
  size_t suppressed = 0;
  for (const auto& l : lines) suppressed += l.find(",suppressed,") != std::string::npos;
  EXPECT_EQ(suppressed, 4u) << "hospital-b's Pleural effusion under each of the 4 models";
  EXPECT_NE(csv.find("federated,St. <Mary's> & Co,Cardiomegaly,auroc,"), std::string::npos);
  EXPECT_NE(csv.find("federated,pooled,macro,auroc,"), std::string::npos);
}

// The evaluation of `model` at `site` in a finished job.
v1::EvaluationMetrics* EvaluationOf(v1::JobStatus& job, const std::string& model, const std::string& site) {
  for (auto& round : *job.mutable_rounds()) {
    if (round.kind() != "evaluate") continue;
    for (auto& s : *round.mutable_sites()) {
      if (s.model_label() == model && s.site_id() == site) return s.mutable_evaluation();
    }
  }
  return nullptr;
}

// A site whose every finding was suppressed sends no macro AUROC: it is left
// out of every mean (not counted as 0), and an undefined metric is null.
TEST(Report, UndefinedMetricsAreAbsentFromEveryMean) {
  v1::JobStatus job = FinishedJob(kSha);
  const std::string third = testing::kReportSites[2];
  for (const std::string& model : {std::string("federated"), "local:" + third}) {
    v1::EvaluationMetrics* e = EvaluationOf(job, model, third);
    ASSERT_NE(e, nullptr);
    e->clear_macro_auroc();
    for (auto& f : *e->mutable_findings()) {
      const std::string name = f.finding();
      f.Clear();
      f.set_finding(name);
      f.set_suppressed(true);
    }
  }
  // An evaluable-looking finding whose MCC is undefined.
  EvaluationOf(job, "federated", "hospital-a")->mutable_findings(0)->clear_mcc();
  auto r = BuildReport(job, ReportSites());
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& fed = (*r)["test"]["federated"];
  EXPECT_TRUE(fed["per_site"][third]["macro_auroc"].is_null());
  EXPECT_NEAR(fed["mean_site_macro_auroc"].get<double>(), 0.9, 1e-12);  // a and b only
  EXPECT_EQ(fed["mean_site_macro_auroc_sites"].get<int>(), 2);
  EXPECT_TRUE(fed["per_site"]["hospital-a"]["findings"]["Cardiomegaly"]["mcc"]["value"].is_null());
  const auto& c = (*r)["cross_site"];
  size_t column = 0;
  while (column < c["test_sites"].size() && c["test_sites"][column] != third) ++column;
  ASSERT_LT(column, c["test_sites"].size());
  EXPECT_TRUE(c["macro_auroc"]["federated"][column].is_null());
  EXPECT_FALSE(c["gain_over_local"].contains(third));
  EXPECT_NEAR(c["model_mean"]["federated"].get<double>(), 0.9, 1e-12);
  const std::string csv = RenderCsv(*r);
  EXPECT_NE(csv.find("federated," + third + ",macro,auroc,,"), std::string::npos);
  EXPECT_NE(csv.find("federated,hospital-a,Cardiomegaly,mcc,,"), std::string::npos);
}

TEST(Report, PooledFiguresStateTheirBinningBound) {
  auto r = BuildReport(FinishedJob(kSha), ReportSites());
  ASSERT_TRUE(r.ok());
  const auto& p = (*r)["test"]["federated"]["pooled"]["findings"]["Cardiomegaly"];
  ASSERT_TRUE(p["auroc"]["bin_error_bound"].is_number());
  EXPECT_GE(p["auroc"]["bin_error_bound"].get<double>(), 0);
  EXPECT_LT(p["auroc"]["bin_error_bound"].get<double>(), 0.05);
  ASSERT_TRUE(p["auprc"]["exact_range"].is_array());
  EXPECT_LE(p["auprc"]["exact_range"][0].get<double>(), p["auprc"]["value"].get<double>() + 1e-12);
  EXPECT_GE(p["auprc"]["exact_range"][1].get<double>(), p["auprc"]["value"].get<double>() - 1e-12);
  EXPECT_NE(RenderHtml(*r).find("±"), std::string::npos);
}

TEST(Report, PairedDeLongTestsFromTheSitesAreShown) {
  v1::JobStatus job = FinishedJob(kSha);
  auto* p = EvaluationOf(job, "local:hospital-a", "hospital-a")->add_paired();
  p->set_finding("Cardiomegaly");
  p->set_model_a("federated");
  p->set_model_b("local:hospital-a");
  p->set_auroc_a(0.91);
  p->set_auroc_b(0.80);
  p->set_difference(0.11);
  p->set_p_value(0.0123);
  p->set_cases(200);
  auto r = BuildReport(job, ReportSites());
  ASSERT_TRUE(r.ok());
  const auto& paired = (*r)["cross_site"]["paired_delong"];
  ASSERT_EQ(paired.size(), 1u);
  EXPECT_EQ(paired[0]["site"], "hospital-a");
  EXPECT_DOUBLE_EQ(paired[0]["p_value"].get<double>(), 0.0123);
  const std::string html = RenderHtml(*r);
  EXPECT_NE(html.find("paired on each site"), std::string::npos);
  EXPECT_NE(html.find("0.012"), std::string::npos);
  EXPECT_NE(RenderCsv(*r).find("federated vs local:hospital-a,hospital-a,Cardiomegaly,delong_p_value,0.0123"),
            std::string::npos);
}

}  // namespace
}  // namespace fedtune::report
