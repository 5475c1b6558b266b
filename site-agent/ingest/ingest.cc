#include "site-agent/ingest/ingest.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_set>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/sqlite_db.h"
#include "common/core/status.h"
#include "site-agent/ingest/deidentifier.h"
#include "site-agent/ingest/index_schema.h"
#include "site-agent/ingest/inflation.h"
#include "site-agent/ingest/site_key.h"
#include "site-agent/ingest/workspace_index.h"

namespace fedtune::ingest {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kImagesPerShard = 4096;

std::string SplitSetting(uint64_t seed, const dataset::SplitRatios& r) {
  return absl::StrFormat("seed=%d train=%.17g val=%.17g test=%.17g", seed, r.train, r.val, r.test);
}

std::string Readable(const std::vector<std::string>& findings) { return absl::StrCat("[", absl::StrJoin(findings, ", "), "]"); }

// The index and the pixel shards; every method is called with `mu` held.
class Store {
 public:
  ~Store() {
    // What was not committed by Finish() is rolled back: rows must never
    // name pixels that were not made durable.
    if (db_ != nullptr && in_txn_) db_->Exec("ROLLBACK").IgnoreError();
    if (shard_ != nullptr) std::fclose(shard_);
  }

  absl::Status Open(const IngestOptions& o) {
    dir_ = o.workspace;
    size_ = o.image_size;
    bits_ = o.cache_bits;
    std::error_code ec;
    fs::create_directories(fs::path(dir_) / "cache", ec);
    fs::create_directories(fs::path(dir_) / "deid", ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create workspace ", dir_, ": ", ec.message()));
    // Identifiable nothing, but the site's data all the same: owner only,
    // whatever the umask of whoever ran ingest.
    for (const fs::path& d : {fs::path(dir_), fs::path(dir_) / "cache", fs::path(dir_) / "deid"}) {
      fs::permissions(d, fs::perms::owner_all, fs::perm_options::replace, ec);
    }
    RETURN_IF_ERROR(CheckWorkspaceIndex(dir_));
    ASSIGN_OR_RETURN(db_, SqliteDb::Open(dir_ + "/index.sqlite"));
    sqlite3_busy_timeout(db_->raw(), 30000);
    RETURN_IF_ERROR(UpgradeIndex(*db_));
    // One image size and one pixel format per workspace: the shards hold
    // size x size pixels of cache_bits each. Workspaces from before
    // cache_bits was recorded hold uint8 shards.
    RETURN_IF_ERROR(PinSetting("image_size", absl::StrCat(o.image_size), std::nullopt,
                               "ingest with image_size = %s or use a new workspace"));
    RETURN_IF_ERROR(PinSetting("cache_bits", absl::StrCat(o.cache_bits), "8",
                               "ingest with cache_bits = %s or use a new workspace"));
    // The split: a patient's images must land in one split whenever they
    // arrive, so the seed and ratios are the workspace's, not the run's.
    if (!o.resplit) {
      RETURN_IF_ERROR(PinSetting("split", SplitSetting(o.split_seed, o.split), std::nullopt,
                                 "set [split] in site.toml back to %s; to re-split every patient on purpose run "
                                 "`fedtune-site split --config site.toml --resplit`"));
    }
    for (auto [table, set] : {std::pair{"images", &done_}, std::pair{"quarantine", &quarantined_}}) {
      ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare(absl::StrCat("SELECT source_sha256 FROM ", table)));
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        set->insert(st.Text(0));
      }
    }
    {
      ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("SELECT COALESCE(MAX(shard), 0) FROM images"));
      ASSIGN_OR_RETURN(bool row, st.Step());
      shard_index_ = row ? st.Int(0) : 0;
      ASSIGN_OR_RETURN(SqliteStatement n, db_->Prepare("SELECT COUNT(*) FROM images WHERE shard = ?"));
      n.Bind(1, shard_index_);
      ASSIGN_OR_RETURN(bool r2, n.Step());
      in_shard_ = r2 ? n.Int(0) : 0;
      ASSIGN_OR_RETURN(SqliteStatement q, db_->Prepare("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'data_seq'"));
      ASSIGN_OR_RETURN(bool r3, q.Step());
      seq_ = (r3 ? q.Int(0) : 0) + 1;
    }
    return absl::OkStatus();
  }

  // The labelled findings are the workspace's: labels are stored by name,
  // so their order may change, but a different set is refused unless
  // `replace` (fedtune-site labels import --findings-changed).
  absl::Status PinFindings(const std::vector<std::string>& findings, bool replace) {
    ASSIGN_OR_RETURN(std::optional<std::string> existing, Setting("findings"));
    std::vector<std::string> have;
    if (existing && !existing->empty()) have = absl::StrSplit(*existing, '\x1f');
    std::set<std::string> a(have.begin(), have.end()), b(findings.begin(), findings.end());
    if (!have.empty() && a != b && !replace) {
      return absl::FailedPreconditionError(absl::StrCat(
          "workspace ", dir_, " holds labels for ", Readable(have), "; [labels] findings in site.toml lists ",
          Readable(findings), ". Labels are kept by finding name, so the order does not matter; to change the set, "
          "import a labels file that has it: fedtune-site labels import --config site.toml --labels CSV "
          "--findings-changed"));
    }
    if (!have.empty() && a == b) return absl::OkStatus();
    ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("INSERT OR REPLACE INTO meta VALUES('findings', ?)"));
    st.Bind(1, absl::StrJoin(findings, "\x1f"));
    return st.Run();
  }

  // Claims `sha` for this run (a duplicate file later in the same run is
  // skipped); false when it is ingested, or quarantined and not retried.
  bool Claim(const std::string& sha, bool retry_quarantined) {
    if (!retry_quarantined && quarantined_.count(sha) > 0) return false;
    return done_.insert(sha).second;
  }

  absl::Status Quarantine(const std::string& sha, std::string_view reason, const std::string& detail) {
    RETURN_IF_ERROR(Begin());
    ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("INSERT OR REPLACE INTO quarantine VALUES(?, ?, ?)"));
    st.BindAll(sha, reason, detail);
    RETURN_IF_ERROR(st.Run());
    return MaybeCommit();
  }

  // The split of a patient already in the workspace, if any.
  absl::StatusOr<std::optional<std::string>> PatientSplit(const std::string& patient) {
    RETURN_IF_ERROR(Begin());  // the image is written next, in the same transaction
    ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("SELECT split FROM images WHERE patient = ? LIMIT 1"));
    st.Bind(1, patient);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<std::string>();
    return std::optional<std::string>(st.Text(0));
  }

  absl::Status AddImage(const std::string& image_id, const std::string& sha, const std::string& patient,
                        const std::string& study, const std::string& split,
                        const std::vector<std::pair<std::string, float>>& labels,
                        const std::vector<std::pair<std::string, std::string>>& keys,
                        const std::vector<uint8_t>& pixels) {
    if (shard_ == nullptr || in_shard_ >= kImagesPerShard) {
      if (shard_ != nullptr) {
        RETURN_IF_ERROR(SyncShard());  // the rows naming it may commit after it is closed
        std::fclose(shard_);
        ++shard_index_;
        in_shard_ = 0;
      }
      const std::string name = CacheShardName(shard_index_, bits_);
      shard_ = std::fopen((fs::path(dir_) / "cache" / name).c_str(), "ab");
      if (shard_ == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot open cache shard ", name));
      new_shard_ = true;  // its directory entry is made durable with its bytes
    }
    RETURN_IF_ERROR(Begin());
    std::fseek(shard_, 0, SEEK_END);
    const long offset = std::ftell(shard_);
    if (std::fwrite(pixels.data(), 1, pixels.size(), shard_) != pixels.size() || std::fflush(shard_) != 0) {
      return absl::ResourceExhaustedError("cannot write the pixel cache (disk full?)");
    }
    ASSIGN_OR_RETURN(SqliteStatement st,
                     db_->Prepare("INSERT OR REPLACE INTO images(image_id, source_sha256, patient, study, split, "
                                  "labels, shard, offset, size, added_seq) VALUES(?, ?, ?, ?, ?, '[]', ?, ?, ?, ?)"));
    st.BindAll(image_id, sha, patient, study, split, shard_index_, static_cast<int64_t>(offset),
               static_cast<int64_t>(size_), seq_);
    RETURN_IF_ERROR(st.Run());
    ++in_shard_;
    RETURN_IF_ERROR(WriteLabels(image_id, labels));
    ASSIGN_OR_RETURN(SqliteStatement k, db_->Prepare("INSERT OR REPLACE INTO label_keys VALUES(?, ?, ?)"));
    for (const auto& [kind, hmac] : keys) {
      k.BindAll(kind, hmac, image_id);
      RETURN_IF_ERROR(k.Run());
      k.Reset();
    }
    if (quarantined_.erase(sha) > 0) {  // a retried file that now passes
      ASSIGN_OR_RETURN(SqliteStatement q, db_->Prepare("DELETE FROM quarantine WHERE source_sha256 = ?"));
      q.Bind(1, sha);
      RETURN_IF_ERROR(q.Run());
    }
    dirty_ = true;
    return MaybeCommit();
  }

  // Records label values (1, 0, or -1: unknown) of an image at this
  // session's data sequence number.
  absl::Status WriteLabels(const std::string& image_id, const std::vector<std::pair<std::string, float>>& labels) {
    if (labels.empty()) return absl::OkStatus();
    RETURN_IF_ERROR(Begin());
    ASSIGN_OR_RETURN(SqliteStatement l, db_->Prepare("INSERT OR REPLACE INTO labels VALUES(?, ?, ?, ?)"));
    for (const auto& [finding, value] : labels) {
      l.BindAll(image_id, finding, static_cast<double>(value), seq_);
      RETURN_IF_ERROR(l.Run());
      l.Reset();
    }
    dirty_ = true;
    return absl::OkStatus();
  }

  SqliteDb& db() { return *db_; }

  absl::StatusOr<ResplitSummary> Resplit(uint64_t seed, const dataset::SplitRatios& ratios) {
    RETURN_IF_ERROR(Begin());
    ResplitSummary out;
    struct Image {
      std::string id, patient, split;
    };
    std::vector<Image> images;
    {
      ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("SELECT image_id, patient, split FROM images"));
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        images.push_back({st.Text(0), st.Text(1), st.Text(2)});
      }
    }
    // A moved image's split gets a history (split_history): jobs that took
    // their snapshot before keep the split they started with.
    ASSIGN_OR_RETURN(SqliteStatement first,
                     db_->Prepare("INSERT OR IGNORE INTO split_history(image_id, split, seq) SELECT ?, ?, 0 WHERE NOT "
                                  "EXISTS (SELECT 1 FROM split_history WHERE image_id = ?)"));
    ASSIGN_OR_RETURN(SqliteStatement moved, db_->Prepare("INSERT OR REPLACE INTO split_history VALUES(?, ?, ?)"));
    ASSIGN_OR_RETURN(SqliteStatement update, db_->Prepare("UPDATE images SET split = ? WHERE image_id = ?"));
    std::set<std::string> patients, patients_moved;
    for (const Image& im : images) {
      patients.insert(im.patient);
      const std::string want(dataset::SplitName(dataset::AssignSplit(im.patient, seed, ratios)));
      if (want == im.split) continue;
      first.BindAll(im.id, im.split, im.id);
      RETURN_IF_ERROR(first.Run());
      first.Reset();
      moved.BindAll(im.id, want, seq_);
      RETURN_IF_ERROR(moved.Run());
      moved.Reset();
      update.BindAll(want, im.id);
      RETURN_IF_ERROR(update.Run());
      update.Reset();
      ++out.images_moved;
      patients_moved.insert(im.patient);
    }
    out.patients = static_cast<int64_t>(patients.size());
    out.patients_moved = static_cast<int64_t>(patients_moved.size());
    ASSIGN_OR_RETURN(SqliteStatement pin, db_->Prepare("INSERT OR REPLACE INTO meta VALUES('split', ?)"));
    pin.Bind(1, SplitSetting(seed, ratios));
    RETURN_IF_ERROR(pin.Run());
    dirty_ = true;
    return out;
  }

  // Makes everything so far durable and visible to new jobs (the data
  // sequence number advances).
  absl::Status Finish() { return CommitNow(); }

 private:
  // Records a per-workspace setting on first use; refuses a run that asks for
  // another value (`fix` says what to do, %s being the recorded value).
  // `unrecorded` is what a workspace holding images but no record of the
  // setting has (nullopt: take the wanted value).
  absl::Status PinSetting(const char* key, const std::string& wanted, std::optional<std::string> unrecorded,
                          const char* fix) {
    ASSIGN_OR_RETURN(std::optional<std::string> existing, Setting(key));
    const bool recorded = existing.has_value();
    if (!recorded && unrecorded) {
      ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("SELECT COUNT(*) FROM images"));
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (row && st.Int(0) > 0) existing = unrecorded;
    }
    if (existing && *existing != wanted) {
      return absl::FailedPreconditionError(absl::StrCat("workspace ", dir_, " holds images with ", key, " ", *existing,
                                                        ", not ", wanted, ": ",
                                                        absl::StrReplaceAll(fix, {{"%s", *existing}})));
    }
    if (recorded) return absl::OkStatus();
    ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("INSERT INTO meta VALUES(?, ?)"));
    st.BindAll(std::string(key), wanted);
    return st.Run();
  }

  absl::StatusOr<std::optional<std::string>> Setting(const char* key) {
    ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("SELECT value FROM meta WHERE key = ?"));
    st.Bind(1, std::string_view(key));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<std::string>();
    return std::optional<std::string>(st.Text(0));
  }

  // Writes happen in one transaction at a time, begun when the first write
  // comes (BEGIN IMMEDIATE: it never has to upgrade a stale read) and ended
  // by CommitNow(); an idle session holds no lock, so a site agent can take
  // a job's snapshot while a receiver waits for images.
  absl::Status Begin() {
    if (!failed_.ok()) return failed_;
    if (in_txn_) return absl::OkStatus();
    RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
    in_txn_ = true;
    txn_start_ = std::chrono::steady_clock::now();
    return absl::OkStatus();
  }

  // Commits, advancing the data sequence number when anything was written.
  // The pixels reach the disk before the index rows that point at them:
  // after a crash a committed row never names bytes that were lost.
  absl::Status SyncShard() {
    if (shard_ == nullptr) return absl::OkStatus();
    if (std::fflush(shard_) != 0 || ::fsync(fileno(shard_)) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot write the pixel cache to disk: ", std::strerror(errno)));
    }
    if (new_shard_) {
      SyncDirectory((fs::path(dir_) / "cache").string());
      new_shard_ = false;
    }
    return absl::OkStatus();
  }

  absl::Status CommitNow() {
    if (!failed_.ok()) return failed_;
    if (!in_txn_) return absl::OkStatus();
    if (absl::Status synced = SyncShard(); !synced.ok()) {
      // The pixels may be lost: so are the rows naming them, and this
      // session ends (Linux forgets a failed fsync, a later one would lie).
      db_->Exec("ROLLBACK").IgnoreError();
      in_txn_ = false;
      failed_ = synced;
      return synced;
    }
    if (dirty_) {
      ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("INSERT OR REPLACE INTO meta VALUES('data_seq', ?)"));
      st.Bind(1, absl::StrCat(seq_));
      RETURN_IF_ERROR(st.Run());
    }
    RETURN_IF_ERROR(db_->Exec("COMMIT"));
    in_txn_ = false;
    pending_ = 0;
    if (dirty_) ++seq_;
    dirty_ = false;
    return absl::OkStatus();
  }

  // Commits every 256 rows or 2 seconds, so a killed run loses little (and
  // re-running redoes it) and readers wait for the lock briefly.
  absl::Status MaybeCommit() {
    if (++pending_ < 256 && std::chrono::steady_clock::now() - txn_start_ < std::chrono::seconds(2)) {
      return absl::OkStatus();
    }
    return CommitNow();
  }

  std::string dir_;
  int size_ = 0;
  int bits_ = 8;
  std::unique_ptr<SqliteDb> db_;
  std::FILE* shard_ = nullptr;
  bool new_shard_ = false;
  absl::Status failed_;  // a failed shard sync: nothing more is committed
  int64_t shard_index_ = 0;
  int64_t in_shard_ = 0;
  int pending_ = 0;
  int64_t seq_ = 1;     // the data sequence number of what this session writes
  bool dirty_ = false;  // images or labels written in the open transaction
  bool in_txn_ = false;
  std::chrono::steady_clock::time_point txn_start_;
  std::unordered_set<std::string> done_;
  std::unordered_set<std::string> quarantined_;
};

