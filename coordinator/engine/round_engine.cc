#include "coordinator/engine/round_engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <set>

#include <sqlite3.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/logging.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/fl/strategy.h"
#include "common/fl/task_spec.h"
#include "common/fl/update_validation.h"
#include "coordinator/engine/promotion.h"
#include "coordinator/engine/result_checks.h"
#include "coordinator/engine/secure_round.h"
#include "common/secagg/wire.h"

namespace fedtune::coordinator {
namespace {

namespace fs = std::filesystem;

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS sites(
  site_id TEXT PRIMARY KEY, enrolled INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL DEFAULT 0,
  capabilities BLOB, dataset BLOB);
CREATE TABLE IF NOT EXISTS jobs(
  job_id TEXT PRIMARY KEY, name TEXT NOT NULL, toml TEXT NOT NULL, state INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '', rounds_total INTEGER NOT NULL, round INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rounds(
  job_id TEXT NOT NULL REFERENCES jobs(job_id), round INTEGER NOT NULL, attempt INTEGER NOT NULL,
  kind TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
  started_ms INTEGER NOT NULL DEFAULT 0, deadline_ms INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT -1,
  PRIMARY KEY(job_id, round, attempt));
CREATE TABLE IF NOT EXISTS tasks(
  task_id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(job_id), round INTEGER NOT NULL,
  attempt INTEGER NOT NULL, site_id TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '', from_version INTEGER NOT NULL, created_ms INTEGER NOT NULL,
  deadline_ms INTEGER NOT NULL, num_examples INTEGER NOT NULL DEFAULT 0, train_loss REAL NOT NULL DEFAULT 0,
  train_seconds REAL NOT NULL DEFAULT 0, val_before BLOB, val_after BLOB, evaluation BLOB,
  update_path TEXT NOT NULL DEFAULT '', update_sha256 TEXT NOT NULL DEFAULT '',
  model_label TEXT NOT NULL DEFAULT 'federated', weights_path TEXT NOT NULL DEFAULT '',
  weights_sha256 TEXT NOT NULL DEFAULT '', weights_size INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tasks_by_site ON tasks(site_id, state);
CREATE INDEX IF NOT EXISTS tasks_by_round ON tasks(job_id, round, attempt);
CREATE TABLE IF NOT EXISTS versions(
  job_id TEXT NOT NULL REFERENCES jobs(job_id), version INTEGER NOT NULL, sha256 TEXT NOT NULL,
  path TEXT NOT NULL, size INTEGER NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY(job_id, version));
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, event BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS promotions(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, promotion BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS job_site_counts(
  job_id TEXT NOT NULL, site_id TEXT NOT NULL, train_images INTEGER NOT NULL, PRIMARY KEY(job_id, site_id));
)sql";

bool IsActive(int state) {
  return state == v1::JOB_STATE_PENDING || state == v1::JOB_STATE_RUNNING || state == v1::JOB_STATE_EVALUATING;
}

bool IsOpenTask(const std::string& state) { return state == "dispatched" || state == "running"; }

struct JobRow {
  std::string job_id, name, toml, reason;
  int state = 0, rounds_total = 0, round = 0;
  int64_t created_ms = 0, updated_ms = 0;
  // The federation's class weights (pos_weight per finding, comma-separated),
  // fixed when round 1 starts; empty before, or with class_weights != federation.
  std::string objective;
};

// What aggregating a round produced, before the transaction that records it.
struct Produced {
  WeightsFile file;        // the new global version
  std::string state_path;  // the strategy's server state ("" when stateless)
  std::string summary;     // the strategy's one-line account of the round
};

// Training images a site declared in its last Join (its shareable summary):
// the most examples an update from it may claim. A suppressed count (below
// the site's k) allows k - 1.
int64_t DeclaredTrainingImages(const v1::DatasetSummary& d) {
  for (const auto& sp : d.splits()) {
    if (sp.split() != "train") continue;
    if (sp.images() >= 0) return sp.images();
    return std::max<int64_t>(0, d.k_threshold() - 1);
  }
  return 0;
}

// The federation's objective: per finding, negatives / positives summed over
// the training splits the sites shared (suppressed counts left out), clamped
// as each site would clamp its own (1 where a class is missing).
std::vector<double> FederationPosWeight(const std::vector<std::string>& findings,
                                        const std::vector<v1::DatasetSummary>& summaries,
                                        std::vector<int>* sites_counted) {
  std::vector<double> out;
  sites_counted->assign(findings.size(), 0);
  for (size_t k = 0; k < findings.size(); ++k) {
    double pos = 0, neg = 0;
    for (const auto& d : summaries) {
      const auto it = std::find(d.findings().begin(), d.findings().end(), findings[k]);
      if (it == d.findings().end()) continue;
      const int j = static_cast<int>(it - d.findings().begin());
      for (const auto& sp : d.splits()) {
        if (sp.split() != "train" || j >= sp.positives_size() || j >= sp.negatives_size()) continue;
        if (sp.positives(j) < 0 || sp.negatives(j) < 0) continue;  // suppressed
        pos += static_cast<double>(sp.positives(j));
        neg += static_cast<double>(sp.negatives(j));
        (*sites_counted)[k]++;
      }
    }
    out.push_back(pos > 0 && neg > 0 ? std::clamp(neg / pos, 1e-3, 100.0) : 1.0);
  }
  return out;
}

struct RoundRow {
  std::string job_id, kind, state, reason;
  int round = 0, attempt = 0, version = -1;
  int64_t started_ms = 0, deadline_ms = 0;
};

struct TaskRow {
  std::string task_id, job_id, site_id, kind, state, reason, update_path, update_sha256;
  // The weights the task starts from: global version `from_version`, or (when
  // weights_path is set) a site's local-only model.
  std::string model_label = "federated", weights_path, weights_sha256;
  int64_t weights_size = 0;
  int round = 0, attempt = 0, from_version = 0;
  int64_t created_ms = 0, deadline_ms = 0, num_examples = 0;
  double train_loss = 0, train_seconds = 0;
  std::string val_before, val_after, evaluation;  // serialized EvaluationMetrics
};

constexpr char kTaskColumns[] =
    "task_id, job_id, round, attempt, site_id, kind, state, reason, from_version, created_ms, deadline_ms, "
    "num_examples, train_loss, train_seconds, val_before, val_after, evaluation, update_path, update_sha256, "
    "model_label, weights_path, weights_sha256, weights_size";

TaskRow ReadTask(const SqliteStatement& s) {
  TaskRow t;
  t.task_id = s.Text(0);
  t.job_id = s.Text(1);
  t.round = static_cast<int>(s.Int(2));
  t.attempt = static_cast<int>(s.Int(3));
  t.site_id = s.Text(4);
  t.kind = s.Text(5);
  t.state = s.Text(6);
  t.reason = s.Text(7);
  t.from_version = static_cast<int>(s.Int(8));
  t.created_ms = s.Int(9);
  t.deadline_ms = s.Int(10);
  t.num_examples = s.Int(11);
  t.train_loss = s.Double(12);
  t.train_seconds = s.Double(13);
  t.val_before = s.Text(14);
  t.val_after = s.Text(15);
  t.evaluation = s.Text(16);
  t.update_path = s.Text(17);
  t.update_sha256 = s.Text(18);
  t.model_label = s.Text(19);
  t.weights_path = s.Text(20);
  t.weights_sha256 = s.Text(21);
  t.weights_size = s.Int(22);
  return t;
}

absl::StatusOr<std::string> RandomId(std::string_view prefix, size_t bytes) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> r, SecureRandomBytes(bytes));
  return absl::StrCat(Sv(prefix), ToHex(r));
}

}  // namespace

int64_t SystemClock::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct RoundEngine::Impl {
  EngineOptions options;
  const Clock* clock = nullptr;
  std::unique_ptr<SqliteDb> db;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t changes = 0;
  bool shutdown = false;
  std::map<std::string, int64_t> last_progress_ms;  // task id -> last recorded progress
  // Securely aggregated training rounds in progress, by SecureKey (memory
  // only: see secure_round.h).
  std::map<std::string, std::unique_ptr<SecureRound>> secure_rounds;

  static std::string SecureKey(const std::string& job_id, int round, int attempt) {
    return absl::StrCat(job_id, "|", round, "|", attempt);
  }
  SecureRound* FindSecure(const std::string& job_id, int round, int attempt) {
    auto it = secure_rounds.find(SecureKey(job_id, round, attempt));
    return it == secure_rounds.end() ? nullptr : it->second.get();
  }
  static bool IsSecure(const JobSpec& spec, const std::string& kind) {
    return spec.secure_aggregation.enabled && kind == "train";
  }

  // The names of the global's tensors a site ships back, and how many
  // values they hold: the length of a securely aggregated vector.
  absl::StatusOr<int64_t> ShippedLength(const JobSpec& spec, const std::string& job_id, int version) {
    ASSIGN_OR_RETURN(std::optional<WeightsFile> w, LoadVersion(job_id, version));
    if (!w) return absl::InternalError(absl::StrCat("global version ", version, " is missing"));
    ASSIGN_OR_RETURN(std::unique_ptr<fl::Strategy> strategy, fl::MakeStrategy(spec.strategy));
    // The header says it all: no tensor is read.
    ASSIGN_OR_RETURN(SafetensorsFile global, SafetensorsFile::Open(w->path));
    int64_t n = 0;
    for (const TensorEntry& e : global.entries()) {
      if (!strategy->ShipsTensor(e.name)) continue;
      if (e.dtype != DType::kF32) {
        return absl::InvalidArgumentError(
            absl::StrCat("secure aggregation needs float32 weights; ", e.name, " is ", std::string(DTypeName(e.dtype))));
      }
      ASSIGN_OR_RETURN(int64_t values, NumElements(e.shape));
      n += values;
    }
    return n;
  }

  // Starts the secure side of a training round: each site's weight is its
  // share of the training images the round's sites declared (with
  // distributed DP: equal, as DP-FedAvg gives every site one vote).
  absl::Status StartSecureRound(const JobRow& job, const JobSpec& spec, int round, int attempt,
                                const std::vector<std::string>& sites, int64_t now, int64_t deadline) {
    std::map<std::string, double> weights;
    double total = 0;
    for (const std::string& s : sites) {
      ASSIGN_OR_RETURN(v1::DatasetSummary d, SiteSummary(s));
      ASSIGN_OR_RETURN(std::optional<int64_t> pinned, PinnedTrainingImages(job.job_id, s));
      const double n = static_cast<double>(std::max<int64_t>(1, pinned.value_or(DeclaredTrainingImages(d))));
      weights[s] = spec.secure_aggregation.distributed_dp ? 1.0 : n;
      total += weights[s];
    }
    for (auto& [s, w] : weights) w /= total;
    secagg::Params p;
    p.job_id = job.job_id;
    p.round = round;
    ASSIGN_OR_RETURN(p.length, ShippedLength(spec, job.job_id, round - 1));
    std::random_device entropy;  // public (sent to the sites); fresh per attempt
    p.graph_seed = (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
    // Advertising waits for training, leaving the other three stages their
    // time (each at most an eighth of the round's) and one more as slack.
    const int64_t stage_ms =
        std::min(static_cast<int64_t>(spec.secure_aggregation.stage_timeout_s * 1000), (deadline - now) / 8);
    const int64_t advertise_until = deadline - 4 * stage_ms;
    secure_rounds[SecureKey(job.job_id, round, attempt)] =
        std::make_unique<SecureRound>(p, std::move(weights), advertise_until, stage_ms, options.ca_pem);
    return absl::OkStatus();
  }

  // The participants a secure round still waits for: tasks open or answered.
  static std::set<std::string> LiveSites(const std::vector<TaskRow>& tasks) {
    std::set<std::string> live;
    for (const auto& t : tasks) {
      if (IsOpenTask(t.state) || t.state == "accepted") live.insert(t.site_id);
    }
    return live;
  }

  int64_t Now() const { return clock->NowMs(); }
  std::string Abs(const std::string& rel) const { return options.state_dir + "/" + rel; }

  void Changed() {
    ++changes;
    cv.notify_all();
  }

  // ---- rows ----------------------------------------------------------------
  absl::StatusOr<std::optional<JobRow>> LoadJob(const std::string& job_id) {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare("SELECT job_id, name, toml, state, reason, rounds_total, round, created_ms, "
                                 "updated_ms, objective FROM jobs WHERE job_id = ?"));
    s.Bind(1, job_id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return std::optional<JobRow>();
    JobRow j;
    j.job_id = s.Text(0);
    j.name = s.Text(1);
    j.toml = s.Text(2);
    j.state = static_cast<int>(s.Int(3));
    j.reason = s.Text(4);
    j.rounds_total = static_cast<int>(s.Int(5));
    j.round = static_cast<int>(s.Int(6));
    j.created_ms = s.Int(7);
    j.updated_ms = s.Int(8);
    j.objective = s.Text(9);
    return std::optional<JobRow>(std::move(j));
  }

  absl::StatusOr<JobRow> RequireJob(const std::string& job_id) {
    ASSIGN_OR_RETURN(std::optional<JobRow> j, LoadJob(job_id));
    if (!j) return absl::NotFoundError(absl::StrCat("no job \"", job_id, "\""));
    return *j;
  }

  // Every round of the job (only `round` when >= 0), attempts in order.
  absl::StatusOr<std::vector<RoundRow>> LoadRounds(const std::string& job_id, int round = -1) {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare("SELECT job_id, round, attempt, kind, state, reason, started_ms, deadline_ms, "
                                 "version FROM rounds WHERE job_id = ? AND (? < 0 OR round = ?) "
                                 "ORDER BY round, attempt"));
    s.BindAll(job_id, int64_t{round}, int64_t{round});
    std::vector<RoundRow> out;
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      RoundRow r;
      r.job_id = s.Text(0);
      r.round = static_cast<int>(s.Int(1));
      r.attempt = static_cast<int>(s.Int(2));
      r.kind = s.Text(3);
      r.state = s.Text(4);
      r.reason = s.Text(5);
      r.started_ms = s.Int(6);
      r.deadline_ms = s.Int(7);
      r.version = static_cast<int>(s.Int(8));
      out.push_back(std::move(r));
    }
    return out;
  }

