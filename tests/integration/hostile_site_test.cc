// A hostile site on a real fedtune-coordinator (mutual TLS, SQLite, loopback).
// The hostile site is enrolled, its certificate issued like the others': it
// claims 10^12 examples, sends an update ten times over the norm bound and one
// ten times over the size bound, opens many upload streams at once, replays an
// older round's message, sends an oversized failure reason, reports bogus
// metrics, and floods ReportProgress all the while. Three honest sites are
// in-process clients that train nothing (they return the global plus an
// offset, as tests/bench/round_overhead.cc does), so they can time their own
// calls: once in quiet rounds, once during the attack.
//
// Asserted: every attempt answered with the coordinator's refusal; the
// refusals that reach a task recorded on it and in the job's events (extra
// upload streams, replays of answered tasks and messages over the transport's
// size limit are refused without a record: there is no task to put them on);
// progress recorded at most once per task per interval; every round closed by
// the honest sites with the global model equal to their example-weighted mean;
// and the honest sites' p95 latency during the attack within kLatencyFactor x
// the quiet p95 + kLatencySlackMs.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/fl/update_validation.h"
#include "common/net/tls.h"
#include "fedtune/v1/admin.grpc.pb.h"
#include "fedtune/v1/federation.grpc.pb.h"
#include "tests/testing/free_port.h"
#include "tests/testing/loopback_coordinator.h"
#include "tests/testing/process.h"

namespace fedtune {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

const std::vector<std::string> kHonestSites = {"hospital-a", "hospital-b", "hospital-c"};
const std::string kHostileSite = "hospital-z";
const std::vector<std::string> kFindings = {"Cardiomegaly", "Pleural effusion"};
constexpr int64_t kDeclaredTrainImages = 1000;  // what every site declares when it joins
constexpr int kQuietRounds = 3;
constexpr int kAttackRounds = 4;
constexpr int kRounds = kQuietRounds + kAttackRounds;
// The job's update bound (its default, written out): ||update - global||_2 <=
// 4 x max(||global||_2, 0.01 x sqrt(values)).
constexpr double kMaxUpdateRatio = 4.0;
constexpr double kMinReferenceRms = 0.01;
// Honest "training": this many progress reports, this far apart.
constexpr int kProgressReports = 8;
constexpr auto kProgressEvery = std::chrono::milliseconds(40);
// The coordinator records one progress event per task per this interval.
constexpr double kProgressIntervalS = 2.0;
constexpr int kFloodThreads = 4;
constexpr int kBurstStreamsPerConnection = 24;
// Attack p95 <= factor x quiet p95 + slack: generous, for a loaded 2-core machine.
constexpr double kLatencyFactor = 10.0;
constexpr double kLatencySlackMs = 200.0;

std::string JobToml() {
  return "[job]\nname = \"hostile-site\"\nrounds = " + std::to_string(kRounds) +
         "\nmin_sites = 3\nround_deadline_s = 60\nmax_round_attempts = 1\nmax_update_ratio = " +
         std::to_string(kMaxUpdateRatio) + "\n[backbone]\narchitecture = \"vit-tiny/16\"\nimage_size = 32\n" +
         "sha256 = \"" + std::string(64, '0') + "\"\n[model]\nfindings = [\"" + kFindings[0] + "\", \"" + kFindings[1] +
         "\"]\n[model.lora]\nrank = 4\n";
}

// ---- models ------------------------------------------------------------------

TensorMap ParseModel(const std::string& bytes) {
  auto f = SafetensorsFile::FromBytes(bytes);
  return f.ok() ? f->ReadAll() : TensorMap();
}

TensorMap LoadModel(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  return f.ok() ? f->ReadAll() : TensorMap();
}

std::vector<float> Floats(const Tensor& t) {
  auto v = t.ToFloats();
  return v.ok() ? *v : std::vector<float>();
}

int64_t NumValues(const TensorMap& m) {
  int64_t n = 0;
  for (const auto& [name, t] : m) n += t.numel();
  return n;
}

// The job's bound on how far an update may move from `global`.
double UpdateBound(const TensorMap& global) {
  const double floor = kMinReferenceRms * std::sqrt(static_cast<double>(NumValues(global)));
  return kMaxUpdateRatio * std::max(fl::L2Norm(global), floor);
}

// `global` (safetensors bytes, float32) with `delta` added to every value.
std::string Offset(const std::string& global, float delta) {
  TensorMap m = ParseModel(global);
  for (auto& [name, t] : m) {
    auto* v = reinterpret_cast<float*>(t.data.data());
    for (int64_t i = 0; i < t.numel(); ++i) v[i] += delta;
  }
  auto bytes = SerializeSafetensors(m);
  return bytes.ok() ? *bytes : std::string();
}

double DistanceL2(const TensorMap& a, const TensorMap& b) {
  double sq = 0;
  for (const auto& [name, t] : a) {
    const auto x = Floats(t), y = Floats(b.at(name));
    for (size_t i = 0; i < x.size(); ++i) sq += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
  }
  return std::sqrt(sq);
}

// ---- latency ------------------------------------------------------------------

enum class Phase { kQuiet, kAttack, kAfter };

// Milliseconds of the honest sites' calls, by phase (when the call began) and RPC.
class LatencyLog {
 public:
  void Add(Phase phase, const std::string& rpc, double ms) {
    std::lock_guard lock(mu_);
    ms_[{phase, rpc}].push_back(ms);
  }
  // All RPCs when `rpc` is empty.
  std::vector<double> Get(Phase phase, const std::string& rpc) const {
    std::lock_guard lock(mu_);
    std::vector<double> out;
    for (const auto& [key, v] : ms_) {
      if (key.first == phase && (rpc.empty() || key.second == rpc)) out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<Phase, std::string>, std::vector<double>> ms_;
};

// Nearest-rank percentile (q in (0, 1]); 0 for no samples.
double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::max<size_t>(rank, 1) - 1];
}

// ---- a site's side of the Federation API ---------------------------------------

// One site daemon as a test drives it: its own TLS connection and
// certificate, and its session named on every call after Join.
class SiteClient {
 public:
  SiteClient(const std::string& address, const net::TlsFiles& files, std::string session)
      : session_(std::move(session)) {
    auto creds = net::MakeClientCredentials(files);
    EXPECT_TRUE(creds.ok()) << creds.status();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    stub_ = v1::Federation::NewStub(
        grpc::CreateCustomChannel(address, creds.ok() ? *creds : grpc::InsecureChannelCredentials(), args));
  }

