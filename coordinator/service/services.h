// gRPC adapters over the round engine. Identity comes only from the verified
// client certificate: Federation answers enrolled site certificates (OU=site,
// CN = an enrolled site id), Admin answers admin certificates (OU=admin).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "common/net/pki.h"
#include "common/net/tls.h"
#include "coordinator/engine/round_engine.h"
#include "fedtune/v1/admin.grpc.pb.h"
#include "fedtune/v1/federation.grpc.pb.h"

namespace fedtune::coordinator {

// What an admin certificate (OU=admin) may do, by its CN. Viewers read
// (jobs, sites, events, reports, exports); operators also submit and cancel.
enum class AdminRole { kViewer, kOperator };
using AdminRoles = std::map<std::string, AdminRole>;

struct ServiceOptions {
  int64_t poll_timeout_ms = 20'000;  // how long a PollTask call is held open
  int64_t chunk_bytes = 1 << 20;     // weights are streamed in chunks of this size
  int64_t max_update_bytes = int64_t{2} << 30;
  // An upload (SubmitUpdate) that takes longer than this is cancelled by the
  // server, whatever deadline the client set.
  int64_t upload_timeout_ms = 600'000;
  AdminRoles admins;
  // Consulted on every call; null: no revocation checking beyond TLS.
  const net::RevocationList* revocations = nullptr;
  // Optional: updates by outcome and refusal reason, bytes in and out.
  MetricsRegistry* metrics = nullptr;
};

// The operator's name when `peer` is an admin certificate (OU=admin), not
// revoked, on the [admins] list with at least `needed`; else
// PERMISSION_DENIED with the reason (logged). Used by the Admin API and by
// the coordinator's HTTPS endpoint.
absl::StatusOr<std::string> AuthorizeAdmin(const ServiceOptions& options, const net::PeerIdentity& peer,
                                           AdminRole needed);

// Cancels calls that outlive a server-side limit, whatever deadline (or
// none) the client set: a peer that trickles an upload loses its stream.
class CallWatchdog {
 public:
  CallWatchdog();
  ~CallWatchdog();
  CallWatchdog(const CallWatchdog&) = delete;
  CallWatchdog& operator=(const CallWatchdog&) = delete;
  // TryCancel()s `ctx` after `timeout_ms` unless Unwatch()ed first.
  uint64_t Watch(grpc::ServerContext* ctx, int64_t timeout_ms);
  void Unwatch(uint64_t id);

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_ = 0;
  std::map<uint64_t, std::pair<grpc::ServerContext*, std::chrono::steady_clock::time_point>> calls_;
  std::thread thread_;
};

// Watches a call for the scope of a handler.
class WatchdogGuard {
 public:
  WatchdogGuard(CallWatchdog* w, grpc::ServerContext* ctx, int64_t timeout_ms) : w_(w), id_(w->Watch(ctx, timeout_ms)) {}
  ~WatchdogGuard() { Release(); }
  // Stops watching (the transfer is over; what follows is the server's own
  // work, which the peer's deadline must not cut short).
  void Release() {
    if (id_ != 0) w_->Unwatch(std::exchange(id_, 0));
  }
  WatchdogGuard(const WatchdogGuard&) = delete;
  WatchdogGuard& operator=(const WatchdogGuard&) = delete;

 private:
  CallWatchdog* w_;
  uint64_t id_;
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
  grpc::Status SecureAggregation(grpc::ServerContext* ctx, const v1::SecAggRequest* req,
                                 v1::SecAggResponse* resp) override;

 private:
  // The calling site's id, or PERMISSION_DENIED / UNAUTHENTICATED (and,
  // with `check_session`, FAILED_PRECONDITION for a superseded daemon).
  absl::StatusOr<std::string> Site(const grpc::ServerContext& ctx, bool check_session = true);

  // Counts a site's calls of one kind in progress for the scope of the
  // handler; held() is false (and nothing is counted) when the site already
  // has `max` of them: one site cannot hold many of the server's threads.
  class CallSlot {
   public:
    CallSlot(FederationService* service, std::map<std::string, int>* in_progress, std::string site, int max);
    ~CallSlot();
    bool held() const { return held_; }

   private:
    FederationService* service_;
    std::map<std::string, int>* in_progress_;
    std::string site_;
    bool held_ = false;
  };

  // Logs what a site was refused, at most once per kind and site every 30 s
  // (with how many were not logged meanwhile): every refusal leaves a trace
  // without a flood of refusals becoming a flood of log lines.
  void NoteRefusal(const std::string& site, const std::string& kind, const std::string& detail);
  // An upload's outcome in the metrics: SubmitResult::code, or "malformed",
  // "busy", "another_site" for uploads refused before the engine saw them.
  void CountUpdate(const std::string& code);
  void CountBytes(const char* direction, int64_t bytes);

  RoundEngine* engine_;
  ServiceOptions options_;
  CallWatchdog watchdog_;
  std::mutex calls_mu_;
  std::map<std::string, int> uploads_;  // per site: uploads in progress (at most 1)
  std::map<std::string, int> polls_;    // per site: polls in progress (at most 2)
  std::map<std::string, int> fetches_;  // per site: weight downloads in progress (at most 2)
  struct Noted {
    int64_t last_ms = 0;
    int64_t unlogged = 0;
  };
  std::mutex noted_mu_;
  std::map<std::pair<std::string, std::string>, Noted> noted_;
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
  grpc::Status PromoteModel(grpc::ServerContext* ctx, const v1::PromoteModelRequest* req,
                            v1::Promotion* resp) override;
  grpc::Status ListPromotions(grpc::ServerContext* ctx, const v1::ListPromotionsRequest* req,
                              v1::ListPromotionsResponse* resp) override;

 private:
  // The operator's name when the certificate is an admin one on the
  // [admins] list with at least `needed`; else PERMISSION_DENIED /
  // UNAUTHENTICATED.
  absl::StatusOr<std::string> Admin(const grpc::ServerContext& ctx, AdminRole needed);
  RoundEngine* engine_;
  ServiceOptions options_;
};

}  // namespace fedtune::coordinator