  // The latest attempt of `round`, if any.
  absl::StatusOr<std::optional<RoundRow>> LatestRound(const std::string& job_id, int round) {
    ASSIGN_OR_RETURN(std::vector<RoundRow> all, LoadRounds(job_id, round));
    if (all.empty()) return std::optional<RoundRow>();
    return std::optional<RoundRow>(all.back());
  }

  absl::StatusOr<std::vector<TaskRow>> QueryTasks(std::string_view where, const std::vector<std::string>& args) {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare(absl::StrCat("SELECT ", kTaskColumns, " FROM tasks WHERE ", Sv(where),
                                              " ORDER BY created_ms, site_id")));
    for (size_t i = 0; i < args.size(); ++i) s.Bind(static_cast<int>(i + 1), args[i]);
    std::vector<TaskRow> out;
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.push_back(ReadTask(s));
    }
    return out;
  }

  absl::StatusOr<std::vector<TaskRow>> RoundTasks(const std::string& job_id, int round, int attempt) {
    return QueryTasks("job_id = ? AND round = ? AND attempt = ?",
                      {job_id, std::to_string(round), std::to_string(attempt)});
  }

  absl::StatusOr<std::optional<TaskRow>> LoadTask(const std::string& task_id) {
    ASSIGN_OR_RETURN(std::vector<TaskRow> t, QueryTasks("task_id = ?", {task_id}));
    if (t.empty()) return std::optional<TaskRow>();
    return std::optional<TaskRow>(t.front());
  }

  absl::StatusOr<std::optional<WeightsFile>> LoadVersion(const std::string& job_id, int version) {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare(version < 0
                                                        ? "SELECT path, sha256, size, version FROM versions WHERE "
                                                          "job_id = ? ORDER BY version DESC LIMIT 1"
                                                        : "SELECT path, sha256, size, version FROM versions WHERE "
                                                          "job_id = ? AND version = ?"));
    s.Bind(1, job_id);
    if (version >= 0) s.Bind(2, static_cast<int64_t>(version));
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return std::optional<WeightsFile>();
    return std::optional<WeightsFile>(WeightsFile{Abs(s.Text(0)), s.Text(1), s.Int(2)});
  }

  // The promotion history, oldest first.
  absl::StatusOr<std::vector<v1::Promotion>> Promotions() {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT seq, promotion FROM promotions ORDER BY seq"));
    std::vector<v1::Promotion> out;
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      v1::Promotion p;
      const std::string blob = s.Text(1);
      if (!p.ParseFromString(blob)) return absl::DataLossError("a promotion record does not parse");
      p.set_seq(s.Int(0));
      out.push_back(std::move(p));
    }
    return out;
  }

  // Appends `p` to the history (one transaction, with an event in the job's
  // history) and returns it with its sequence number.
  absl::StatusOr<v1::Promotion> RecordPromotion(v1::Promotion p) {
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("INSERT INTO promotions(promotion) VALUES(?)"));
    s.BindBlob(1, p.SerializeAsString());
    RETURN_IF_ERROR(s.Run());
    p.set_seq(sqlite3_last_insert_rowid(db->raw()));
    RETURN_IF_ERROR(AddEvent(p.job_id(), p.version(), "", p.action() == "rollback" ? "model_rolled_back" : "model_promoted",
                             absl::StrCat("version ", p.version(), " (", p.sha256().substr(0, 12), ") is the model in use, by ",
                                          p.promoted_by(), ": ", p.note())));
    RETURN_IF_ERROR(txn->Commit());
    Changed();
    spdlog::info("{} {} job {} version {} ({}): {}", p.promoted_by(), p.action() == "rollback" ? "rolled back to" : "promoted",
                 p.job_id(), p.version(), p.sha256().substr(0, 12), p.note());
    return p;
  }

  // ---- writes (inside a transaction) ----------------------------------------
  absl::Status AddEvent(const std::string& job_id, int round, const std::string& site_id, std::string_view kind,
                        std::string_view message, const std::function<void(v1::JobEvent&)>& extra = {}) {
    v1::JobEvent e;
    e.set_unix_ms(Now());
    e.set_job_id(job_id);
    e.set_round(round);
    e.set_site_id(site_id);
    e.set_kind(std::string(kind));
    e.set_message(std::string(message));
    if (extra) extra(e);
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("INSERT INTO events(job_id, event) VALUES(?, ?)"));
    s.Bind(1, job_id).BindBlob(2, e.SerializeAsString());
    return s.Run();
  }

  absl::Status SetJobState(const JobRow& job, int state, std::string_view reason, int round) {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare("UPDATE jobs SET state = ?, reason = ?, round = ?, updated_ms = ? WHERE job_id = ?"));
    s.BindAll(int64_t{state}, std::string(reason), int64_t{round}, Now(), job.job_id);
    return s.Run();
  }

  absl::Status SetTaskState(const std::string& task_id, std::string_view state, std::string_view reason) {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("UPDATE tasks SET state = ?, reason = ? WHERE task_id = ?"));
    s.BindAll(std::string(state), std::string(reason), task_id);
    return s.Run();
  }

  absl::Status UpsertRound(const RoundRow& r) {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare("INSERT OR REPLACE INTO rounds(job_id, round, attempt, kind, state, reason, "
                                 "started_ms, deadline_ms, version) VALUES(?,?,?,?,?,?,?,?,?)"));
    s.BindAll(r.job_id, int64_t{r.round}, int64_t{r.attempt}, r.kind, r.state, r.reason, r.started_ms,
              r.deadline_ms, int64_t{r.version});
    return s.Run();
  }

  // Writes `tensors` as global version `version` of the job (file first,
  // atomically; the caller records it in its transaction).
  absl::StatusOr<WeightsFile> WriteVersionFile(const std::string& job_id, int version, const TensorMap& tensors) {
    const std::string rel = absl::StrCat("blobs/", job_id, "/global-v", version, ".safetensors");
    std::error_code ec;
    fs::create_directories(fs::path(Abs(rel)).parent_path(), ec);
    ASSIGN_OR_RETURN(std::string bytes,
                     SerializeSafetensors(tensors, {{"format", "pt"},
                                                    {"fedtune.job", job_id},
                                                    {"fedtune.version", std::to_string(version)},
                                                    {fl::kGlobalStateFormatKey, fl::kGlobalStateFormat}}));
    RETURN_IF_ERROR(WriteFileAtomically(Abs(rel), bytes));
    return WeightsFile{rel, Sha256Hex(bytes), static_cast<int64_t>(bytes.size())};
  }

  // Writes a strategy's server state after version `version` (file first, as
  // for versions); "" when there is none to keep.
  absl::StatusOr<std::string> WriteServerState(const std::string& job_id, int version, const TensorMap& state) {
    if (state.empty()) return std::string();
    const std::string rel = absl::StrCat("blobs/", job_id, "/server-state-v", version, ".safetensors");
    ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(state, {{"fedtune.job", job_id},
                                                                     {"fedtune.version", std::to_string(version)}}));
    RETURN_IF_ERROR(WriteFileAtomically(Abs(rel), bytes));
    return rel;
  }

  // The server state stored with `version` (empty when none).
  absl::StatusOr<TensorMap> LoadServerState(const std::string& job_id, int version) {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT state_path FROM versions WHERE job_id = ? AND version = ?"));
    s.BindAll(job_id, int64_t{version});
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row || s.Text(0).empty()) return TensorMap();
    ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(Abs(s.Text(0))));
    return f.ReadAll();
  }

  absl::Status InsertVersion(const std::string& job_id, int version, const WeightsFile& f,
                             const std::string& state_path = "") {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("INSERT INTO versions(job_id, version, sha256, path, size, "
                                                    "created_ms, state_path) VALUES(?,?,?,?,?,?,?)"));
    s.BindAll(job_id, int64_t{version}, f.sha256, f.path, f.size, Now(), state_path);
    return s.Run();
  }

  // The dataset summary a site sent with its last Join.
  absl::StatusOr<v1::DatasetSummary> SiteSummary(const std::string& site_id) {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT dataset FROM sites WHERE site_id = ?"));
    s.Bind(1, site_id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    v1::DatasetSummary d;
    if (row) d.ParseFromString(s.Text(0));
    return d;
  }

  // Fixes the job's class weights from the sites about to train round 1.
  absl::Status SetObjective(const JobRow& job, const JobSpec& spec, const std::vector<std::string>& sites) {
    std::vector<v1::DatasetSummary> summaries;
    for (const auto& site : sites) {
      ASSIGN_OR_RETURN(v1::DatasetSummary d, SiteSummary(site));
      summaries.push_back(std::move(d));
    }
    const std::vector<std::string> findings(spec.train.findings().begin(), spec.train.findings().end());
    std::vector<int> counted;
    const std::vector<double> w = FederationPosWeight(findings, summaries, &counted);
    std::vector<std::string> text, parts;
    for (size_t k = 0; k < w.size(); ++k) {
      text.push_back(absl::StrFormat("%.17g", w[k]));
      parts.push_back(counted[k] > 0 ? absl::StrFormat("%s %.3g (%d sites)", findings[k], w[k], counted[k])
                                     : absl::StrFormat("%s 1 (no site shared its counts)", findings[k]));
    }
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("UPDATE jobs SET objective = ? WHERE job_id = ?"));
    s.BindAll(absl::StrJoin(text, ","), job.job_id);
    RETURN_IF_ERROR(s.Run());
    return AddEvent(job.job_id, 1, "", "objective",
                    absl::StrCat("class weights (negatives / positives over the sites' training splits): ",
                                 absl::StrJoin(parts, ", ")));
  }

  // ---- sites ---------------------------------------------------------------
  // Connected enrolled sites that may take part: in job.sites when set, and
  // not excluded from the job by a failure that cannot change.
  absl::StatusOr<std::vector<std::string>> AvailableSites(const JobSpec& spec, const std::string& job_id) {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare("SELECT site_id FROM sites WHERE enrolled = 1 AND last_seen_ms >= ? AND site_id "
                                 "NOT IN (SELECT site_id FROM tasks WHERE job_id = ? AND permanent = 1) "
                                 "ORDER BY site_id"));
    s.BindAll(Now() - options.site_timeout_ms, job_id);
    std::vector<std::string> out;
    const std::set<std::string> allowed(spec.sites.begin(), spec.sites.end());
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      std::string id = s.Text(0);
      if (allowed.empty() || allowed.count(id)) out.push_back(std::move(id));
    }
    return out;
  }

  // Records that a site was heard from. At most one (fsynced) write per site
  // a second: a site that calls in a tight loop costs a map lookup.
  absl::Status Touch(const std::string& site_id) {
    const int64_t now = Now();
    int64_t& last = last_touch_ms[site_id];
    if (now - last < 1000 && now >= last) return absl::OkStatus();
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("UPDATE sites SET last_seen_ms = ? WHERE site_id = ?"));
    s.BindAll(now, site_id);
    RETURN_IF_ERROR(s.Run());
    last = now;
    return absl::OkStatus();
  }
  std::map<std::string, int64_t> last_touch_ms;
  std::map<std::string, int> tick_failures;  // per job: consecutive ticks that failed

  // The training images a site declared, pinned for a job when its first
  // task reaches the site (the site pins its data for the job then too): a
  // re-join declaring more later does not raise what an update may claim.
  absl::Status PinTrainingImages(const std::string& job_id, const std::string& site_id) {
    ASSIGN_OR_RETURN(v1::DatasetSummary declared, SiteSummary(site_id));
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("INSERT OR IGNORE INTO job_site_counts VALUES(?, ?, ?)"));
    s.BindAll(job_id, site_id, DeclaredTrainingImages(declared));
    return s.Run();
  }
  absl::StatusOr<std::optional<int64_t>> PinnedTrainingImages(const std::string& job_id, const std::string& site_id) {
    ASSIGN_OR_RETURN(SqliteStatement q,
                     db->Prepare("SELECT train_images FROM job_site_counts WHERE job_id = ? AND site_id = ?"));
    q.BindAll(job_id, site_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    return row ? std::optional<int64_t>(q.Int(0)) : std::nullopt;
  }

  // ---- the job state machine -------------------------------------------------
  absl::Status Advance(const JobRow& job) {
    auto spec = ParseJobSpec(job.toml, job.job_id);
    if (!spec.ok()) return FailJob(job, absl::StrCat("job description no longer parses: ", spec.status().message()));
    if (job.state == v1::JOB_STATE_PENDING) return StartJob(job, *spec);
    ASSIGN_OR_RETURN(std::optional<RoundRow> round, LatestRound(job.job_id, job.round));
    if (!round || round->state == "waiting") {
      return StartRound(job, *spec, job.round, round ? round->attempt : 1, Phase(job, *spec),
                        round ? &*round : nullptr);
    }
    if (round->state != "running") return absl::OkStatus();
    ASSIGN_OR_RETURN(std::vector<TaskRow> tasks, RoundTasks(job.job_id, round->round, round->attempt));
    if (IsSecure(*spec, round->kind)) {
      SecureRound* secure = FindSecure(job.job_id, round->round, round->attempt);
      if (secure == nullptr) {
        return CloseRound(job, *spec, *round, tasks,
                          "the coordinator restarted during secure aggregation, and the round's keys and shares "
                          "were in its memory only");
      }
      if (secure->Advance(LiveSites(tasks), Now())) Changed();
      if (!secure->done() && Now() < round->deadline_ms) return absl::OkStatus();
      return CloseRound(job, *spec, *round, tasks);
    }
    bool all_answered = true;
    for (const auto& t : tasks) all_answered = all_answered && !IsOpenTask(t.state);
    if (!all_answered && Now() < round->deadline_ms) return absl::OkStatus();
    return CloseRound(job, *spec, *round, tasks);
  }

  // Rounds 1..R train the federated model; with baselines round R+1 trains
  // the local-only models; the last round evaluates.
  static std::string Phase(const JobRow& job, const JobSpec& spec) {
    if (job.round <= job.rounds_total) return "train";
    if (spec.baselines && job.round == job.rounds_total + 1) return "local";
    return "evaluate";
  }

  absl::Status FailJob(const JobRow& job, const std::string& reason) {
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
    RETURN_IF_ERROR(SetJobState(job, v1::JOB_STATE_FAILED, CapText(reason, kMaxReasonBytes), job.round));
    RETURN_IF_ERROR(AddEvent(job.job_id, job.round, "", "job_finished", CapText(reason, kMaxReasonBytes),
                             [](v1::JobEvent& e) { e.set_job_state(v1::JOB_STATE_FAILED); }));
    RETURN_IF_ERROR(txn->Commit());
    spdlog::warn("job {} failed: {}", job.job_id, reason);
    Changed();
    return absl::OkStatus();
  }

  absl::Status StartJob(const JobRow& job, const JobSpec& spec) {
    if (!options.initial_weights) return FailJob(job, "the coordinator has no way to create initial weights");
    auto initial = options.initial_weights(spec);
    if (!initial.ok()) return FailJob(job, absl::StrCat("initial weights: ", initial.status().message()));
    ASSIGN_OR_RETURN(WeightsFile f, WriteVersionFile(job.job_id, 0, *initial));
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
    RETURN_IF_ERROR(InsertVersion(job.job_id, 0, f));
    RETURN_IF_ERROR(SetJobState(job, v1::JOB_STATE_RUNNING, "", 1));
    RETURN_IF_ERROR(AddEvent(job.job_id, 0, "", "job_started",
                             absl::StrCat("global version 0 ", f.sha256.substr(0, 12), ", ", spec.rounds, " rounds"),
                             [](v1::JobEvent& e) { e.set_job_state(v1::JOB_STATE_RUNNING); }));
    RETURN_IF_ERROR(txn->Commit());
    Changed();
    return absl::OkStatus();
  }

  absl::Status StartRound(const JobRow& job, const JobSpec& spec, int round, int attempt, const std::string& kind,
                          const RoundRow* waiting) {
    ASSIGN_OR_RETURN(std::vector<std::string> sites, AvailableSites(spec, job.job_id));
    const size_t need = kind == "train" ? static_cast<size_t>(spec.min_sites) : 1;
    if (sites.size() < need) {
      // Waiting helps only if enough sites could still come: enrolled, in
      // job.sites, and not excluded from the job.
      ASSIGN_OR_RETURN(SqliteStatement q,
                       db->Prepare("SELECT site_id FROM sites WHERE enrolled = 1 AND site_id NOT IN (SELECT site_id "
                                   "FROM tasks WHERE job_id = ? AND permanent = 1)"));
      q.Bind(1, job.job_id);
      const std::set<std::string> allowed(spec.sites.begin(), spec.sites.end());
      size_t possible = 0;
      while (true) {
        ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        possible += allowed.empty() || allowed.count(q.Text(0)) ? 1 : 0;
      }
      if (possible < need) {
        return FailJob(job, absl::StrCat("only ", possible, " site(s) can still take part (", need,
                                         " needed): the others are excluded by failures that cannot change "
                                         "(see the site_excluded events) or no longer enrolled"));
      }
      const std::string reason = absl::StrCat("waiting for sites: ", sites.size(), " connected, ", need, " needed");
      if (waiting && waiting->reason == reason) return absl::OkStatus();
      ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
      RoundRow r{job.job_id, kind, "waiting", reason, round, attempt, -1, 0, 0};
      RETURN_IF_ERROR(UpsertRound(r));
      RETURN_IF_ERROR(AddEvent(job.job_id, round, "", "round_waiting", reason));
      RETURN_IF_ERROR(txn->Commit());
      Changed();
      return absl::OkStatus();
    }
    // What each site runs: (model label, weights) pairs.
    struct Work {
      std::string label = "federated";
      int from_version = 0;
      std::string path, sha;
      int64_t size = 0;
      std::string only_site;  // a local-only model its site keeps to itself
    };
    std::vector<Work> work;
    if (kind == "train") {
      work.push_back({"federated", round - 1, "", "", 0, ""});
    } else if (kind == "local") {
      work.push_back({"local", 0, "", "", 0, ""});  // label completed per site below
    } else {
      work.push_back({"federated", job.rounds_total, "", "", 0, ""});
      if (spec.baselines) {
        ASSIGN_OR_RETURN(std::vector<TaskRow> locals,
                         QueryTasks("job_id = ? AND round = ? AND state = 'accepted'",
                                    {job.job_id, std::to_string(job.rounds_total + 1)}));
        for (const auto& l : locals) {
          std::error_code ec;
          const auto size = std::filesystem::file_size(Abs(l.update_path), ec);
          if (ec) {
            // Recorded, and the evaluation goes on without that baseline.
            RETURN_IF_ERROR(AddEvent(job.job_id, round, l.site_id, "baseline_missing",
                                     absl::StrCat("the local-only model of ", l.site_id, " (", l.update_path,
                                                  ") cannot be read: ", ec.message(), "; not evaluated")));
            continue;
          }
          // A site that does not share its local-only model marked it so
          // (fl::kHomeOnlyKey): it is evaluated at that site only.
          std::string only_site;
          if (auto file = SafetensorsFile::Open(Abs(l.update_path));
              file.ok() && file->metadata().count(fl::kHomeOnlyKey)) {
            only_site = l.site_id;
            RETURN_IF_ERROR(AddEvent(job.job_id, round, l.site_id, "baseline_home_only",
                                     absl::StrCat("the local-only model of ", l.site_id,
                                                  " is evaluated at its site only (it does not share it)")));
          }
          work.push_back(
              {"local:" + l.site_id, 0, l.update_path, l.update_sha256, static_cast<int64_t>(size), only_site});
        }
      }
    }
    const int64_t now = Now();
    const double scale = kind == "local" ? spec.rounds : static_cast<double>(work.size());
    const int64_t deadline = now + static_cast<int64_t>(spec.round_deadline_s * 1000 * scale);
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
    if (kind == "train" && job.objective.empty() && spec.train.class_weights() == "federation") {
      RETURN_IF_ERROR(SetObjective(job, spec, sites));
    }
    RETURN_IF_ERROR(UpsertRound({job.job_id, kind, "running", "", round, attempt, -1, now, deadline}));
    ASSIGN_OR_RETURN(SqliteStatement ins,
                     db->Prepare("INSERT INTO tasks(task_id, job_id, round, attempt, site_id, kind, state, "
                                 "from_version, created_ms, deadline_ms, model_label, weights_path, weights_sha256, "
                                 "weights_size) VALUES(?,?,?,?,?,?,'dispatched',?,?,?,?,?,?,?)"));
    int64_t order = 0;
    for (const auto& site : sites) {
      for (const Work& w : work) {
        if (!w.only_site.empty() && w.only_site != site) continue;
        ASSIGN_OR_RETURN(std::string task_id, RandomId("t", 12));
        const std::string label = w.label == "local" ? "local:" + site : w.label;
        // created_ms orders a site's tasks: the federated model first.
        ins.BindAll(task_id, job.job_id, int64_t{round}, int64_t{attempt}, site,
                    kind == "local" ? std::string("train") : kind, int64_t{w.from_version}, now + order++, deadline,
                    label, w.path, w.sha, w.size);
        RETURN_IF_ERROR(ins.Run());
        ins.Reset();
      }
    }
    if (kind == "evaluate" && job.state != v1::JOB_STATE_EVALUATING) {
      RETURN_IF_ERROR(SetJobState(job, v1::JOB_STATE_EVALUATING, "", round));
    }
    if (IsSecure(spec, kind)) RETURN_IF_ERROR(StartSecureRound(job, spec, round, attempt, sites, now, deadline));
    RETURN_IF_ERROR(AddEvent(
        job.job_id, round, "",
        kind == "train" ? "round_started" : kind == "local" ? "baselines_started" : "evaluation_started",
        absl::StrCat(kind == "train"   ? absl::StrCat("round ", round)
                     : kind == "local" ? std::string("local-only baselines")
                                       : absl::StrCat("final evaluation of ", work.size(), " model(s)"),
                     attempt > 1 ? absl::StrCat(" (attempt ", attempt, ")") : "", ": ", absl::StrJoin(sites, ", ")),
        [&](v1::JobEvent& e) {
          e.set_job_state(kind == "train" ? v1::JOB_STATE_RUNNING : v1::JOB_STATE_EVALUATING);
        }));
    RETURN_IF_ERROR(txn->Commit());
    Changed();
    return absl::OkStatus();
  }

  // `failure`, when set, fails the round without aggregating (it is
  // retried or fails the job, as for a missing quorum).
  absl::Status CloseRound(const JobRow& job, const JobSpec& spec, RoundRow round, const std::vector<TaskRow>& tasks,
                          std::string failure = "") {
    // A secure round's state goes with the round, whatever its outcome.
    std::unique_ptr<SecureRound> secure;
    if (auto it = secure_rounds.find(SecureKey(job.job_id, round.round, round.attempt)); it != secure_rounds.end()) {
      secure = std::move(it->second);
      secure_rounds.erase(it);
    }
    std::vector<const TaskRow*> accepted;
    for (const auto& t : tasks) {
      if (t.state == "accepted") accepted.push_back(&t);
    }
    const bool evaluate = round.kind == "evaluate";
    const bool local = round.kind == "local";
    // Aggregate before opening the transaction: the new version's file must
    // exist before a row points at it.
    std::optional<Produced> produced;
    if (failure.empty() && !evaluate && !local && static_cast<int>(accepted.size()) >= spec.min_sites) {
      auto f = secure ? AggregateSecurely(job, spec, round, accepted, *secure) : Aggregate(job, spec, round, accepted);
      if (f.ok()) {
        produced = *f;
      } else {
        failure = absl::StrCat("round ", round.round, ": aggregation failed: ", f.status().message());
      }
    }
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
    for (const auto& t : tasks) {
      if (!IsOpenTask(t.state)) continue;
      RETURN_IF_ERROR(SetTaskState(t.task_id, "timed_out", "no result before the round deadline"));
      RETURN_IF_ERROR(AddEvent(job.job_id, round.round, t.site_id, "task_timed_out",
                               "no result before the round deadline"));
    }
    if (local) {
      round.state = "done";
      RETURN_IF_ERROR(UpsertRound(round));
      RETURN_IF_ERROR(SetJobState(job, v1::JOB_STATE_RUNNING, "", round.round + 1));
      RETURN_IF_ERROR(AddEvent(job.job_id, round.round, "", "baselines_done",
                               absl::StrCat(accepted.size(), " of ", tasks.size(), " local-only models")));
    } else if (evaluate) {
      round.state = "done";
      RETURN_IF_ERROR(UpsertRound(round));
      const std::string reason =
          absl::StrCat("final evaluation: ", accepted.size(), " of ", tasks.size(), " evaluations");
      RETURN_IF_ERROR(SetJobState(job, v1::JOB_STATE_SUCCEEDED, reason, round.round));
      RETURN_IF_ERROR(AddEvent(job.job_id, round.round, "", "job_finished", reason,
                               [](v1::JobEvent& e) { e.set_job_state(v1::JOB_STATE_SUCCEEDED); }));
    } else if (produced) {
      RETURN_IF_ERROR(InsertVersion(job.job_id, round.round, produced->file, produced->state_path));
      round.state = "aggregated";
      round.version = round.round;
      RETURN_IF_ERROR(UpsertRound(round));
      RETURN_IF_ERROR(SetJobState(job, v1::JOB_STATE_RUNNING, "", round.round + 1));
      RETURN_IF_ERROR(AddEvent(job.job_id, round.round, "", "round_aggregated",
                               absl::StrCat("round ", round.round, ": ", accepted.size(), " of ", tasks.size(),
                                            " updates -> global version ", round.round, " ",
                                            produced->file.sha256.substr(0, 12),
                                            produced->summary.empty() ? "" : "; ", produced->summary)));
    } else {
      if (failure.empty()) {
        failure = absl::StrCat("round ", round.round, " attempt ", round.attempt, ": ", accepted.size(), " of ",
                               tasks.size(), " sites returned a valid update (min_sites = ", spec.min_sites, ")");
      }
      const bool retry = spec.on_quorum_failure == QuorumPolicy::kRetry && round.attempt < spec.max_round_attempts;
      round.state = retry ? "retried" : "failed";
      round.reason = failure;
      RETURN_IF_ERROR(UpsertRound(round));
      if (retry) {
        RETURN_IF_ERROR(UpsertRound({job.job_id, "train", "waiting", "", round.round, round.attempt + 1, -1, 0, 0}));
        RETURN_IF_ERROR(AddEvent(job.job_id, round.round, "", "round_retried", failure));
      } else {
        const std::string reason = absl::StrCat(failure, spec.on_quorum_failure == QuorumPolicy::kRetry
                                                             ? absl::StrCat("; no attempts left (max_round_attempts = ",
                                                                            spec.max_round_attempts, ")")
                                                             : "; on_quorum_failure = \"fail\"");
        RETURN_IF_ERROR(SetJobState(job, v1::JOB_STATE_FAILED, reason, round.round));
        RETURN_IF_ERROR(AddEvent(job.job_id, round.round, "", "job_finished", reason,
                                 [](v1::JobEvent& e) { e.set_job_state(v1::JOB_STATE_FAILED); }));
      }
    }
    RETURN_IF_ERROR(txn->Commit());
    Changed();
    CountRound(round);
    return absl::OkStatus();
  }

  // A closed round in the metrics: by kind (train, local, evaluate) and
  // outcome (aggregated, done, retried, failed), with its duration.
  void CountRound(const RoundRow& round) {
    if (options.metrics == nullptr) return;
    options.metrics
        ->GetCounter("fedtune_coordinator_rounds_total", "Rounds closed, by kind and outcome",
                     {{"kind", round.kind}, {"outcome", round.state}})
        .Add();
    if (round.started_ms > 0) {
      options.metrics
          ->GetHistogram("fedtune_coordinator_round_duration_seconds",
                         "From a round's tasks going out to the round closing, in seconds",
                         ExponentialBuckets(1, 2, 14), {{"kind", round.kind}})
          .Observe(static_cast<double>(Now() - round.started_ms) / 1000.0);
    }
  }

  // Streams the accepted updates through the job's strategy: one update in
  // memory at a time besides the global model and the accumulator.
  absl::StatusOr<Produced> Aggregate(const JobRow& job, const JobSpec& spec, const RoundRow& round,
                                     const std::vector<const TaskRow*>& accepted) {
    ASSIGN_OR_RETURN(std::optional<WeightsFile> from, LoadVersion(job.job_id, round.round - 1));
    if (!from) return absl::InternalError(absl::StrCat("global version ", round.round - 1, " is missing"));
    ASSIGN_OR_RETURN(std::unique_ptr<fl::Strategy> strategy, MakeJobStrategy(spec));
    {
      ASSIGN_OR_RETURN(SafetensorsFile global, SafetensorsFile::Open(from->path));
      ASSIGN_OR_RETURN(TensorMap state, LoadServerState(job.job_id, round.round - 1));
      RETURN_IF_ERROR(strategy->Begin(global.ReadAll(), state));
    }
    for (const TaskRow* t : accepted) {
      ASSIGN_OR_RETURN(SafetensorsFile update, SafetensorsFile::Open(Abs(t->update_path)));
      RETURN_IF_ERROR(strategy->Add(t->site_id, update.ReadAll(), t->num_examples));
    }
    ASSIGN_OR_RETURN(fl::Aggregate next, strategy->Finish());
    Produced out;
    ASSIGN_OR_RETURN(out.file, WriteVersionFile(job.job_id, round.round, next.global));
    ASSIGN_OR_RETURN(out.state_path, WriteServerState(job.job_id, round.round, next.server_state));
    out.summary = std::move(next.summary);
    return out;
  }

  // A secure round's mean difference, added to the global's shipped tensors
  // (in name order, as the sites flattened them), goes through the strategy
  // as one update carrying every accepted example: for the linear
  // strategies that is the same step as the sites' updates one by one.
  absl::StatusOr<Produced> AggregateSecurely(const JobRow& job, const JobSpec& spec, const RoundRow& round,
                                             const std::vector<const TaskRow*>& accepted, const SecureRound& secure) {
    ASSIGN_OR_RETURN(std::vector<double> mean, secure.Mean(spec.secure_aggregation.bound));
    ASSIGN_OR_RETURN(std::optional<WeightsFile> from, LoadVersion(job.job_id, round.round - 1));
    if (!from) return absl::InternalError(absl::StrCat("global version ", round.round - 1, " is missing"));
    ASSIGN_OR_RETURN(std::unique_ptr<fl::Strategy> strategy, MakeJobStrategy(spec));
    ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(from->path));
    const TensorMap global = file.ReadAll();
    TensorMap averaged;
    size_t offset = 0;
    for (const auto& [name, tensor] : global) {
      if (!strategy->ShipsTensor(name)) continue;
      ASSIGN_OR_RETURN(std::vector<float> values, tensor.ToFloats());
      if (offset + values.size() > mean.size()) return absl::InternalError("the secure sum is shorter than the model");
      for (size_t i = 0; i < values.size(); ++i) values[i] += static_cast<float>(mean[offset + i]);
      offset += values.size();
      ASSIGN_OR_RETURN(Tensor t, Tensor::FromFloats(tensor.shape, values));
      averaged.emplace(name, std::move(t));
    }
    if (offset != mean.size()) return absl::InternalError("the secure sum is longer than the model");
    int64_t examples = 0;
    for (const TaskRow* t : accepted) examples += t->num_examples;
    {
      ASSIGN_OR_RETURN(TensorMap state, LoadServerState(job.job_id, round.round - 1));
      RETURN_IF_ERROR(strategy->Begin(global, state));
    }
    RETURN_IF_ERROR(strategy->Add("secure-aggregate", averaged, std::max<int64_t>(1, examples)));
    ASSIGN_OR_RETURN(fl::Aggregate next, strategy->Finish());
    Produced out;
    ASSIGN_OR_RETURN(out.file, WriteVersionFile(job.job_id, round.round, next.global));
    ASSIGN_OR_RETURN(out.state_path, WriteServerState(job.job_id, round.round, next.server_state));
    out.summary = secure.Summary();
    if (!next.summary.empty()) absl::StrAppend(&out.summary, "; ", next.summary);
    return out;
  }

  // ---- task building --------------------------------------------------------
  absl::StatusOr<v1::Task> BuildTask(const TaskRow& t) {
    ASSIGN_OR_RETURN(JobRow job, RequireJob(t.job_id));
    ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(job.toml, job.job_id));
    ASSIGN_OR_RETURN(WeightsFile w, TaskWeights(t));
    v1::Task task;
    task.set_task_id(t.task_id);
    task.set_job_id(t.job_id);
    task.set_round(t.round);
    task.set_deadline_unix_ms(t.deadline_ms);
    v1::WeightsRef ref;
    ref.set_job_id(t.job_id);
    ref.set_version(t.from_version);
    ref.set_sha256(w.sha256);
    ref.set_size_bytes(w.size);
    ref.set_model_label(t.model_label);
    if (t.kind == "train") {
      auto* train = task.mutable_train();
      *train->mutable_config() = spec.train;
      RETURN_IF_ERROR(SetPosWeight(job, spec, train->mutable_config()));
      if (t.model_label != "federated") {
        // A local-only baseline: the whole federation's budget at one site.
        train->mutable_config()->set_local_epochs(spec.train.local_epochs() * spec.rounds);
      }
      *train->mutable_weights() = ref;
      train->set_backbone_sha256(spec.backbone_sha256);
      train->set_backbone_architecture(spec.backbone_architecture);
      if (IsSecure(spec, "train") && t.model_label == "federated") {
        const SecureRound* secure = FindSecure(t.job_id, t.round, t.attempt);
        if (secure == nullptr) {
          return absl::FailedPreconditionError("this round's secure aggregation was lost with a coordinator restart");
        }
        auto* sa = train->mutable_secure_aggregation();
        sa->set_weight(secure->weight(t.site_id));
        sa->set_bound(spec.secure_aggregation.bound);
        sa->set_length(secure->params().length);
        sa->set_graph_seed(secure->params().graph_seed);
        sa->set_degree(secure->params().degree);
        sa->set_threshold(secure->params().threshold);
        if (spec.secure_aggregation.distributed_dp) {
          sa->set_clip_norm(spec.privacy.clip_norm);
          sa->set_noise_stddev(spec.secure_aggregation.site_noise_stddev);
        }
      }
    } else {
      auto* ev = task.mutable_evaluate();
      *ev->mutable_weights() = ref;
      ev->mutable_findings()->CopyFrom(spec.train.findings());
      ev->set_split("test");
      ev->set_backbone_sha256(spec.backbone_sha256);
      ev->set_backbone_architecture(spec.backbone_architecture);
      *ev->mutable_config() = spec.train;
      RETURN_IF_ERROR(SetPosWeight(job, spec, ev->mutable_config()));
      ev->set_model_label(t.model_label);
    }
    return task;
  }

  // The job's fixed class weights into a task's configuration.
  static absl::Status SetPosWeight(const JobRow& job, const JobSpec& spec, v1::TrainConfig* config) {
    if (spec.train.class_weights() != "federation") return absl::OkStatus();
    if (job.objective.empty()) {
      // A job submitted before class weights were fixed per job, past its
      // first round: it keeps weighing each site by its own counts.
      config->set_class_weights("site");
      return absl::OkStatus();
    }
    for (absl::string_view part : absl::StrSplit(job.objective, ',')) {
      double w = 0;
      if (!absl::SimpleAtod(part, &w)) return absl::DataLossError("jobs.objective is unreadable");
      config->add_pos_weight(w);
    }
    if (config->pos_weight_size() != config->findings_size()) {
      return absl::DataLossError("jobs.objective does not have one weight per finding");
    }
    return absl::OkStatus();
  }

  // The file a task's weights come from.
  absl::StatusOr<WeightsFile> TaskWeights(const TaskRow& t) {
    if (!t.weights_path.empty()) return WeightsFile{Abs(t.weights_path), t.weights_sha256, t.weights_size};
    ASSIGN_OR_RETURN(std::optional<WeightsFile> w, LoadVersion(t.job_id, t.from_version));
    if (!w) return absl::InternalError(absl::StrCat("global version ", t.from_version, " is missing"));
    return *w;
  }

  // Where a received update body waits for validation (state_dir/incoming/).
  absl::StatusOr<std::string> IncomingPath(const std::string& task_id) {
    ASSIGN_OR_RETURN(std::string nonce, RandomId("", 6));
    std::string safe;
    for (char c : task_id.substr(0, 64)) safe.push_back(absl::ascii_isalnum(static_cast<unsigned char>(c)) ? c : '_');
    return Abs(absl::StrCat("incoming/", safe, "-", nonce, ".part"));
  }

  // The header of a result against its task. `result` is set when the
  // answer is already known (stale, duplicate, mismatched); errors are for
  // unknown tasks and another site's task (recorded as an event).
  struct Checked {
    TaskRow task;
    std::optional<SubmitResult> result;
  };
  absl::StatusOr<Checked> CheckHeader(const std::string& site_id, const v1::UpdateHeader& header) {
    ASSIGN_OR_RETURN(std::optional<TaskRow> found, LoadTask(header.task_id()));
    if (!found) return absl::NotFoundError("unknown task");
    Checked c{*found, std::nullopt};
    const TaskRow& t = c.task;
    if (t.site_id != site_id) {
      const std::string reason = absl::StrCat("site ", site_id, " tried to submit for another site's task");
      ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
      RETURN_IF_ERROR(AddEvent(t.job_id, t.round, site_id, "update_refused", reason));
      RETURN_IF_ERROR(txn->Commit());
      Changed();
      spdlog::warn("{}", reason);
      return absl::PermissionDeniedError("the task belongs to another site");
    }
    RETURN_IF_ERROR(Touch(site_id));
    if (header.job_id() != t.job_id || header.round() != t.round) {
      c.result = SubmitResult{false, "job id or round does not match the task", "mismatch"};
      return c;
    }
    if (t.state == "accepted" || t.state == "refused" || t.state == "failed") {
      c.result = SubmitResult{false, absl::StrCat("duplicate: task already answered (", t.state, ")"), "duplicate"};
      return c;
    }
    ASSIGN_OR_RETURN(JobRow job, RequireJob(t.job_id));
    if (!IsOpenTask(t.state) || !IsActive(job.state) || job.round != t.round) {
      c.result = SubmitResult{false, absl::StrCat("stale: round ", t.round, " is closed (task ", t.state, ")"), "stale"};
    } else if (Now() >= t.deadline_ms) {
      c.result = SubmitResult{false, absl::StrCat("stale: round ", t.round, " deadline passed"), "stale"};
    }
    return c;
  }

  // A securely aggregated site's masked vector: checked against its header
  // (outside the lock), then added to the round's modular sum. Nothing of
  // it is kept: the body is removed by the caller, the row records its hash.
  absl::StatusOr<SubmitResult> SubmitMasked(const std::string& site_id, const v1::UpdateHeader& header,
                                            const TaskRow& t, const std::string& body_path) {
    std::string refusal;
    const char* code = "";
    ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(body_path));
    std::string sha;
    if (static_cast<int64_t>(bytes.size()) != header.total_size()) {
      refusal = absl::StrCat("received ", bytes.size(), " bytes, header announced ", header.total_size());
      code = "size";
    } else if ((sha = Sha256Hex(bytes)) != header.sha256()) {
      refusal = "SHA-256 of the received bytes does not match the header";
      code = "checksum";
    }
    std::unique_lock lock(mu);
    ASSIGN_OR_RETURN(Checked again, CheckHeader(site_id, header));
    if (again.result) return *again.result;
    if (!refusal.empty()) return Refuse(t, refusal, code);
    SecureRound* secure = FindSecure(t.job_id, t.round, t.attempt);
    if (secure == nullptr) return Refuse(t, "this round's secure aggregation was lost with a coordinator restart", "stale");
    auto vector = secagg::VectorFromBytes(bytes, secure->params().length);
    if (!vector.ok()) return Refuse(t, std::string(vector.status().message()), "format");
    // Checked before the row is written, added after it is: a vector is in
    // the sum exactly when its task is recorded as accepted.
    if (auto st = secure->CanAddMasked(site_id, vector->size()); !st.ok()) {
      return Refuse(t, std::string(st.message()), "content");
    }
    RETURN_IF_ERROR(RecordAccepted(t, header, "", sha, ", masked (secure aggregation)"));
    RETURN_IF_ERROR(secure->AddMasked(site_id, *vector));
    Changed();
    return SubmitResult{true, ""};
  }

  // An accepted training update's row (its body at `update_path`, "" when
  // none is kept) and event, in one transaction.
  absl::Status RecordAccepted(const TaskRow& t, const v1::UpdateHeader& header, const std::string& update_path,
                              const std::string& sha, std::string_view note) {
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
    ASSIGN_OR_RETURN(SqliteStatement s,
                     db->Prepare("UPDATE tasks SET state = 'accepted', num_examples = ?, train_loss = ?, "
                                 "train_seconds = ?, val_before = ?, val_after = ?, update_path = ?, "
                                 "update_sha256 = ? WHERE task_id = ?"));
    s.Bind(1, header.num_examples())
        .Bind(2, header.train_loss())
        .Bind(3, header.train_seconds())
        .BindBlob(4, header.val_before().SerializeAsString())
        .BindBlob(5, header.val_after().SerializeAsString())
        .Bind(6, update_path)
        .Bind(7, sha)
        .Bind(8, t.task_id);
    RETURN_IF_ERROR(s.Run());
    RETURN_IF_ERROR(AddEvent(t.job_id, t.round, t.site_id, "update_accepted",
                             absl::StrCat(header.num_examples(), " examples", std::string(note)),
                             [&](v1::JobEvent& e) {
                               e.set_loss(header.train_loss());
                               e.set_val_auroc(header.val_after().has_macro_auroc()
                                                   ? header.val_after().macro_auroc()
                                                   : std::numeric_limits<double>::quiet_NaN());
                             }));
    return txn->Commit();
  }

  // Records a refused result (the task is answered: it is not retried).
  // `code` is the one-word reason of SubmitResult::code.
  absl::StatusOr<SubmitResult> Refuse(const TaskRow& t, const std::string& reason, const char* code) {
    spdlog::warn("update from {} for task {} refused: {}", t.site_id, t.task_id, reason);
    RETURN_IF_ERROR(RefuseTask(t, "refused", reason));
    return SubmitResult{false, reason, code};
  }

  // `permanent`: the site takes no further part in the job (the failure
  // cannot change by retrying), and the job says so.
  absl::Status RefuseTask(const TaskRow& t, std::string_view state, const std::string& reason,
                          bool permanent = false) {
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*db));
    RETURN_IF_ERROR(SetTaskState(t.task_id, state, reason));
    RETURN_IF_ERROR(AddEvent(t.job_id, t.round, t.site_id, state == "failed" ? "task_failed" : "update_refused",
                             reason));
    if (permanent) {
      ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("UPDATE tasks SET permanent = 1 WHERE task_id = ?"));
      s.Bind(1, t.task_id);
      RETURN_IF_ERROR(s.Run());
      RETURN_IF_ERROR(AddEvent(t.job_id, t.round, t.site_id, "site_excluded",
                               absl::StrCat(t.site_id, " takes no further part in this job: ", reason)));
    }
    RETURN_IF_ERROR(txn->Commit());
    Changed();
    return absl::OkStatus();
  }
};

