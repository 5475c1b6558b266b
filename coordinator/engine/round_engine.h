// The round engine: jobs, rounds, tasks and model versions, persisted in
// SQLite so that the coordinator can be killed at any moment and continue.
// Plain C++ with no network: the gRPC services are thin adapters over it and
// tests drive it directly with fake sites and a fake clock.
//
// Life of a job:
//   PENDING    submitted; the first Tick() writes global version 0 (the
//              initial trainable state) and starts round 1.
//   RUNNING    round r: once at least min_sites enrolled sites are connected,
//              one Train task per selected site, all from version r-1. The
//              round closes when every task is answered, or at its deadline;
//              with >= min_sites accepted updates they are aggregated into
//              version r (streamed: one update in memory at a time). Without
//              quorum the round is retried or the job fails, per the job.
//   EVALUATING after the last round: one Evaluate task (test split, final
//              version) per connected site; closes when all answered or at
//              the deadline.
//   SUCCEEDED / FAILED / CANCELLED.
// Every state change is one SQLite transaction; a model version's file is
// written (atomically) before the transaction that records it, so a crash
// anywhere leaves either the old state or the new, never a round counted
// twice or lost.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/core/metrics.h"
#include "common/core/sqlite_db.h"
#include "common/core/tensor_map.h"
#include "coordinator/engine/job_spec.h"
#include "fedtune/v1/admin.pb.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::coordinator {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;  // Unix milliseconds
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override;
};

// The initial trainable state of a job (LoRA A random, B zero, head random).
using InitialWeightsFn = std::function<absl::StatusOr<TensorMap>(const JobSpec&)>;

struct EngineOptions {
  std::string state_dir;  // coordinator.sqlite and blobs/ live here
  // The federation's CA (PEM): secure aggregation checks each site's signed
  // keys against it on arrival ("" leaves that to the sites alone).
  std::string ca_pem;
  // A site not heard from (Join, PollTask, progress) for this long is not
  // selected for new rounds.
  int64_t site_timeout_ms = 90'000;
  // Largest update accepted, in bytes (a task's own cap is smaller: see
  // BeginUpload).
  int64_t max_update_bytes = int64_t{2} << 30;
  // At most one progress event is recorded per task in this interval.
  int64_t progress_interval_ms = 2'000;
  InitialWeightsFn initial_weights;
  // Optional: rounds closed (by kind and outcome) and their duration are
  // counted here.
  MetricsRegistry* metrics = nullptr;
};

struct PollResult {
  std::optional<v1::Task> task;
  std::string cancel_task_id;
};

struct SubmitResult {
  bool accepted = false;
  std::string reason;
  // One word for metrics: "accepted", or why not: "mismatch", "duplicate",
  // "stale", "too_large", "size", "checksum", "format", "content",
  // "num_examples", "metrics", "site_failure".
  std::string code = "accepted";
};

// What a site may send for a task, decided from the header alone.
struct UploadLimit {
  std::optional<SubmitResult> refused;  // set: answer this, read no body
  int64_t max_bytes = 0;                // 0: the result carries no body
};

// What a submitted job looks like against the federation as it is.
struct SubmittedJob {
  std::string job_id;
  std::vector<std::string> warnings;  // e.g. a finding only offline sites could have
};

struct WeightsFile {
  std::string path;
  std::string sha256;
  int64_t size = 0;
};

// A model version ready for export.
struct ModelVersion {
  JobSpec spec;
  int version = 0;
  WeightsFile file;
};

class RoundEngine {
 public:
  static absl::StatusOr<std::unique_ptr<RoundEngine>> Open(const EngineOptions& options, const Clock* clock);
  ~RoundEngine();

  // --- enrolment -----------------------------------------------------------
  // Makes exactly these sites enrolled (others stay known but not enrolled).
  absl::Status SetEnrolledSites(const std::vector<std::string>& site_ids);
  bool IsEnrolled(const std::string& site_id);

