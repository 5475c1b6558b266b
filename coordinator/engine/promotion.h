// Choosing the global version to promote to the federation's model in use,
// and its decision thresholds, from what the sites reported: pure functions
// over a job's status (no database, no network).
//
// Validation of global version v is what the sites measured of it on their
// validation splits: for v < the last round, the `val_before` of round v+1's
// training tasks (each starts from v); for the last version, the `val_after`
// of the final evaluation's tasks. The sites' class-conditional score
// histograms are pooled per finding; the pooled AUROC ranks versions and
// Youden's J on the pooled histogram sets the threshold.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fedtune/v1/admin.pb.h"
#include "fedtune/v1/common.pb.h"

namespace fedtune::coordinator {

struct PromotionChoice {
  int version = 0;
  std::string note;  // how it was chosen, for the history
  std::vector<v1::FindingThreshold> thresholds;
  std::optional<double> val_macro_auroc;
};

// `job` with per-round detail. round > 0: that round's version; round == 0
// and !best: the latest version; best: the version with the highest pooled
// validation macro AUROC (versions without a validation measurement are not
// candidates). FAILED_PRECONDITION when the job has no aggregated version,
// NOT_FOUND for a round that produced none, and for `best` when no version
// was validated.
absl::StatusOr<PromotionChoice> ChoosePromotion(const v1::JobStatus& job, const std::vector<std::string>& findings,
                                                int round, bool best);

}  // namespace fedtune::coordinator
