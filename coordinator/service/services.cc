#include "coordinator/service/services.h"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/status.h"
#include "common/fl/task_spec.h"
#include "common/net/tls.h"
#include "coordinator/engine/result_checks.h"
#include "coordinator/report/report.h"

namespace fedtune::coordinator {
namespace {

using net::ToGrpc;

int64_t MsUntil(const grpc::ServerContext& ctx) {
  const auto left = ctx.deadline() - std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::milliseconds>(left).count();
}

bool Finished(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

// The live CRL, consulted on every call: a certificate revoked while its
// connection stays open is refused from its next call on.
absl::Status CheckNotRevoked(const ServiceOptions& options, const net::PeerIdentity& peer) {
  if (options.revocations != nullptr && options.revocations->IsRevoked(peer.serial_hex)) {
    spdlog::warn("refused revoked certificate \"{}\" (serial {})", peer.common_name, peer.serial_hex);
    return absl::PermissionDeniedError(absl::StrCat("the certificate of \"", peer.common_name, "\" is revoked"));
  }
  return absl::OkStatus();
}

std::string SessionOf(const grpc::ServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("fedtune-session");
  return it == md.end() ? std::string() : std::string(it->second.data(), std::min<size_t>(it->second.size(), 128));
}

// Every string a site sends about itself is bounded before it is stored or
// logged: names are cut, and a summary with absurd sizes is refused.
absl::Status CapPeerText(v1::Capabilities* caps, v1::DatasetSummary* dataset) {
  caps->set_software_version(CapText(caps->software_version(), 64));
  caps->set_backbone_sha256(CapText(caps->backbone_sha256(), 64));
  caps->set_backbone_architecture(CapText(caps->backbone_architecture(), 64));
  caps->set_device_name(CapText(caps->device_name(), 128));
  if (dataset->findings_size() > 256 || dataset->splits_size() > 8) {
    return absl::InvalidArgumentError("the dataset summary lists more than 256 findings or 8 splits");
  }
  for (auto& f : *dataset->mutable_findings()) {
    if (f.size() > 128) return absl::InvalidArgumentError("a finding name in the dataset summary exceeds 128 bytes");
  }
  for (const auto& sp : dataset->splits()) {
    if (sp.split().size() > 16 || sp.positives_size() > 256 || sp.negatives_size() > 256) {
      return absl::InvalidArgumentError("a split in the dataset summary is malformed");
    }
  }
  // The counts bound what a site's updates may weigh in FedAvg: numbers no
  // hospital holds are refused (a count a site withholds allows k - 1).
  constexpr int64_t kMaxImages = 1'000'000'000;
  if (dataset->k_threshold() < 0 || dataset->k_threshold() > 1000) {
    return absl::InvalidArgumentError("the dataset summary's k threshold is outside 0..1000");
  }
  for (const auto& sp : dataset->splits()) {
    bool absurd = sp.images() > kMaxImages || sp.patients() > kMaxImages;
    for (int64_t n : sp.positives()) absurd = absurd || n > kMaxImages;
    for (int64_t n : sp.negatives()) absurd = absurd || n > kMaxImages;
    if (absurd) return absl::InvalidArgumentError("the dataset summary claims more than 10^9 images in a split");
  }
  return absl::OkStatus();
}

// An update body being received: a new file in the engine's incoming
// directory, removed unless Finish hands it on.
class UploadFile {
 public:
  static absl::StatusOr<UploadFile> Create(const std::string& dir) {
    static std::atomic<uint64_t> counter{0};
    std::string path = absl::StrCat(dir, "/upload-", ::getpid(), "-", ++counter, ".part");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
    return UploadFile(fd, std::move(path));
  }
  UploadFile(UploadFile&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}
  UploadFile& operator=(UploadFile&&) = delete;
  ~UploadFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  absl::Status Append(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return absl::ResourceExhaustedError(absl::StrCat("cannot store the update: ", std::strerror(errno)));
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }
  // Durable on disk before anyone records it as received.
  absl::StatusOr<std::string> Finish() {
    if (::fsync(fd_) != 0 || ::close(std::exchange(fd_, -1)) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot store the update: ", std::strerror(errno)));
    }
    return std::exchange(path_, std::string());
  }

 private:
  UploadFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};


}  // namespace

CallWatchdog::CallWatchdog() : thread_([this] { Loop(); }) {}

CallWatchdog::~CallWatchdog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t CallWatchdog::Watch(grpc::ServerContext* ctx, int64_t timeout_ms) {
  std::lock_guard lock(mu_);
  calls_[++next_] = {ctx, std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms)};
  return next_;
}

void CallWatchdog::Unwatch(uint64_t id) {
  std::lock_guard lock(mu_);
  calls_.erase(id);
}

void CallWatchdog::Loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(250));
    const auto now = std::chrono::steady_clock::now();
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (now >= it->second.second) {
        it->second.first->TryCancel();  // the handler's Read returns false
        it = calls_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

FederationService::CallSlot::CallSlot(FederationService* service, std::map<std::string, int>* in_progress,
                                      std::string site, int max)
    : service_(service), in_progress_(in_progress), site_(std::move(site)) {
  std::lock_guard lock(service_->calls_mu_);
  int& n = (*in_progress_)[site_];
  held_ = n < max;
  if (held_) ++n;
}
FederationService::CallSlot::~CallSlot() {
  if (!held_) return;
  std::lock_guard lock(service_->calls_mu_);
  if (--(*in_progress_)[site_] <= 0) in_progress_->erase(site_);
}

void FederationService::CountUpdate(const std::string& code) {
  if (options_.metrics == nullptr) return;
  if (code == "accepted") {
    options_.metrics
        ->GetCounter("fedtune_coordinator_updates_accepted_total",
                     "Results accepted from sites (training updates and evaluations)")
        .Add();
  } else {
    options_.metrics
        ->GetCounter("fedtune_coordinator_updates_refused_total",
                     "Results refused or recorded as failed, by reason", {{"reason", code}})
        .Add();
  }
}

void FederationService::CountBytes(const char* direction, int64_t bytes) {
  if (options_.metrics == nullptr || bytes <= 0) return;
  options_.metrics
      ->GetCounter(absl::StrCat("fedtune_coordinator_", direction, "_bytes_total"),
                   absl::StrCat("Model bytes ", direction == std::string("sent") ? "sent to" : "received from",
                                " sites (weights downloads and update uploads)"))
      .Add(static_cast<double>(bytes));
}

void FederationService::NoteRefusal(const std::string& site, const std::string& kind, const std::string& detail) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t unlogged = 0;
  {
    std::lock_guard lock(noted_mu_);
    Noted& n = noted_[{site, kind}];
    if (n.last_ms != 0 && now - n.last_ms < 30'000) {
      ++n.unlogged;
      return;
    }
    unlogged = n.unlogged;
    n = Noted{now, 0};
  }
  spdlog::warn("refused site {}: {}: {}{}", site, kind, CapText(detail, 256),
               unlogged > 0 ? absl::StrCat(" (and ", unlogged, " more in the last 30 s)") : std::string());
}