RoundEngine::RoundEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RoundEngine::~RoundEngine() = default;

absl::StatusOr<std::unique_ptr<RoundEngine>> RoundEngine::Open(const EngineOptions& options, const Clock* clock) {
  if (options.state_dir.empty()) return absl::InvalidArgumentError("the coordinator needs a state directory");
  std::error_code ec;
  for (const char* sub : {"/blobs", "/incoming"}) {
    fs::create_directories(options.state_dir + sub, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", options.state_dir, ": ", ec.message()));
  }
  fs::permissions(options.state_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  // Bodies of uploads a stopped coordinator never finished are not results.
  for (const auto& e : fs::directory_iterator(options.state_dir + "/incoming", ec)) {
    std::error_code ignored;
    fs::remove(e.path(), ignored);
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->clock = clock;
  const std::string db_path = options.state_dir + "/coordinator.sqlite";
  ASSIGN_OR_RETURN(impl->db, SqliteDb::Open(db_path));
  if (absl::Status ok = impl->db->QuickCheck(); !ok.ok()) {
    return absl::DataLossError(absl::StrCat(
        db_path, " is damaged (", ok.message(),
        "). Stop here: restore the state directory from a backup (fedtune-coordinator backup; see the README's "
        "operations section) rather than starting on it"));
  }
  RETURN_IF_ERROR(impl->db->Exec(kSchema));
  // Columns added after the first release: databases of older coordinators gain them.
  RETURN_IF_ERROR(impl->db->EnsureColumn("versions", "state_path", "TEXT NOT NULL DEFAULT ''"));
  RETURN_IF_ERROR(impl->db->EnsureColumn("jobs", "objective", "TEXT NOT NULL DEFAULT ''"));
  RETURN_IF_ERROR(impl->db->EnsureColumn("sites", "session", "TEXT NOT NULL DEFAULT ''"));
  RETURN_IF_ERROR(impl->db->EnsureColumn("tasks", "permanent", "INTEGER NOT NULL DEFAULT 0"));
  return std::unique_ptr<RoundEngine>(new RoundEngine(std::move(impl)));
}

absl::Status RoundEngine::SetEnrolledSites(const std::vector<std::string>& site_ids) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*impl_->db));
  RETURN_IF_ERROR(impl_->db->Exec("UPDATE sites SET enrolled = 0"));
  ASSIGN_OR_RETURN(SqliteStatement s, impl_->db->Prepare("INSERT INTO sites(site_id, enrolled) VALUES(?, 1) "
                                                         "ON CONFLICT(site_id) DO UPDATE SET enrolled = 1"));
  for (const auto& id : site_ids) {
    s.Bind(1, id);
    RETURN_IF_ERROR(s.Run());
    s.Reset();
  }
  RETURN_IF_ERROR(txn->Commit());
  impl_->Changed();
  return absl::OkStatus();
}