// The workspace's ingest lock: one ingesting process at a time.
class WorkspaceLock {
 public:
  static absl::StatusOr<WorkspaceLock> Acquire(const std::string& workspace, const std::function<void()>& on_wait) {
    const std::string path = workspace + "/ingest.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (on_wait) on_wait();
      while (::flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
          ::close(fd);
          return absl::InternalError(absl::StrCat("cannot lock ", path, ": ", std::strerror(errno)));
        }
      }
    }
    return WorkspaceLock(fd);
  }
  WorkspaceLock(WorkspaceLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  WorkspaceLock& operator=(WorkspaceLock&&) = delete;
  ~WorkspaceLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }

 private:
  explicit WorkspaceLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

std::string CacheShardName(int64_t shard, int cache_bits) {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%05lld.%s", static_cast<long long>(shard), cache_bits == 16 ? "u16" : "u8");
  return name;
}

std::string_view LabelKeyName(LabelKey kind) {
  switch (kind) {
    case LabelKey::kFileStem: return "file_stem";
    case LabelKey::kSopInstanceUid: return "sop_instance_uid";
    case LabelKey::kAccessionNumber: return "accession_number";
  }
  return "file_stem";
}

std::string LabelKeyHmac(std::span<const uint8_t> site_key, LabelKey kind, std::string_view value) {
  return ToHex(HmacSha256(site_key, absl::StrCat("label-key:", Sv(LabelKeyName(kind)), ":", Sv(value))));
}

