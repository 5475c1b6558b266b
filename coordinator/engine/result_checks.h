// Checks on what a site sends besides weights: text is capped, and metrics
// must be internally consistent (counts against confusion matrices against
// histograms against the dataset summary the site declared) before they are
// recorded, reported and pooled. Pure functions: no database, no network.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "coordinator/engine/job_spec.h"
#include "fedtune/v1/common.pb.h"

namespace fedtune::coordinator {

// Longest failure reason, event detail or peer-supplied name kept, in bytes.
inline constexpr size_t kMaxReasonBytes = 1024;

// `text` cut to at most `max_bytes` (at a UTF-8 boundary) with a note of how
// much was cut; control characters other than tab become spaces, so a peer
// cannot forge log lines.
std::string CapText(std::string_view text, size_t max_bytes);

// INVALID_ARGUMENT with the first inconsistency found in `m`, a site's
// metrics on its `split` ("val" or "test") for a job: findings must be the
// job's (each once); counts non-negative, positives + negatives within the
// examples, examples within the images the site declared for that split;
// tp + fn = positives and fp + tn = negatives when a confusion matrix is
// given; histogram totals equal to the class counts; proportions in [0, 1],
// MCC in [-1, 1], ROC curves of matching length within the unit square.
// Empty metrics (a site that had none to send) pass.
absl::Status CheckEvaluation(const v1::EvaluationMetrics& m, const JobSpec& spec,
                             const v1::DatasetSummary& declared, std::string_view split);

}  // namespace fedtune::coordinator