#define FEDTUNE_GRPC_ASSIGN(lhs, expr)        \
  auto lhs##_or = (expr);                     \
  if (!lhs##_or.ok()) return ToGrpc(lhs##_or.status()); \
  auto& lhs = *lhs##_or

absl::StatusOr<std::string> FederationService::Site(const grpc::ServerContext& ctx, bool check_session) {
  auto peer = net::PeerFromContext(ctx);
  if (!peer.ok()) return peer.status();
  if (!peer->is_site()) {
    return absl::PermissionDeniedError("the Federation API takes site certificates (OU=site) only");
  }
  RETURN_IF_ERROR(CheckNotRevoked(options_, *peer));
  if (!engine_->IsEnrolled(peer->common_name)) {
    spdlog::warn("refused certificate of site \"{}\": not enrolled", peer->common_name);
    return absl::PermissionDeniedError(
        absl::StrCat("site \"", peer->common_name, "\" is not enrolled in this federation"));
  }
  if (check_session) RETURN_IF_ERROR(engine_->CheckSession(peer->common_name, SessionOf(ctx)));
  return peer->common_name;
}

grpc::Status FederationService::Join(grpc::ServerContext* ctx, const v1::JoinRequest* req, v1::JoinResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx, /*check_session=*/false));
  if (req->session_id().empty() || req->session_id().size() > 128) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "Join needs a session_id of 1 to 128 characters (a site agent older than this coordinator?)");
  }
  v1::Capabilities caps = req->capabilities();
  v1::DatasetSummary dataset = req->dataset();
  if (absl::Status st = CapPeerText(&caps, &dataset); !st.ok()) return ToGrpc(st);
  absl::Status st = engine_->Join(site, caps, dataset, req->session_id());
  if (!st.ok()) return ToGrpc(st);
  spdlog::info("site {} joined ({}, backbone {})", site, caps.device_name(),
               req->capabilities().backbone_sha256().substr(0, 12));
  resp->set_site_id(site);
  resp->set_poll_timeout_ms(options_.poll_timeout_ms);
  return grpc::Status::OK;
}