  // --- Federation (the caller has checked the certificate: `site_id` is its CN)
  // One live session per site identity: `session` names the daemon (it
  // keeps it across restarts). ALREADY_EXISTS while another session of the
  // same site was heard from within site_timeout_ms (two daemons with one
  // certificate); that refusal is logged.
  absl::Status Join(const std::string& site_id, const v1::Capabilities& capabilities,
                    const v1::DatasetSummary& dataset, const std::string& session = "");
  // FAILED_PRECONDITION when `session` is not the site's current session
  // (another daemon joined with the same certificate since).
  absl::Status CheckSession(const std::string& site_id, const std::string& session);
  // Non-blocking: the next task for this site, if any. A task the site was
  // given but no longer reports as running (it restarted) is given again.
  absl::StatusOr<PollResult> Poll(const std::string& site_id, const std::string& running_task_id);
  // The weights a task needs. PERMISSION_DENIED for another site's task or a
  // version the task does not use.
  absl::StatusOr<WeightsFile> WeightsForTask(const std::string& site_id, const std::string& task_id,
                                             const v1::WeightsRef& ref);
  // Validates and records a task's result. PERMISSION_DENIED when the task
  // belongs to another site; NOT_FOUND for an unknown task; otherwise the
  // result says whether the update was accepted and, if not, why (stale,
  // duplicate, checksum, names, shapes, dtype, non-finite values, norm bound).
  absl::StatusOr<SubmitResult> Submit(const std::string& site_id, const v1::UpdateHeader& header,
                                      std::string bytes);
  // As Submit, for a body the caller streamed to `body_path` (a file under
  // the state directory, see IncomingDirectory; it is moved or removed).
  // Hashing, parsing and validation run without the engine's lock.
  absl::StatusOr<SubmitResult> SubmitFile(const std::string& site_id, const v1::UpdateHeader& header,
                                          const std::string& body_path);
  // Checks a result's header against its open task before any body is read:
  // the same answers as Submit for stale, duplicate and mismatched headers
  // and for a body larger than the task's model allows (recorded).
  absl::StatusOr<UploadLimit> BeginUpload(const std::string& site_id, const v1::UpdateHeader& header);
  // Where update bodies are streamed before SubmitFile (same filesystem as
  // the state, so accepting one is a rename).
  std::string IncomingDirectory() const;
  // Records progress; returns true when the task should be abandoned.
  absl::StatusOr<bool> Progress(const std::string& site_id, const v1::ProgressReport& report);
  // One key-exchange stage of a securely aggregated training task (see
  // common/secagg): PERMISSION_DENIED for another site's task,
  // FAILED_PRECONDITION when the task's round is not (or no longer) secure
  // or left this site out.
  absl::StatusOr<v1::SecAggResponse> SecureAggregation(const std::string& site_id, const v1::SecAggRequest& request);

  // --- Admin ---------------------------------------------------------------
  // Parses and checks a job against the federation: INVALID_ARGUMENT /
  // FAILED_PRECONDITION (with what exists) for min_sites above the enrolled
  // sites, unknown site ids, or findings / a backbone that no site could
  // have; warnings where only offline sites could. `source` names the job
  // file in error messages.
  absl::StatusOr<SubmittedJob> SubmitJob(const std::string& job_toml, const std::string& source = "job.toml");
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id, bool detail = true);
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs();
  absl::StatusOr<v1::JobStatus> CancelJob(const std::string& job_id);
  absl::StatusOr<std::vector<v1::SiteInfo>> ListSites();
  // Events with sequence number > after_seq; *last_seq is set to the last one returned.
  absl::StatusOr<std::vector<v1::JobEvent>> EventsAfter(const std::string& job_id, int64_t after_seq,
                                                        int64_t* last_seq);
  // version < 0: the latest.
  absl::StatusOr<ModelVersion> GetVersion(const std::string& job_id, int version);

  // --- the model in use (operators promote; sites serve it) -----------------
  // Makes a version of `job_id` the federation's model in use (see
  // ChoosePromotion in promotion.h for round / best), recorded with `who`.
  absl::StatusOr<v1::Promotion> Promote(const std::string& job_id, int round, bool best, const std::string& who);
  // Returns to the model in use before the current one (a new history entry).
  // FAILED_PRECONDITION when there is none.
  absl::StatusOr<v1::Promotion> Rollback(const std::string& who);
  // Oldest first; the last is in use.
  absl::StatusOr<std::vector<v1::Promotion>> ListPromotions();
  // The model in use with what a site needs to run it; nullopt before any
  // promotion.
  absl::StatusOr<std::optional<v1::ServedModel>> ServedModel();
  // The file of the model in use, for an enrolled site (the caller checked
  // the certificate); PERMISSION_DENIED for any other reference.
  absl::StatusOr<WeightsFile> WeightsForServedModel(const std::string& site_id, const v1::WeightsRef& ref);

  // --- time ----------------------------------------------------------------
  // Starts pending jobs, starts rounds whose sites are there, closes rounds
  // that are complete or past their deadline, aggregates. Call periodically
  // and after submissions.
  absl::Status Tick();

  // Blocks until something changes (a commit) or `deadline_ms` (clock time
  // of the system clock) passes; returns the change counter.
  uint64_t WaitForChange(uint64_t seen, int64_t timeout_ms);
  uint64_t change_counter();

  // Abandon every wait (server shutdown).
  void Shutdown();

 private:
  struct Impl;
  explicit RoundEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Copies a coordinator's state directory to `out_dir` (which must not exist):
// the database through SQLite's online backup (consistent while a
// coordinator is writing to it), then the model and update files it names,
// then PRAGMA quick_check of the copy. Restoring is copying it back in place
// of a stopped coordinator's state directory.
absl::Status BackupStateDirectory(const std::string& state_dir, const std::string& out_dir);

}  // namespace fedtune::coordinator