  v1::Federation::Stub& stub() { return *stub_; }

  std::unique_ptr<grpc::ClientContext> Context(int seconds = 20) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("fedtune-session", session_);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return ctx;
  }

  grpc::Status Join(int64_t train_images = kDeclaredTrainImages) {
    v1::JoinRequest req;
    req.set_session_id(session_);
    req.mutable_capabilities()->set_backbone_sha256(std::string(64, '0'));
    req.mutable_capabilities()->set_backbone_architecture("vit-tiny/16");
    for (const auto& f : kFindings) req.mutable_dataset()->add_findings(f);
    for (const auto& [split, images] : {std::pair{"train", train_images}, std::pair{"test", int64_t{100}}}) {
      auto* s = req.mutable_dataset()->add_splits();
      s->set_split(split);
      s->set_images(images);
    }
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::JoinResponse resp;
    return stub_->Join(&ctx, req, &resp);
  }

  // OK with an empty task when the poll timed out with nothing to do.
  grpc::Status Poll(v1::Task* task) {
    auto ctx = Context(5);
    v1::PollTaskResponse resp;
    grpc::Status s = stub_->PollTask(ctx.get(), v1::PollTaskRequest(), &resp);
    *task = resp.task();
    return s;
  }

  grpc::Status Fetch(const v1::Task& task, std::string* bytes) {
    auto ctx = Context();
    v1::FetchWeightsRequest req;
    req.set_task_id(task.task_id());
    *req.mutable_weights() = task.train().weights();
    auto reader = stub_->FetchWeights(ctx.get(), req);
    bytes->clear();
    v1::WeightsChunk chunk;
    while (reader->Read(&chunk)) bytes->append(chunk.data());
    return reader->Finish();
  }

