// gRPC adapters over the round engine. Identity comes only from the verified
// client certificate: Federation answers enrolled site certificates (OU=site,
// CN = an enrolled site id), Admin answers admin certificates (OU=admin).
#pragma once

#include <cstdint>

#include "coordinator/engine/round_engine.h"
#include "fedtune/v1/admin.grpc.pb.h"
#include "fedtune/v1/federation.grpc.pb.h"

namespace fedtune::coordinator {

struct ServiceOptions {
  int64_t poll_timeout_ms = 20'000;  // how long a PollTask call is held open
  int64_t chunk_bytes = 1 << 20;     // weights are streamed in chunks of this size
  int64_t max_update_bytes = int64_t{2} << 30;
};

class FederationService final : public v1::Federation::Service {
 public:
  FederationService(RoundEngine* engine, ServiceOptions options) : engine_(engine), options_(options) {}

  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest* req, v1::JoinResponse* resp) override;
  grpc::Status PollTask(grpc::ServerContext* ctx, const v1::PollTaskRequest* req, v1::PollTaskResponse* resp) override;
  grpc::Status FetchWeights(grpc::ServerContext* ctx, const v1::FetchWeightsRequest* req,
                            grpc::ServerWriter<v1::WeightsChunk>* writer) override;
  grpc::Status SubmitUpdate(grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
                            v1::SubmitUpdateResponse* resp) override;
  grpc::Status ReportProgress(grpc::ServerContext* ctx, const v1::ProgressReport* req, v1::ProgressAck* resp) override;

 private:
  // The calling site's id, or PERMISSION_DENIED / UNAUTHENTICATED.
  absl::StatusOr<std::string> Site(const grpc::ServerContext& ctx);
  RoundEngine* engine_;
  ServiceOptions options_;
};

class AdminService final : public v1::Admin::Service {
 public:
  AdminService(RoundEngine* engine, ServiceOptions options) : engine_(engine), options_(options) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                         v1::SubmitJobResponse* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req, v1::ListJobsResponse* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::JobStatus* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::JobStatus* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status ListSites(grpc::ServerContext* ctx, const v1::ListSitesRequest* req,
                         v1::ListSitesResponse* resp) override;
  grpc::Status ExportModel(grpc::ServerContext* ctx, const v1::ExportModelRequest* req,
                           grpc::ServerWriter<v1::ExportChunk>* writer) override;
  grpc::Status GetReport(grpc::ServerContext* ctx, const v1::GetReportRequest* req,
                         v1::GetReportResponse* resp) override;

 private:
  // The operator's name, or PERMISSION_DENIED / UNAUTHENTICATED.
  absl::StatusOr<std::string> Admin(const grpc::ServerContext& ctx);
  RoundEngine* engine_;
  ServiceOptions options_;
};

}  // namespace fedtune::coordinator
