#include "site-agent/ingest/workspace_index.h"

#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/core/sqlite_db.h"
#include "common/core/status.h"
#include "site-agent/ingest/index_schema.h"

namespace fedtune::ingest {
namespace {

constexpr char kIndexVersion[] = "2";

absl::StatusOr<std::unique_ptr<SqliteDb>> OpenIndex(const std::string& workspace) {
  const std::string path = workspace + "/index.sqlite";
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("no index in workspace ", workspace, " (run fedtune-site ingest first)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(path));
  RETURN_IF_ERROR(UpgradeIndex(*db));
  return db;
}

}  // namespace

absl::Status UpgradeIndex(SqliteDb& db) {
  // An index already at this schema is only read (readers take no lock).
  {
    ASSIGN_OR_RETURN(SqliteStatement has, db.Prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"));
    ASSIGN_OR_RETURN(bool meta, has.Step());
    if (meta) {
      ASSIGN_OR_RETURN(SqliteStatement v, db.Prepare("SELECT value FROM meta WHERE key = 'index_version'"));
      ASSIGN_OR_RETURN(bool row, v.Step());
      if (row && v.Text(0) == kIndexVersion) return absl::OkStatus();
    }
  }
  RETURN_IF_ERROR(db.Exec(
      "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS images(image_id TEXT PRIMARY KEY, source_sha256 TEXT UNIQUE NOT NULL,"
      " patient TEXT NOT NULL, study TEXT NOT NULL, split TEXT NOT NULL, labels TEXT NOT NULL,"
      " shard INTEGER NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS quarantine(source_sha256 TEXT PRIMARY KEY, reason TEXT NOT NULL,"
      " detail TEXT NOT NULL);"
      // Labels by finding name, as a history: the value of (image, finding)
      // as of data sequence number n is the row with the largest seq <= n;
      // -1 records that a label became unknown.
      "CREATE TABLE IF NOT EXISTS labels(image_id TEXT NOT NULL, finding TEXT NOT NULL, value REAL NOT NULL,"
      " seq INTEGER NOT NULL, PRIMARY KEY(image_id, finding, seq));"
      // Keyed HMACs (site key) of the keys a labels file may use for an
      // image: its file name (folder ingest), SOPInstanceUID, AccessionNumber.
      "CREATE TABLE IF NOT EXISTS label_keys(kind TEXT NOT NULL, key_hmac TEXT NOT NULL, image_id TEXT NOT NULL,"
      " PRIMARY KEY(kind, key_hmac));"
      "CREATE TABLE IF NOT EXISTS job_snapshots(job_id TEXT PRIMARY KEY, data_seq INTEGER NOT NULL,"
      " created_ms INTEGER NOT NULL);"
      // The splits of images a re-split moved: from data sequence number
      // `seq` on, the image is in `split` (seq 0: its split before).
      "CREATE TABLE IF NOT EXISTS split_history(image_id TEXT NOT NULL, split TEXT NOT NULL, seq INTEGER NOT NULL,"
      " PRIMARY KEY(image_id, seq));"
      "CREATE INDEX IF NOT EXISTS images_by_patient ON images(patient);"));
  RETURN_IF_ERROR(db.EnsureColumn("images", "added_seq", "INTEGER NOT NULL DEFAULT 0"));
  // Workspaces of the first release stored labels by position in the
  // findings list of the time (images.labels): moved once to labels by name.
  ASSIGN_OR_RETURN(SqliteStatement done, db.Prepare("SELECT value FROM meta WHERE key = 'labels_by_name'"));
  ASSIGN_OR_RETURN(bool migrated, done.Step());
  if (migrated) {
    ASSIGN_OR_RETURN(SqliteStatement v, db.Prepare("INSERT OR REPLACE INTO meta VALUES('index_version', ?)"));
    v.Bind(1, std::string_view(kIndexVersion));
    return v.Run();
  }
  ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(db));
  std::vector<std::string> findings;
  {
    ASSIGN_OR_RETURN(SqliteStatement s, db.Prepare("SELECT value FROM meta WHERE key = 'findings'"));
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (row && !s.Text(0).empty()) findings = absl::StrSplit(s.Text(0), '\x1f');
  }
  ASSIGN_OR_RETURN(SqliteStatement images, db.Prepare("SELECT image_id, labels FROM images WHERE labels != '[]'"));
  ASSIGN_OR_RETURN(SqliteStatement insert,
                   db.Prepare("INSERT OR IGNORE INTO labels(image_id, finding, value, seq) VALUES(?, ?, ?, 0)"));
  while (true) {
    ASSIGN_OR_RETURN(bool row, images.Step());
    if (!row) break;
    std::string text = images.Text(1);
    if (text.size() >= 2) text = text.substr(1, text.size() - 2);
    size_t f = 0;
    for (absl::string_view v : absl::StrSplit(text, ',', absl::SkipEmpty())) {
      double x = -1;
      if (f < findings.size() && absl::SimpleAtod(v, &x) && (x == 0 || x == 1)) {
        insert.BindAll(images.Text(0), findings[f], x);
        RETURN_IF_ERROR(insert.Run());
        insert.Reset();
      }
      ++f;
    }
  }
  RETURN_IF_ERROR(db.Exec("INSERT OR REPLACE INTO meta VALUES('labels_by_name', '1')"));
  RETURN_IF_ERROR(txn->Commit());
  ASSIGN_OR_RETURN(SqliteStatement v, db.Prepare("INSERT OR REPLACE INTO meta VALUES('index_version', ?)"));
  v.Bind(1, std::string_view(kIndexVersion));
  return v.Run();
}

absl::Status CheckWorkspaceIndex(const std::string& workspace) {
  static std::mutex mu;
  static std::set<std::string> checked;  // workspaces found sound by this process
  std::lock_guard<std::mutex> lock(mu);
  if (checked.count(workspace) > 0) return absl::OkStatus();
  const std::string path = workspace + "/index.sqlite";
  if (!std::filesystem::exists(path)) return absl::OkStatus();
  auto db = SqliteDb::Open(path);
  const absl::Status st = db.ok() ? (*db)->QuickCheck() : absl::DataLossError(db.status().message());
  if (st.ok()) {
    checked.insert(workspace);
    return st;
  }
  return absl::DataLossError(absl::StrCat(
      "the workspace index ", path, " is damaged (", st.message(), "). Stop every fedtune-site process on this "
      "workspace, then restore index.sqlite and cache/ from the workspace backup (see README, Operations); "
      "without a backup, move the workspace aside and run `fedtune-site ingest` again: the split follows "
      "[split] seed, so every patient returns to the same split"));
}

absl::StatusOr<IndexMeta> ReadIndexMeta(const std::string& workspace) {
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, OpenIndex(workspace));
  IndexMeta m;
  ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT key, value FROM meta"));
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    const std::string key = s.Text(0), value = s.Text(1);
    bool ok = true;
    if (key == "image_size") ok = absl::SimpleAtoi(value, &m.image_size);
    if (key == "cache_bits") ok = absl::SimpleAtoi(value, &m.cache_bits) && (m.cache_bits == 8 || m.cache_bits == 16);
    if (key == "data_seq") ok = absl::SimpleAtoi(value, &m.data_seq);
    if (key == "findings" && !value.empty()) m.findings = absl::StrSplit(value, '\x1f');
    if (key == "split") m.split = value;
    if (!ok) return absl::DataLossError(absl::StrCat("index: unreadable meta ", key));
  }
  return m;
}