  // The header, then `body` in 1 MiB chunks (stopping where the coordinator
  // has answered before the end).
  grpc::Status Submit(const v1::UpdateHeader& header, const std::string& body, v1::SubmitUpdateResponse* resp) {
    auto ctx = Context();
    auto writer = stub_->SubmitUpdate(ctx.get(), resp);
    v1::UpdateChunk first;
    *first.mutable_header() = header;
    if (writer->Write(first)) {
      for (size_t off = 0; off < body.size(); off += 1 << 20) {
        v1::UpdateChunk chunk;
        chunk.set_data(body.substr(off, 1 << 20));
        if (!writer->Write(chunk)) break;
      }
    }
    writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status Progress(const std::string& task_id, int64_t step, v1::ProgressAck* ack) {
    auto ctx = Context(10);
    v1::ProgressReport req;
    req.set_task_id(task_id);
    req.set_phase("train");
    req.set_epoch(1);
    req.set_epochs(1);
    req.set_step(step);
    req.set_steps(kProgressReports);
    return stub_->ReportProgress(ctx.get(), req, ack);
  }

 private:
  std::string session_;
  std::unique_ptr<v1::Federation::Stub> stub_;
};

v1::UpdateHeader HeaderFor(const v1::Task& task, const std::string& body, int64_t examples) {
  v1::UpdateHeader h;
  h.set_task_id(task.task_id());
  h.set_job_id(task.job_id());
  h.set_round(task.round());
  h.set_num_examples(examples);
  h.set_total_size(static_cast<int64_t>(body.size()));
  h.set_sha256(Sha256Hex(body));
  return h;
}

// ---- honest sites -----------------------------------------------------------------

struct HonestTally {
  std::atomic<int> updates_accepted{0}, evaluations_accepted{0}, refused{0}, errors{0};
  std::mutex mu;
  std::string first_problem;
  void Problem(const std::string& what) {
    std::lock_guard lock(mu);
    if (first_problem.empty()) first_problem = what;
  }
};

// Polls, fetches, "trains" (progress reports), submits the global plus a
// site-specific offset; answers evaluations with a count. Times its calls.
void RunHonestSite(SiteClient* client, int index, const std::atomic<bool>* stop, const std::atomic<Phase>* phase,
                   LatencyLog* log, HonestTally* tally) {
  const std::string site = kHonestSites[static_cast<size_t>(index)];
  auto timed = [&](const std::string& rpc, auto&& call) {
    const Phase p = phase->load();
    const auto t0 = SteadyClock::now();
    grpc::Status s = call();
    log->Add(p, rpc, std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count());
    if (!s.ok()) {
      ++tally->errors;
      tally->Problem(site + " " + rpc + ": " + std::to_string(s.error_code()) + " " + s.error_message());
    }
    return s;
  };
  bool joined = false;
  while (!*stop) {
    if (!joined) {
      joined = client->Join().ok();
      if (!joined) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    v1::Task task;
    if (grpc::Status s = client->Poll(&task); !s.ok()) {
      if (*stop) break;
      ++tally->errors;
      tally->Problem(site + " PollTask: " + s.error_message());
      joined = false;
      continue;
    }
    if (task.task_id().empty()) continue;
    v1::SubmitUpdateResponse resp;
    if (task.has_evaluate()) {
      v1::UpdateHeader h = HeaderFor(task, "", 0);
      h.set_total_size(0);
      h.mutable_evaluation()->set_split("test");
      h.mutable_evaluation()->set_examples(1);
      if (!client->Submit(h, "", &resp).ok() || !resp.accepted()) {
        ++tally->refused;
        tally->Problem(site + " evaluation: " + resp.reason());
      } else {
        ++tally->evaluations_accepted;
      }
      continue;
    }
    std::string global;
    if (!timed("FetchWeights", [&] { return client->Fetch(task, &global); }).ok()) continue;
    for (int i = 0; i < kProgressReports; ++i) {
      v1::ProgressAck ack;
      timed("ReportProgress", [&] { return client->Progress(task.task_id(), i, &ack); });
      std::this_thread::sleep_for(kProgressEvery);
    }
    const std::string update = Offset(global, 1e-4f * static_cast<float>(index + 1));
    const v1::UpdateHeader h = HeaderFor(task, update, 100 + 50 * index);
    if (!timed("SubmitUpdate", [&] { return client->Submit(h, update, &resp); }).ok()) continue;
    if (resp.accepted()) {
      ++tally->updates_accepted;
    } else {
      ++tally->refused;
      tally->Problem(site + " round " + std::to_string(task.round()) + " refused: " + resp.reason());
    }
  }
}

// ---- the hostile site's tools ----------------------------------------------------

// ReportProgress as fast as `threads` callers can, on the hostile site's
// latest task.
class ProgressFlood {
 public:
  ~ProgressFlood() { Stop(); }
  void Start(SiteClient* client, const std::string& task_id, int threads) {
    SetTask(task_id);
    started_ = SteadyClock::now();
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this, client] {
        int64_t step = 0;
        while (!stop_) {
          v1::ProgressAck ack;
          const grpc::Status s = client->Progress(Task(), step++, &ack);
          ++calls_;
          if (!s.ok()) {
            ++errors_;
          } else if (ack.cancel()) {
            ++cancels_;
          }
        }
      });
    }
  }
  void SetTask(const std::string& id) {
    std::lock_guard lock(mu_);
    task_ = id;
  }
  void Stop() {
    if (threads_.empty()) return;
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    seconds_ = std::chrono::duration<double>(SteadyClock::now() - started_).count();
  }
  int64_t calls() const { return calls_; }
  int64_t cancels() const { return cancels_; }
  int64_t errors() const { return errors_; }
  double seconds() const { return seconds_; }

 private:
  std::string Task() {
    std::lock_guard lock(mu_);
    return task_;
  }
  std::mutex mu_;
  std::string task_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> calls_{0}, cancels_{0}, errors_{0};
  std::vector<std::thread> threads_;
  SteadyClock::time_point started_;
  double seconds_ = 0;
};