bool RoundEngine::IsEnrolled(const std::string& site_id) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->db->Prepare("SELECT enrolled FROM sites WHERE site_id = ?");
  if (!s.ok()) return false;
  s->Bind(1, site_id);
  auto row = s->Step();
  return row.ok() && *row && s->Int(0) == 1;
}

absl::Status RoundEngine::Join(const std::string& site_id, const v1::Capabilities& capabilities,
                               const v1::DatasetSummary& dataset, const std::string& session) {
  std::lock_guard lock(impl_->mu);
  {
    ASSIGN_OR_RETURN(SqliteStatement q,
                     impl_->db->Prepare("SELECT session, last_seen_ms FROM sites WHERE site_id = ? AND enrolled = 1"));
    q.Bind(1, site_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) {
      return absl::PermissionDeniedError(absl::StrCat("site \"", site_id, "\" is not enrolled in this federation"));
    }
    const std::string current = q.Text(0);
    const int64_t idle_ms = impl_->Now() - q.Int(1);
    if (!current.empty() && current != session && idle_ms < impl_->options.site_timeout_ms) {
      spdlog::warn("refused a second daemon with the certificate of site {}: session {} is live (last heard {} s "
                   "ago)", site_id, current.substr(0, 8), idle_ms / 1000);
      return absl::AlreadyExistsError(absl::StrCat(
          "another daemon with the certificate of site \"", site_id, "\" is connected (last heard ", idle_ms / 1000,
          " s ago). Run one daemon per site; if that one has stopped, this one is let in ",
          (impl_->options.site_timeout_ms - idle_ms) / 1000 + 1, " s after it was last heard"));
    }
  }
  ASSIGN_OR_RETURN(SqliteStatement s,
                   impl_->db->Prepare("UPDATE sites SET last_seen_ms = ?, capabilities = ?, dataset = ?, session = ? "
                                      "WHERE site_id = ? AND enrolled = 1"));
  s.Bind(1, impl_->Now())
      .BindBlob(2, capabilities.SerializeAsString())
      .BindBlob(3, dataset.SerializeAsString())
      .Bind(4, session)
      .Bind(5, site_id);
  RETURN_IF_ERROR(s.Run());
  impl_->Changed();
  return absl::OkStatus();
}

