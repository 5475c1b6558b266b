// The test-split scores of every model a job evaluated at this site, kept in
// <workspace>/evaluations/<job>/ (0700; never sent anywhere), so that the
// federated model and each local-only model can be compared on the same
// cases with a paired DeLong test, computed here. Only the tests' p-values
// and AUROCs leave the site, for findings that are not suppressed.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fedtune/v1/common.pb.h"

namespace fedtune::site {

struct ScoredCases {
  std::string job_id;
  std::string model_label;  // "federated" or "local:<site>"
  std::string split;
  std::string cases_sha256;  // of the cases' pseudonymous ids, in order
  std::vector<std::string> findings;
  std::vector<double> scores;  // [cases x findings]
  std::vector<float> labels;   // [cases x findings]
};

// Keeps `cases` (replacing an earlier file of the same model). Keeps the
// folders of the 20 most recent jobs.
absl::Status SaveScoredCases(const std::string& workspace, const ScoredCases& cases);

// Paired DeLong tests of `cases` against every other model of the job that
// was evaluated on the same split and cases: the federated model is always
// model_a. Local-only models are not compared with one another. Findings with
// fewer than k positives or negatives are left out.
absl::StatusOr<std::vector<v1::PairedComparison>> CompareWithOtherModels(const std::string& workspace,
                                                                         const ScoredCases& cases, int k_threshold);

// Counts one more evaluation task of `job_id` at this site (kept with the
// job's scores, so a restart does not reset it) and returns the new count.
absl::StatusOr<int> CountEvaluation(const std::string& workspace, const std::string& job_id);

// SHA-256 (hex) of the ids in order.
std::string CasesSha256(const std::vector<std::string>& ids);

}  // namespace fedtune::site