// Opens `per_connection` SubmitUpdate streams on each connection at once and
// sends nothing on them; returns the status codes once all but one have
// been answered (the one that holds the site's upload slot is cancelled).
std::map<grpc::StatusCode, int> UploadBurst(const std::vector<SiteClient*>& connections, int per_connection) {
  const size_t n = connections.size() * static_cast<size_t>(per_connection);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  for (size_t i = 0; i < n; ++i) contexts.push_back(connections[i % connections.size()]->Context(30));
  std::vector<v1::SubmitUpdateResponse> responses(n);
  std::vector<grpc::Status> statuses(n);
  std::atomic<size_t> answered{0};
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto writer = connections[i % connections.size()]->stub().SubmitUpdate(contexts[i].get(), &responses[i]);
      // No WritesDone: the stream stays open, as a slow uploader's would.
      statuses[i] = writer->Finish();
      ++answered;
    });
  }
  const auto until = SteadyClock::now() + std::chrono::seconds(20);
  while (answered < n - 1 && SteadyClock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  for (auto& c : contexts) c->TryCancel();
  for (auto& t : threads) t.join();
  std::map<grpc::StatusCode, int> codes;
  for (const auto& s : statuses) codes[s.error_code()]++;
  return codes;
}

// ---- the fixture ------------------------------------------------------------------