grpc::Status FederationService::PollTask(grpc::ServerContext* ctx, const v1::PollTaskRequest* req,
                                         v1::PollTaskResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  // A daemon polls once at a time (twice while a reconnect overlaps).
  CallSlot slot(this, &polls_, site, 2);
  if (!slot.held()) {
    NoteRefusal(site, "a third simultaneous poll", "at most two polls per site at a time");
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "this site already has two polls waiting");
  }
  // Hold the call until a task is ready, the poll timeout passes, or the
  // client's deadline is one second away.
  const int64_t hold = std::min(options_.poll_timeout_ms, MsUntil(*ctx) - 1000);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<int64_t>(hold, 0));
  uint64_t seen = engine_->change_counter();
  while (true) {
    auto r = engine_->Poll(site, req->running_task_id());
    if (!r.ok()) return ToGrpc(r.status());
    // A promotion the site does not hold yet is answered at once.
    auto served = engine_->ServedModel();
    if (!served.ok()) return ToGrpc(served.status());
    const bool new_model = served->has_value() && (*served)->promotion().sha256() != req->served_model_sha256();
    if (r->task || !r->cancel_task_id.empty() || new_model) {
      if (r->task) *resp->mutable_task() = *r->task;
      resp->set_cancel_task_id(r->cancel_task_id);
      if (new_model) *resp->mutable_served_model() = **served;
      return grpc::Status::OK;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0 || ctx->IsCancelled()) return grpc::Status::OK;
    seen = engine_->WaitForChange(seen, std::min<int64_t>(left.count(), 1000));
  }
}

grpc::Status FederationService::FetchWeights(grpc::ServerContext* ctx, const v1::FetchWeightsRequest* req,
                                             grpc::ServerWriter<v1::WeightsChunk>* writer) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  // A site that opens downloads and never reads them holds no more than two
  // of the server's threads, each for at most the transfer time limit.
  CallSlot slot(this, &fetches_, site, 2);
  if (!slot.held()) {
    NoteRefusal(site, "a third simultaneous weight download", "at most two per site at a time");
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "this site already has two weight downloads open");
  }
  WatchdogGuard deadline(&watchdog_, ctx, options_.upload_timeout_ms);
  FEDTUNE_GRPC_ASSIGN(w, req->task_id().empty() ? engine_->WeightsForServedModel(site, req->weights())
                                                : engine_->WeightsForTask(site, req->task_id(), req->weights()));
  auto file = MappedFile::Open(w.path);
  if (!file.ok()) return ToGrpc(file.status());
  const auto bytes = file->bytes();
  if (req->offset() < 0 || req->offset() > static_cast<int64_t>(bytes.size())) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "offset past the end of the weights");
  }
  int64_t offset = req->offset();
  bool first = true;
  do {
    const int64_t n = std::min<int64_t>(options_.chunk_bytes, static_cast<int64_t>(bytes.size()) - offset);
    v1::WeightsChunk chunk;
    chunk.set_offset(offset);
    chunk.set_data(reinterpret_cast<const char*>(bytes.data()) + offset, static_cast<size_t>(n));
    if (first) {
      chunk.set_total_size(static_cast<int64_t>(bytes.size()));
      chunk.set_sha256(w.sha256);
      first = false;
    }
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "the site went away");
    CountBytes("sent", n);
    offset += n;
  } while (offset < static_cast<int64_t>(bytes.size()));
  return grpc::Status::OK;
}

