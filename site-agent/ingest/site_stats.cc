#include "site-agent/ingest/site_stats.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "common/core/sqlite_db.h"
#include "common/core/status.h"
#include "site-agent/ingest/workspace_index.h"

namespace fedtune::ingest {

absl::StatusOr<SiteStats> ReadSiteStats(const std::string& workspace) {
  ASSIGN_OR_RETURN(IndexMeta meta, ReadIndexMeta(workspace));
  ASSIGN_OR_RETURN(std::vector<IndexedImage> images, ReadIndexedImages(workspace));
  SiteStats s;
  s.findings = meta.findings;
  s.data_seq = meta.data_seq;
  s.split_setting = meta.split;
  const size_t nf = s.findings.size();
  std::map<std::string, std::set<std::string>> patients;
  for (const IndexedImage& im : images) {
    SplitStats& ss = s.splits[im.split];
    ss.positives.resize(nf, 0);
    ss.negatives.resize(nf, 0);
    ss.unlabelled.resize(nf, 0);
    ++ss.images;
    patients[im.split].insert(im.patient);
    if (im.labels.empty()) ++ss.without_labels;
    for (size_t f = 0; f < nf; ++f) {
      auto it = im.labels.find(s.findings[f]);
      if (it == im.labels.end()) {
        ++ss.unlabelled[f];
      } else {
        ++(it->second == 1.0f ? ss.positives : ss.negatives)[f];
      }
    }
  }
  for (auto& [split, set] : patients) s.splits[split].patients = static_cast<int64_t>(set.size());
  ASSIGN_OR_RETURN(std::vector<JobSnapshot> jobs, RecentJobSnapshots(workspace, 1));
  if (!jobs.empty()) {
    s.latest_job = jobs.front().job_id;
    s.latest_job_data_seq = jobs.front().data_seq;
    for (const IndexedImage& im : images) s.images_since_latest_job += im.added_seq > jobs.front().data_seq ? 1 : 0;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(workspace + "/index.sqlite"));
  ASSIGN_OR_RETURN(SqliteStatement q, db->Prepare("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason"));
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    s.quarantine_reasons[q.Text(0)] = q.Int(1);
    s.quarantined += q.Int(1);
  }
  return s;
}

SiteStats Shareable(SiteStats stats, int k) {
  auto suppress = [k](int64_t& v) {
    if (v > 0 && v < k) v = -1;
  };
  for (auto& [name, split] : stats.splits) {
    suppress(split.images);
    suppress(split.patients);
    // Positives, negatives and unlabelled of a finding add up to the images
    // of the split: when one is withheld, all three are, or it could be
    // recovered from the other two.
    for (size_t f = 0; f < split.positives.size(); ++f) {
      int64_t* counts[] = {&split.positives[f], &split.negatives[f], &split.unlabelled[f]};
      bool any = false;
      for (int64_t* v : counts) any = any || (*v > 0 && *v < k);
      for (int64_t* v : counts) {
        if (any) *v = -1;
      }
    }
    suppress(split.without_labels);
  }
  // The reasons add up to the total: what is withheld must sum to 0 or at
  // least k, or the total would give it back. Withhold the next smallest
  // reasons until it does, or the total when they run out.
  int64_t withheld = 0;
  for (auto& [reason, n] : stats.quarantine_reasons) {
    if (n > 0 && n < k) withheld += n;
    suppress(n);
  }
  while (withheld > 0 && withheld < k) {
    int64_t* smallest = nullptr;
    for (auto& [reason, n] : stats.quarantine_reasons) {
      if (n > 0 && (smallest == nullptr || n < *smallest)) smallest = &n;
    }
    if (smallest == nullptr) {
      stats.quarantined = -1;
      break;
    }
    withheld += *smallest;
    *smallest = -1;
  }
  suppress(stats.quarantined);
  suppress(stats.images_since_latest_job);
  return stats;
}

}  // namespace fedtune::ingest
