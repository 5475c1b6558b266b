#include "site-agent/ingest/ingest.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
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
#include <thread>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/status.h"
#include "site-agent/ingest/deidentifier.h"
#include "site-agent/ingest/site_key.h"

namespace fedtune::ingest {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kImagesPerShard = 4096;

absl::Status SqlError(sqlite3* db, std::string_view what) {
  return absl::InternalError(absl::StrCat("index: ", Sv(what), ": ", sqlite3_errmsg(db)));
}

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("index: ", msg));
  }
  return absl::OkStatus();
}

// The index and the pixel shards; every method is called with `mu` held.
class Store {
 public:
  ~Store() {
    if (shard_ != nullptr) std::fclose(shard_);
    if (db_ != nullptr) {
      Exec(db_, "COMMIT").IgnoreError();
      sqlite3_close(db_);
    }
  }

  absl::Status Open(const std::string& workspace, int image_size, int cache_bits) {
    dir_ = workspace;
    size_ = image_size;
    bits_ = cache_bits;
    std::error_code ec;
    fs::create_directories(fs::path(workspace) / "cache", ec);
    fs::create_directories(fs::path(workspace) / "deid", ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create workspace ", workspace, ": ", ec.message()));
    const std::string path = workspace + "/index.sqlite";
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) return SqlError(db_, "open " + path);
    RETURN_IF_ERROR(Exec(db_,
                         "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=30000;"
                         "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                         "CREATE TABLE IF NOT EXISTS images(image_id TEXT PRIMARY KEY, source_sha256 TEXT UNIQUE NOT NULL,"
                         " patient TEXT NOT NULL, study TEXT NOT NULL, split TEXT NOT NULL, labels TEXT NOT NULL,"
                         " shard INTEGER NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL);"
                         "CREATE TABLE IF NOT EXISTS quarantine(source_sha256 TEXT PRIMARY KEY, reason TEXT NOT NULL,"
                         " detail TEXT NOT NULL);"));
    // One image size and one pixel format per workspace: the shards hold
    // size x size pixels of cache_bits each. Workspaces from before
    // cache_bits was recorded hold uint8 shards.
    RETURN_IF_ERROR(PinSetting("image_size", image_size, std::nullopt));
    RETURN_IF_ERROR(PinSetting("cache_bits", cache_bits, 8));
    sqlite3_stmt* st = nullptr;
    for (auto [table, set] : {std::pair{"images", &done_}, std::pair{"quarantine", &quarantined_}}) {
      sqlite3_prepare_v2(db_, absl::StrCat("SELECT source_sha256 FROM ", table).c_str(), -1, &st, nullptr);
      while (sqlite3_step(st) == SQLITE_ROW) set->insert(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
      sqlite3_finalize(st);
    }
    sqlite3_prepare_v2(db_, "SELECT COALESCE(MAX(shard), 0), COUNT(*) FROM images", -1, &st, nullptr);
    sqlite3_step(st);
    shard_index_ = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM images WHERE shard = ?", -1, &st, nullptr);
    sqlite3_bind_int64(st, 1, shard_index_);
    sqlite3_step(st);
    in_shard_ = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return Exec(db_, "BEGIN");
  }

  // Claims `sha` for this run (a duplicate file later in the same run is
  // skipped); false when it is ingested, or quarantined and not retried.
  bool Claim(const std::string& sha, bool retry_quarantined) {
    if (!retry_quarantined && quarantined_.count(sha) > 0) return false;
    return done_.insert(sha).second;
  }

  absl::Status SetFindings(const std::vector<std::string>& findings) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO meta VALUES('findings', ?)", -1, &st, nullptr);
    const std::string joined = absl::StrJoin(findings, "\x1f");
    sqlite3_bind_text(st, 1, joined.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? absl::OkStatus() : SqlError(db_, "store findings");
  }

  absl::Status Quarantine(const std::string& sha, std::string_view reason, const std::string& detail) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO quarantine VALUES(?, ?, ?)", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, sha.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, reason.data(), static_cast<int>(reason.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, detail.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? MaybeCommit() : SqlError(db_, "record quarantine");
  }

  absl::Status AddImage(const std::string& image_id, const std::string& sha, const std::string& patient,
                        const std::string& study, std::string_view split, const std::string& labels,
                        const std::vector<uint8_t>& pixels) {
    if (shard_ == nullptr || in_shard_ >= kImagesPerShard) {
      if (shard_ != nullptr) {
        std::fclose(shard_);
        ++shard_index_;
        in_shard_ = 0;
      }
      const std::string name = CacheShardName(shard_index_, bits_);
      shard_ = std::fopen((fs::path(dir_) / "cache" / name).c_str(), "ab");
      if (shard_ == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot open cache shard ", name));
    }
    std::fseek(shard_, 0, SEEK_END);
    const long offset = std::ftell(shard_);
    if (std::fwrite(pixels.data(), 1, pixels.size(), shard_) != pixels.size() || std::fflush(shard_) != 0) {
      return absl::ResourceExhaustedError("cannot write the pixel cache (disk full?)");
    }
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO images VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, image_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, sha.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, patient.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, study.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, split.data(), static_cast<int>(split.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, labels.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 7, shard_index_);
    sqlite3_bind_int64(st, 8, offset);
    sqlite3_bind_int(st, 9, size_);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    ++in_shard_;
    if (rc != SQLITE_DONE) return SqlError(db_, "record image");
    if (quarantined_.erase(sha) > 0) {  // a retried file that now passes
      sqlite3_prepare_v2(db_, "DELETE FROM quarantine WHERE source_sha256 = ?", -1, &st, nullptr);
      sqlite3_bind_text(st, 1, sha.c_str(), -1, SQLITE_TRANSIENT);
      rc = sqlite3_step(st);
      sqlite3_finalize(st);
      if (rc != SQLITE_DONE) return SqlError(db_, "clear quarantine");
    }
    return MaybeCommit();
  }

  absl::Status Finish() {
    if (shard_ != nullptr) std::fflush(shard_);
    return Exec(db_, "COMMIT; BEGIN");
  }

 private:
  // Records a per-workspace setting on first use; refuses a run that asks for
  // another value. `unrecorded` is what a workspace holding images but no
  // record of the setting has.
  absl::Status PinSetting(const char* key, int wanted, std::optional<int> unrecorded) {
    std::optional<int> existing;
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE key = ?", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) existing = std::atoi(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    const bool recorded = existing.has_value();
    if (!recorded && unrecorded) {
      sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM images", -1, &st, nullptr);
      if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0) existing = unrecorded;
      sqlite3_finalize(st);
    }
    if (existing && *existing != wanted) {
      return absl::FailedPreconditionError(absl::StrCat("workspace ", dir_, " holds images with ", key, " = ",
                                                        *existing, "; ingest with ", key, " = ", *existing,
                                                        " or use a new workspace"));
    }
    if (recorded) return absl::OkStatus();
    return Exec(db_, absl::StrCat("INSERT INTO meta VALUES('", key, "','", wanted, "')").c_str());
  }

  // Commits every 256 rows, so a killed run loses little and re-running redoes it.
  absl::Status MaybeCommit() {
    if (++pending_ < 256) return absl::OkStatus();
    pending_ = 0;
    return Exec(db_, "COMMIT; BEGIN");
  }

  std::string dir_;
  int size_ = 0;
  int bits_ = 8;
  sqlite3* db_ = nullptr;
  std::FILE* shard_ = nullptr;
  int64_t shard_index_ = 0;
  int64_t in_shard_ = 0;
  int pending_ = 0;
  std::unordered_set<std::string> done_;
  std::unordered_set<std::string> quarantined_;
};

// Cache bytes of a presentation image: uint8 rounded from the 16-bit values,
// or the values themselves as little-endian uint16.
std::vector<uint8_t> CacheBytes(const GrayImage& image, int cache_bits) {
  std::vector<uint8_t> out;
  if (cache_bits == 16) {
    out.resize(image.pixels.size() * 2);
    for (size_t i = 0; i < image.pixels.size(); ++i) {
      out[2 * i] = static_cast<uint8_t>(image.pixels[i] & 0xff);
      out[2 * i + 1] = static_cast<uint8_t>(image.pixels[i] >> 8);
    }
  } else {
    out.resize(image.pixels.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>((image.pixels[i] + 128u) / 257u);
  }
  return out;
}

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

struct Ingestor::State {
  IngestOptions o;
  std::optional<WorkspaceLock> lock;
  std::vector<uint8_t> key;
  std::optional<dataset::LabelTable> labels;
  Store store;
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
  RETURN_IF_ERROR(state->store.Open(o.workspace, o.image_size, o.cache_bits));
  if (state->labels) RETURN_IF_ERROR(state->store.SetFindings(state->labels->findings));
  return std::unique_ptr<Ingestor>(new Ingestor(std::move(state)));
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
  DcmFileFormat dicom;
  OFCondition c = dicom.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
  if (c.bad()) return quarantine(QuarantineReason::kUnreadable, c.text());
  DcmDataset& ds = *dicom.getDataset();
  if (auto q = CheckHeader(ds, o.filters)) return quarantine(q->reason, q->detail);
  // Labels are joined before identifiers are replaced.
  const size_t num_labels = st.labels ? st.labels->findings.size() : 0;
  std::vector<float> label_values(num_labels, -1.0f);
  if (st.labels) {
    OFString v;
    std::string label_key = path.stem().string();
    if (o.label_key == LabelKey::kSopInstanceUid) {
      ds.findAndGetOFString(DCM_SOPInstanceUID, v);
      label_key = v.c_str();
    } else if (o.label_key == LabelKey::kAccessionNumber) {
      ds.findAndGetOFString(DCM_AccessionNumber, v);
      label_key = v.c_str();
    }
    auto it = st.labels->by_key.find(label_key);
    if (it == st.labels->by_key.end()) return quarantine(QuarantineReason::kUnlabelled, "no row in the labels file");
    label_values = it->second;
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
  const GrayImage fitted = FitSquare(*gray, o.image_size, o.fit);
  const std::vector<uint8_t> pixels = CacheBytes(fitted, o.cache_bits);
  std::vector<std::string> lv;
  for (float f : label_values) lv.push_back(absl::StrCat(f));
  const std::string labels_json = absl::StrCat("[", absl::StrJoin(lv, ","), "]");
  const dataset::Split split = dataset::AssignSplit(deid.patient_pseudonym, o.split_seed, o.split);
  std::lock_guard<std::mutex> lock(st.mu);
  RETURN_IF_ERROR(st.store.AddImage(image_id, sha, deid.patient_pseudonym, study.c_str(), dataset::SplitName(split),
                                    labels_json, pixels));
  ++st.summary.ingested;
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
  RETURN_IF_ERROR(ingestor->Commit());
  RETURN_IF_ERROR(run);
  IngestSummary summary = ingestor->Summary();
  summary.scanned = static_cast<int>(files.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace fedtune::ingest