grpc::Status FederationService::SubmitUpdate(grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
                                             v1::SubmitUpdateResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  // One upload per site at a time: a second stream is refused at once, so a
  // site cannot hold many threads and buffers of this server.
  CallSlot slot(this, &uploads_, site, 1);
  if (!slot.held()) {
    NoteRefusal(site, "a second simultaneous upload", "one upload per site at a time");
    CountUpdate("busy");
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "an upload from this site is already in progress; wait for its answer");
  }
  WatchdogGuard deadline(&watchdog_, ctx, options_.upload_timeout_ms);
  v1::UpdateChunk chunk;
  // A malformed stream is refused with its reason, and noted.
  auto malformed = [&](const char* why) {
    NoteRefusal(site, "a malformed upload", why);
    CountUpdate("malformed");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, why);
  };
  if (!reader->Read(&chunk) || !chunk.has_header()) return malformed("the first message must be the update header");
  const v1::UpdateHeader header = chunk.header();
  // The header against the open task before a byte of the body is read.
  auto begun = engine_->BeginUpload(site, header);
  if (!begun.ok()) {
    NoteRefusal(site, "an upload header", std::string(begun.status().message()));
    if (begun.status().code() == absl::StatusCode::kPermissionDenied) CountUpdate("another_site");
    return ToGrpc(begun.status());
  }
  const UploadLimit& limit = *begun;
  auto answer = [&](const SubmitResult& r) {
    resp->set_accepted(r.accepted);
    resp->set_reason(r.reason);
    CountUpdate(r.code);
    if (r.accepted) spdlog::info("update from {} for round {} accepted", site, header.round());
    return grpc::Status::OK;
  };
  if (limit.refused) {
    // Refusals of an open task are recorded by the engine; this also notes
    // those it cannot record (a replay of an answered task, another round).
    NoteRefusal(site, "an upload header", limit.refused->reason);
    return answer(*limit.refused);
  }
  std::string body_path;
  if (limit.max_bytes > 0) {
    // Streamed to disk chunk by chunk: memory stays at one chunk per upload.
    FEDTUNE_GRPC_ASSIGN(file, UploadFile::Create(engine_->IncomingDirectory()));
    int64_t received = 0;
    while (reader->Read(&chunk)) {
      if (chunk.has_header()) return malformed("more than one update header");
      received += static_cast<int64_t>(chunk.data().size());
      CountBytes("received", static_cast<int64_t>(chunk.data().size()));
      if (received > header.total_size()) return malformed("more bytes than the header announced");
      if (absl::Status st = file.Append(chunk.data()); !st.ok()) return ToGrpc(st);
    }
    if (ctx->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("the upload took longer than ", options_.upload_timeout_ms / 1000, " s"));
    }
    FEDTUNE_GRPC_ASSIGN(path, file.Finish());
    body_path = path;
  }
  deadline.Release();  // received: checking it is not the site's time to spend
  auto r = body_path.empty() ? engine_->Submit(site, header, "") : engine_->SubmitFile(site, header, body_path);
  if (!r.ok()) return ToGrpc(r.status());
  return answer(*r);
}

grpc::Status FederationService::ReportProgress(grpc::ServerContext* ctx, const v1::ProgressReport* req,
                                               v1::ProgressAck* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  FEDTUNE_GRPC_ASSIGN(cancel, engine_->Progress(site, *req));
  resp->set_cancel(cancel);
  return grpc::Status::OK;
}

