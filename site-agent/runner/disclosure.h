// Disclosure control enforced by the site, whatever a task asks: what an
// evaluation shares is rewritten here so that no count the coordinator
// receives, or can derive from what it receives, rests on between 1 and k-1
// cases. Pure functions over the wire messages; tests play the curious
// coordinator (tests/unit/runner/disclosure_test.cc).
//
// The rules, per finding:
// - positives, negatives and the finding's unlabelled images (examples -
//   positives - negatives) add up to the examples shared, so the finding is
//   withheld whole when any of the three is in (0, k);
// - the two score histograms are coarsened into cells, runs of adjacent
//   bins whose positive and negative counts are each 0 or at least k,
//   and each cell's counts are put in one bin (the middle bin of the cell's
//   non-empty range): the order between cells stays exact, cases within a
//   cell become ties, so the pooled AUROC's stated error bound (the tie
//   mass) still holds;
// - the ROC points are those of the coarsened histogram, so every step
//   between two points moves 0 or at least k positives and negatives;
// - the confusion counts at the threshold (tp + fn = positives, fp + tn =
//   negatives) are withheld together with every metric computed from them
//   (sensitivity, specificity, F1, MCC and their intervals) when any of the
//   four is in (0, k);
// - the macro mean covers only the findings still shared.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fedtune/v1/common.pb.h"

namespace fedtune::site {

// The most ROC points shared per finding.
inline constexpr int kSharedRocPoints = 50;

// Coarsens `positives` / `negatives` (same length) in place as described
// above; their totals are unchanged. Both totals must be 0 or >= k.
void CoarsenHistograms(std::vector<int64_t>& positives, std::vector<int64_t>& negatives, int k);

// Applies every rule to one finding (k >= 1).
void ProtectFinding(v1::FindingMetrics* finding, int64_t examples, int k);

// Every finding, then the macro AUROC over the findings with an AUROC
// still shared (cleared when there is none).
void ProtectEvaluation(v1::EvaluationMetrics* metrics, int k);

// A count to share given the value shared before (-1: none, or withheld):
// the earlier value while the count has moved by less than k, else the
// count itself.
int64_t HeldCount(int64_t now, int64_t last_sent, int k);

// The dataset summary to send, given the one sent before: a count that
// moved by less than k keeps its earlier value, so that differencing two
// summaries (before and after a receiver batch) never isolates fewer than
// k images. Withheld (-1) and revealed counts, new splits and new findings
// are sent as they are now.
v1::DatasetSummary StableSummary(const v1::DatasetSummary& fresh, const v1::DatasetSummary& last_sent, int k);

// What the site sends the coordinator of its workspace now: its shareable
// counts (ingest::Shareable), held at the last summary sent
// (<workspace>/shared_summary.pb) where they moved by less than k. `keep`
// records the result as the last sent (the daemon, when it sends it);
// `fedtune-site stats --shareable` only looks.
v1::DatasetSummary SummaryToShare(const std::string& workspace, int k, bool keep);

// The example count a training update declares, given the images it trained
// on (`actual`): like the dataset summary it moves only by k or more (the
// last value sent is kept in <workspace>/shared_examples), and it never
// exceeds the job's per-site cap (`cap`, 0 = none) or the training images
// last declared (`declared_train_images`, -1 = unknown or withheld). A job
// capped below what the site holds gets the cap, which says nothing more.
int64_t ExampleCountToShare(const std::string& workspace, int k, int64_t actual, int64_t cap,
                            int64_t declared_train_images);

// Which findings of a split may be shared: none of positives, negatives and
// unlabelled in (0, k). From the split's labels ([images x findings]; 1, 0,
// anything else unknown).
std::vector<bool> SharedFindings(std::span<const float> labels, size_t num_findings, int k);

// The mean of the per-finding values (NaN = undefined) over the shared
// findings only: what a progress report may say about validation.
double SharedMacro(std::span<const double> per_finding, const std::vector<bool>& shared);

}  // namespace fedtune::site