absl::Status RoundEngine::CheckSession(const std::string& site_id, const std::string& session) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(SqliteStatement q, impl_->db->Prepare("SELECT session FROM sites WHERE site_id = ?"));
  q.Bind(1, site_id);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row || q.Text(0) != session) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this daemon's session is not site \"", site_id, "\"'s current one: join first (another daemon with the "
        "same certificate may have joined)"));
  }
  return absl::OkStatus();
}

std::string RoundEngine::IncomingDirectory() const { return impl_->options.state_dir + "/incoming"; }

absl::StatusOr<PollResult> RoundEngine::Poll(const std::string& site_id, const std::string& running_task_id) {
  std::lock_guard lock(impl_->mu);
  RETURN_IF_ERROR(impl_->Touch(site_id));
  PollResult out;
  if (!running_task_id.empty()) {
    ASSIGN_OR_RETURN(std::optional<TaskRow> running, impl_->LoadTask(running_task_id));
    if (running && running->site_id == site_id && !IsOpenTask(running->state)) out.cancel_task_id = running_task_id;
  }
  ASSIGN_OR_RETURN(std::vector<TaskRow> open,
                   impl_->QueryTasks("site_id = ? AND state IN ('dispatched', 'running')", {site_id}));
  for (const TaskRow& t : open) {
    ASSIGN_OR_RETURN(JobRow job, impl_->RequireJob(t.job_id));
    if (!IsActive(job.state) || impl_->Now() >= t.deadline_ms) continue;
    if (t.state == "running" && t.task_id == running_task_id) return out;  // still working on it
    ASSIGN_OR_RETURN(v1::Task task, impl_->BuildTask(t));
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*impl_->db));
    RETURN_IF_ERROR(impl_->SetTaskState(t.task_id, "running", ""));
    RETURN_IF_ERROR(impl_->PinTrainingImages(t.job_id, site_id));
    RETURN_IF_ERROR(impl_->AddEvent(t.job_id, t.round, site_id, "task_dispatched",
                                    t.state == "running" ? "task sent again (the site restarted)" : t.kind));
    RETURN_IF_ERROR(txn->Commit());
    impl_->Changed();
    out.task = std::move(task);
    return out;
  }
  return out;
}

