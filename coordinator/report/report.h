// The cross-institution evaluation report of a job: built at the coordinator
// from what the sites sent (aggregate metrics, counts, score histograms) and
// rendered as self-contained HTML (inline SVG, no network), JSON and CSV.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "fedtune/v1/admin.pb.h"

namespace fedtune::report {

// report.json: job and provenance (backbone, configuration, global version
// hashes, sites per round), per-site data summaries (as shared: counts below
// k suppressed), validation AUROC per round and site, final test metrics per
// model x site x finding and pooled over sites with 95% intervals, ROC
// curves, and (with baselines) the cross-site matrix and the federated
// model's gain over each site's local-only model.
absl::StatusOr<nlohmann::json> BuildReport(const v1::JobStatus& job, const std::vector<v1::SiteInfo>& sites);

// "running", "succeeded", ...: a job state as people read it.
std::string JobStateName(v1::JobState state);

// One self-contained page.
std::string RenderHtml(const nlohmann::json& report);

// metrics.csv: model,site,finding,metric,value,ci_lower,ci_upper,positives,negatives
// (site "pooled" for the pooled rows, finding "macro" for macro means).
std::string RenderCsv(const nlohmann::json& report);

}  // namespace fedtune::report
