// A finished job as the coordinator would hold it (two training rounds, local
// baselines, final evaluation of every model on every site) built from
// synthetic scores, for report tests.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "common/metrics/pooling.h"
#include "fedtune/v1/admin.pb.h"

namespace fedtune::testing {

inline const std::vector<std::string> kReportSites = {"hospital-a", "hospital-b", "St. <Mary's> & Co"};
inline const std::vector<std::string> kReportFindings = {"Cardiomegaly", "Pleural effusion"};

// Histogram and confusion of `n` synthetic cases; `shift` separates classes.
inline void FillFinding(v1::FindingMetrics* f, uint64_t seed, int n, double shift, metrics::ScoreHistogram* out) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 0.15);
  metrics::ScoreHistogram h;
  metrics::ConfusionCounts cc;
  for (int i = 0; i < n; ++i) {
    const bool pos = rng() % 4 == 0;
    const double s = std::clamp(0.35 + (pos ? shift : 0) + noise(rng), 0.0, 1.0);
    h.Add(s, pos);
    const bool called = s >= 0.5;
    (pos ? (called ? cc.tp : cc.fn) : (called ? cc.fp : cc.tn))++;
  }
  f->set_positives(h.num_positives());
  f->set_negatives(h.num_negatives());
  f->set_auroc(metrics::HistogramAuroc(h));
  f->set_auroc_ci_lower(metrics::HistogramAurocCi(h).lower);
  f->set_auroc_ci_upper(metrics::HistogramAurocCi(h).upper);
  f->set_sensitivity(cc.sensitivity());
  f->set_specificity(cc.specificity());
  f->set_threshold(0.5);
  f->set_tp(cc.tp);
  f->set_fp(cc.fp);
  f->set_tn(cc.tn);
  f->set_fn(cc.fn);
  for (int64_t v : h.positives) f->add_logit_hist_pos(v);
  for (int64_t v : h.negatives) f->add_logit_hist_neg(v);
  for (double x : {0.0, 0.1, 0.3, 0.6, 1.0}) {
    f->add_roc_fpr(static_cast<float>(x));
    f->add_roc_tpr(static_cast<float>(std::sqrt(x)));
  }
  if (out) out->Merge(h);
}

inline v1::JobStatus FinishedJob(const std::string& backbone_sha) {
  v1::JobStatus j;
  j.set_job_id("job-0123456789");
  j.set_name("report <test>");
  j.set_state(v1::JOB_STATE_SUCCEEDED);
  j.set_rounds_total(2);
  j.set_rounds_done(2);
  j.set_created_unix_ms(1'700'000'000'000);
  j.set_job_toml("[job]\nname = \"report <test>\"\nrounds = 2\nmin_sites = 2\nbaselines = true\n[backbone]\n"
                 "architecture = \"vit-tiny/16\"\nimage_size = 32\nsha256 = \"" + backbone_sha +
                 "\"\n[model]\nfindings = [\"Cardiomegaly\", \"Pleural effusion\"]\n");
  for (int r = 1; r <= 2; ++r) {
    auto* round = j.add_rounds();
    round->set_round(r);
    round->set_kind("train");
    round->set_state("aggregated");
    round->set_attempt(1);
    round->mutable_global()->set_version(r);
    round->mutable_global()->set_sha256(std::string(64, static_cast<char>('0' + r)));
    for (size_t s = 0; s < kReportSites.size(); ++s) {
      auto* site = round->add_sites();
      site->set_site_id(kReportSites[s]);
      site->set_state("accepted");
      site->set_num_examples(100 + static_cast<int64_t>(s));
      site->mutable_val_before()->set_macro_auroc(0.6 + 0.1 * r);
      site->mutable_val_after()->set_macro_auroc(0.65 + 0.1 * r);
    }
  }
  auto* local = j.add_rounds();
  local->set_round(3);
  local->set_kind("local");
  local->set_state("done");
  auto* eval = j.add_rounds();
  eval->set_round(4);
  eval->set_kind("evaluate");
  eval->set_state("done");
  std::vector<std::string> models = {"federated"};
  for (const auto& s : kReportSites) models.push_back("local:" + s);
  uint64_t seed = 1;
  for (const auto& model : models) {
    for (size_t s = 0; s < kReportSites.size(); ++s) {
      auto* site = eval->add_sites();
      site->set_site_id(kReportSites[s]);
      site->set_model_label(model);
      site->set_state("accepted");
      auto* e = site->mutable_evaluation();
      e->set_split("test");
      e->set_examples(200);
      const double shift = model == "federated" ? 0.35 : 0.15;
      e->set_macro_auroc(model == "federated" ? 0.9 : 0.7 + 0.01 * static_cast<double>(s));
      for (const auto& finding : kReportFindings) {
        auto* f = e->add_findings();
        f->set_finding(finding);
        // hospital-b's Pleural effusion is suppressed (fewer than k cases).
        if (kReportSites[s] == "hospital-b" && finding == "Pleural effusion") {
          f->set_suppressed(true);
          continue;
        }
        FillFinding(f, seed++, 200, shift, nullptr);
      }
    }
  }
  return j;
}

inline std::vector<v1::SiteInfo> ReportSites() {
  std::vector<v1::SiteInfo> out;
  for (const auto& s : kReportSites) {
    v1::SiteInfo si;
    si.set_site_id(s);
    si.set_enrolled(true);
    auto* d = si.mutable_dataset();
    for (const auto& f : kReportFindings) d->add_findings(f);
    d->set_k_threshold(5);
    for (const char* split : {"train", "val", "test"}) {
      auto* sp = d->add_splits();
      sp->set_split(split);
      sp->set_images(120);
      sp->set_patients(80);
      sp->add_positives(30);
      sp->add_positives(-1);
    }
    out.push_back(si);
  }
  return out;
}

}  // namespace fedtune::testing