absl::StatusOr<WeightsFile> RoundEngine::WeightsForTask(const std::string& site_id, const std::string& task_id,
                                                        const v1::WeightsRef& ref) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(std::optional<TaskRow> t, impl_->LoadTask(task_id));
  if (!t) return absl::NotFoundError("unknown task");
  if (t->site_id != site_id) return absl::PermissionDeniedError("the task belongs to another site");
  ASSIGN_OR_RETURN(WeightsFile w, impl_->TaskWeights(*t));
  if (ref.job_id() != t->job_id || ref.version() != t->from_version || ref.sha256() != w.sha256) {
    return absl::PermissionDeniedError("the task does not use these weights");
  }
  return w;
}

absl::StatusOr<UploadLimit> RoundEngine::BeginUpload(const std::string& site_id, const v1::UpdateHeader& header) {
  std::unique_lock lock(impl_->mu);
  ASSIGN_OR_RETURN(Impl::Checked c, impl_->CheckHeader(site_id, header));
  UploadLimit out;
  if (c.result) {
    out.refused = std::move(c.result);
    return out;
  }
  if (c.task.kind == "evaluate" || !header.failure_reason().empty()) return out;  // no body
  // An update holds (a subset of) the global's tensors in the same dtype:
  // its size is bounded by the global file's, plus room for a longer header.
  ASSIGN_OR_RETURN(WeightsFile from, impl_->TaskWeights(c.task));
  out.max_bytes = std::min(impl_->options.max_update_bytes, from.size + from.size / 8 + (64 << 10));
  if (header.total_size() < 0 || header.total_size() > out.max_bytes) {
    const std::string reason =
        absl::StrCat("the update announces ", header.total_size(), " bytes; this task's model allows at most ",
                     out.max_bytes);
    ASSIGN_OR_RETURN(SubmitResult r, impl_->Refuse(c.task, reason, "too_large"));
    out.refused = std::move(r);
  }
  return out;
}

absl::StatusOr<SubmitResult> RoundEngine::Submit(const std::string& site_id, const v1::UpdateHeader& header,
                                                 std::string bytes) {
  ASSIGN_OR_RETURN(std::string path, impl_->IncomingPath(header.task_id()));
  RETURN_IF_ERROR(WriteFileAtomically(path, bytes));
  bytes.clear();
  return SubmitFile(site_id, header, path);
}

absl::StatusOr<SubmitResult> RoundEngine::SubmitFile(const std::string& site_id, const v1::UpdateHeader& header,
                                                     const std::string& body_path) {
  // The received body is ours: whatever happens, it does not stay in incoming/.
  struct Remove {
    std::string path;
    ~Remove() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  } remove{body_path};
  Impl& im = *impl_;
  TaskRow t;
  JobSpec spec;
  WeightsFile from;
  {
    // 1. Under the lock: is this task open and this header acceptable?
    std::unique_lock lock(im.mu);
    ASSIGN_OR_RETURN(Impl::Checked c, im.CheckHeader(site_id, header));
    if (c.result) return *c.result;
    t = c.task;
    if (!header.failure_reason().empty()) {
      const std::string reason = CapText(header.failure_reason(), kMaxReasonBytes);
      RETURN_IF_ERROR(im.RefuseTask(t, "failed", reason, header.failure_permanent()));
      return SubmitResult{false, absl::StrCat("failure recorded: ", reason), "site_failure"};
    }
    ASSIGN_OR_RETURN(JobRow job, im.RequireJob(t.job_id));
    ASSIGN_OR_RETURN(spec, ParseJobSpec(job.toml, job.job_id));
    if (t.kind == "evaluate") {
      if (!header.has_evaluation()) return im.Refuse(t, "an evaluation result needs its metrics", "metrics");
      ASSIGN_OR_RETURN(v1::DatasetSummary declared, im.SiteSummary(site_id));
      absl::Status consistent = CheckEvaluation(header.evaluation(), spec, declared, "test");
      if (!consistent.ok()) return im.Refuse(t, std::string(consistent.message()), "metrics");
      // Optional: the evaluated model on the validation split (promotion).
      if (header.val_after().examples() > 0) {
        consistent = CheckEvaluation(header.val_after(), spec, declared, "val");
        if (!consistent.ok()) return im.Refuse(t, absl::StrCat("validation metrics: ", consistent.message()), "metrics");
      }
      ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*im.db));
      ASSIGN_OR_RETURN(SqliteStatement s, im.db->Prepare("UPDATE tasks SET state = 'accepted', evaluation = ?, "
                                                         "num_examples = ?, val_after = ? WHERE task_id = ?"));
      s.BindBlob(1, header.evaluation().SerializeAsString())
          .Bind(2, header.evaluation().examples())
          .BindBlob(3, header.val_after().SerializeAsString())
          .Bind(4, t.task_id);
      RETURN_IF_ERROR(s.Run());
      RETURN_IF_ERROR(im.AddEvent(t.job_id, t.round, site_id, "evaluation_received",
                                  header.evaluation().has_macro_auroc()
                                      ? absl::StrCat("test macro AUROC ", header.evaluation().macro_auroc())
                                      : std::string("test macro AUROC n/a (no finding shared)"),
                                  [&](v1::JobEvent& e) {
                                    e.set_val_auroc(header.evaluation().has_macro_auroc()
                                                        ? header.evaluation().macro_auroc()
                                                        : std::numeric_limits<double>::quiet_NaN());
                                  }));
      RETURN_IF_ERROR(txn->Commit());
      im.Changed();
      return SubmitResult{true, ""};
    }
    // A training update: its weight, then (outside the lock) checksum,
    // format and content against the global.
    if (header.num_examples() <= 0) return im.Refuse(t, "num_examples must be positive", "num_examples");
    ASSIGN_OR_RETURN(v1::DatasetSummary declared, im.SiteSummary(site_id));
    ASSIGN_OR_RETURN(std::optional<int64_t> pinned, im.PinnedTrainingImages(t.job_id, site_id));
    int64_t cap = pinned.value_or(DeclaredTrainingImages(declared));
    std::string why =
        absl::StrCat("the ", cap, " training images site ", site_id, " declared when this job first reached it");
    if (spec.train.max_train_samples() > 0 && spec.train.max_train_samples() < cap) {
      cap = spec.train.max_train_samples();
      why = absl::StrCat("the job's max_train_samples = ", cap);
    }
    if (header.num_examples() > cap) {
      return im.Refuse(t, absl::StrCat("num_examples ", header.num_examples(), " exceeds ", why), "num_examples");
    }
    for (const auto* m : {&header.val_before(), &header.val_after()}) {
      absl::Status consistent = CheckEvaluation(*m, spec, declared, "val");
      if (!consistent.ok()) return im.Refuse(t, absl::StrCat("validation metrics: ", consistent.message()), "metrics");
    }
    ASSIGN_OR_RETURN(from, im.TaskWeights(t));
  }
  if (Impl::IsSecure(spec, t.kind) && t.model_label == "federated") return im.SubmitMasked(site_id, header, t, body_path);

  // 2. Without the lock (other sites keep polling and submitting): the
  // bytes against the header, then the tensors against the global. Version
  // files are immutable once written, so reading `from` needs no lock.
  std::string refusal;
  const char* refusal_code = "";
  std::string sha;
  {
    ASSIGN_OR_RETURN(MappedFile body, MappedFile::Open(body_path));
    const auto b = body.bytes();
    const std::string_view bytes(reinterpret_cast<const char*>(b.data()), b.size());
    if (static_cast<int64_t>(bytes.size()) != header.total_size()) {
      refusal = absl::StrCat("received ", bytes.size(), " bytes, header announced ", header.total_size());
      refusal_code = "size";
    } else if ((sha = Sha256Hex(bytes)) != header.sha256()) {
      refusal = "SHA-256 of the received bytes does not match the header";
      refusal_code = "checksum";
    } else if (auto update = SafetensorsFile::Open(body_path); !update.ok()) {
      refusal = absl::StrCat("not a valid safetensors file: ", update.status().message());
      refusal_code = "format";
    } else {
      ASSIGN_OR_RETURN(SafetensorsFile global, SafetensorsFile::Open(from.path));
      ASSIGN_OR_RETURN(std::unique_ptr<fl::Strategy> strategy, fl::MakeStrategy(spec.strategy));
      // What the update must hold: the global's tensors the strategy ships
      // (all but LoRA A under ffa-lora); a local-only baseline is a whole
      // model (it is evaluated on its own).
      TensorMap shipped;
      for (auto& [name, tensor] : global.ReadAll()) {
        if (t.model_label != "federated" || strategy->ShipsTensor(name)) shipped.emplace(name, std::move(tensor));
      }
      fl::UpdateLimits limits;
      limits.max_delta_l2 = spec.max_update_l2;
      // A local-only baseline trains rounds x epochs alone and is never
      // aggregated: only the absolute bound applies to it.
      if (t.model_label == "federated") {
        limits.max_delta_ratio = spec.max_update_ratio;
        limits.min_reference_rms = kMinReferenceRms;
      }
      absl::Status valid = fl::ValidateUpdate(shipped, update->ReadAll(), limits);
      if (!valid.ok()) {
        refusal = std::string(valid.message());
        refusal_code = "content";
      }
    }
  }

  // 3. Under the lock again: the task may have closed meanwhile.
  std::unique_lock lock(im.mu);
  ASSIGN_OR_RETURN(Impl::Checked again, im.CheckHeader(site_id, header));
  if (again.result) return *again.result;
  if (!refusal.empty()) return im.Refuse(t, refusal, refusal_code);
  const std::string rel = absl::StrCat("blobs/", t.job_id, "/update-r", t.round, "a", t.attempt, "-", site_id,
                                       ".safetensors");
  if (::rename(body_path.c_str(), im.Abs(rel).c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot move the update into ", im.Abs(rel), ": ", std::strerror(errno)));
  }
  remove.path.clear();
  SyncDirectory(fs::path(im.Abs(rel)).parent_path().string());  // the rename, durable before the row naming it
  RETURN_IF_ERROR(im.RecordAccepted(t, header, rel, sha, ""));
  im.Changed();
  return SubmitResult{true, ""};
}

