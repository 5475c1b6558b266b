#include "site-agent/runner/site_daemon.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/status.h"
#include "common/core/version.h"
#include "common/net/pki.h"
#include "common/net/tls.h"
#include "fedtune/v1/federation.grpc.pb.h"
#include "site-agent/ingest/site_stats.h"
#include "site-agent/inference/served_model.h"
#include "site-agent/runner/disclosure.h"
#include "site-agent/runner/task_executor.h"
#include "site-agent/runner/secure_update.h"
#include "common/secagg/wire.h"

namespace fedtune::site {
namespace {

using Clock = std::chrono::system_clock;

constexpr int64_t kChunk = 1 << 20;

std::string Describe(const grpc::Status& s) {
  return absl::StrCat(grpc::StatusCode(s.error_code()) == grpc::StatusCode::UNAVAILABLE ? "unavailable" : "error ",
                      s.error_code() == grpc::StatusCode::UNAVAILABLE ? "" : std::to_string(s.error_code()), ": ",
                      s.error_message());
}

v1::DatasetSummary Summary(const SiteConfig& config) {
  return SummaryToShare(config.ingest.workspace, config.k_threshold, /*keep=*/true);
}

class Agent {
 public:
  Agent(const SiteConfig& config, const std::atomic<bool>* stop, TaskExecutor executor,
        std::shared_ptr<grpc::ChannelCredentials> creds, std::function<int64_t()> data_version, std::string session,
        MetricsRegistry* metrics, std::function<void(const std::string&)> on_serving)
      : config_(config),
        stop_(stop),
        executor_(std::move(executor)),
        data_version_(std::move(data_version)),
        session_(std::move(session)),
        metrics_(metrics),
        on_serving_(std::move(on_serving)) {
    SetConnected(false);
    auto held = LoadHeldModel(config_.ingest.workspace, "current");
    if (!held.ok()) {
      spdlog::warn("the promoted model kept in the workspace cannot be read ({}); it is fetched again",
                   std::string(held.status().message()));
    } else if (*held) {
      served_sha_ = (*held)->served.promotion().sha256();
      Serving((*held)->served, "serving");
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(16 << 20);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
    stub_ = v1::Federation::NewStub(grpc::CreateCustomChannel(config.run.coordinator, creds, args));
  }

  int Run() {
    std::mt19937_64 rng(std::random_device{}());
    double backoff = 0.5;
    // A stop request cancels a poll the coordinator is holding (up to its
    // poll timeout), so an idle daemon stops at once on SIGTERM.
    std::atomic<bool> done{false};
    std::thread canceller([this, &done] {
      while (!done && !Stopped()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::lock_guard<std::mutex> lock(polling_mu_);
      if (polling_ != nullptr) polling_->TryCancel();
    });
    struct JoinOnExit {
      std::atomic<bool>& done;
      std::thread& thread;
      ~JoinOnExit() {
        done = true;
        thread.join();
      }
    } join_on_exit{done, canceller};
    while (!Stopped()) {
      if (!Join()) {
        const double wait = backoff * std::uniform_real_distribution<double>(0.8, 1.2)(rng);
        backoff = std::min(backoff * 2, 30.0);
        Sleep(wait);
        continue;
      }
      backoff = 0.5;
      PollLoop();
    }
    spdlog::info("stopped");
    return 0;
  }

 private:
  bool Stopped() const { return stop_ != nullptr && stop_->load(); }

  // Every call after Join names this daemon's session.
  void Tag(grpc::ClientContext* ctx) const { ctx->AddMetadata("fedtune-session", session_); }

  void Sleep(double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!Stopped() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  bool Join() {
    v1::JoinRequest req;
    *req.mutable_capabilities() = executor_.Capabilities();
    joined_version_ = DataVersion();
    *req.mutable_dataset() = Summary(config_);
    shared_train_images_ = -1;
    for (const auto& sp : req.dataset().splits()) {
      if (sp.split() == "train") shared_train_images_ = sp.images();
    }
    req.set_session_id(session_);
    grpc::ClientContext ctx;
    ctx.set_deadline(Clock::now() + std::chrono::seconds(10));
    v1::JoinResponse resp;
    grpc::Status s = stub_->Join(&ctx, req, &resp);
    if (!s.ok()) {
      if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
        spdlog::error("the coordinator refused this site: {} (is it enrolled in coordinator.toml [sites]?)",
                      s.error_message());
      } else if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
        spdlog::error("the coordinator refused this daemon: {}", s.error_message());
      } else {
        spdlog::warn("cannot join the coordinator at {}: {}", config_.run.coordinator, Describe(s));
      }
      return false;
    }
    if (resp.site_id() != config_.site_id) {
      spdlog::warn("the coordinator knows this site as \"{}\" (its certificate CN) but site.toml says \"{}\"",
                   resp.site_id(), config_.site_id);
    }
    poll_timeout_ms_ = std::max<int64_t>(resp.poll_timeout_ms(), 1000);
    SetConnected(true);
    spdlog::info("joined the coordinator at {} as {}", config_.run.coordinator, resp.site_id());
    return true;
  }

  void PollLoop() {
    while (!Stopped()) {
      v1::PollTaskRequest req;
      // A promotion this site could not take is not asked for again at
      // once (every poll would be answered with it).
      req.set_served_model_sha256(std::chrono::steady_clock::now() < declined_until_ ? declined_sha_ : served_sha_);
      grpc::ClientContext ctx;
      Tag(&ctx);
      ctx.set_deadline(Clock::now() + std::chrono::milliseconds(poll_timeout_ms_ + 10'000));
      v1::PollTaskResponse resp;
      {
        std::lock_guard<std::mutex> lock(polling_mu_);
        if (Stopped()) return;
        polling_ = &ctx;
      }
      grpc::Status s = stub_->PollTask(&ctx, req, &resp);
      {
        std::lock_guard<std::mutex> lock(polling_mu_);
        polling_ = nullptr;
      }
      if (Stopped()) return;
      if (!s.ok()) {
        SetConnected(false);
        spdlog::warn("lost the coordinator: {}; reconnecting", Describe(s));
        Sleep(1.0);
        return;
      }
      if (resp.has_served_model()) TakeServedModel(resp.served_model());
      if (resp.has_task()) RunTask(resp.task());
      if (DataVersion() != joined_version_) {
        spdlog::info("new images were ingested: sending the coordinator the updated dataset summary");
        return;  // Run() joins again
      }
    }
  }

  int64_t DataVersion() const { return data_version_ ? data_version_() : 0; }

  // Fetches the task's weights, resuming after a broken stream; verifies size
  // and SHA-256.
  absl::StatusOr<std::string> Fetch(const v1::Task& task, const v1::WeightsRef& ref) {
    std::string bytes;
    int64_t total = -1;
    std::string sha;
    for (int attempt = 0; attempt < 8 && !Stopped(); ++attempt) {
      v1::FetchWeightsRequest req;
      req.set_task_id(task.task_id());
      *req.mutable_weights() = ref;
      req.set_offset(static_cast<int64_t>(bytes.size()));
      grpc::ClientContext ctx;
      Tag(&ctx);
      ctx.set_deadline(Clock::now() + std::chrono::minutes(10));
      auto reader = stub_->FetchWeights(&ctx, req);
      v1::WeightsChunk chunk;
      while (reader->Read(&chunk)) {
        if (chunk.total_size() > 0) {
          total = chunk.total_size();
          sha = chunk.sha256();
        }
        if (chunk.offset() != static_cast<int64_t>(bytes.size())) {
          return absl::DataLossError("weights arrived out of order");
        }
        bytes += chunk.data();
      }
      grpc::Status s = reader->Finish();
      if (s.ok()) break;
      if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED || s.error_code() == grpc::StatusCode::NOT_FOUND) {
        return net::FromGrpc(s);
      }
      spdlog::warn("weights transfer interrupted at {} bytes: {}; resuming", bytes.size(), Describe(s));
      Sleep(std::min(1.0 * (attempt + 1), 10.0));
    }
    if (total < 0 || static_cast<int64_t>(bytes.size()) != total) {
      return absl::DataLossError(absl::StrCat("weights incomplete: ", bytes.size(), " of ", total, " bytes"));
    }
    if (Sha256Hex(bytes) != sha || (!ref.sha256().empty() && sha != ref.sha256())) {
      return absl::DataLossError("weights SHA-256 mismatch");
    }
    return bytes;
  }

  // The federation promoted a model: keep it (fetched and SHA-256 checked,
  // or the previous one again on a rollback) as the model this site serves.
  void TakeServedModel(const v1::ServedModel& served) {
    const v1::Promotion& p = served.promotion();
    declined_sha_ = p.sha256();
    if (served.model().backbone_sha256() != executor_.backbone_sha256()) {
      spdlog::error("cannot serve job {} version {}: it needs backbone {} but this site holds {}", p.job_id(),
                    p.version(), served.model().backbone_sha256().substr(0, 16),
                    executor_.backbone_sha256().substr(0, 16));
      declined_until_ = std::chrono::steady_clock::time_point::max();  // until a restart
      return;
    }
    auto swapped = ReturnToPrevious(config_.ingest.workspace, served);
    if (swapped.ok() && *swapped) {
      Serving(served, "back to the kept previous model; serving");
      return;
    }
    v1::Task none;  // no task: the promoted model
    auto weights = Fetch(none, served.model().weights());
    absl::Status st = weights.ok() ? InstallServedModel(config_.ingest.workspace, served, *weights) : weights.status();
    if (!st.ok()) {
      spdlog::error("cannot take the promoted model job {} version {}: {}; trying again in a minute", p.job_id(),
                    p.version(), std::string(st.message()));
      declined_until_ = std::chrono::steady_clock::now() + std::chrono::minutes(1);
      return;
    }
    Serving(served, "fetched the promoted model; serving");
  }

  void Serving(const v1::ServedModel& served, const char* what) {
    const v1::Promotion& p = served.promotion();
    served_sha_ = p.sha256();
    declined_until_ = {};
    spdlog::info("{} job {} version {} (SHA-256 {}), promoted by {}: {}", what, p.job_id(), p.version(),
                 p.sha256().substr(0, 16), p.promoted_by(), p.note());
    if (on_serving_) on_serving_(executor_.backbone_sha256());
    if (metrics_ == nullptr) return;
    metrics_->GetGauge("fedtune_site_served_model_version", "Global version of the promoted model this site serves")
        .Set(p.version());
    // One series at 1: the earlier model's goes to 0.
    if (served_info_ != nullptr) served_info_->Set(0);
    served_info_ = &metrics_->GetGauge("fedtune_site_served_model_info",
                               "1 for the promoted model this site serves (job, version, SHA-256); 0 for earlier ones",
                               {{"job", p.job_id()}, {"version", std::to_string(p.version())}, {"sha256", p.sha256()}});
    served_info_->Set(1);
  }

  void SetConnected(bool connected) {
    if (metrics_ == nullptr) return;
    metrics_->GetGauge("fedtune_site_coordinator_connected", "1 while joined to the coordinator, else 0")
        .Set(connected ? 1 : 0);
  }

  // A finished task: kind (train, evaluate) and outcome (accepted, refused,
  // failed, cancelled), its duration, and for training the throughput.
  void CountTask(const v1::Task& task, const char* outcome, const TaskOutcome* done,
                 std::chrono::steady_clock::time_point start) {
    if (metrics_ == nullptr) return;
    const std::string kind = task.has_train() ? "train" : "evaluate";
    metrics_->GetCounter("fedtune_site_tasks_total", "Tasks finished, by kind and outcome",
                         {{"kind", kind}, {"outcome", outcome}})
        .Add();
    metrics_
        ->GetHistogram("fedtune_site_task_duration_seconds",
                       "From receiving a task to its result being answered, in seconds",
                       ExponentialBuckets(1, 2, 14), {{"kind", kind}})
        .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (done == nullptr || !task.has_train() || !done->header.failure_reason().empty()) return;
    const double epochs = std::max(1, task.train().config().local_epochs());
    const double images = epochs * static_cast<double>(done->header.num_examples());
    metrics_->GetCounter("fedtune_site_training_epochs_total", "Local training epochs run").Add(epochs);
    metrics_->GetCounter("fedtune_site_training_images_total", "Training images seen (epochs x examples)")
        .Add(images);
    if (done->header.train_seconds() > 0) {
      metrics_
          ->GetGauge("fedtune_site_training_images_per_second",
                     "Training throughput of the last training task: epochs x examples / its time (validation "
                     "included)")
          .Set(images / done->header.train_seconds());
    }
  }

  void RunTask(const v1::Task& task) {
    const auto start = std::chrono::steady_clock::now();
    const v1::WeightsRef& ref = task.has_train() ? task.train().weights() : task.evaluate().weights();
    spdlog::info("task {}: {} for job {} round {}", task.task_id(), task.has_train() ? "train" : "evaluate",
                 task.job_id(), task.round());
    std::atomic<bool> cancel{false};
    auto weights = Fetch(task, ref);
    TaskOutcome outcome;
    if (!weights.ok()) {
      spdlog::warn("task {}: {}", task.task_id(), std::string(weights.status().message()));
      if (weights.status().code() == absl::StatusCode::kPermissionDenied) {
        CountTask(task, "refused", nullptr, start);
        return;
      }
      outcome.header.set_task_id(task.task_id());
      outcome.header.set_job_id(task.job_id());
      outcome.header.set_round(task.round());
      outcome.header.set_failure_reason(absl::StrCat("fetching weights: ", weights.status().message()));
    } else {
      auto progress = [&](const v1::ProgressReport& p) {
        grpc::ClientContext ctx;
        Tag(&ctx);
        ctx.set_deadline(Clock::now() + std::chrono::seconds(3));
        v1::ProgressAck ack;
        if (stub_->ReportProgress(&ctx, p, &ack).ok() && ack.cancel()) {
          spdlog::info("task {} was cancelled by the coordinator", task.task_id());
          cancel = true;
        }
        if (Stopped()) cancel = true;
      };
      auto r = executor_.Run(task, *weights, progress, &cancel);
      if (!r.ok()) {
        spdlog::warn("task {}: {}", task.task_id(), std::string(r.status().message()));
        CountTask(task, "cancelled", nullptr, start);
        return;  // cancelled (nothing to submit) or this process is stopping
      }
      outcome = std::move(*r);
      if (task.has_train() && task.train().has_secure_aggregation() && outcome.header.failure_reason().empty()) {
        const char* answer = SubmitSecurely(task, *weights, std::move(outcome));
        CountTask(task, answer, nullptr, start);
        return;
      }
    }
    const char* answer = Submit(task, outcome);
    CountTask(task, !outcome.header.failure_reason().empty() ? "failed" : answer, &outcome, start);
  }

  // The example count an update declares (see ExampleCountToShare).
  int64_t SharedExampleCount(const v1::Task& task, int64_t actual) {
    return ExampleCountToShare(config_.ingest.workspace, config_.k_threshold, actual,
                               task.train().config().max_train_samples(), shared_train_images_);
  }

  // One key-exchange stage, asked until the coordinator says it is ready
  // (the other sites have answered too), the task's deadline passes or this
  // process stops.
  absl::StatusOr<v1::SecAggResponse> Exchange(const v1::Task& task, const v1::SecAggRequest& request) {
    double backoff = 0.2;
    while (!Stopped()) {
      grpc::ClientContext ctx;
      Tag(&ctx);
      ctx.set_deadline(Clock::now() + std::chrono::seconds(30));
      v1::SecAggResponse resp;
      grpc::Status s = stub_->SecureAggregation(&ctx, request, &resp);
      if (s.ok() && resp.ready()) return resp;
      if (!s.ok() && s.error_code() != grpc::StatusCode::UNAVAILABLE &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return absl::Status(static_cast<absl::StatusCode>(s.error_code()), Describe(s));
      }
      const int64_t now_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
      if (task.deadline_unix_ms() > 0 && now_ms > task.deadline_unix_ms()) {
        return absl::DeadlineExceededError("the task's deadline passed during the key exchange");
      }
      Sleep(backoff);
      backoff = std::min(backoff * 1.5, s.ok() ? 1.0 : 5.0);
    }
    return absl::CancelledError("stopping");
  }

  // A securely aggregated training result: the other sites' keys (checked
  // against the federation's CA), this site's shares sealed for its
  // neighbours, the masked difference through SubmitUpdate, then the shares
  // that remove the masks. Nothing of the update leaves unmasked. A site
  // that fails midway is dropped for the round (its masks are removed by
  // the others' shares).
  const char* SubmitSecurely(const v1::Task& task, const std::string& global, TaskOutcome outcome) {
    bool submitted = false;
    auto failed = [&](const absl::Status& st) -> const char* {
      spdlog::warn("task {}: secure aggregation: {}", task.task_id(), std::string(st.message()));
      if (st.code() == absl::StatusCode::kCancelled) return "cancelled";
      if (!submitted) {
        // The coordinator is told, so that the round does not wait for this
        // site (after sharing, its masks are removed by the others' shares).
        TaskOutcome failure;
        failure.header.set_task_id(task.task_id());
        failure.header.set_job_id(task.job_id());
        failure.header.set_round(task.round());
        failure.header.set_failure_reason(absl::StrCat("secure aggregation: ", st.message()));
        Submit(task, failure);
      }
      return "refused";
    };
    const v1::SecureAggregationConfig& cfg = task.train().secure_aggregation();
    auto difference = EncodeDifference(global, outcome.weights, cfg);
    if (!difference.ok()) return failed(difference.status());
    if (difference->clipped > 0) {
      spdlog::warn("task {}: {} values of the update beyond the job's secure_aggregation_bound {} were clipped",
                   task.task_id(), difference->clipped, cfg.bound());
    }
    const net::TlsFiles& tls = config_.run.tls;
    auto cert = ReadFileBytes(tls.cert_pem);
    auto key = ReadFileBytes(tls.key_pem);
    auto ca = ReadFileBytes(tls.ca_pem);
    if (!cert.ok() || !key.ok() || !ca.ok()) return failed(absl::FailedPreconditionError("cannot read the TLS files"));
    const std::string key_pem = *key, ca_pem = *ca;
    auto session = secagg::SiteSession::Start(config_.site_id, secagg::ParamsOf(task.job_id(), task.round(), cfg),
                                              *cert, [&key_pem](std::string_view m) { return secagg::Sign(key_pem, m); });
    if (!session.ok()) return failed(session.status());
    v1::SecAggRequest req;
    req.set_task_id(task.task_id());
    req.set_stage(v1::SEC_AGG_STAGE_ADVERTISE);
    *req.mutable_keys() = secagg::ToWire((*session)->advertisement());
    auto roster_resp = Exchange(task, req);
    if (!roster_resp.ok()) return failed(roster_resp.status());
    std::vector<secagg::Advertisement> roster;
    for (const auto& k : roster_resp->roster()) {
      auto a = secagg::FromWire(k);
      if (!a.ok()) return failed(a.status());
      roster.push_back(std::move(*a));
    }
    auto verify = [&ca_pem](const std::string& site, const std::string& c, std::string_view m, std::string_view sig) {
      return secagg::VerifySigned(ca_pem, c, site, m, sig);
    };
    auto shares = (*session)->ShareKeys(roster, verify);
    if (!shares.ok()) return failed(shares.status());
    req.Clear();
    req.set_task_id(task.task_id());
    req.set_stage(v1::SEC_AGG_STAGE_SHARE);
    for (const auto& s : *shares) *req.add_shares() = secagg::ToWire(s);
    auto shared_resp = Exchange(task, req);
    if (!shared_resp.ok()) return failed(shared_resp.status());
    std::vector<secagg::SealedShares> received;
    for (const auto& s : shared_resp->shares()) received.push_back(secagg::FromWire(s));
    const std::vector<std::string> shared(shared_resp->sites().begin(), shared_resp->sites().end());
    auto masked = (*session)->Mask(received, shared, std::move(difference->encoded));
    if (!masked.ok()) return failed(masked.status());
    outcome.weights = secagg::VectorBytes(*masked);
    outcome.header.set_total_size(static_cast<int64_t>(outcome.weights.size()));
    outcome.header.set_sha256(Sha256Hex(outcome.weights));
    submitted = true;
    const char* answer = Submit(task, outcome);
    if (std::string_view(answer) != "accepted") return answer;
    req.Clear();
    req.set_task_id(task.task_id());
    req.set_stage(v1::SEC_AGG_STAGE_MASKED_SITES);
    auto in_sum = Exchange(task, req);
    if (!in_sum.ok()) return failed(in_sum.status());
    auto reveal = (*session)->Unmask(std::vector<std::string>(in_sum->sites().begin(), in_sum->sites().end()));
    if (!reveal.ok()) return failed(reveal.status());
    req.Clear();
    req.set_task_id(task.task_id());
    req.set_stage(v1::SEC_AGG_STAGE_REVEAL);
    secagg::ToWire(*reveal, &req);
    auto revealed = Exchange(task, req);
    if (!revealed.ok()) return failed(revealed.status());
    spdlog::info("task {}: masks of {} sites removed by this site's shares", task.task_id(), in_sum->sites_size());
    return "accepted";
  }

  // Submits until the coordinator answers (accepted or refused) or the task's
  // deadline passes; survives coordinator restarts. Returns the outcome for
  // the metrics: "accepted", "refused" or "cancelled" (not answered).
  const char* Submit(const v1::Task& task, const TaskOutcome& outcome) {
    double backoff = 0.5;
    while (!Stopped()) {
      grpc::ClientContext ctx;
      Tag(&ctx);
      ctx.set_deadline(Clock::now() + std::chrono::minutes(10));
      v1::SubmitUpdateResponse resp;
      auto writer = stub_->SubmitUpdate(&ctx, &resp);
      v1::UpdateChunk header;
      *header.mutable_header() = outcome.header;
      if (task.has_train() && outcome.header.failure_reason().empty()) {
        header.mutable_header()->set_num_examples(SharedExampleCount(task, outcome.header.num_examples()));
      }
      bool ok = writer->Write(header);
      for (size_t off = 0; ok && off < outcome.weights.size(); off += kChunk) {
        v1::UpdateChunk c;
        c.set_data(outcome.weights.substr(off, kChunk));
        ok = writer->Write(c);
      }
      writer->WritesDone();
      grpc::Status s = writer->Finish();
      if (s.ok()) {
        if (resp.accepted()) {
          spdlog::info("task {}: update accepted", task.task_id());
        } else {
          spdlog::warn("task {}: coordinator did not accept the result: {}", task.task_id(), resp.reason());
        }
        return resp.accepted() ? "accepted" : "refused";
      }
      if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED || s.error_code() == grpc::StatusCode::NOT_FOUND ||
          s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
          s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        spdlog::error("task {}: submission refused: {}", task.task_id(), Describe(s));
        return "refused";
      }
      const int64_t now_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
      if (task.deadline_unix_ms() > 0 && now_ms > task.deadline_unix_ms()) {
        spdlog::warn("task {}: deadline passed while the coordinator was unreachable; result dropped",
                     task.task_id());
        return "cancelled";
      }
      spdlog::warn("task {}: submission failed ({}); retrying in {:.1f} s", task.task_id(), Describe(s), backoff);
      Sleep(backoff);
      backoff = std::min(backoff * 2, 5.0);
    }
    return "cancelled";
  }

  const SiteConfig& config_;
  const std::atomic<bool>* stop_;
  std::mutex polling_mu_;
  grpc::ClientContext* polling_ = nullptr;  // the poll in flight, cancelled on stop
  TaskExecutor executor_;
  std::function<int64_t()> data_version_;  // changes when the workspace gains images
  int64_t joined_version_ = 0;
  int64_t shared_train_images_ = -1;  // as last declared in Join; -1 = unknown or withheld
  std::unique_ptr<v1::Federation::Stub> stub_;
  int64_t poll_timeout_ms_ = 20'000;
  const std::string session_;
  MetricsRegistry* metrics_;
  std::function<void(const std::string&)> on_serving_;
  std::string served_sha_;  // the promoted model this site holds ("" = none)
  std::string declined_sha_;  // a promotion it could not take, not asked for until declined_until_
  std::chrono::steady_clock::time_point declined_until_{};
  Gauge* served_info_ = nullptr;
};

// This installation's session id, kept in the workspace so that a restarted
// daemon takes over its own session at once.
absl::StatusOr<std::string> SessionId(const std::string& workspace) {
  const std::string path = workspace + "/session.id";
  auto existing = ReadFileBytes(path);
  if (existing.ok() && existing->size() >= 16 && existing->size() <= 128) return *existing;
  std::random_device rd;
  std::string id;
  for (int i = 0; i < 4; ++i) absl::StrAppend(&id, absl::Hex(rd(), absl::kZeroPad8));
  RETURN_IF_ERROR(WriteFileAtomically(path, id, 0600));
  return id;
}

}  // namespace

ExecutorOptions ExecutorOptionsFor(const SiteConfig& config) {
  ExecutorOptions eo;
  eo.site_id = config.site_id;
  eo.workspace = config.ingest.workspace;
  eo.backbone_path = config.run.backbone;
  eo.device = config.run.device;
  eo.threads = config.run.threads;
  eo.k_threshold = config.k_threshold;
  eo.min_train_images = config.min_train_images;
  eo.max_evaluations_per_job = config.max_evaluations_per_job;
  eo.share_local_model = config.share_local_model;
  eo.bootstrap_resamples = config.run.bootstrap_resamples;
  return eo;
}

int RunSiteDaemon(const SiteConfig& config, const std::atomic<bool>* stop,
                  const std::function<int64_t()>& data_version, MetricsRegistry* metrics,
                  const std::function<void(const std::string& backbone_sha256)>& on_serving) {
  if (config.run.coordinator.empty()) {
    spdlog::critical("site.toml has no [coordinator] address");
    return 1;
  }
  if (config.run.tls.ca_pem.empty() || config.run.tls.cert_pem.empty() || config.run.tls.key_pem.empty()) {
    spdlog::critical("site.toml [tls] needs ca, cert and key (see certs/README.md)");
    return 1;
  }
  // The site is who its certificate says: a site.toml naming another site
  // would train and report under the certificate's name.
  auto cert = net::ReadCertificate(config.run.tls.cert_pem);
  if (!cert.ok()) {
    spdlog::critical("TLS: {}", std::string(cert.status().message()));
    return 1;
  }
  if (cert->common_name != config.site_id || cert->organizational_unit != "site") {
    spdlog::critical("site.toml says [site] id = \"{}\" but the certificate {} is for \"{}\" (OU \"{}\"): use the "
                     "site certificate issued for this site (fedtune-certs site PKI {}) or correct [site] id",
                     config.site_id, config.run.tls.cert_pem, cert->common_name, cert->organizational_unit,
                     config.site_id);
    return 1;
  }
  auto creds = net::MakeClientCredentials(config.run.tls);
  if (!creds.ok()) {
    spdlog::critical("TLS: {}", std::string(creds.status().message()));
    return 1;
  }
  // One daemon per workspace; the coordinator refuses a second daemon with
  // the same certificate elsewhere (one session per site identity).
  auto lock = ExclusiveLock::Acquire(config.ingest.workspace + "/daemon.lock",
                                     absl::StrCat("fedtune-site run, pid ", ::getpid()));
  if (!lock.ok()) {
    spdlog::critical("another site daemon runs on this workspace: {}", std::string(lock.status().message()));
    return 1;
  }
  auto session = SessionId(config.ingest.workspace);
  if (!session.ok()) {
    spdlog::critical("workspace: {}", std::string(session.status().message()));
    return 1;
  }
  auto executor = TaskExecutor::Create(ExecutorOptionsFor(config));
  if (!executor.ok()) {
    spdlog::critical("backbone: {}", std::string(executor.status().message()));
    return 1;
  }
  spdlog::info("site {} starting: coordinator {}, backbone SHA-256 {}", config.site_id, config.run.coordinator,
               executor->backbone_sha256().empty() ? "(none)" : executor->backbone_sha256().substr(0, 16));
  Agent agent(config, stop, std::move(*executor), *creds, data_version, *session, metrics, on_serving);
  return agent.Run();
}

}  // namespace fedtune::site