class HostileSite : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveOpenssl()) GTEST_SKIP() << "openssl is not installed (deploy/install-deps.sh installs it)";
    dir_ = ::testing::TempDir() + "/hostile_site_" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::vector<std::string> sites = kHonestSites;
    sites.push_back(kHostileSite);
    std::string out;
    ASSERT_EQ(testing::MakeFederationPki(dir_, {"alice"}, sites, &out), 0) << out;
    port_ = testing::FreeLoopbackPort();
    ASSERT_GT(port_, 0);
    testing::CoordinatorToml toml;
    toml.port = port_;
    toml.enrolled = sites;
    toml.operators = {"alice"};
    toml.poll_timeout_s = 1;
    toml.site_timeout_s = 30;
    toml.more_coordinator_keys = "upload_timeout_s = 10\n";
    std::ofstream(dir_ + "/coordinator.toml") << toml.Text();
    ASSERT_TRUE(
        testing::StartCoordinator(dir_, Address(), testing::PkiFiles(dir_, "admin/alice"), &coordinator_, &admin_));
  }

  void TearDown() override {
    StopHonestSites();
    // Connected clients hold a stopping coordinator for its whole shutdown
    // grace (5 s): close them first.
    honest_.clear();
    admin_.reset();
    coordinator_.Stop();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Blob(const std::string& job, const std::string& name) const {
    return dir_ + "/state/blobs/" + job + "/" + name + ".safetensors";
  }

  std::unique_ptr<SiteClient> Client(const std::string& site, const std::string& session) const {
    return std::make_unique<SiteClient>(Address(), testing::PkiFiles(dir_, "site/" + site), session);
  }

  void StartHonestSites() {
    for (size_t i = 0; i < kHonestSites.size(); ++i) {
      honest_.push_back(Client(kHonestSites[i], "honest-session-" + kHonestSites[i]));
      threads_.emplace_back(RunHonestSite, honest_.back().get(), static_cast<int>(i), &stop_, &phase_, &latency_,
                            &tally_);
    }
  }

  void StopHonestSites() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  // The hostile site's next task (polling until one comes).
  v1::Task NextTask(SiteClient& c) {
    const auto until = SteadyClock::now() + std::chrono::seconds(60);
    while (SteadyClock::now() < until) {
      v1::Task task;
      grpc::Status s = c.Poll(&task);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!task.task_id().empty()) return task;
    }
    ADD_FAILURE() << "the hostile site got no task for 60 s";
    return v1::Task();
  }

  // Every event of a finished job.
  std::vector<v1::JobEvent> Events(const std::string& job) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::WatchJobRequest req;
    req.set_job_id(job);
    auto reader = admin_->WatchJob(&ctx, req);
    std::vector<v1::JobEvent> out;
    v1::JobEvent e;
    while (reader->Read(&e)) out.push_back(e);
    EXPECT_TRUE(reader->Finish().ok());
    return out;
  }

  std::string dir_;
  int port_ = 0;
  testing::ChildProcess coordinator_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::atomic<bool> stop_{false};
  std::atomic<Phase> phase_{Phase::kQuiet};
  LatencyLog latency_;
  HonestTally tally_;
  std::vector<std::unique_ptr<SiteClient>> honest_;
  std::vector<std::thread> threads_;
};