absl::StatusOr<v1::SecAggResponse> RoundEngine::SecureAggregation(const std::string& site_id,
                                                                  const v1::SecAggRequest& request) {
  Impl& im = *impl_;
  std::lock_guard lock(im.mu);
  ASSIGN_OR_RETURN(std::optional<TaskRow> found, im.LoadTask(request.task_id()));
  if (!found) return absl::NotFoundError("unknown task");
  if (found->site_id != site_id) return absl::PermissionDeniedError("the task belongs to another site");
  RETURN_IF_ERROR(im.Touch(site_id));
  SecureRound* secure = im.FindSecure(found->job_id, found->round, found->attempt);
  if (secure == nullptr) {
    return absl::FailedPreconditionError(
        "this task's round is not securely aggregated now (closed, or lost with a coordinator restart)");
  }
  ASSIGN_OR_RETURN(v1::SecAggResponse response, secure->Handle(site_id, request));
  // Stages close as soon as their last site answers, not at the next tick.
  ASSIGN_OR_RETURN(std::vector<TaskRow> tasks, im.RoundTasks(found->job_id, found->round, found->attempt));
  if (secure->Advance(Impl::LiveSites(tasks), im.Now())) im.Changed();
  if (!response.ready()) {
    // The answer may have been made ready by the stage this call closed.
    ASSIGN_OR_RETURN(response, secure->Handle(site_id, v1::SecAggRequest(request)));
  }
  return response;
}

absl::StatusOr<bool> RoundEngine::Progress(const std::string& site_id, const v1::ProgressReport& report) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(std::optional<TaskRow> t, impl_->LoadTask(report.task_id()));
  if (!t) return absl::NotFoundError("unknown task");
  if (t->site_id != site_id) return absl::PermissionDeniedError("the task belongs to another site");
  if (!IsOpenTask(t->state)) return true;
  // At most one progress event per task per interval: a site that reports
  // in a loop costs a map lookup, not an fsynced row and a wake-up of every
  // waiter. The answer (go on / abandon) is given every time. The site is
  // marked seen with the recorded report (so at most one interval ago),
  // not on every report: that too is an fsynced write.
  const int64_t now = impl_->Now();
  int64_t& last = impl_->last_progress_ms[t->task_id];
  if (last != 0 && now - last < impl_->options.progress_interval_ms) return false;
  last = now;
  ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*impl_->db));
  RETURN_IF_ERROR(impl_->Touch(site_id));
  RETURN_IF_ERROR(impl_->AddEvent(t->job_id, t->round, site_id, "progress",
                                  absl::StrCat(CapText(report.phase(), 32), " epoch ", report.epoch(), "/",
                                               report.epochs()),
                                  [&](v1::JobEvent& e) {
                                    e.set_epoch(report.epoch());
                                    e.set_loss(report.train_loss());
                                    e.set_val_auroc(report.val_auroc());
                                  }));
  RETURN_IF_ERROR(txn->Commit());
  impl_->Changed();
  return false;
}

absl::StatusOr<SubmittedJob> RoundEngine::SubmitJob(const std::string& job_toml, const std::string& source) {
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(job_toml, source));
  std::lock_guard lock(impl_->mu);
  SubmittedJob out;
  {
    // The federation as it is: enrolled sites, which are connected, and what
    // each declared when it last joined.
    struct Known {
      bool connected = false;
      std::string backbone;
      std::set<std::string> findings;
    };
    std::map<std::string, Known> enrolled;
    ASSIGN_OR_RETURN(SqliteStatement q, impl_->db->Prepare("SELECT site_id, last_seen_ms, capabilities, dataset "
                                                           "FROM sites WHERE enrolled = 1 ORDER BY site_id"));
    const int64_t since = impl_->Now() - impl_->options.site_timeout_ms;
    while (true) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      Known k;
      k.connected = q.Int(1) > 0 && q.Int(1) >= since;
      v1::Capabilities caps;
      v1::DatasetSummary data;
      if (caps.ParseFromString(q.Text(2))) k.backbone = caps.backbone_sha256();
      if (data.ParseFromString(q.Text(3))) k.findings.insert(data.findings().begin(), data.findings().end());
      enrolled.emplace(q.Text(0), std::move(k));
    }
    std::vector<std::string> names;
    for (const auto& [id, k] : enrolled) names.push_back(id);
    const std::string listed = names.empty() ? "none" : absl::StrJoin(names, ", ");
    for (const auto& id : spec.sites) {
      if (enrolled.count(id) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": key 'job.sites': \"", CapText(id, 64),
                                                       "\" is not an enrolled site (enrolled: ", listed, ")"));
      }
    }
    std::vector<std::string> candidates = spec.sites.empty() ? names : spec.sites;
    if (static_cast<int64_t>(candidates.size()) < spec.min_sites) {
      return absl::FailedPreconditionError(absl::StrCat(
          source, ": min_sites = ", spec.min_sites, " but only ", candidates.size(), " site(s) can take part (",
          spec.sites.empty() ? "enrolled: " : "job.sites: ", absl::StrJoin(candidates, ", "),
          "); lower min_sites or enrol more sites"));
    }
    // A finding or backbone no candidate could have: refused when every
    // candidate is connected (their summaries are current), a warning when
    // offline sites might still bring it.
    std::vector<std::string> offline;
    std::set<std::string> have_findings, have_backbones;
    for (const auto& id : candidates) {
      const Known& k = enrolled.at(id);
      if (!k.connected) offline.push_back(id);
      if (k.connected) have_findings.insert(k.findings.begin(), k.findings.end());
      if (k.connected && !k.backbone.empty()) have_backbones.insert(k.backbone);
    }
    std::vector<std::string> missing;
    for (const auto& f : spec.train.findings()) {
      if (have_findings.count(f) == 0) missing.push_back(f);
    }
    auto problem = [&](std::string what) -> absl::Status {
      if (offline.empty()) return absl::FailedPreconditionError(absl::StrCat(source, ": ", what));
      out.warnings.push_back(absl::StrCat(what, " (offline, not checked: ", absl::StrJoin(offline, ", "), ")"));
      return absl::OkStatus();
    };
    if (!missing.empty()) {
      RETURN_IF_ERROR(problem(absl::StrCat(
          "no connected site has finding(s) ", absl::StrJoin(missing, ", "), "; they have: ",
          have_findings.empty() ? "none" : absl::StrJoin(have_findings, ", "))));
    }
    if (!spec.backbone_sha256.empty() && have_backbones.count(spec.backbone_sha256) == 0) {
      std::vector<std::string> held;
      for (const auto& b : have_backbones) held.push_back(b.substr(0, 12));
      RETURN_IF_ERROR(problem(absl::StrCat("no connected site holds backbone ", spec.backbone_sha256.substr(0, 12),
                                           "; they hold: ", held.empty() ? "none" : absl::StrJoin(held, ", "))));
    }
  }
  ASSIGN_OR_RETURN(std::string job_id, RandomId("job-", 5));
  ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*impl_->db));
  ASSIGN_OR_RETURN(SqliteStatement s, impl_->db->Prepare("INSERT INTO jobs(job_id, name, toml, state, rounds_total, "
                                                         "created_ms, updated_ms) VALUES(?,?,?,?,?,?,?)"));
  s.BindAll(job_id, spec.name, job_toml, int64_t{v1::JOB_STATE_PENDING}, int64_t{spec.rounds}, impl_->Now(),
            impl_->Now());
  RETURN_IF_ERROR(s.Run());
  RETURN_IF_ERROR(impl_->AddEvent(job_id, 0, "", "job_submitted", spec.name,
                                  [](v1::JobEvent& e) { e.set_job_state(v1::JOB_STATE_PENDING); }));
  for (const auto& w : out.warnings) RETURN_IF_ERROR(impl_->AddEvent(job_id, 0, "", "submission_warning", w));
  RETURN_IF_ERROR(txn->Commit());
  impl_->Changed();
  spdlog::info("job {} submitted: {}", job_id, spec.name);
  out.job_id = job_id;
  return out;
}

absl::StatusOr<v1::JobStatus> RoundEngine::GetJob(const std::string& job_id, bool detail) {
  std::lock_guard lock(impl_->mu);
  Impl& im = *impl_;
  ASSIGN_OR_RETURN(JobRow j, im.RequireJob(job_id));
  v1::JobStatus out;
  out.set_job_id(j.job_id);
  out.set_name(j.name);
  out.set_state(static_cast<v1::JobState>(j.state));
  out.set_reason(j.reason);
  out.set_rounds_total(j.rounds_total);
  out.set_created_unix_ms(j.created_ms);
  out.set_updated_unix_ms(j.updated_ms);
  ASSIGN_OR_RETURN(std::vector<RoundRow> rounds, im.LoadRounds(job_id));
  int done = 0;
  for (const auto& r : rounds) done += r.state == "aggregated" ? 1 : 0;
  out.set_rounds_done(done);
  if (!detail) return out;
  out.set_job_toml(j.toml);
  if (auto spec = ParseJobSpec(j.toml, j.job_id); spec.ok() && spec->privacy.enabled) {
    int trained = 0;
    for (const auto& r : rounds) trained += r.state == "aggregated" && r.kind == "train" ? 1 : 0;
    *out.mutable_privacy() = PrivacyBudgetOf(*spec, trained);
    if (spec->secure_aggregation.enabled) out.set_secure_aggregation_bound(spec->secure_aggregation.bound);
  }
  for (const auto& r : rounds) {
    auto* rs = out.add_rounds();
    rs->set_round(r.round);
    rs->set_state(r.state);
    rs->set_kind(r.kind);
    rs->set_attempt(r.attempt);
    rs->set_started_unix_ms(r.started_ms);
    rs->set_deadline_unix_ms(r.deadline_ms);
    if (r.version >= 0) {
      ASSIGN_OR_RETURN(std::optional<WeightsFile> w, im.LoadVersion(job_id, r.version));
      if (w) {
        rs->mutable_global()->set_job_id(job_id);
        rs->mutable_global()->set_version(r.version);
        rs->mutable_global()->set_sha256(w->sha256);
        rs->mutable_global()->set_size_bytes(w->size);
      }
    }
    ASSIGN_OR_RETURN(std::vector<TaskRow> tasks, im.RoundTasks(job_id, r.round, r.attempt));
    for (const auto& t : tasks) {
      auto* sr = rs->add_sites();
      sr->set_site_id(t.site_id);
      sr->set_state(t.state);
      sr->set_reason(t.reason);
      sr->set_task_id(t.task_id);
      sr->set_num_examples(t.num_examples);
      sr->set_train_loss(t.train_loss);
      sr->set_train_seconds(t.train_seconds);
      sr->set_update_sha256(t.update_sha256);
      sr->set_model_label(t.model_label);
      if (!t.val_before.empty()) sr->mutable_val_before()->ParseFromString(t.val_before);
      if (!t.val_after.empty()) sr->mutable_val_after()->ParseFromString(t.val_after);
      if (!t.evaluation.empty()) sr->mutable_evaluation()->ParseFromString(t.evaluation);
    }
  }
  return out;
}

absl::StatusOr<std::vector<v1::JobStatus>> RoundEngine::ListJobs() {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(impl_->mu);
    ASSIGN_OR_RETURN(SqliteStatement s, impl_->db->Prepare("SELECT job_id FROM jobs ORDER BY created_ms"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ids.push_back(s.Text(0));
    }
  }
  std::vector<v1::JobStatus> out;
  for (const auto& id : ids) {
    ASSIGN_OR_RETURN(v1::JobStatus st, GetJob(id, false));
    out.push_back(std::move(st));
  }
  return out;
}

