#include "coordinator/service/services.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/fl/task_spec.h"
#include "common/net/tls.h"
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

}  // namespace

#define FEDTUNE_GRPC_ASSIGN(lhs, expr)        \
  auto lhs##_or = (expr);                     \
  if (!lhs##_or.ok()) return ToGrpc(lhs##_or.status()); \
  auto& lhs = *lhs##_or

absl::StatusOr<std::string> FederationService::Site(const grpc::ServerContext& ctx) {
  auto peer = net::PeerFromContext(ctx);
  if (!peer.ok()) return peer.status();
  if (!peer->is_site()) {
    return absl::PermissionDeniedError("the Federation API takes site certificates (OU=site) only");
  }
  if (!engine_->IsEnrolled(peer->common_name)) {
    spdlog::warn("refused certificate of site \"{}\": not enrolled", peer->common_name);
    return absl::PermissionDeniedError(
        absl::StrCat("site \"", peer->common_name, "\" is not enrolled in this federation"));
  }
  return peer->common_name;
}

grpc::Status FederationService::Join(grpc::ServerContext* ctx, const v1::JoinRequest* req, v1::JoinResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  absl::Status st = engine_->Join(site, req->capabilities(), req->dataset());
  if (!st.ok()) return ToGrpc(st);
  spdlog::info("site {} joined ({}, backbone {})", site, req->capabilities().device_name(),
               req->capabilities().backbone_sha256().substr(0, 12));
  resp->set_site_id(site);
  resp->set_poll_timeout_ms(options_.poll_timeout_ms);
  return grpc::Status::OK;
}

grpc::Status FederationService::PollTask(grpc::ServerContext* ctx, const v1::PollTaskRequest* req,
                                         v1::PollTaskResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  // Hold the call until a task is ready, the poll timeout passes, or the
  // client's deadline is one second away.
  const int64_t hold = std::min(options_.poll_timeout_ms, MsUntil(*ctx) - 1000);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<int64_t>(hold, 0));
  uint64_t seen = engine_->change_counter();
  while (true) {
    auto r = engine_->Poll(site, req->running_task_id());
    if (!r.ok()) return ToGrpc(r.status());
    if (r->task || !r->cancel_task_id.empty()) {
      if (r->task) *resp->mutable_task() = *r->task;
      resp->set_cancel_task_id(r->cancel_task_id);
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
  FEDTUNE_GRPC_ASSIGN(w, engine_->WeightsForTask(site, req->task_id(), req->weights()));
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
    offset += n;
  } while (offset < static_cast<int64_t>(bytes.size()));
  return grpc::Status::OK;
}

grpc::Status FederationService::SubmitUpdate(grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
                                             v1::SubmitUpdateResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  v1::UpdateChunk chunk;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be the update header");
  }
  const v1::UpdateHeader header = chunk.header();
  if (header.total_size() < 0 || header.total_size() > options_.max_update_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("update of ", header.total_size(), " bytes exceeds the limit of ",
                                     options_.max_update_bytes));
  }
  std::string bytes;
  bytes.reserve(static_cast<size_t>(header.total_size()));
  while (reader->Read(&chunk)) {
    if (chunk.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "more than one update header");
    }
    if (static_cast<int64_t>(bytes.size() + chunk.data().size()) > header.total_size()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "more bytes than the header announced");
    }
    bytes += chunk.data();
  }
  auto r = engine_->Submit(site, header, std::move(bytes));
  if (!r.ok()) return ToGrpc(r.status());
  resp->set_accepted(r->accepted);
  resp->set_reason(r->reason);
  if (r->accepted) spdlog::info("update from {} for round {} accepted", site, header.round());
  return grpc::Status::OK;
}

grpc::Status FederationService::ReportProgress(grpc::ServerContext* ctx, const v1::ProgressReport* req,
                                               v1::ProgressAck* resp) {
  FEDTUNE_GRPC_ASSIGN(site, Site(*ctx));
  FEDTUNE_GRPC_ASSIGN(cancel, engine_->Progress(site, *req));
  resp->set_cancel(cancel);
  return grpc::Status::OK;
}

absl::StatusOr<std::string> AdminService::Admin(const grpc::ServerContext& ctx) {
  auto peer = net::PeerFromContext(ctx);
  if (!peer.ok()) return peer.status();
  if (!peer->is_admin()) {
    spdlog::warn("refused a non-admin certificate (\"{}\", OU \"{}\") on the Admin API", peer->common_name,
                 peer->organizational_unit);
    return absl::PermissionDeniedError("the Admin API takes admin certificates (OU=admin) only");
  }
  return peer->common_name;
}

grpc::Status AdminService::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                     v1::SubmitJobResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
  FEDTUNE_GRPC_ASSIGN(id, engine_->SubmitJob(req->job_toml()));
  spdlog::info("{} submitted job {}", who, id);
  resp->set_job_id(id);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest*, v1::ListJobsResponse* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(jobs, engine_->ListJobs());
  for (auto& j : jobs) *resp->add_jobs() = std::move(j);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::JobStatus* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(job, engine_->GetJob(req->job_id()));
  *resp = std::move(job);
  return grpc::Status::OK;
}

grpc::Status AdminService::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::JobStatus* resp) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
  FEDTUNE_GRPC_ASSIGN(job, engine_->CancelJob(req->job_id()));
  spdlog::info("{} cancelled job {}", who, req->job_id());
  *resp = std::move(job);
  return grpc::Status::OK;
}

grpc::Status AdminService::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                    grpc::ServerWriter<v1::JobEvent>* writer) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
  (void)who;
  int64_t seq = 0;
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
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(sites, engine_->ListSites());
  for (auto& s : sites) *resp->add_sites() = std::move(s);
  return grpc::Status::OK;
}

grpc::Status AdminService::ExportModel(grpc::ServerContext* ctx, const v1::ExportModelRequest* req,
                                       grpc::ServerWriter<v1::ExportChunk>* writer) {
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
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
  FEDTUNE_GRPC_ASSIGN(who, Admin(*ctx));
  (void)who;
  FEDTUNE_GRPC_ASSIGN(job, engine_->GetJob(req->job_id()));
  FEDTUNE_GRPC_ASSIGN(sites, engine_->ListSites());
  FEDTUNE_GRPC_ASSIGN(report, report::BuildReport(job, sites));
  resp->set_report_json(report.dump(2));
  return grpc::Status::OK;
}

}  // namespace fedtune::coordinator