struct Ingestor::State {
  IngestOptions o;
  std::optional<WorkspaceLock> lock;
  std::vector<uint8_t> key;
  std::optional<dataset::LabelTable> labels;
  Store store;
  std::unique_ptr<TextDetector> text;  // null when [deid] burned_in is off
  mutable std::mutex mu;  // guards store and summary
  IngestSummary summary;
};

Ingestor::Ingestor(std::unique_ptr<State> state) : state_(std::move(state)) {}

Ingestor::~Ingestor() {
  if (state_ != nullptr) state_->store.Finish().IgnoreError();
}

absl::StatusOr<std::unique_ptr<Ingestor>> Ingestor::Open(const IngestOptions& o, const std::function<void()>& on_wait) {
  if (o.workspace.empty()) return absl::InvalidArgumentError("ingest: no workspace directory configured");
  if (o.image_size < 16) return absl::InvalidArgumentError("ingest: image_size must be at least 16");
  if (o.cache_bits != 8 && o.cache_bits != 16) return absl::InvalidArgumentError("ingest: cache_bits must be 8 or 16");
  RETURN_IF_ERROR(dataset::Validate(o.split));
  auto state = std::make_unique<State>();
  state->o = o;
  // Redaction handles what BurnedInAnnotation YES announces as well.
  if (o.burned_in.mode == BurnedInMode::kRedact) state->o.filters.refuse_burned_in = false;
  if (o.burned_in.mode != BurnedInMode::kOff) {
    ASSIGN_OR_RETURN(state->text, TextDetector::Open(o.burned_in));
  }
  if (!o.labels_path.empty()) {
    ASSIGN_OR_RETURN(std::string csv, ReadFileBytes(o.labels_path));
    ASSIGN_OR_RETURN(state->labels, dataset::ParseLabels(csv, o.labels, o.labels_path));
  }
  std::error_code ec;
  fs::create_directories(o.workspace, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create workspace ", o.workspace, ": ", ec.message()));
  ASSIGN_OR_RETURN(WorkspaceLock lock, WorkspaceLock::Acquire(o.workspace, on_wait));
  state->lock.emplace(std::move(lock));
  ASSIGN_OR_RETURN(state->key, LoadOrCreateSiteKey(o.workspace + "/site.key"));
  RegisterDecoders();
  RETURN_IF_ERROR(state->store.Open(o));
  if (state->labels) RETURN_IF_ERROR(state->store.PinFindings(state->labels->findings, o.replace_findings));
  return std::unique_ptr<Ingestor>(new Ingestor(std::move(state)));
}

absl::StatusOr<LabelImportSummary> Ingestor::ImportLabels() {
  State& st = *state_;
  if (!st.labels) return absl::FailedPreconditionError("no labels file to import");
  std::lock_guard<std::mutex> lock(st.mu);
  SqliteDb& db = st.store.db();
  std::set<std::string> images;
  {
    ASSIGN_OR_RETURN(SqliteStatement s, db.Prepare("SELECT image_id FROM images"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      images.insert(s.Text(0));
    }
  }
  // The current labels (the latest value of each image and finding).
  std::map<std::string, std::map<std::string, float>> current;
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db.Prepare("SELECT image_id, finding, value, MAX(seq) FROM labels GROUP BY image_id, finding"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      const double v = s.Double(2);
      if (v == 0 || v == 1) current[s.Text(0)][s.Text(1)] = static_cast<float>(v);
    }
  }
  std::map<std::string, std::string> by_hmac;
  {
    ASSIGN_OR_RETURN(SqliteStatement s, db.Prepare("SELECT key_hmac, image_id FROM label_keys WHERE kind = ?"));
    s.Bind(1, LabelKeyName(st.o.label_key));
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      by_hmac[s.Text(0)] = s.Text(1);
    }
  }
  LabelImportSummary out;
  std::set<std::string> mentioned;
  const std::vector<std::string>& findings = st.labels->findings;
  for (const auto& [key, values] : st.labels->by_key) {
    ++out.rows;
    std::string image;
    if (auto it = by_hmac.find(LabelKeyHmac(st.key, st.o.label_key, key)); it != by_hmac.end()) {
      image = it->second;
    } else if (st.o.label_key == LabelKey::kSopInstanceUid && images.count(PseudonymousUid(st.key, key))) {
      image = PseudonymousUid(st.key, key);  // an image ingested before label keys were recorded
    }
    if (image.empty() || !images.count(image)) {
      ++out.not_matched;
      continue;
    }
    ++out.matched;
    mentioned.insert(image);
    std::vector<std::pair<std::string, float>> changes;
    const auto& had = current[image];
    for (size_t f = 0; f < findings.size(); ++f) {
      const float now = values[f] == 0.0f || values[f] == 1.0f ? values[f] : -1.0f;
      auto h = had.find(findings[f]);
      const float before = h == had.end() ? -1.0f : h->second;
      if (now != before) changes.emplace_back(findings[f], now);
    }
    if (changes.empty()) {
      ++out.unchanged;
      continue;
    }
    ++out.changed;
    RETURN_IF_ERROR(st.store.WriteLabels(image, changes));
  }
  out.images_without_row = static_cast<int64_t>(images.size() - mentioned.size());
  return out;
}