absl::StatusOr<std::map<std::string, QuarantineRecord>> ReadQuarantineRecords(const std::string& workspace) {
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, OpenIndex(workspace));
  ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT source_sha256, reason, detail FROM quarantine"));
  std::map<std::string, QuarantineRecord> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out[s.Text(0)] = QuarantineRecord{s.Text(1), s.Text(2)};
  }
  return out;
}

absl::StatusOr<std::vector<IndexedImage>> ReadIndexedImages(const std::string& workspace, int64_t as_of) {
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, OpenIndex(workspace));
  const int64_t limit = as_of < 0 ? INT64_MAX : as_of;
  std::vector<IndexedImage> out;
  std::map<std::string, size_t> where;
  {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT image_id, patient, split, shard, offset, added_seq FROM "
                                                    "images WHERE added_seq <= ? ORDER BY image_id"));
    s.Bind(1, limit);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      IndexedImage im;
      im.image_id = s.Text(0);
      im.patient = s.Text(1);
      im.split = s.Text(2);
      im.shard = s.Int(3);
      im.offset = static_cast<uint64_t>(s.Int(4));
      im.added_seq = s.Int(5);
      where[im.image_id] = out.size();
      out.push_back(std::move(im));
    }
  }
  if (as_of >= 0) {
    // Images a re-split moved after the snapshot keep the split they had then.
    ASSIGN_OR_RETURN(SqliteStatement h, db->Prepare("SELECT image_id, split, MAX(seq) FROM split_history WHERE seq <= ? "
                                                    "GROUP BY image_id"));
    h.Bind(1, as_of);
    while (true) {
      ASSIGN_OR_RETURN(bool row, h.Step());
      if (!row) break;
      auto it = where.find(h.Text(0));
      if (it != where.end()) out[it->second].split = h.Text(1);
    }
  }
  // SQLite returns the bare columns of the row holding MAX(seq) in each group.
  ASSIGN_OR_RETURN(SqliteStatement l, db->Prepare("SELECT image_id, finding, value, MAX(seq) FROM labels WHERE seq <= ? "
                                                  "GROUP BY image_id, finding"));
  l.Bind(1, limit);
  while (true) {
    ASSIGN_OR_RETURN(bool row, l.Step());
    if (!row) break;
    auto it = where.find(l.Text(0));
    if (it == where.end()) continue;
    const double v = l.Double(2);
    if (v == 0 || v == 1) out[it->second].labels[l.Text(1)] = static_cast<float>(v);
  }
  return out;
}