absl::StatusOr<v1::JobStatus> RoundEngine::CancelJob(const std::string& job_id) {
  {
    std::lock_guard lock(impl_->mu);
    ASSIGN_OR_RETURN(JobRow j, impl_->RequireJob(job_id));
    if (!IsActive(j.state)) {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has already finished"));
    }
    ASSIGN_OR_RETURN(auto txn, SqliteTransaction::Begin(*impl_->db));
    RETURN_IF_ERROR(impl_->SetJobState(j, v1::JOB_STATE_CANCELLED, "cancelled by the operator", j.round));
    ASSIGN_OR_RETURN(SqliteStatement s, impl_->db->Prepare("UPDATE tasks SET state = 'cancelled', reason = 'job "
                                                           "cancelled' WHERE job_id = ? AND state IN "
                                                           "('dispatched', 'running')"));
    s.Bind(1, job_id);
    RETURN_IF_ERROR(s.Run());
    RETURN_IF_ERROR(impl_->AddEvent(job_id, j.round, "", "job_finished", "cancelled by the operator",
                                    [](v1::JobEvent& e) { e.set_job_state(v1::JOB_STATE_CANCELLED); }));
    RETURN_IF_ERROR(txn->Commit());
    impl_->Changed();
  }
  return GetJob(job_id);
}

absl::StatusOr<std::vector<v1::SiteInfo>> RoundEngine::ListSites() {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(SqliteStatement s, impl_->db->Prepare("SELECT site_id, enrolled, last_seen_ms, capabilities, "
                                                         "dataset FROM sites ORDER BY site_id"));
  std::vector<v1::SiteInfo> out;
  const int64_t now = impl_->Now();
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    v1::SiteInfo si;
    si.set_site_id(s.Text(0));
    si.set_enrolled(s.Int(1) == 1);
    si.set_last_seen_unix_ms(s.Int(2));
    si.set_connected(s.Int(2) > 0 && s.Int(2) >= now - impl_->options.site_timeout_ms);
    v1::Capabilities caps;
    if (caps.ParseFromString(s.Text(3))) {
      si.set_backbone_sha256(caps.backbone_sha256());
      si.set_device_name(caps.device_name());
    }
    si.mutable_dataset()->ParseFromString(s.Text(4));
    out.push_back(std::move(si));
  }
  return out;
}

absl::StatusOr<std::vector<v1::JobEvent>> RoundEngine::EventsAfter(const std::string& job_id, int64_t after_seq,
                                                                   int64_t* last_seq) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(JobRow j, impl_->RequireJob(job_id));
  (void)j;
  ASSIGN_OR_RETURN(SqliteStatement s,
                   impl_->db->Prepare("SELECT seq, event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq"));
  s.Bind(1, job_id).Bind(2, after_seq);
  std::vector<v1::JobEvent> out;
  *last_seq = after_seq;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    *last_seq = s.Int(0);
    v1::JobEvent e;
    e.ParseFromString(s.Text(1));
    e.set_seq(*last_seq);
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<ModelVersion> RoundEngine::GetVersion(const std::string& job_id, int version) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(JobRow j, impl_->RequireJob(job_id));
  ASSIGN_OR_RETURN(std::optional<WeightsFile> w, impl_->LoadVersion(job_id, version));
  if (!w) {
    return absl::NotFoundError(version < 0 ? absl::StrCat("job ", job_id, " has no model version yet")
                                           : absl::StrCat("job ", job_id, " has no version ", version));
  }
  ModelVersion out;
  ASSIGN_OR_RETURN(out.spec, ParseJobSpec(j.toml, job_id));
  out.file = *w;
  if (version >= 0) {
    out.version = version;
  } else {
    ASSIGN_OR_RETURN(SqliteStatement s, impl_->db->Prepare("SELECT MAX(version) FROM versions WHERE job_id = ?"));
    s.Bind(1, job_id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    out.version = row ? static_cast<int>(s.Int(0)) : 0;
  }
  return out;
}

// ---- the model in use --------------------------------------------------------

absl::StatusOr<std::vector<v1::Promotion>> RoundEngine::ListPromotions() {
  std::lock_guard lock(impl_->mu);
  return impl_->Promotions();
}

absl::StatusOr<v1::Promotion> RoundEngine::Promote(const std::string& job_id, int round, bool best,
                                                   const std::string& who) {
  ASSIGN_OR_RETURN(v1::JobStatus job, GetJob(job_id, true));
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(job.job_toml(), job_id));
  const std::vector<std::string> findings(spec.train.findings().begin(), spec.train.findings().end());
  ASSIGN_OR_RETURN(PromotionChoice choice, ChoosePromotion(job, findings, round, best));
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(std::optional<WeightsFile> w, impl_->LoadVersion(job_id, choice.version));
  if (!w) return absl::NotFoundError(absl::StrCat("job ", job_id, " has no version ", choice.version));
  ASSIGN_OR_RETURN(std::vector<v1::Promotion> history, impl_->Promotions());
  v1::Promotion p;
  p.set_job_id(job_id);
  p.set_version(choice.version);
  p.set_sha256(w->sha256);
  p.set_promoted_by(who);
  p.set_promoted_unix_ms(impl_->Now());
  p.set_action("promote");
  p.set_note(choice.note);
  for (const auto& t : choice.thresholds) *p.add_thresholds() = t;
  if (choice.val_macro_auroc) p.set_val_macro_auroc(*choice.val_macro_auroc);
  p.set_previous_seq(history.empty() ? 0 : history.back().seq());
  return impl_->RecordPromotion(std::move(p));
}

absl::StatusOr<v1::Promotion> RoundEngine::Rollback(const std::string& who) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(std::vector<v1::Promotion> history, impl_->Promotions());
  if (history.empty()) return absl::FailedPreconditionError("no model has been promoted: nothing to roll back");
  const int64_t target_seq = history.back().previous_seq();
  const v1::Promotion* target = nullptr;
  for (const auto& h : history) {
    if (h.seq() == target_seq) target = &h;
  }
  if (target == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("the model in use (job ", history.back().job_id(), " version ",
                                                      history.back().version(),
                                                      ") is the first promoted: there is nothing to roll back to"));
  }
  v1::Promotion p = *target;
  p.set_promoted_by(who);
  p.set_promoted_unix_ms(impl_->Now());
  p.set_action("rollback");
  p.set_note(absl::StrCat("rollback from job ", history.back().job_id(), " version ", history.back().version(),
                          " to entry ", target->seq(), " (", target->note(), ")"));
  // A further rollback continues back through the history.
  p.set_previous_seq(target->previous_seq());
  return impl_->RecordPromotion(std::move(p));
}

absl::StatusOr<std::optional<v1::ServedModel>> RoundEngine::ServedModel() {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(std::vector<v1::Promotion> history, impl_->Promotions());
  if (history.empty()) return std::optional<v1::ServedModel>();
  const v1::Promotion& p = history.back();
  ASSIGN_OR_RETURN(JobRow job, impl_->RequireJob(p.job_id()));
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(job.toml, job.job_id));
  ASSIGN_OR_RETURN(std::optional<WeightsFile> w, impl_->LoadVersion(p.job_id(), p.version()));
  if (!w) return absl::InternalError(absl::StrCat("promoted version ", p.version(), " of job ", p.job_id(), " is missing"));
  v1::ServedModel served;
  *served.mutable_promotion() = p;
  v1::EvaluateTask* m = served.mutable_model();
  m->mutable_weights()->set_job_id(p.job_id());
  m->mutable_weights()->set_version(p.version());
  m->mutable_weights()->set_sha256(w->sha256);
  m->mutable_weights()->set_size_bytes(w->size);
  m->mutable_weights()->set_model_label("federated");
  m->mutable_findings()->CopyFrom(spec.train.findings());
  m->set_backbone_sha256(spec.backbone_sha256);
  m->set_backbone_architecture(spec.backbone_architecture);
  *m->mutable_config() = spec.train;
  m->set_model_label("federated");
  return std::optional<v1::ServedModel>(std::move(served));
}

absl::StatusOr<WeightsFile> RoundEngine::WeightsForServedModel(const std::string& site_id, const v1::WeightsRef& ref) {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(std::vector<v1::Promotion> history, impl_->Promotions());
  if (history.empty() || history.back().job_id() != ref.job_id() || history.back().version() != ref.version() ||
      history.back().sha256() != ref.sha256()) {
    return absl::PermissionDeniedError("these weights are not the federation's model in use");
  }
  ASSIGN_OR_RETURN(std::optional<WeightsFile> w, impl_->LoadVersion(ref.job_id(), ref.version()));
  if (!w) return absl::NotFoundError("the promoted version is missing");
  RETURN_IF_ERROR(impl_->Touch(site_id));
  return *w;
}

absl::Status RoundEngine::Tick() {
  std::lock_guard lock(impl_->mu);
  ASSIGN_OR_RETURN(SqliteStatement s, impl_->db->Prepare("SELECT job_id FROM jobs WHERE state IN (?, ?, ?) ORDER BY "
                                                         "created_ms"));
  s.BindAll(int64_t{v1::JOB_STATE_PENDING}, int64_t{v1::JOB_STATE_RUNNING}, int64_t{v1::JOB_STATE_EVALUATING});
  std::vector<std::string> active;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    active.push_back(s.Text(0));
  }
  absl::Status first;
  for (const auto& id : active) {
    ASSIGN_OR_RETURN(JobRow job, impl_->RequireJob(id));
    absl::Status st;
    try {
      st = impl_->Advance(job);
    } catch (const std::exception& e) {  // the engine never dies of one job
      st = absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
    }
    int& failures = impl_->tick_failures[id];
    failures = st.ok() ? 0 : failures + 1;
    if (!st.ok()) {
      spdlog::error("job {}: {}", id, std::string(st.message()));
      if (first.ok()) first = st;
      // A job whose state cannot be advanced (a file of it is missing or
      // damaged) fails with the reason recorded, instead of failing again
      // on every tick; transient trouble (disk full, busy: RESOURCE_EXHAUSTED,
      // UNAVAILABLE) is retried, and an unexpected error three times.
      const absl::StatusCode code = st.code();
      if (code == absl::StatusCode::kNotFound || code == absl::StatusCode::kDataLoss ||
          code == absl::StatusCode::kInvalidArgument || (code == absl::StatusCode::kInternal && failures >= 3)) {
        absl::Status recorded = impl_->FailJob(job, absl::StrCat("coordinator error: ", st.message()));
        if (!recorded.ok()) spdlog::error("job {}: cannot record its failure: {}", id, std::string(recorded.message()));
      }
    }
  }
  return first;
}

uint64_t RoundEngine::WaitForChange(uint64_t seen, int64_t timeout_ms) {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                     [&] { return impl_->changes != seen || impl_->shutdown; });
  return impl_->changes;
}

uint64_t RoundEngine::change_counter() {
  std::lock_guard lock(impl_->mu);
  return impl_->changes;
}

void RoundEngine::Shutdown() {
  std::lock_guard lock(impl_->mu);
  impl_->shutdown = true;
  impl_->cv.notify_all();
}

absl::Status BackupStateDirectory(const std::string& state_dir, const std::string& out_dir) {
  const std::string db_path = state_dir + "/coordinator.sqlite";
  if (!fs::exists(db_path)) return absl::NotFoundError(absl::StrCat("no coordinator database in ", state_dir));
  if (fs::exists(out_dir)) return absl::AlreadyExistsError(absl::StrCat(out_dir, " exists; name a new folder"));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  fs::permissions(out_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  {
    ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> src, SqliteDb::Open(db_path));
    ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> dst, SqliteDb::Open(out_dir + "/coordinator.sqlite"));
    sqlite3_backup* b = sqlite3_backup_init(dst->raw(), "main", src->raw(), "main");
    if (b == nullptr) return absl::InternalError(absl::StrCat("backup: ", sqlite3_errmsg(dst->raw())));
    int rc;
    do {
      rc = sqlite3_backup_step(b, 256);
      if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(50);
    } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) return absl::InternalError(absl::StrCat("backup: ", sqlite3_errstr(rc)));
    RETURN_IF_ERROR(dst->QuickCheck());
  }
  // Model and update files are written before the rows that name them and
  // never changed after: copying them after the database holds every file
  // the copy refers to.
  for (const char* sub : {"blobs"}) {
    const fs::path from = fs::path(state_dir) / sub;
    if (!fs::exists(from)) continue;
    fs::copy(from, fs::path(out_dir) / sub, fs::copy_options::recursive, ec);
    if (ec) return absl::DataLossError(absl::StrCat("cannot copy ", from.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace fedtune::coordinator