grpc::Status FederationService::SecureAggregation(grpc::ServerContext* ctx, const v1::SecAggRequest* req,
                                                  v1::SecAggResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  FEDTUNE_GRPC_ASSIGN(response, engine_->SecureAggregation(site, *req));
  *resp = std::move(response);
  return grpc::Status::OK;
}

absl::StatusOr<std::string> AuthorizeAdmin(const ServiceOptions& options, const net::PeerIdentity& peer,
                                           AdminRole needed) {
  if (!peer.is_admin()) {
    spdlog::warn("refused a non-admin certificate (\"{}\", OU \"{}\") on an admin interface", peer.common_name,
                 peer.organizational_unit);
    return absl::PermissionDeniedError("this takes admin certificates (OU=admin) only");
  }
  RETURN_IF_ERROR(CheckNotRevoked(options, peer));
  auto role = options.admins.find(peer.common_name);
  if (role == options.admins.end()) {
    spdlog::warn("refused admin certificate \"{}\": not in coordinator.toml [admins]", peer.common_name);
    return absl::PermissionDeniedError(absl::StrCat("\"", peer.common_name,
                                                    "\" is not on this coordinator's admin list ([admins] in "
                                                    "coordinator.toml)"));
  }
  if (needed == AdminRole::kOperator && role->second != AdminRole::kOperator) {
    spdlog::warn("refused viewer \"{}\" an operator action", peer.common_name);
    return absl::PermissionDeniedError(absl::StrCat("\"", peer.common_name,
                                                    "\" is a viewer: submitting and cancelling jobs takes an "
                                                    "operator ([admins] operators in coordinator.toml)"));
  }
  return peer.common_name;
}

absl::StatusOr<std::string> AdminService::Admin(const grpc::ServerContext& ctx, AdminRole needed) {
  auto peer = net::PeerFromContext(ctx);
  if (!peer.ok()) return peer.status();
  return AuthorizeAdmin(options_, *peer, needed);
}

grpc::Status AdminService::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                     v1::SubmitJobResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kOperator));
  std::string source = req->file_name().empty() ? "job.toml" : CapText(req->file_name(), 256);
  FEDTUNE_GRPC_ASSIGN(job, engine_->SubmitJob(req->job_toml(), source));
  spdlog::info("{} submitted job {}", who, job.job_id);
  resp->set_job_id(job.job_id);
  for (const auto& w : job.warnings) resp->add_warnings(w);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest*, v1::ListJobsResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kViewer));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(jobs, engine_->ListJobs());
  for (auto& j : jobs) *resp->add_jobs() = std::move(j);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::JobStatus* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kViewer));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(job, engine_->GetJob(req->job_id()));
  *resp = std::move(job);
  return grpc::Status::OK;
}

grpc::Status AdminService::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::JobStatus* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kOperator));
  FEDTUNE_GRPC_ASSIGN(job, engine_->CancelJob(req->job_id()));
  spdlog::info("{} cancelled job {}", who, req->job_id());
  *resp = std::move(job);
  return grpc::Status::OK;
}

grpc::Status AdminService::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                    grpc::ServerWriter<v1::JobEvent>* writer) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kViewer));
  (void)who;
  int64_t seq = std::max<int64_t>(req->after_seq(), 0);
  uint64_t seen = engine_->change_counter();
  while (!ctx->IsCancelled()) {
    FEDTUNE_GRPC_ASSIGN(events, engine_->EventsAfter(req->job_id(), seq, &seq));
    bool finished = false;
    for (const auto& e : events) {
      if (!writer->Write(e)) return grpc::Status::OK;
      finished = finished || (e.kind() == "job_finished" && Finished(e.job_state()));
    }
    if (finished) return grpc::Status::OK;
    seen = engine_->WaitForChange(seen, 1000);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ListSites(grpc::ServerContext* ctx, const v1::ListSitesRequest*,
                                     v1::ListSitesResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kViewer));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(sites, engine_->ListSites());
  for (auto& s : sites) *resp->add_sites() = std::move(s);
  return grpc::Status::OK;
}

