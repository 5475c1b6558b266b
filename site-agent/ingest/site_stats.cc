#include "site-agent/ingest/site_stats.h"

#include <sqlite3.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fedtune::ingest {

absl::StatusOr<SiteStats> ReadSiteStats(const std::string& workspace) {
  const std::string path = workspace + "/index.sqlite";
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("no index at ", path, "; run `fedtune-site ingest` first"));
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", path));
  }
  SiteStats s;
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='findings'", -1, &st, nullptr);
  if (sqlite3_step(st) == SQLITE_ROW) {
    const std::string joined = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    if (!joined.empty()) s.findings = absl::StrSplit(joined, '\x1f');
  }
  sqlite3_finalize(st);
  std::map<std::string, std::set<std::string>> patients;
  sqlite3_prepare_v2(db, "SELECT split, patient, labels FROM images", -1, &st, nullptr);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const std::string split = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    SplitStats& ss = s.splits[split];
    ss.positives.resize(s.findings.size(), 0);
    ++ss.images;
    patients[split].insert(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
    std::string labels = reinterpret_cast<const char*>(sqlite3_column_text(st, 2));
    if (labels.size() >= 2) labels = labels.substr(1, labels.size() - 2);
    size_t f = 0;
    for (absl::string_view v : absl::StrSplit(labels, ',', absl::SkipEmpty())) {
      if (f < ss.positives.size() && v == "1") ++ss.positives[f];
      ++f;
    }
  }
  sqlite3_finalize(st);
  for (auto& [split, set] : patients) s.splits[split].patients = static_cast<int64_t>(set.size());
  sqlite3_prepare_v2(db, "SELECT reason, COUNT(*) FROM quarantine GROUP BY reason", -1, &st, nullptr);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const int64_t n = sqlite3_column_int64(st, 1);
    s.quarantine_reasons[reinterpret_cast<const char*>(sqlite3_column_text(st, 0))] = n;
    s.quarantined += n;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return s;
}

SiteStats Shareable(SiteStats stats, int k) {
  auto suppress = [k](int64_t& v) {
    if (v > 0 && v < k) v = -1;
  };
  for (auto& [name, split] : stats.splits) {
    suppress(split.images);
    suppress(split.patients);
    for (auto& p : split.positives) suppress(p);
  }
  for (auto& [reason, n] : stats.quarantine_reasons) suppress(n);
  suppress(stats.quarantined);
  return stats;
}

}  // namespace fedtune::ingest
