// What a site's workspace holds, read from its index: counts per split and
// finding, and quarantine reasons. Shareable() suppresses small counts before
// anything leaves the site.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::ingest {

struct SplitStats {
  int64_t images = 0;
  int64_t patients = 0;
  // Per finding (SiteStats::findings); -1 = suppressed. An image whose label
  // for a finding is unknown is neither a positive nor a negative.
  std::vector<int64_t> positives;
  std::vector<int64_t> negatives;
  std::vector<int64_t> unlabelled;
  int64_t without_labels = 0;  // images with no known label at all
};

struct SiteStats {
  std::vector<std::string> findings;
  std::map<std::string, SplitStats> splits;            // "train", "val", "test"
  std::map<std::string, int64_t> quarantine_reasons;   // reason -> count
  int64_t quarantined = 0;
  // The data the newest job trains on: its snapshot, and what arrived since
  // (it joins the next job). Empty job id: no job has run here.
  std::string latest_job;
  int64_t latest_job_data_seq = 0;
  int64_t images_since_latest_job = 0;
  int64_t data_seq = 0;
  std::string split_setting;  // the pinned split ("seed=0 train=0.7 ...")
};

// NOT_FOUND when `workspace` has no index yet (run ingest first).
absl::StatusOr<SiteStats> ReadSiteStats(const std::string& workspace);

// Every count in (0, k) becomes -1 (suppressed); zero stays zero. A
// finding's positives, negatives and unlabelled counts are withheld together
// when any of them is below k (they sum to the split's images).
SiteStats Shareable(SiteStats stats, int k);

}  // namespace fedtune::ingest