absl::StatusOr<ResplitSummary> Ingestor::Resplit() {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->o.resplit) return absl::FailedPreconditionError("the ingest session was not opened to re-split");
  return state_->store.Resplit(state_->o.split_seed, state_->o.split);
}

absl::Status Ingestor::Commit() {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->store.Finish();
}

IngestSummary Ingestor::Summary() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->summary;
}

absl::StatusOr<IngestOutcome> Ingestor::IngestFile(const std::string& file) {
  State& st = *state_;
  const IngestOptions& o = st.o;
  const fs::path path(file);
  std::error_code size_ec;
  const uintmax_t file_size = fs::file_size(path, size_ec);
  if (!size_ec && file_size > static_cast<uintmax_t>(o.filters.max_file_bytes)) {
    // Not read into memory: hashed from the file for its identity, then
    // recorded like any refusal.
    ASSIGN_OR_RETURN(const std::string big_sha, Sha256FileHex(file));
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.store.Claim(big_sha, o.retry_quarantined)) {
      ++st.summary.already_done;
      return IngestOutcome::kAlreadyDone;
    }
    ++st.summary.quarantined;
    ++st.summary.quarantine_reasons[std::string(QuarantineReasonName(QuarantineReason::kTooLarge))];
    RETURN_IF_ERROR(st.store.Quarantine(big_sha, QuarantineReasonName(QuarantineReason::kTooLarge),
                                        absl::StrCat("file of ", file_size >> 20, " MiB is above the maximum of ",
                                                     o.filters.max_file_bytes >> 20, " MiB")));
    return IngestOutcome::kQuarantined;
  }
  auto bytes = ReadFileBytes(file);
  if (!bytes.ok()) {
    // Counted, not recorded: without its bytes the file has no identity, and
    // the next run tries it again (permissions fixed, copy finished...).
    std::lock_guard<std::mutex> lock(st.mu);
    ++st.summary.quarantined;
    ++st.summary.quarantine_reasons[std::string(QuarantineReasonName(QuarantineReason::kUnreadable))];
    return IngestOutcome::kQuarantined;
  }
  const std::string sha = Sha256Hex(*bytes);
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.store.Claim(sha, o.retry_quarantined)) {
      ++st.summary.already_done;
      return IngestOutcome::kAlreadyDone;
    }
  }
  auto quarantine = [&](QuarantineReason r, const std::string& detail) -> absl::StatusOr<IngestOutcome> {
    std::lock_guard<std::mutex> lock(st.mu);
    ++st.summary.quarantined;
    ++st.summary.quarantine_reasons[std::string(QuarantineReasonName(r))];
    RETURN_IF_ERROR(st.store.Quarantine(sha, QuarantineReasonName(r), detail));
    return IngestOutcome::kQuarantined;
  };
  // Before DCMTK inflates a deflated dataset: pixels within max_decoded_bytes
  // and as much again for the rest of the dataset.
  const int64_t inflate_limit = 2 * o.filters.max_decoded_bytes;
  const Inflation inflation = MeasureInflation(*bytes, inflate_limit);
  if (inflation.kind == Inflation::kMeasured && inflation.bytes > inflate_limit) {
    return quarantine(QuarantineReason::kTooLarge,
                      absl::StrCat("the deflated dataset inflates to more than ", inflate_limit >> 20,
                                   " MiB (twice [ingest] max_decoded_mb)"));
  }
  if (inflation.kind == Inflation::kUnfollowable) {
    // Fail closed: a file DCMTK would read as deflated but whose meta group
    // the measurement above could not follow is not inflated unmeasured.
    DcmFileFormat meta;
    OFString syntax;
    if (meta.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_metaOnly).good() &&
        meta.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, syntax).good() &&
        syntax == kDeflatedTransferSyntax) {
      return quarantine(QuarantineReason::kUnreadable,
                        "deflated, with a file meta group whose layout cannot be followed to measure it");
    }
  }
  DcmFileFormat dicom;
  OFCondition c = dicom.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
  if (c.bad()) return quarantine(QuarantineReason::kUnreadable, c.text());
  DcmDataset& ds = *dicom.getDataset();
  if (auto q = CheckHeader(ds, o.filters)) return quarantine(q->reason, q->detail);
  // The pseudonym, the date shift and the split come from PatientID, the
  // image's row from SOPInstanceUID: files without them would share one
  // patient's pseudonym and shift, or overwrite each other's rows.
  for (const auto& [tag, name] : {std::pair{DCM_PatientID, "PatientID"}, std::pair{DCM_SOPInstanceUID, "SOPInstanceUID"}}) {
    OFString v;
    if (ds.findAndGetOFString(tag, v).bad() || absl::StripAsciiWhitespace(v.c_str()).empty()) {
      return quarantine(QuarantineReason::kMissingIdentifier, absl::StrCat("no ", name));
    }
  }
  // Labels are joined before identifiers are replaced; the keys a later
  // labels file may use are kept only as keyed HMACs.
  std::map<LabelKey, std::string> keys;
  {
    OFString v;
    if (o.file_stem_is_key) keys[LabelKey::kFileStem] = path.stem().string();
    if (ds.findAndGetOFString(DCM_SOPInstanceUID, v).good() && !v.empty()) keys[LabelKey::kSopInstanceUid] = v.c_str();
    if (ds.findAndGetOFString(DCM_AccessionNumber, v).good() && !v.empty()) {
      keys[LabelKey::kAccessionNumber] = v.c_str();
    }
  }
  std::vector<std::pair<std::string, float>> labels;
  if (st.labels) {
    auto it = st.labels->by_key.find(keys.count(o.label_key) ? keys[o.label_key] : std::string());
    if (it == st.labels->by_key.end()) return quarantine(QuarantineReason::kUnlabelled, "no row in the labels file");
    for (size_t f = 0; f < st.labels->findings.size(); ++f) {
      if (it->second[f] == 0.0f || it->second[f] == 1.0f) labels.emplace_back(st.labels->findings[f], it->second[f]);
    }
  }
  // Read before de-identification; the pixels of an image that declares
  // no burned-in annotation are not searched.
  OFString declared;
  ds.findAndGetOFString(DCM_BurnedInAnnotation, declared);
  const bool look_for_text = st.text != nullptr && absl::AsciiStrToUpper(declared.c_str()) != "NO";
  std::vector<std::pair<std::string, std::string>> key_hmacs;
  for (const auto& [kind, value] : keys) {
    key_hmacs.emplace_back(std::string(LabelKeyName(kind)), LabelKeyHmac(st.key, kind, value));
  }
  ASSIGN_OR_RETURN(DeidSummary deid, DeidentifyDataset(ds, st.key, o.deid));
  std::error_code ec_ignored;
  OFString sop, study;
  ds.findAndGetOFString(DCM_SOPInstanceUID, sop);
  ds.findAndGetOFString(DCM_StudyInstanceUID, study);
  const std::string image_id = sop.c_str();  // already the keyed pseudonymous UID
  std::string copy;
  if (o.keep_deid_copies) {
    const std::string out = absl::StrCat(o.workspace, "/deid/", image_id, ".dcm");
    copy = out;
    // Written before decoding, in the file's own transfer syntax (decoding
    // changes the pixel representation held in memory).
    if (dicom.saveFile(out.c_str(), ds.getOriginalXfer(), EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0,
                       EWM_createNewMeta)
            .bad()) {
      return absl::PermissionDeniedError(absl::StrCat("cannot write de-identified copy ", out));
    }
  }
  auto gray = DecodeGray(ds);
  if (!gray.ok()) {
    if (!copy.empty()) fs::remove(copy, ec_ignored);  // a quarantined file keeps no copy
    return quarantine(QuarantineReason::kUndecodable, std::string(gray.status().message()));
  }
  bool redacted = false;
  if (look_for_text) {
    ASSIGN_OR_RETURN(TextFound found, st.text->Find(*gray));
    if (!found.text.empty()) {
      if (o.burned_in.mode == BurnedInMode::kQuarantine) {
        if (!copy.empty()) fs::remove(copy, ec_ignored);
        return quarantine(QuarantineReason::kBurnedInText,
                          absl::StrCat(found.text.size(), " line(s) of text found in the pixels"));
      }
      const std::vector<PixelBox> boxes =
          Grow(found.text, RedactionMargin(gray->width, gray->height), gray->width, gray->height);
      RETURN_IF_ERROR(BlackOutStored(ds, *gray, boxes));
      BlackOut(*gray, boxes);
      redacted = true;
      if (!copy.empty()) {
        // The copy written above still shows the text: replaced by the
        // blacked-out pixels, uncompressed.
        RETURN_IF_ERROR(MarkPixelsCleaned(ds));
        if (dicom.saveFile(copy.c_str(), EXS_LittleEndianExplicit, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0,
                           EWM_createNewMeta)
                .bad()) {
          return absl::PermissionDeniedError(absl::StrCat("cannot write de-identified copy ", copy));
        }
      }
    }
  }
  const GrayImage fitted = FitSquare(*gray, o.image_size, o.fit);
  const std::vector<uint8_t> pixels = CacheBytes(fitted, o.cache_bits);
  std::lock_guard<std::mutex> lock(st.mu);
  // A patient already in the workspace keeps its split (it is also what the
  // pinned seed and ratios give; this holds it even across a re-split).
  ASSIGN_OR_RETURN(std::optional<std::string> known, st.store.PatientSplit(deid.patient_pseudonym));
  const std::string split =
      known ? *known
            : std::string(dataset::SplitName(dataset::AssignSplit(deid.patient_pseudonym, o.split_seed, o.split)));
  RETURN_IF_ERROR(st.store.AddImage(image_id, sha, deid.patient_pseudonym, study.c_str(), split, labels, key_hmacs,
                                    pixels));
  ++st.summary.ingested;
  if (!st.labels) ++st.summary.unlabelled;
  if (redacted) ++st.summary.redacted;
  return IngestOutcome::kIngested;
}

