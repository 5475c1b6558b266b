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
  std::vector<int64_t> positives;  // per finding; -1 = suppressed
};

struct SiteStats {
  std::vector<std::string> findings;
  std::map<std::string, SplitStats> splits;            // "train", "val", "test"
  std::map<std::string, int64_t> quarantine_reasons;   // reason -> count
  int64_t quarantined = 0;
};

// NOT_FOUND when `workspace` has no index yet (run ingest first).
absl::StatusOr<SiteStats> ReadSiteStats(const std::string& workspace);

// Every count in (0, k) becomes -1 (suppressed); zero stays zero.
SiteStats Shareable(SiteStats stats, int k);

}  // namespace fedtune::ingest