grpc::Status AdminService::ExportModel(grpc::ServerContext* ctx, const v1::ExportModelRequest* req,
                                       grpc::ServerWriter<v1::ExportChunk>* writer) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kViewer));
  FEDTUNE_GRPC_ASSIGN(version, engine_->GetVersion(req->job_id(), req->version()));
  if (version.version == 0) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("job ", req->job_id(), " has no aggregated round yet: global version 0 is the "
                                     "untrained starting point, not a model (fedtune job status ", req->job_id(),
                                     " shows its rounds)"));
  }
  FEDTUNE_GRPC_ASSIGN(spec, fl::ModelSpecFor(version.spec.backbone_architecture, version.spec.train));
  FEDTUNE_GRPC_ASSIGN(job, engine_->GetJob(req->job_id(), /*detail=*/true));
  spdlog::info("{} exported job {} version {}", who, req->job_id(), version.version);
  auto send = [&](const std::string& name, std::string_view bytes, const std::string& sha) {
    size_t offset = 0;
    do {
      const size_t n = std::min<size_t>(static_cast<size_t>(options_.chunk_bytes), bytes.size() - offset);
      v1::ExportChunk c;
      c.set_file_name(name);
      c.set_data(bytes.data() + offset, n);
      if (offset == 0) c.set_sha256(sha);
      if (!writer->Write(c)) return false;
      offset += n;
    } while (offset < bytes.size());
    return true;
  };
  auto file = MappedFile::Open(version.file.path);
  if (!file.ok()) return ToGrpc(file.status());
  const auto b = file->bytes();
  const std::string_view global(reinterpret_cast<const char*>(b.data()), b.size());
  // LoRA: the global state is a PEFT adapter as it is. Other methods ship
  // differences from the base weights, which only the holder of the base
  // file can turn into a model (fedtune model export --backbone).
  const bool lora = spec.method == model::FineTuneMethod::kLora;
  const std::string second_name = lora ? "adapter_config.json" : "job.toml";
  const std::string second = lora ? model::AdapterConfigJson(spec) + "\n" : job.job_toml();
  if (!send(lora ? "adapter_model.safetensors" : "global_state.safetensors", global, version.file.sha256) ||
      !send(second_name, second, Sha256Hex(second))) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::GetReport(grpc::ServerContext* ctx, const v1::GetReportRequest* req,
                                     v1::GetReportResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kViewer));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(job, engine_->GetJob(req->job_id()));
  FEDTUNE_GRPC_ASSIGN(sites, engine_->ListSites());
  FEDTUNE_GRPC_ASSIGN(report, report::BuildReport(job, sites));
  resp->set_report_json(report.dump(2));
  return grpc::Status::OK;
}

grpc::Status AdminService::PromoteModel(grpc::ServerContext* ctx, const v1::PromoteModelRequest* req,
                                        v1::Promotion* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kOperator));
  if (req->rollback()) {
    if (!req->job_id().empty() || req->round() != 0 || req->best()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a rollback names no job, round or --best");
    }
    FEDTUNE_GRPC_ASSIGN(p, engine_->Rollback(who));
    *resp = p;
    return grpc::Status::OK;
  }
  if (req->job_id().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name the job to promote");
  if (req->round() < 0 || (req->round() > 0 && req->best())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "give either a round (>= 1) or best, not both");
  }
  FEDTUNE_GRPC_ASSIGN(p, engine_->Promote(req->job_id(), req->round(), req->best(), who));
  *resp = p;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListPromotions(grpc::ServerContext* ctx, const v1::ListPromotionsRequest*,
                                          v1::ListPromotionsResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx, AdminRole::kViewer));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(history, engine_->ListPromotions());
  for (auto& p : history) *resp->add_promotions() = std::move(p);
  return grpc::Status::OK;
}

}  // namespace fedtune::coordinator