absl::Status Ingestor::IngestFiles(const std::vector<std::string>& files, int threads,
                                   const std::function<void(size_t, IngestOutcome)>& done) {
  std::mutex mu;  // guards first_error and the callback
  absl::Status first_error;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < files.size(); i = next++) {
      auto outcome = IngestFile(files[i]);
      std::lock_guard<std::mutex> lock(mu);
      if (!outcome.ok()) {
        if (first_error.ok()) first_error = outcome.status();
        next = files.size();  // stop on a site-side error (disk, index)
        return;
      }
      if (done) done(i, *outcome);
    }
  };
  size_t n = threads > 0 ? static_cast<size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  n = std::min(n, std::max<size_t>(1, files.size()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  return first_error;
}

absl::StatusOr<IngestSummary> IngestDirectory(const std::string& source_dir, const IngestOptions& o,
                                              const IngestProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.workspace.empty()) return absl::InvalidArgumentError("ingest: no workspace directory configured");
  std::error_code ec;
  if (!fs::is_directory(source_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("ingest: source ", source_dir, " is not a directory"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Ingestor> ingestor, Ingestor::Open(o));

  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(source_dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec)) files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  int finished = 0;
  const absl::Status run = ingestor->IngestFiles(files, o.threads, [&](size_t, IngestOutcome) {
    if (progress) progress(++finished, static_cast<int>(files.size()));
  });
  RETURN_IF_ERROR(run);
  int labels_updated = 0;
  if (!o.labels_path.empty()) {
    // The labels file also labels (or corrects) what earlier runs ingested.
    ASSIGN_OR_RETURN(LabelImportSummary joined, ingestor->ImportLabels());
    labels_updated = joined.changed;
  }
  RETURN_IF_ERROR(ingestor->Commit());
  IngestSummary summary = ingestor->Summary();
  summary.labels_updated = labels_updated;
  summary.scanned = static_cast<int>(files.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace fedtune::ingest