TEST_F(HostileSite, EveryAttemptIsRefusedTheModelIsTheHonestMeanAndHonestLatencyHolds) {
  const auto test_start = SteadyClock::now();
  const std::string session = "hostile-session-0123456789";
  auto hostile = Client(kHostileSite, session);
  auto hostile_second_connection = Client(kHostileSite, session);
  ASSERT_TRUE(hostile->Join().ok());
  StartHonestSites();
  ASSERT_TRUE(testing::WaitSitesConnected(*admin_, 4));
  grpc::ClientContext submit_ctx;
  v1::SubmitJobRequest submit;
  submit.set_job_toml(JobToml());
  v1::SubmitJobResponse submitted;
  const grpc::Status submit_status = admin_->SubmitJob(&submit_ctx, submit, &submitted);
  ASSERT_TRUE(submit_status.ok()) << submit_status.error_message();
  const std::string job = submitted.job_id();

  // What the coordinator answered the hostile site, to find in its records.
  std::map<int, std::string> refused_reason;  // round -> update_refused reason
  std::map<int, std::string> failed_reason;   // round -> recorded task failure
  ProgressFlood flood;
  v1::UpdateHeader replay_header;  // the round-(kQuietRounds + 1) message, kept for a replay
  std::string replay_body;
  v1::SubmitUpdateResponse resp;
  while (true) {
    const v1::Task task = NextTask(*hostile);
    ASSERT_FALSE(task.task_id().empty());
    const int round = task.round();
    if (task.has_evaluate()) {
      // The attack is over once the last training round has closed.
      flood.Stop();
      phase_ = Phase::kAfter;
      // Metrics that cannot be: refused and recorded.
      v1::UpdateHeader h = HeaderFor(task, "", 0);
      h.set_total_size(0);
      h.mutable_evaluation()->set_examples(1);
      h.mutable_evaluation()->set_macro_auroc(7.0);
      ASSERT_TRUE(hostile->Submit(h, "", &resp).ok());
      EXPECT_FALSE(resp.accepted());
      EXPECT_EQ(resp.reason(), "macro AUROC outside [0, 1]");
      refused_reason[round] = resp.reason();
      break;
    }
    std::string global;
    ASSERT_TRUE(hostile->Fetch(task, &global).ok());
    if (round <= kQuietRounds) {
      // Quiet rounds: the hostile site declines its task, as a site may.
      v1::UpdateHeader h = HeaderFor(task, "", 0);
      h.set_total_size(0);
      h.set_sha256("");
      h.set_failure_reason("declining round " + std::to_string(round));
      ASSERT_TRUE(hostile->Submit(h, "", &resp).ok());
      EXPECT_EQ(resp.reason(), "failure recorded: declining round " + std::to_string(round));
      failed_reason[round] = h.failure_reason();
      continue;
    }
    if (round == kQuietRounds + 1) {
      phase_ = Phase::kAttack;
      flood.Start(hostile.get(), task.task_id(), kFloodThreads);
    } else {
      flood.SetTask(task.task_id());
    }
    switch (round - kQuietRounds) {
      case 1: {
        // Many upload streams at once over two connections: one holds the
        // site's upload slot, every other is refused at once.
        const auto codes = UploadBurst({hostile.get(), hostile_second_connection.get()}, kBurstStreamsPerConnection);
        auto count = [&](grpc::StatusCode code) { return codes.count(code) ? codes.at(code) : 0; };
        const int streams = 2 * kBurstStreamsPerConnection;
        EXPECT_EQ(count(grpc::StatusCode::RESOURCE_EXHAUSTED), streams - 1);
        EXPECT_EQ(count(grpc::StatusCode::CANCELLED), 1) << "the stream that held the slot, cancelled by the test";
        std::cout << "[hostile] " << streams << " simultaneous upload streams:";
        for (const auto& [code, n] : codes) std::cout << " code " << code << " x" << n;
        std::cout << "\n";
        // A valid update claiming 10^12 examples (the site declared 1000).
        replay_body = Offset(global, 1e-4f);
        replay_header = HeaderFor(task, replay_body, 1'000'000'000'000);
        grpc::Status s;
        for (int i = 0; i < 100; ++i) {  // until the cancelled stream has let go of the slot
          s = hostile->Submit(replay_header, replay_body, &resp);
          if (s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
        EXPECT_FALSE(resp.accepted());
        EXPECT_EQ(resp.reason(), "num_examples 1000000000000 exceeds the 1000 training images site " + kHostileSite +
                                     " declared when this job first reached it");
        refused_reason[round] = resp.reason();
        break;
      }
      case 2: {
        // An update ten times over the norm bound.
        const TensorMap g = ParseModel(global);
        const double bound = UpdateBound(g);
        const float delta = static_cast<float>(10 * bound / std::sqrt(static_cast<double>(NumValues(g))));
        const std::string body = Offset(global, delta);
        ASSERT_TRUE(hostile->Submit(HeaderFor(task, body, 100), body, &resp).ok());
        EXPECT_FALSE(resp.accepted());
        double moved = 0, said_bound = 0;
        ASSERT_EQ(std::sscanf(resp.reason().c_str(), "update moved %lf (L2) from the global model, above the bound %lf",
                              &moved, &said_bound),
                  2)
            << resp.reason();
        EXPECT_NEAR(said_bound, bound, 1e-3 * bound) << resp.reason();
        EXPECT_NEAR(moved / said_bound, 10.0, 0.05) << resp.reason();
        refused_reason[round] = resp.reason();
        break;
      }
      case 3: {
        // An update ten times the size this task's model allows: refused on
        // its header, before the body is stored.
        const std::string body(10 * global.size(), 'x');
        ASSERT_TRUE(hostile->Submit(HeaderFor(task, body, 100), body, &resp).ok());
        EXPECT_FALSE(resp.accepted());
        EXPECT_NE(resp.reason().find("the update announces " + std::to_string(body.size()) +
                                     " bytes; this task's model allows at most"),
                  std::string::npos)
            << resp.reason();
        refused_reason[round] = resp.reason();
        break;
      }
      case 4: {
        // Replays of the round-(kQuietRounds + 1) message: as sent, and
        // with this round's task id.
        ASSERT_TRUE(hostile->Submit(replay_header, replay_body, &resp).ok());
        EXPECT_FALSE(resp.accepted());
        EXPECT_EQ(resp.reason(), "duplicate: task already answered (refused)");
        v1::UpdateHeader moved = replay_header;
        moved.set_task_id(task.task_id());
        ASSERT_TRUE(hostile->Submit(moved, replay_body, &resp).ok());
        EXPECT_FALSE(resp.accepted());
        EXPECT_EQ(resp.reason(), "job id or round does not match the task");
        // A failure reason beyond the coordinator's 4 MiB message limit: the
        // transport refuses it before the service sees it.
        v1::UpdateHeader h = HeaderFor(task, "", 0);
        h.set_total_size(0);
        h.set_sha256("");
        h.set_failure_reason(std::string(8 << 20, 'r'));
        grpc::Status s = hostile->Submit(h, "", &resp);
        EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
        // One within it (3 MiB, with a forged log line): recorded, cut to 1 KiB.
        h.set_failure_reason("out of memory\n[error] FORGED LOG LINE " + std::string(3 << 20, 'r'));
        s = hostile->Submit(h, "", &resp);
        ASSERT_TRUE(s.ok()) << s.error_message();
        EXPECT_FALSE(resp.accepted());
        ASSERT_EQ(resp.reason().rfind("failure recorded: ", 0), 0u) << resp.reason().substr(0, 200);
        failed_reason[round] = resp.reason().substr(std::strlen("failure recorded: "));
        EXPECT_LT(failed_reason[round].size(), 1100u);
        EXPECT_NE(failed_reason[round].find("more bytes cut]"), std::string::npos);
        EXPECT_EQ(failed_reason[round].find('\n'), std::string::npos);
        break;
      }
    }
  }

  // The honest sites' rounds all closed, and the job succeeded.
  const v1::JobStatus st = testing::WaitForJob(*admin_, job, testing::JobFinished, 60);
  StopHonestSites();
  ASSERT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  EXPECT_EQ(st.rounds_done(), kRounds);
  EXPECT_EQ(tally_.errors.load(), 0) << tally_.first_problem;
  EXPECT_EQ(tally_.refused.load(), 0) << tally_.first_problem;
  EXPECT_EQ(tally_.updates_accepted.load(), kRounds * static_cast<int>(kHonestSites.size()));

  // Every refusal that reached a task is on the task and in the events.
  ASSERT_EQ(st.rounds_size(), kRounds + 1);
  for (const auto& r : st.rounds()) {
    SCOPED_TRACE("round " + std::to_string(r.round()));
    EXPECT_EQ(r.state(), r.round() <= kRounds ? "aggregated" : "done");
    ASSERT_EQ(r.sites_size(), 4);
    for (const auto& s : r.sites()) {
      if (s.site_id() != kHostileSite) {
        EXPECT_EQ(s.state(), "accepted") << s.site_id() << ": " << s.reason();
      } else if (refused_reason.count(r.round())) {
        EXPECT_EQ(s.state(), "refused");
        EXPECT_EQ(s.reason(), refused_reason[r.round()]);
      } else {
        EXPECT_EQ(s.state(), "failed");
        EXPECT_EQ(s.reason(), failed_reason[r.round()]);
      }
    }
  }
  const std::vector<v1::JobEvent> events = Events(job);
  std::map<int, std::string> refused_events, failed_events;
  int hostile_progress_events = 0, hostile_accepted_events = 0;
  std::map<int, int64_t> round_started_ms, round_closed_ms;
  for (const auto& e : events) {
    if (e.kind() == "round_started") round_started_ms[e.round()] = e.unix_ms();
    if (e.kind() == "round_aggregated") {
      round_closed_ms[e.round()] = e.unix_ms();
      EXPECT_NE(e.message().find(": 3 of 4 updates"), std::string::npos) << e.message();
    }
    if (e.site_id() != kHostileSite) continue;
    if (e.kind() == "update_refused") refused_events[e.round()] = e.message();
    if (e.kind() == "task_failed") failed_events[e.round()] = e.message();
    if (e.kind() == "progress") ++hostile_progress_events;
    if (e.kind() == "update_accepted" || e.kind() == "evaluation_received") ++hostile_accepted_events;
  }
  EXPECT_EQ(refused_events, refused_reason);
  EXPECT_EQ(failed_events, failed_reason);
  EXPECT_EQ(hostile_accepted_events, 0);

  // The flood: answered every time, recorded at most once per task per interval.
  EXPECT_EQ(flood.errors(), 0);
  EXPECT_GT(flood.calls(), 50) << "the flood hardly ran";
  const double max_progress_events = kAttackRounds * (1 + flood.seconds() / kProgressIntervalS);
  EXPECT_LE(hostile_progress_events, max_progress_events);
  std::cout << "[hostile] progress flood: " << flood.calls() << " reports in " << flood.seconds() << " s from "
            << kFloodThreads << " threads (" << flood.cancels() << " told to abandon an answered task); "
            << hostile_progress_events << " recorded (at most " << max_progress_events << ")\n";

  // The global model: each version is the honest sites' example-weighted
  // mean, within the bound of the one before; nothing of the hostile site's
  // was stored.
  for (int r = 1; r <= kRounds; ++r) {
    SCOPED_TRACE("global version " + std::to_string(r));
    EXPECT_FALSE(fs::exists(Blob(job, "update-r" + std::to_string(r) + "a1-" + kHostileSite)));
    std::map<std::string, std::vector<double>> sum;
    double total = 0;
    for (const auto& s : st.rounds(r - 1).sites()) {
      if (s.site_id() == kHostileSite) continue;
      const TensorMap update = LoadModel(Blob(job, "update-r" + std::to_string(r) + "a1-" + s.site_id()));
      ASSERT_FALSE(update.empty()) << s.site_id();
      total += static_cast<double>(s.num_examples());
      for (const auto& [name, t] : update) {
        const auto v = Floats(t);
        auto& acc = sum[name];
        acc.resize(v.size(), 0.0);
        for (size_t i = 0; i < v.size(); ++i) acc[i] += static_cast<double>(s.num_examples()) * v[i];
      }
    }
    const TensorMap global = LoadModel(Blob(job, "global-v" + std::to_string(r)));
    const TensorMap previous = LoadModel(Blob(job, "global-v" + std::to_string(r - 1)));
    ASSERT_EQ(global.size(), sum.size());
    double max_diff = 0;
    for (const auto& [name, acc] : sum) {
      const auto g = Floats(global.at(name));
      ASSERT_EQ(g.size(), acc.size()) << name;
      for (size_t i = 0; i < g.size(); ++i) max_diff = std::max(max_diff, std::abs(g[i] - acc[i] / total));
    }
    EXPECT_LT(max_diff, 1e-6);
    EXPECT_LE(DistanceL2(global, previous), UpdateBound(previous));
  }

  // Honest latency, quiet against attack.
  std::cout << "[hostile] honest-site RPC latency, ms (n, p50, p95): quiet | attack | limit on attack p95\n";
  for (const std::string rpc : {"ReportProgress", "FetchWeights", "SubmitUpdate", ""}) {
    const auto quiet = latency_.Get(Phase::kQuiet, rpc), attack = latency_.Get(Phase::kAttack, rpc);
    const double q50 = Percentile(quiet, 0.5), q95 = Percentile(quiet, 0.95);
    const double a50 = Percentile(attack, 0.5), a95 = Percentile(attack, 0.95);
    const double limit = kLatencyFactor * q95 + kLatencySlackMs;
    const std::string name = rpc.empty() ? "all" : rpc;
    std::printf("[hostile]   %-14s quiet %3zu %7.2f %7.2f | attack %3zu %7.2f %7.2f | %7.2f\n", name.c_str(),
                quiet.size(), q50, q95, attack.size(), a50, a95, limit);
    RecordProperty(name + "_quiet_p95_ms", std::to_string(q95));
    RecordProperty(name + "_attack_p95_ms", std::to_string(a95));
    EXPECT_GE(quiet.size(), 5u) << name;
    EXPECT_GE(attack.size(), 5u) << name;
    EXPECT_LE(a95, limit) << name << ": p95 " << a95 << " ms under attack, " << q95 << " ms quiet";
  }
  for (int r = 1; r <= kRounds; ++r) {
    std::printf("[hostile] round %d (%s) closed in %.2f s\n", r, r <= kQuietRounds ? "quiet" : "attack",
                static_cast<double>(round_closed_ms[r] - round_started_ms[r]) / 1000.0);
  }
  std::printf("[hostile] test body took %.1f s\n",
              std::chrono::duration<double>(SteadyClock::now() - test_start).count());
  std::fflush(stdout);
}

}  // namespace
}  // namespace fedtune