absl::StatusOr<int64_t> TakeJobSnapshot(const std::string& workspace, const std::string& job_id) {
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, OpenIndex(workspace));
  auto recorded = [&]() -> absl::StatusOr<std::optional<int64_t>> {
    ASSIGN_OR_RETURN(SqliteStatement q, db->Prepare("SELECT data_seq FROM job_snapshots WHERE job_id = ?"));
    q.Bind(1, job_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    return row ? std::optional<int64_t>(q.Int(0)) : std::nullopt;
  };
  // Every task after the first only reads.
  ASSIGN_OR_RETURN(std::optional<int64_t> known, recorded());
  if (known) return *known;
  // One statement (its own transaction): an ingest commits at least every
  // 2 seconds, so the wait for the write lock is short.
  sqlite3_busy_timeout(db->raw(), 120000);
  {
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare("INSERT OR IGNORE INTO job_snapshots(job_id, data_seq, created_ms) SELECT ?, "
                                 "COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'data_seq'), 0), ?"));
    s.BindAll(job_id, now);
    RETURN_IF_ERROR(s.Run());
  }
  ASSIGN_OR_RETURN(known, recorded());
  if (!known) return absl::InternalError("job snapshot not recorded");
  return *known;
}

absl::StatusOr<std::vector<JobSnapshot>> RecentJobSnapshots(const std::string& workspace, int limit) {
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, OpenIndex(workspace));
  ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT job_id, data_seq, created_ms FROM job_snapshots ORDER BY "
                                                  "created_ms DESC LIMIT ?"));
  s.Bind(1, static_cast<int64_t>(limit));
  std::vector<JobSnapshot> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), s.Int(1), s.Int(2)});
  }
  return out;
}

}  // namespace fedtune::ingest
