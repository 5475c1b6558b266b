// The round engine with fake sites and a fake clock: no network, no model.
// Every outcome a real federation meets — success, failure, slowness,
// duplicates, stale rounds, bad tensors, lost quorum, another site's task, a
// coordinator restart — asserted on the engine's recorded state.
#include "coordinator/engine/round_engine.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include <sqlite3.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "coordinator/service/coordinator_config.h"
#include "common/core/safetensors.h"
#include "common/fl/dp_accountant.h"
#include "common/fl/strategy.h"
#include "common/fl/task_spec.h"
#include "common/secagg/protocol.h"
#include "common/secagg/wire.h"
#include "tests/testing/run_command.h"

namespace fedtune::coordinator {
namespace {

namespace fs = std::filesystem;

class FakeClock final : public Clock {
 public:
  int64_t NowMs() const override { return now; }
  int64_t now = 1'700'000'000'000;
};

Tensor F32(std::vector<int64_t> shape, std::vector<float> values) {
  Tensor t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.data.resize(values.size() * 4);
  std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

std::vector<float> Values(const Tensor& t) {
  std::vector<float> v(t.data.size() / 4);
  std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

// A two-tensor "model": what the engine aggregates does not need a ViT.
TensorMap Model(float w, float b) {
  TensorMap m;
  m["base_model.model.classifier.weight"] = F32({2, 2}, {w, w, w, w});
  m["base_model.model.classifier.bias"] = F32({2}, {b, b});
  return m;
}

// A site's shareable summary: `train` training images, and per finding (the
// two of JobToml) its positives and labelled negatives.
v1::DatasetSummary Summary(int64_t train, std::vector<int64_t> positives = {10, 20},
                           std::vector<int64_t> negatives = {90, 80}) {
  v1::DatasetSummary d;
  d.add_findings("Cardiomegaly");
  d.add_findings("Pleural effusion");
  d.set_k_threshold(5);
  auto* sp = d.add_splits();
  sp->set_split("train");
  sp->set_images(train);
  sp->set_patients(train);
  for (int64_t p : positives) sp->add_positives(p);
  for (int64_t n : negatives) sp->add_negatives(n);
  return d;
}

// What the test sites declare: the backbone every test job names.
v1::Capabilities Caps() {
  v1::Capabilities c;
  c.set_backbone_sha256(std::string(64, 'a'));
  return c;
}

// The engine tests move updates far from a zero global on purpose; the
// relative bound has its own test (max_update_ratio = 0 turns it off).
std::string JobToml(int rounds, int min_sites, const std::string& extra_job = "",
                    const std::string& ratio = "max_update_ratio = 0\n") {
  return "[job]\nname = \"test\"\nrounds = " + std::to_string(rounds) + "\nmin_sites = " +
         std::to_string(min_sites) + "\nround_deadline_s = 60\n" + ratio + extra_job +
         "\n[backbone]\narchitecture = \"vit-tiny/16\"\nimage_size = 32\nsha256 = \"" + std::string(64, 'a') +
         "\"\n[model]\nfindings = [\"Cardiomegaly\", \"Pleural effusion\"]\n";
}

class Engine : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/engine_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    Reopen();
    ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b", "site-c"}).ok());
    for (const char* s : {"site-a", "site-b", "site-c"}) ASSERT_TRUE(engine_->Join(s, Caps(), Summary(1000)).ok());
  }
  void TearDown() override {
    engine_.reset();
    fs::remove_all(dir_);
  }

  void Reopen() {
    engine_.reset();
    EngineOptions o;
    o.state_dir = dir_;
    o.site_timeout_ms = 120'000;
    o.initial_weights = [this](const JobSpec&) -> absl::StatusOr<TensorMap> { return initial_; };
    o.ca_pem = ca_pem_;
    auto e = RoundEngine::Open(o, &clock_);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }

  std::string Submit(const std::string& toml) {
    auto id = engine_->SubmitJob(toml);
    EXPECT_TRUE(id.ok()) << id.status();
    EXPECT_TRUE(engine_->Tick().ok());  // version 0
    EXPECT_TRUE(engine_->Tick().ok());  // round 1 dispatched
    return id.ok() ? id->job_id : "";
  }

  v1::Task Poll(const std::string& site, const std::string& running = "") {
    auto r = engine_->Poll(site, running);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r.ok() && r->task.has_value()) << site << " got no task";
    return r.ok() && r->task ? *r->task : v1::Task();
  }

  static v1::UpdateHeader Header(const v1::Task& task, const std::string& bytes, int64_t examples) {
    v1::UpdateHeader h;
    h.set_task_id(task.task_id());
    h.set_job_id(task.job_id());
    h.set_round(task.round());
    h.set_num_examples(examples);
    h.set_total_size(static_cast<int64_t>(bytes.size()));
    h.set_sha256(Sha256Hex(bytes));
    h.mutable_val_after()->set_macro_auroc(0.75);
    return h;
  }

  SubmitResult SubmitUpdate(const std::string& site, const v1::Task& task, const TensorMap& m, int64_t examples,
                            const SafetensorsMetadata& metadata = {}) {
    auto bytes = SerializeSafetensors(m, metadata);
    EXPECT_TRUE(bytes.ok());
    auto r = engine_->Submit(site, Header(task, *bytes, examples), *bytes);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : SubmitResult{};
  }

  SubmitResult SubmitEvaluation(const std::string& site, const v1::Task& task) {
    v1::UpdateHeader h;
    h.set_task_id(task.task_id());
    h.set_job_id(task.job_id());
    h.set_round(task.round());
    h.mutable_evaluation()->set_macro_auroc(0.9);
    h.mutable_evaluation()->set_examples(10);
    auto r = engine_->Submit(site, h, "");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : SubmitResult{};
  }

  v1::JobStatus Status(const std::string& job) {
    auto s = engine_->GetJob(job);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : v1::JobStatus();
  }

  TensorMap Version(const std::string& job, int v) {
    auto mv = engine_->GetVersion(job, v);
    EXPECT_TRUE(mv.ok()) << mv.status();
    auto f = SafetensorsFile::Open(mv->file.path);
    EXPECT_TRUE(f.ok());
    return f->ReadAll();
  }

  std::vector<v1::JobEvent> Events(const std::string& job) {
    int64_t seq = 0;
    auto e = engine_->EventsAfter(job, 0, &seq);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *e : std::vector<v1::JobEvent>{};
  }

  std::map<std::string, std::string> SiteStates(const v1::RoundStatus& r) {
    std::map<std::string, std::string> out;
    for (const auto& s : r.sites()) out[s.site_id()] = s.state();
    return out;
  }

  std::string dir_;
  std::string ca_pem_;               // checks secure aggregation's keys when set
  TensorMap initial_ = Model(0, 0);  // version 0 of every job
  FakeClock clock_;
  std::unique_ptr<RoundEngine> engine_;
};

TEST_F(Engine, ThreeRoundsAggregateExampleWeightedMeansThenEvaluate) {
  const std::string job = Submit(JobToml(3, 3));
  for (int round = 1; round <= 3; ++round) {
    const v1::Task a = Poll("site-a"), b = Poll("site-b"), c = Poll("site-c");
    ASSERT_TRUE(a.has_train());
    EXPECT_EQ(a.round(), round);
    EXPECT_EQ(a.train().weights().version(), round - 1);
    EXPECT_EQ(a.train().backbone_architecture(), "vit-tiny/16");
    EXPECT_EQ(a.train().config().image_size(), 32);
    EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1.0f * round, 1), 100).accepted);
    EXPECT_TRUE(SubmitUpdate("site-b", b, Model(2.0f * round, 2), 300).accepted);
    EXPECT_TRUE(Status(job).rounds(round - 1).state() == "running");  // c has not answered
    ASSERT_TRUE(engine_->Tick().ok());
    EXPECT_EQ(Status(job).rounds_done(), round - 1);
    EXPECT_TRUE(SubmitUpdate("site-c", c, Model(4.0f * round, 4), 600).accepted);
    ASSERT_TRUE(engine_->Tick().ok());  // all answered: aggregate without waiting for the deadline
    EXPECT_EQ(Status(job).rounds_done(), round);
    // (100*1 + 300*2 + 600*4) / 1000 = 3.1 (times the round for the weights).
    const TensorMap v = Version(job, round);
    for (float x : Values(v.at("base_model.model.classifier.weight"))) EXPECT_NEAR(x, 3.1f * round, 1e-5);
    for (float x : Values(v.at("base_model.model.classifier.bias"))) EXPECT_NEAR(x, 3.1f, 1e-5);
    ASSERT_TRUE(engine_->Tick().ok());  // next round (or the evaluation) starts
  }
  EXPECT_EQ(Status(job).state(), v1::JOB_STATE_EVALUATING);
  for (const char* site : {"site-a", "site-b", "site-c"}) {
    const v1::Task t = Poll(site);
    ASSERT_TRUE(t.has_evaluate());
    EXPECT_EQ(t.evaluate().weights().version(), 3);
    EXPECT_EQ(t.evaluate().split(), "test");
    EXPECT_TRUE(SubmitEvaluation(site, t).accepted);
  }
  ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  ASSERT_EQ(st.rounds_size(), 4);
  EXPECT_EQ(st.rounds(3).kind(), "evaluate");
  EXPECT_DOUBLE_EQ(st.rounds(3).sites(0).evaluation().macro_auroc(), 0.9);
  EXPECT_EQ(st.rounds(0).sites(1).num_examples(), 300);
  EXPECT_DOUBLE_EQ(st.rounds(0).sites(1).val_after().macro_auroc(), 0.75);
  EXPECT_FALSE(st.rounds(0).global().sha256().empty());
}

TEST_F(Engine, FailedSiteIsRecordedAndRoundClosesWithQuorum) {
  const std::string job = Submit(JobToml(1, 2));
  const v1::Task a = Poll("site-a"), b = Poll("site-b"), c = Poll("site-c");
  v1::UpdateHeader h;
  h.set_task_id(c.task_id());
  h.set_job_id(c.job_id());
  h.set_round(c.round());
  h.set_failure_reason("backbone sha256 mismatch");
  auto r = engine_->Submit("site-c", h, "");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->accepted);
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 1).accepted);
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(3, 3), 1).accepted);
  ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(st.rounds_done(), 1);
  EXPECT_EQ(SiteStates(st.rounds(0))["site-c"], "failed");
  EXPECT_EQ(st.rounds(0).sites(2).reason(), "backbone sha256 mismatch");
  for (float x : Values(Version(job, 1).at("base_model.model.classifier.weight"))) EXPECT_NEAR(x, 2.0f, 1e-6);
}

TEST_F(Engine, SlowSiteTimesOutAtTheDeadlineAndItsLateUpdateIsStale) {
  const std::string job = Submit(JobToml(2, 2));
  const v1::Task a = Poll("site-a"), b = Poll("site-b"), c = Poll("site-c");
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 1).accepted);
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(1, 1), 1).accepted);
  clock_.now += 59'000;
  ASSERT_TRUE(engine_->Tick().ok());
  EXPECT_EQ(Status(job).rounds_done(), 0) << "quorum is met but the deadline has not passed";
  clock_.now += 2'000;
  for (const char* s : {"site-a", "site-b", "site-c"}) ASSERT_TRUE(engine_->Poll(s, "").ok());  // still connected
  ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(st.rounds_done(), 1);
  EXPECT_EQ(SiteStates(st.rounds(0))["site-c"], "timed_out");
  const SubmitResult late = SubmitUpdate("site-c", c, Model(1, 1), 1);
  EXPECT_FALSE(late.accepted);
  EXPECT_NE(late.reason.find("stale"), std::string::npos) << late.reason;
  // The slow site takes part in the next round.
  ASSERT_TRUE(engine_->Tick().ok());
  EXPECT_EQ(Poll("site-c").round(), 2);
}

TEST_F(Engine, DuplicateSubmissionIsRefusedAndCountedOnce) {
  const std::string job = Submit(JobToml(1, 2));
  const v1::Task a = Poll("site-a"), b = Poll("site-b");
  Poll("site-c");
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 10).accepted);
  const SubmitResult again = SubmitUpdate("site-a", a, Model(100, 100), 10);
  EXPECT_FALSE(again.accepted);
  EXPECT_NE(again.reason.find("duplicate"), std::string::npos) << again.reason;
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(3, 3), 10).accepted);
  clock_.now += 61'000;
  for (const char* s : {"site-a", "site-b"}) ASSERT_TRUE(engine_->Poll(s, "").ok());
  ASSERT_TRUE(engine_->Tick().ok());
  for (float x : Values(Version(job, 1).at("base_model.model.classifier.weight"))) EXPECT_NEAR(x, 2.0f, 1e-6);
}

TEST_F(Engine, BadUpdatesAreRefusedWithTheirReason) {
  const std::string job = Submit(JobToml(1, 1));
  struct Case {
    std::string site;
    TensorMap model;
    std::string expect;
  };
  TensorMap nan = Model(1, 1);
  nan["base_model.model.classifier.bias"] = F32({2}, {1, std::numeric_limits<float>::quiet_NaN()});
  TensorMap shape = Model(1, 1);
  shape["base_model.model.classifier.bias"] = F32({3}, {1, 1, 1});
  TensorMap missing = Model(1, 1);
  missing.erase("base_model.model.classifier.bias");
  const std::vector<Case> cases = {{"site-a", nan, "finite"}, {"site-b", shape, "shape"}, {"site-c", missing, "lacks"}};
  for (const auto& c : cases) {
    const v1::Task t = Poll(c.site);
    const SubmitResult r = SubmitUpdate(c.site, t, c.model, 5);
    EXPECT_FALSE(r.accepted) << c.expect;
    EXPECT_NE(r.reason.find(c.expect), std::string::npos) << r.reason;
  }
  const v1::JobStatus st = Status(job);
  for (const auto& s : st.rounds(0).sites()) {
    EXPECT_EQ(s.state(), "refused") << s.site_id();
    EXPECT_FALSE(s.reason().empty());
  }
}

TEST_F(Engine, ChecksumMismatchIsRefused) {
  Submit(JobToml(1, 1));
  const v1::Task a = Poll("site-a");
  auto bytes = SerializeSafetensors(Model(1, 1));
  ASSERT_TRUE(bytes.ok());
  v1::UpdateHeader h = Header(a, *bytes, 3);
  (*bytes)[bytes->size() - 1] ^= 1;
  auto r = engine_->Submit("site-a", h, *bytes);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->accepted);
  EXPECT_NE(r->reason.find("SHA-256"), std::string::npos) << r->reason;
}

TEST_F(Engine, QuorumNotMetRetriesTheRoundThenFailsTheJob) {
  const std::string job = Submit(JobToml(1, 2, "max_round_attempts = 2\n"));
  for (int attempt = 1; attempt <= 2; ++attempt) {
    const v1::Task a = Poll("site-a");
    EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 1).accepted);
    clock_.now += 61'000;
    ASSERT_TRUE(engine_->Poll("site-a", "").ok());
    ASSERT_TRUE(engine_->Poll("site-b", "").ok());  // connected but never answering
    ASSERT_TRUE(engine_->Tick().ok());  // closes the attempt
    ASSERT_TRUE(engine_->Tick().ok());  // starts the next attempt, if any
  }
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(st.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(st.reason().find("1 of"), std::string::npos) << st.reason();
  EXPECT_NE(st.reason().find("min_sites = 2"), std::string::npos) << st.reason();
  ASSERT_EQ(st.rounds_size(), 2);
  EXPECT_EQ(st.rounds(0).state(), "retried");
  EXPECT_EQ(st.rounds(1).attempt(), 2);
  EXPECT_EQ(st.rounds(1).state(), "failed");
}

TEST_F(Engine, QuorumPolicyFailEndsTheJobAtOnce) {
  const std::string job = Submit(JobToml(2, 3, "on_quorum_failure = \"fail\"\n"));
  Poll("site-a");
  clock_.now += 61'000;
  ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(st.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(st.reason().find("on_quorum_failure"), std::string::npos) << st.reason();
}

TEST_F(Engine, SiteCannotFetchOrSubmitAnotherSitesTask) {
  Submit(JobToml(1, 1));
  const v1::Task a = Poll("site-a");
  auto bytes = SerializeSafetensors(Model(1, 1));
  auto r = engine_->Submit("site-b", Header(a, *bytes, 1), *bytes);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  auto w = engine_->WeightsForTask("site-b", a.task_id(), a.train().weights());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kPermissionDenied);
  v1::WeightsRef other = a.train().weights();
  other.set_version(7);
  EXPECT_EQ(engine_->WeightsForTask("site-a", a.task_id(), other).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(engine_->WeightsForTask("site-a", a.task_id(), a.train().weights()).ok());
  // site-a's own submission still goes through afterwards.
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 1).accepted);
}

TEST_F(Engine, UnenrolledSiteCannotJoin) {
  EXPECT_EQ(engine_->Join("site-x", Caps(), {}).code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  EXPECT_FALSE(engine_->IsEnrolled("site-c"));
  EXPECT_EQ(engine_->Join("site-c", Caps(), {}).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(Engine, RestartedSiteGetsItsTaskAgain) {
  Submit(JobToml(1, 1));
  const v1::Task first = Poll("site-a");
  auto still = engine_->Poll("site-a", first.task_id());
  ASSERT_TRUE(still.ok());
  EXPECT_FALSE(still->task.has_value()) << "a site still working gets nothing new";
  const v1::Task again = Poll("site-a", "");
  EXPECT_EQ(again.task_id(), first.task_id());
}

TEST_F(Engine, RestartMidRoundContinuesAndCountsEachRoundOnce) {
  const std::string job = Submit(JobToml(2, 3));
  const v1::Task a = Poll("site-a"), b = Poll("site-b"), c = Poll("site-c");
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 1).accepted);
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(2, 2), 1).accepted);
  Reopen();  // the coordinator process restarts; only the state directory survives
  EXPECT_FALSE(SubmitUpdate("site-a", a, Model(1, 1), 1).accepted) << "still a duplicate after the restart";
  EXPECT_TRUE(SubmitUpdate("site-c", c, Model(3, 3), 1).accepted);
  ASSERT_TRUE(engine_->Tick().ok());
  Reopen();
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(st.rounds_done(), 1);
  ASSERT_EQ(st.rounds_size(), 2);
  EXPECT_EQ(st.rounds(1).round(), 2);
  EXPECT_EQ(st.rounds(1).state(), "running");
  for (float x : Values(Version(job, 1).at("base_model.model.classifier.weight"))) EXPECT_NEAR(x, 2.0f, 1e-6);
  EXPECT_EQ(Poll("site-a").round(), 2);
}

TEST_F(Engine, CancelStopsTasksAndRefusesTheirUpdates) {
  const std::string job = Submit(JobToml(3, 2));
  const v1::Task a = Poll("site-a");
  auto st = engine_->CancelJob(job);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state(), v1::JOB_STATE_CANCELLED);
  auto poll = engine_->Poll("site-a", a.task_id());
  ASSERT_TRUE(poll.ok());
  EXPECT_EQ(poll->cancel_task_id, a.task_id());
  EXPECT_FALSE(SubmitUpdate("site-a", a, Model(1, 1), 1).accepted);
  EXPECT_EQ(engine_->CancelJob(job).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(Engine, WaitsForEnoughConnectedSites) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b", "site-c", "site-d"}).ok());
  clock_.now += 200'000;  // everyone has gone quiet
  ASSERT_TRUE(engine_->Join("site-a", Caps(), Summary(1000)).ok());
  auto id = engine_->SubmitJob(JobToml(1, 2));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  v1::JobStatus st = Status(id->job_id);
  ASSERT_EQ(st.rounds_size(), 1);
  EXPECT_EQ(st.rounds(0).state(), "waiting");
  ASSERT_TRUE(engine_->Join("site-d", Caps(), Summary(1000)).ok());
  ASSERT_TRUE(engine_->Tick().ok());
  st = Status(id->job_id);
  EXPECT_EQ(st.rounds(0).state(), "running");
  EXPECT_EQ(st.rounds(0).sites_size(), 2);
}

TEST_F(Engine, BaselinesTrainLocalOnlyModelsAndEvaluateEveryModelOnEverySite) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  const std::string job = Submit(JobToml(2, 2, "baselines = true\n"));
  for (int round = 1; round <= 2; ++round) {
    const v1::Task a = Poll("site-a"), b = Poll("site-b");
    EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 10).accepted);
    EXPECT_TRUE(SubmitUpdate("site-b", b, Model(3, 3), 10).accepted);
    ASSERT_TRUE(engine_->Tick().ok());
    ASSERT_TRUE(engine_->Tick().ok());
  }
  // Round 3: each site trains alone from version 0 with the whole budget.
  std::map<std::string, std::string> local_sha;
  for (const char* site : {"site-a", "site-b"}) {
    const v1::Task t = Poll(site);
    ASSERT_TRUE(t.has_train());
    EXPECT_EQ(t.round(), 3);
    EXPECT_EQ(t.train().weights().version(), 0);
    EXPECT_EQ(t.train().weights().model_label(), std::string("local:") + site);
    EXPECT_EQ(t.train().config().local_epochs(), 2) << "1 local epoch x 2 rounds";
    auto bytes = SerializeSafetensors(Model(site == std::string("site-a") ? 5 : 7, 0));
    local_sha[site] = Sha256Hex(*bytes);
    EXPECT_TRUE(SubmitUpdate(site, t, Model(site == std::string("site-a") ? 5 : 7, 0), 10).accepted);
  }
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  EXPECT_EQ(Status(job).rounds_done(), 2) << "local-only models are not global versions";
  // Round 4: every site evaluates the federated model and both local models.
  for (const char* site : {"site-a", "site-b"}) {
    std::set<std::string> labels;
    for (int i = 0; i < 3; ++i) {
      const v1::Task t = Poll(site);
      ASSERT_TRUE(t.has_evaluate()) << i;
      labels.insert(t.evaluate().model_label());
      if (t.evaluate().model_label() == "federated") {
        EXPECT_EQ(t.evaluate().weights().version(), 2);
      } else {
        const std::string owner = t.evaluate().model_label().substr(6);
        EXPECT_EQ(t.evaluate().weights().sha256(), local_sha[owner]);
        auto w = engine_->WeightsForTask(site, t.task_id(), t.evaluate().weights());
        ASSERT_TRUE(w.ok()) << w.status();
        EXPECT_EQ(Sha256FileHex(w->path).value(), local_sha[owner]);
      }
      EXPECT_TRUE(SubmitEvaluation(site, t).accepted);
    }
    EXPECT_EQ(labels, (std::set<std::string>{"federated", "local:site-a", "local:site-b"}));
  }
  ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  ASSERT_EQ(st.rounds_size(), 4);
  EXPECT_EQ(st.rounds(2).kind(), "local");
  EXPECT_EQ(st.rounds(3).kind(), "evaluate");
  EXPECT_EQ(st.rounds(3).sites_size(), 6);
}

// A site that does not share its local-only model marks it (fl::kHomeOnlyKey,
// [stats] share_local_model = false): the final evaluation sends it to that
// site only, and says so; the other site's shared model goes everywhere.
TEST_F(Engine, ALocalModelItsSiteKeepsIsEvaluatedThereOnly) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  const std::string job = Submit(JobToml(1, 2, "baselines = true\n"));
  const v1::Task a = Poll("site-a"), b = Poll("site-b");
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 10).accepted);
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(3, 3), 10).accepted);
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  for (const char* site : {"site-a", "site-b"}) {
    const v1::Task t = Poll(site);
    ASSERT_TRUE(t.has_train());
    const SafetensorsMetadata meta = site == std::string("site-a")
                                         ? SafetensorsMetadata{{fl::kHomeOnlyKey, "site-a"}}
                                         : SafetensorsMetadata{};
    EXPECT_TRUE(SubmitUpdate(site, t, Model(5, 0), 10, meta).accepted);
  }
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  std::map<std::string, std::set<std::string>> labels;
  for (const char* site : {"site-a", "site-b"}) {
    while (true) {
      auto r = engine_->Poll(site, "");
      ASSERT_TRUE(r.ok());
      if (!r->task || !r->task->has_evaluate()) break;
      labels[site].insert(r->task->evaluate().model_label());
      EXPECT_TRUE(SubmitEvaluation(site, *r->task).accepted);
    }
  }
  EXPECT_EQ(labels["site-a"], (std::set<std::string>{"federated", "local:site-a", "local:site-b"}));
  EXPECT_EQ(labels["site-b"], (std::set<std::string>{"federated", "local:site-b"})) << "site-a keeps its model";
  ASSERT_TRUE(engine_->Tick().ok());
  EXPECT_EQ(Status(job).state(), v1::JOB_STATE_SUCCEEDED) << Status(job).reason();
  bool said = false;
  for (const auto& e : Events(job)) said = said || (e.kind() == "baseline_home_only" && e.site_id() == "site-a");
  EXPECT_TRUE(said);
}

// A LoRA-shaped model: one adapted module (rank 2) and a head.
TensorMap LoraModel(float a, float b, float head) {
  TensorMap m;
  m["base_model.model.dinov2.encoder.layer.0.attention.attention.query.lora_A.weight"] =
      F32({2, 4}, {a, -a, a, 0.5f * a, -a, a, 0.25f * a, a});
  m["base_model.model.dinov2.encoder.layer.0.attention.attention.query.lora_B.weight"] =
      F32({3, 2}, {b, -b, 0.5f * b, b, -b, 0.25f * b});
  m["base_model.model.classifier.weight"] = F32({2, 2}, {head, -head, head, head});
  m["base_model.model.classifier.bias"] = F32({2}, {head, -head});
  return m;
}

// `m` plus seeded Gaussian noise of standard deviation `scale`.
TensorMap Perturbed(const TensorMap& m, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0, scale);
  TensorMap out;
  for (const auto& [name, t] : m) {
    std::vector<float> v = Values(t);
    for (float& x : v) x += n(rng);
    out[name] = F32(t.shape, v);
  }
  return out;
}

TEST_F(Engine, EveryStrategyAggregatesThroughTheEngineAsItsPureFunctionDoes) {
  initial_ = LoraModel(0.5f, 0.0f, 0.1f);
  const std::map<std::string, int64_t> examples = {{"site-a", 100}, {"site-b", 300}, {"site-c", 600}};
  for (const std::string& name : fl::StrategyNames()) {
    SCOPED_TRACE(name);
    const std::string job = Submit(JobToml(2, 3, "strategy = \"" + name + "\"\n"));
    auto reference = fl::MakeStrategy(ParseJobSpec(JobToml(2, 3, "strategy = \"" + name + "\"\n"))->strategy);
    ASSERT_TRUE(reference.ok());
    TensorMap expected = initial_, state;
    for (int round = 1; round <= 2; ++round) {
      ASSERT_TRUE((*reference)->Begin(expected, state).ok());
      uint64_t seed = static_cast<uint64_t>(round) * 10;
      for (const auto& [site, n] : examples) {
        const v1::Task t = Poll(site);
        ASSERT_TRUE(t.has_train());
        EXPECT_EQ(t.train().config().freeze_lora_a(), name == "ffa-lora");
        TensorMap update = Perturbed(expected, ++seed, 0.05f);
        for (auto it = update.begin(); it != update.end();) {
          it = (*reference)->ShipsTensor(it->first) ? std::next(it) : update.erase(it);
        }
        EXPECT_TRUE(SubmitUpdate(site, t, update, n).accepted);
        ASSERT_TRUE((*reference)->Add(site, update, n).ok());
      }
      Reopen();  // the coordinator restarts between the submissions and the aggregation
      ASSERT_TRUE(engine_->Tick().ok());
      auto agg = (*reference)->Finish();
      ASSERT_TRUE(agg.ok()) << agg.status();
      EXPECT_EQ(Version(job, round), agg->global) << "round " << round;
      expected = agg->global;
      state = agg->server_state;
      ASSERT_TRUE(engine_->Tick().ok());
    }
    for (const auto& [site, n] : examples) EXPECT_TRUE(SubmitEvaluation(site, Poll(site)).accepted);
    ASSERT_TRUE(engine_->Tick().ok());
    EXPECT_EQ(Status(job).state(), v1::JOB_STATE_SUCCEEDED);
  }
}

// [privacy] differential_privacy = "central": the engine aggregates through
// the DP decorator (equal weights, clipped differences), the job's status
// carries the budget spent, each round's event names epsilon, and a job
// whose rounds would exceed max_epsilon is refused at submission.
TEST_F(Engine, DifferentialPrivacyClipsAveragesEquallyAndAccountsEachRound) {
  const std::string privacy =
      "[privacy]\ndifferential_privacy = \"central\"\nnoise_multiplier = 1e-6\nclip_norm = 0.01\ndelta = 1e-6\n";
  const std::string job = Submit(JobToml(2, 3) + privacy);
  const std::map<std::string, std::pair<float, int64_t>> sites = {
      {"site-a", {0.5f, 100}}, {"site-b", {-1.0f, 300}}, {"site-c", {2.0f, 600}}};
  TensorMap global = initial_;
  for (int round = 1; round <= 2; ++round) {
    // Every site moves every value by its own step: differences far above C.
    std::map<std::string, double> norms;
    for (const auto& [site, p] : sites) {
      const v1::Task t = Poll(site);
      TensorMap update = global;
      double sq = 0;
      for (auto& [name, tensor] : update) {
        std::vector<float> v = Values(tensor);
        for (float& x : v) x += p.first;
        sq += p.first * p.first * v.size();
        tensor = *Tensor::FromFloats(tensor.shape, v);
      }
      norms[site] = std::sqrt(sq);
      EXPECT_TRUE(SubmitUpdate(site, t, update, p.second).accepted);
    }
    ASSERT_TRUE(engine_->Tick().ok());
    const TensorMap v = Version(job, round);
    // Each difference clipped to 0.01, then one vote per site.
    double expect_step = 0;
    for (const auto& [site, p] : sites) expect_step += p.first * 0.01 / norms[site];
    expect_step /= 3;
    for (const auto& [name, tensor] : v) {
      const std::vector<float> now = Values(tensor), before = Values(global.at(name));
      for (size_t i = 0; i < now.size(); ++i) EXPECT_NEAR(now[i] - before[i], expect_step, 1e-6) << name;
    }
    global = v;
    const v1::JobStatus st = Status(job);
    EXPECT_EQ(st.privacy().mechanism(), "central DP-FedAvg");
    EXPECT_EQ(st.privacy().rounds_accounted(), round);
    EXPECT_DOUBLE_EQ(st.privacy().epsilon_spent(), fl::DpEpsilon(1.0, 1e-6, round, 1e-6));
    EXPECT_DOUBLE_EQ(st.privacy().epsilon_planned(), fl::DpEpsilon(1.0, 1e-6, 2, 1e-6));
    bool named = false;
    for (const auto& e : Events(job)) {
      named = named || (e.kind() == "round_aggregated" && e.round() == round &&
                        absl::StrContains(e.message(), absl::StrCat("after ", round, " round")) &&
                        absl::StrContains(e.message(), "epsilon = "));
    }
    EXPECT_TRUE(named) << "round " << round;
    ASSERT_TRUE(engine_->Tick().ok());
  }
  // A job without [privacy] reports no budget.
  const std::string plain = Submit(JobToml(1, 3));
  EXPECT_TRUE(Status(plain).privacy().mechanism().empty());

  // 50 rounds at noise 1 would spend far more than 4.
  auto refused = engine_->SubmitJob(JobToml(50, 3) +
                                    "[privacy]\ndifferential_privacy = \"central\"\nnoise_multiplier = 1.0\n"
                                    "clip_norm = 1.0\nmax_epsilon = 4.0\n");
  ASSERT_FALSE(refused.ok());
  const std::string msg(refused.status().message());
  EXPECT_NE(msg.find("privacy.max_epsilon"), std::string::npos) << msg;
  const int fit = fl::DpMaxSteps(1.0, 1.0, 1e-5, 4.0, 50);
  EXPECT_NE(msg.find(absl::StrCat("run at most ", fit, " round")), std::string::npos) << msg;
  EXPECT_NE(msg.find("raise noise_multiplier to "), std::string::npos) << msg;
}

TEST(JobSpecTest, PrivacySettingsAreChecked) {
  struct Case {
    std::string job, tail, expect;
  };
  const std::string on = "[privacy]\ndifferential_privacy = \"central\"\n";
  const std::vector<Case> cases = {
      {"", "[privacy]\nnoise_multiplier = 2.0\n",
       "privacy.noise_multiplier': is only used with privacy.differential_privacy = \"central\""},
      {"", "[privacy]\ndifferential_privacy = \"local\"\n", "\"local\" is not one of off, central"},
      {"", on + "target_quantile = 0.3\n", "is only used with privacy.adaptive_clipping = true"},
      {"strategy = \"median\"\n", on, "\"median\" looks at each site's update"},
      {"baselines = true\n", on, "job.baselines': cannot be combined with differential privacy"},
      {"", on + "adaptive_clipping = true\nclipped_count_stddev = 0.4\n",
       "must be more than half of noise_multiplier"},
      {"", on + "delta = 0.5\n", "privacy.delta must be in (0, 0.1)"},
      {"", on + "noise_multiplier = 1.0\n", "privacy.clip_norm': must be set with differential_privacy"},
  };
  for (const auto& c : cases) {
    auto r = ParseJobSpec(JobToml(1, 1, c.job) + c.tail, "my-job.toml");
    ASSERT_FALSE(r.ok()) << c.expect;
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos) << r.status();
  }
  auto ok = ParseJobSpec(JobToml(5, 1) + on + "noise_multiplier = 2.0\nclip_norm = 5.0\nmax_epsilon = 10\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->privacy.enabled);
  EXPECT_EQ(ok->privacy.noise_multiplier, 2.0);
  EXPECT_EQ(ok->privacy.delta, 1e-5);
  EXPECT_EQ(ok->privacy.clip_norm, 5.0);
  // Adaptive clipping starts from a default C.
  auto adaptive = ParseJobSpec(JobToml(5, 1) + on + "adaptive_clipping = true\n");
  ASSERT_TRUE(adaptive.ok()) << adaptive.status();
  EXPECT_EQ(adaptive->privacy.clip_norm, 1.0);
  EXPECT_FALSE(ParseJobSpec(JobToml(1, 1))->privacy.enabled);
}

TEST(JobSpecTest, SecureAggregationSettingsAreChecked) {
  const std::string on = "[privacy]\nsecure_aggregation = true\n";
  struct Case {
    std::string job, tail, expect;
  };
  const std::vector<Case> cases = {
      {"", "[privacy]\nsecure_aggregation_bound = 2.0\n", "is only used with privacy.secure_aggregation = true"},
      {"strategy = \"trimmed-mean\"\n", on, "it reads each site's update"},
      {"baselines = true\n", on, "a local-only model is one site's update in the clear"},
      {"", on + "secure_aggregation_bound = 0\n", "privacy.secure_aggregation_bound"},
      {"", on + "differential_privacy = \"central\"\nclip_norm = 1.0\n", "cannot be combined with differential_privacy"},
  };
  for (const auto& c : cases) {
    auto r = ParseJobSpec(JobToml(1, 2, c.job) + c.tail, "my-job.toml");
    ASSERT_FALSE(r.ok()) << c.expect;
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos) << r.status();
  }
  EXPECT_FALSE(ParseJobSpec(JobToml(1, 1) + on).ok()) << "a sum of one";
  auto ok = ParseJobSpec(JobToml(1, 2, "strategy = \"fedadam\"\n") + on + "secure_aggregation_bound = 0.5\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->secure_aggregation.enabled);
  EXPECT_EQ(ok->secure_aggregation.bound, 0.5);
}

TEST(JobSpecTest, DistributedPrivacyNeedsSecureAggregationAndSizesItsBound) {
  const std::string dist = "[privacy]\ndifferential_privacy = \"distributed\"\nnoise_multiplier = 1.0\nclip_norm = 2.0\n";
  auto alone = ParseJobSpec(JobToml(1, 4) + dist);
  ASSERT_FALSE(alone.ok());
  EXPECT_NE(std::string(alone.status().message()).find("needs privacy.secure_aggregation = true"), std::string::npos)
      << alone.status();
  auto adaptive = ParseJobSpec(JobToml(1, 4) + dist + "secure_aggregation = true\nadaptive_clipping = true\n");
  ASSERT_FALSE(adaptive.ok());
  EXPECT_NE(std::string(adaptive.status().message()).find("privacy.adaptive_clipping"), std::string::npos);
  auto ok = ParseJobSpec(JobToml(1, 4) + dist + "secure_aggregation = true\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  // Four sites at least: each adds z C / sqrt(4) = 1.0; the bound leaves C + 8 of that.
  EXPECT_DOUBLE_EQ(ok->secure_aggregation.site_noise_stddev, 1.0);
  EXPECT_DOUBLE_EQ(ok->secure_aggregation.bound, 10.0);
  EXPECT_EQ(PrivacyBudgetOf(*ok, 1).mechanism(), "distributed DP-FedAvg");
  auto tight = ParseJobSpec(JobToml(1, 4) + dist + "secure_aggregation = true\nsecure_aggregation_bound = 3.0\n");
  ASSERT_FALSE(tight.ok());
  EXPECT_NE(std::string(tight.status().message()).find("below clip_norm + 6 x the sites' noise"), std::string::npos);
  // The coordinator adds no noise of its own: the job's strategy is the plain one.
  auto strategy = MakeJobStrategy(*ok);
  ASSERT_TRUE(strategy.ok());
  EXPECT_EQ((*strategy)->name(), "fedavg");
}

TEST_F(Engine, DistributedPrivacyGivesEverySiteOneVoteTheClipAndItsNoise) {
  const std::string job = Submit(JobToml(1, 3) +
                                 "[privacy]\nsecure_aggregation = true\ndifferential_privacy = \"distributed\"\n"
                                 "noise_multiplier = 0.9\nclip_norm = 3.0\n");
  for (const char* s : {"site-a", "site-b", "site-c"}) {
    const v1::Task t = Poll(s);
    const auto& cfg = t.train().secure_aggregation();
    EXPECT_NEAR(cfg.weight(), 1.0 / 3, 1e-12) << s;
    EXPECT_DOUBLE_EQ(cfg.clip_norm(), 3.0);
    EXPECT_NEAR(cfg.noise_stddev(), 0.9 * 3.0 / std::sqrt(3.0), 1e-12);
  }
  EXPECT_EQ(Status(job).privacy().mechanism(), "distributed DP-FedAvg");
}

// Three sites with real certificates run the key exchange through the
// engine; one drops after sharing its keys. The new global is the weighted
// mean of the other two, and no single update was ever stored.
TEST_F(Engine, SecureAggregationAveragesWhatTheSitesMaskedAndStoresNoUpdate) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  const std::string pki = dir_ + "/pki-root";
  fs::create_directories(pki);
  const std::string certs = std::string(FEDTUNE_SOURCE_DIR) + "/certs/fedtune-certs";
  std::string out;
  ASSERT_EQ(testing::RunCommand("cd " + pki + " && " + certs + " init-ca pki >/dev/null && " + certs +
                                    " site pki site-a >/dev/null && " + certs + " site pki site-b >/dev/null && " +
                                    certs + " site pki site-c >/dev/null",
                                &out),
            0)
      << out;
  const std::string ca = *ReadFileBytes(pki + "/pki/ca.pem");
  ca_pem_ = ca;  // the coordinator checks the keys too
  Reopen();
  ASSERT_TRUE(engine_->Join("site-a", Caps(), Summary(1000)).ok());
  ASSERT_TRUE(engine_->Join("site-b", Caps(), Summary(3000)).ok());
  const std::string job =
      Submit(JobToml(1, 2) + "[privacy]\nsecure_aggregation = true\nsecure_aggregation_stage_s = 5\n");
  const std::vector<std::string> sites = {"site-a", "site-b", "site-c"};
  std::map<std::string, v1::Task> task;
  std::map<std::string, std::unique_ptr<secagg::SiteSession>> session;
  for (const auto& s : sites) {
    task[s] = Poll(s);
    const auto& cfg = task[s].train().secure_aggregation();
    ASSERT_TRUE(task[s].train().has_secure_aggregation());
    EXPECT_EQ(cfg.length(), 6) << "the classifier's 4 + 2 values";
    const std::string key = *ReadFileBytes(pki + "/pki/site/" + s + ".key");
    auto started = secagg::SiteSession::Start(s, secagg::ParamsOf(job, 1, cfg), *ReadFileBytes(pki + "/pki/site/" + s + ".pem"),
                                              [key](std::string_view m) { return secagg::Sign(key, m); });
    ASSERT_TRUE(started.ok()) << started.status();
    session[s] = std::move(*started);
  }
  // Weights by declared training images: 1000, 3000, 1000.
  EXPECT_NEAR(task["site-b"].train().secure_aggregation().weight(), 0.6, 1e-12);
  EXPECT_NEAR(task["site-a"].train().secure_aggregation().weight(), 0.2, 1e-12);
  auto call = [&](const std::string& s, v1::SecAggRequest req) {
    req.set_task_id(task[s].task_id());
    auto r = engine_->SecureAggregation(s, req);
    EXPECT_TRUE(r.ok()) << s << ": " << r.status();
    return r.ok() ? *r : v1::SecAggResponse();
  };
  // Keys not signed by the site's certificate are refused by the
  // coordinator on arrival (every site would refuse them).
  {
    v1::SecAggRequest unsigned_keys;
    unsigned_keys.set_task_id(task["site-a"].task_id());
    unsigned_keys.set_stage(v1::SEC_AGG_STAGE_ADVERTISE);
    secagg::Advertisement swapped = session["site-a"]->advertisement();
    swapped.mask_public = secagg::GenerateKeyPair()->public_key;
    *unsigned_keys.mutable_keys() = secagg::ToWire(swapped);
    EXPECT_EQ(engine_->SecureAggregation("site-a", unsigned_keys).status().code(), absl::StatusCode::kPermissionDenied);
  }
  // 1. Keys; the roster is ready once all three advertised.
  for (const auto& s : sites) {
    v1::SecAggRequest req;
    req.set_stage(v1::SEC_AGG_STAGE_ADVERTISE);
    *req.mutable_keys() = secagg::ToWire(session[s]->advertisement());
    const bool ready = call(s, req).ready();
    EXPECT_EQ(ready, s == "site-c") << s;
  }
  // Another site's task is refused.
  {
    v1::SecAggRequest forged;
    forged.set_task_id(task["site-a"].task_id());
    forged.set_stage(v1::SEC_AGG_STAGE_ADVERTISE);
    EXPECT_EQ(engine_->SecureAggregation("site-b", forged).status().code(), absl::StatusCode::kPermissionDenied);
  }
  auto verify = [&ca](const std::string& site, const std::string& c, std::string_view m, std::string_view sig) {
    return secagg::VerifySigned(ca, c, site, m, sig);
  };
  // 2. Shares.
  std::map<std::string, v1::SecAggResponse> shared;
  for (const auto& s : sites) {
    v1::SecAggRequest req;
    req.set_stage(v1::SEC_AGG_STAGE_ADVERTISE);
    const v1::SecAggResponse roster = call(s, req);
    ASSERT_TRUE(roster.ready());
    std::vector<secagg::Advertisement> ads;
    for (const auto& k : roster.roster()) ads.push_back(*secagg::FromWire(k));
    auto shares = session[s]->ShareKeys(ads, verify);
    ASSERT_TRUE(shares.ok()) << shares.status();
    v1::SecAggRequest share;
    share.set_stage(v1::SEC_AGG_STAGE_SHARE);
    for (const auto& x : *shares) *share.add_shares() = secagg::ToWire(x);
    shared[s] = call(s, share);
  }
  // 3. Masked differences from a and b; c drops out here.
  const std::map<std::string, std::pair<float, float>> step = {{"site-a", {0.5f, 0.2f}}, {"site-b", {-0.3f, 0.1f}}};
  for (const auto& [s, wb] : step) {
    v1::SecAggRequest req;
    req.set_stage(v1::SEC_AGG_STAGE_SHARE);
    const v1::SecAggResponse r = call(s, req);
    ASSERT_TRUE(r.ready());
    std::vector<secagg::SealedShares> received;
    for (const auto& x : r.shares()) received.push_back(secagg::FromWire(x));
    // Flattened by name: bias (2 values), then weight (4).
    const std::vector<float> difference = {wb.second, wb.second, wb.first, wb.first, wb.first, wb.first};
    const auto& cfg = task[s].train().secure_aggregation();
    auto masked = session[s]->Mask(received, std::vector<std::string>(r.sites().begin(), r.sites().end()),
                                   secagg::Encode(difference, cfg.weight(), cfg.bound()));
    ASSERT_TRUE(masked.ok()) << masked.status();
    const std::string bytes = secagg::VectorBytes(*masked);
    auto result = engine_->Submit(s, Header(task[s], bytes, s == "site-a" ? 1000 : 3000), bytes);
    ASSERT_TRUE(result.ok() && result->accepted) << (result.ok() ? result->reason : std::string(result.status().message()));
  }
  ASSERT_TRUE(engine_->Tick().ok());
  EXPECT_EQ(Status(job).rounds_done(), 0) << "waiting for site-c's vector";
  clock_.now += 6'000;  // the masking stage's time is up
  ASSERT_TRUE(engine_->Tick().ok());
  // 4. The shares that remove the masks, c's key among them.
  for (const auto& s : {"site-a", "site-b"}) {
    v1::SecAggRequest req;
    req.set_stage(v1::SEC_AGG_STAGE_MASKED_SITES);
    const v1::SecAggResponse r = call(s, req);
    ASSERT_TRUE(r.ready());
    EXPECT_EQ(r.sites_size(), 2);
    auto reveal = session[s]->Unmask(std::vector<std::string>(r.sites().begin(), r.sites().end()));
    ASSERT_TRUE(reveal.ok()) << reveal.status();
    EXPECT_EQ(reveal->key_shares.count("site-c"), 1u);
    v1::SecAggRequest rv;
    rv.set_stage(v1::SEC_AGG_STAGE_REVEAL);
    secagg::ToWire(*reveal, &rv);
    EXPECT_TRUE(call(s, rv).ready());
  }
  ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus st = Status(job);
  ASSERT_EQ(st.rounds_done(), 1) << st.reason();
  // (0.2 x a + 0.6 x b) / 0.8.
  const TensorMap v = Version(job, 1);
  for (float x : Values(v.at("base_model.model.classifier.weight"))) EXPECT_NEAR(x, (0.2 * 0.5 + 0.6 * -0.3) / 0.8, 1e-6);
  for (float x : Values(v.at("base_model.model.classifier.bias"))) EXPECT_NEAR(x, (0.2 * 0.2 + 0.6 * 0.1) / 0.8, 1e-6);
  bool summarised = false;
  for (const auto& e : Events(job)) {
    summarised = summarised || (e.kind() == "round_aggregated" &&
                                absl::StrContains(e.message(), "securely aggregated: 2 of 3 sites in the sum, 1 dropped"));
  }
  EXPECT_TRUE(summarised);
  // Nothing but global versions under the job's blobs.
  for (const auto& f : fs::recursive_directory_iterator(dir_ + "/blobs")) {
    EXPECT_EQ(f.path().filename().string().find("update"), std::string::npos) << f.path();
  }
  for (const auto& f : fs::directory_iterator(dir_ + "/incoming")) ADD_FAILURE() << "left in incoming/: " << f.path();
}

TEST_F(Engine, FfaLoraRefusesAnUpdateCarryingLoraA) {
  initial_ = LoraModel(0.5f, 0.0f, 0.1f);
  const std::string job = Submit(JobToml(1, 1, "strategy = \"ffa-lora\"\n"));
  const v1::Task a = Poll("site-a");
  const SubmitResult r = SubmitUpdate("site-a", a, Perturbed(initial_, 1, 0.01f), 10);
  EXPECT_FALSE(r.accepted);
  EXPECT_NE(r.reason.find("unknown tensor"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("lora_A"), std::string::npos) << r.reason;
}

TEST_F(Engine, AnUpdateClaimingMoreExamplesThanItsSiteDeclaredIsRefused) {
  const std::string job = Submit(JobToml(1, 1));
  const v1::Task a = Poll("site-a"), b = Poll("site-b");
  SubmitResult r = SubmitUpdate("site-a", a, Model(1, 1), 1'000'000'000'000);
  EXPECT_FALSE(r.accepted);
  EXPECT_EQ(r.reason, "num_examples 1000000000000 exceeds the 1000 training images site site-a declared when this job first reached it");
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(1, 1), 1000).accepted);
  const v1::JobStatus st = Status(job);
  EXPECT_EQ(SiteStates(st.rounds(0))["site-a"], "refused");
  EXPECT_EQ(st.rounds(0).sites(0).reason(), r.reason);
  // A site whose training count is below k (suppressed) may claim at most k - 1.
  v1::DatasetSummary small = Summary(-1);
  ASSERT_TRUE(engine_->Join("site-c", Caps(), small).ok());
  const v1::Task c = Poll("site-c");
  r = SubmitUpdate("site-c", c, Model(1, 1), 5);
  EXPECT_FALSE(r.accepted);
  EXPECT_NE(r.reason.find("exceeds the 4 training images"), std::string::npos) << r.reason;
}

// A site that re-joins declaring more training images once a job has reached
// it cannot claim them for that job: the count is pinned at its first task.
TEST_F(Engine, ReJoiningWithMoreImagesDoesNotRaiseTheCapOfARunningJob) {
  Submit(JobToml(1, 1));
  const v1::Task a = Poll("site-a");
  ASSERT_TRUE(engine_->Join("site-a", Caps(), Summary(1'000'000'000'000)).ok());
  const SubmitResult r = SubmitUpdate("site-a", a, Model(1, 1), 1'000'000'000'000);
  EXPECT_FALSE(r.accepted);
  EXPECT_EQ(r.reason,
            "num_examples 1000000000000 exceeds the 1000 training images site site-a declared when this job first "
            "reached it");
}

TEST_F(Engine, TheJobsTrainingCapBoundsTheExamplesOfAnUpdate) {
  Submit(JobToml(1, 1, "", "max_update_ratio = 0\n") + "[train]\nmax_train_samples = 50\n");
  const v1::Task a = Poll("site-a"), b = Poll("site-b");
  const SubmitResult r = SubmitUpdate("site-a", a, Model(1, 1), 51);
  EXPECT_EQ(r.reason, "num_examples 51 exceeds the job's max_train_samples = 50");
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(1, 1), 50).accepted);
}

TEST_F(Engine, TheDefaultRelativeBoundRefusesAnUpdateThatWouldReplaceTheGlobal) {
  initial_ = Model(1, 1);  // |global| = sqrt(6): the default ratio 4 allows a move of 9.8
  const std::string job = Submit(JobToml(1, 2, "", ""));
  const v1::Task a = Poll("site-a"), b = Poll("site-b"), c = Poll("site-c");
  const SubmitResult r = SubmitUpdate("site-a", a, Model(100, 100), 1000);
  EXPECT_FALSE(r.accepted);
  EXPECT_NE(r.reason.find("above the bound 9.79"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("job.max_update_ratio"), std::string::npos) << r.reason;
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(2, 2), 10).accepted);
  EXPECT_TRUE(SubmitUpdate("site-c", c, Model(3, 3), 10).accepted);
  ASSERT_TRUE(engine_->Tick().ok());
  for (float x : Values(Version(job, 1).at("base_model.model.classifier.weight"))) EXPECT_NEAR(x, 2.5f, 1e-6);
  bool recorded = false;
  for (const auto& e : Events(job)) {
    recorded = recorded || (e.kind() == "update_refused" && e.site_id() == "site-a" && e.message() == r.reason);
  }
  EXPECT_TRUE(recorded);
}

TEST_F(Engine, TasksCarryTheFederationsClassWeights) {
  // site-c's positives of the first finding are below its k: left out.
  ASSERT_TRUE(engine_->Join("site-c", Caps(), Summary(1000, {-1, 40}, {50, 60})).ok());
  const std::string job = Submit(JobToml(1, 3));
  for (const char* site : {"site-a", "site-b", "site-c"}) {
    const v1::Task t = Poll(site);
    EXPECT_EQ(t.train().config().class_weights(), "federation");
    ASSERT_EQ(t.train().config().pos_weight_size(), 2);
    EXPECT_DOUBLE_EQ(t.train().config().pos_weight(0), 180.0 / 20.0);             // a and b only
    EXPECT_DOUBLE_EQ(t.train().config().pos_weight(1), (80.0 + 80 + 60) / 80.0);  // all three
  }
  bool announced = false;
  for (const auto& e : Events(job)) {
    if (e.kind() == "objective") {
      announced = true;
      EXPECT_NE(e.message().find("Cardiomegaly 9 (2 sites)"), std::string::npos) << e.message();
    }
  }
  EXPECT_TRUE(announced);
  // A job from before class weights were fixed per job (no objective
  // recorded) keeps each site's own weights rather than failing.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/coordinator.sqlite").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, ("UPDATE jobs SET objective = '' WHERE job_id = '" + job + "'").c_str(), nullptr,
                           nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    const v1::Task again = Poll("site-a");  // site-a restarted: its task is built again
    EXPECT_EQ(again.train().config().class_weights(), "site");
    EXPECT_EQ(again.train().config().pos_weight_size(), 0);
  }
  // With class_weights = "site" each site weighs its own loss.
  const std::string own = Submit(JobToml(1, 3) + "[train]\nclass_weights = \"site\"\n");
  ASSERT_TRUE(engine_->CancelJob(job).ok());
  const v1::Task t = Poll("site-a");
  EXPECT_EQ(t.job_id(), own);
  EXPECT_EQ(t.train().config().class_weights(), "site");
  EXPECT_EQ(t.train().config().pos_weight_size(), 0);
}

TEST(JobSpecTest, StrategySettingsAreCheckedAgainstTheStrategy) {
  struct Case {
    std::string job, tail, expect;
  };
  const std::vector<Case> cases = {
      {"strategy = \"ffa-lora\"\n", "method = \"bitfit\"\n",
       "\"ffa-lora\" aggregates LoRA adapters but model.method is \"bitfit\""},
      {"strategy = \"fedadam\"\n", "[strategy]\ntrim_fraction = 0.1\n",
       "strategy.trim_fraction': is not used by job.strategy = \"fedadam\" (it applies to trimmed-mean)"},
      {"strategy = \"trimmed-mean\"\n", "[strategy]\ntrim_fraction = 0.6\n", "trim_fraction must be in [0, 0.5)"},
      {"", "[train]\nclass_weights = \"balanced\"\n", "\"balanced\" is not one of federation, site, none"},
      {"", "[strategy]\nbeta1 = 0.5\n", "strategy.beta1': is not used by job.strategy = \"fedavg\""},
      {"strategy = \"fedadam\"\n", "method = \"full\"\n",
       "strategy.server_learning_rate': must be set for \"fedadam\" with model.method = \"full\""},
  };
  for (const auto& c : cases) {
    auto r = ParseJobSpec(JobToml(1, 1, c.job) + c.tail, "my-job.toml");
    ASSERT_FALSE(r.ok()) << c.expect;
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos) << r.status();
  }
  auto adam = ParseJobSpec(JobToml(1, 1, "strategy = \"fedadam\"\n") + "[strategy]\nbeta2 = 0.9\ntau = 0.01\n");
  ASSERT_TRUE(adam.ok()) << adam.status();
  EXPECT_EQ(adam->strategy.beta2, 0.9);
  EXPECT_EQ(adam->strategy.tau, 0.01);
  EXPECT_EQ(adam->strategy.server_learning_rate, fl::DefaultServerLearningRate("fedadam"));
  EXPECT_EQ(adam->max_update_ratio, 0);  // JobToml turns it off
  EXPECT_EQ(ParseJobSpec(JobToml(1, 1, "", ""))->max_update_ratio, kDefaultMaxUpdateRatio);
  EXPECT_EQ(ParseJobSpec(JobToml(1, 1))->train.class_weights(), "federation");
}

// The documented examples stay valid.
TEST(JobSpecTest, ExampleJobParses) {
  auto text = ReadFileBytes(std::string(FEDTUNE_SOURCE_DIR) + "/deploy/examples/job.toml");
  ASSERT_TRUE(text.ok());
  auto spec = ParseJobSpec(*text, "job.toml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->backbone_architecture, "rad-dino");
  EXPECT_EQ(spec->train.image_size(), 518);
  EXPECT_EQ(spec->train.lora_rank(), 16);
}

TEST(CoordinatorConfigTest, ExampleConfigLoadsAndTimeoutsAreChecked) {
  auto c = LoadCoordinatorConfig(std::string(FEDTUNE_SOURCE_DIR) + "/deploy/examples/coordinator.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->enrolled_sites.size(), 3u);
  EXPECT_EQ(c->service.poll_timeout_ms, 20000);
  const std::string bad = ::testing::TempDir() + "/bad_coordinator.toml";
  ASSERT_TRUE(WriteFileAtomically(bad, "[coordinator]\nstate_dir = \"s\"\npoll_timeout_s = 60\nsite_timeout_s = 30\n"
                                       "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[sites]\nenrolled = []\n")
                  .ok());
  auto r = LoadCoordinatorConfig(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("site_timeout_s"), std::string::npos) << r.status();
  EXPECT_EQ(c->service.admins.at("operator"), AdminRole::kOperator);
}

// Revocation cannot be left out by omission, and admin rights come from a
// list, not from any admin certificate.
TEST(CoordinatorConfigTest, CrlAndAdminListAreRequired) {
  const std::string path = ::testing::TempDir() + "/coordinator_required.toml";
  auto load = [&](const std::string& crl, const std::string& admins) {
    EXPECT_TRUE(WriteFileAtomically(path, "[coordinator]\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = "
                                          "\"c\"\n" + crl + "[sites]\nenrolled = []\n" + admins)
                    .ok());
    return LoadCoordinatorConfig(path);
  };
  auto no_crl = load("", "[admins]\noperators = [\"alice\"]\n");
  ASSERT_FALSE(no_crl.ok());
  EXPECT_NE(std::string(no_crl.status().message()).find("crl = \"none\""), std::string::npos) << no_crl.status();
  auto no_admins = load("crl = \"none\"\n", "");
  ASSERT_FALSE(no_admins.ok());
  EXPECT_NE(std::string(no_admins.status().message()).find("[admins]"), std::string::npos) << no_admins.status();
  auto both = load("crl = \"none\"\n", "[admins]\noperators = [\"alice\"]\nviewers = [\"alice\"]\n");
  EXPECT_FALSE(both.ok());
  auto ok = load("crl = \"none\"\n", "[admins]\noperators = [\"alice\"]\nviewers = [\"bob\"]\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->crl_pem.empty());
  EXPECT_EQ(ok->service.admins.at("alice"), AdminRole::kOperator);
  EXPECT_EQ(ok->service.admins.at("bob"), AdminRole::kViewer);
}

// The dashboard is served on [http]: enabling it without an address is
// refused with the setting to add.
TEST(CoordinatorConfigTest, DashboardNeedsTheHttpEndpoint) {
  const std::string base = "[coordinator]\nstate_dir = \"s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n"
                           "crl = \"none\"\n[sites]\nenrolled = []\n[admins]\noperators = [\"alice\"]\n";
  auto alone = ParseCoordinatorConfig(base + "[dashboard]\nenabled = true\n", "coordinator.toml");
  ASSERT_FALSE(alone.ok());
  EXPECT_NE(std::string(alone.status().message()).find("needs [http] listen"), std::string::npos) << alone.status();
  auto served = ParseCoordinatorConfig(base + "[http]\nlisten = \"127.0.0.1:0\"\n[dashboard]\nenabled = true\n",
                                       "coordinator.toml");
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_TRUE(served->dashboard);
  auto unknown = ParseCoordinatorConfig(base + "[dashboard]\nport = 1\n", "coordinator.toml");
  EXPECT_FALSE(unknown.ok());
}

TEST(JobSpecTest, RefusesBadJobsWithTheKey) {
  const std::string good = JobToml(3, 2);
  EXPECT_TRUE(ParseJobSpec(good).ok()) << ParseJobSpec(good).status();
  struct Case {
    std::string from, to, key;
  };
  const std::vector<Case> cases = {
      {"rounds = 3", "rounds = 0", "job.rounds"},
      {"sha256 = \"", "sha256 = \"zz", "backbone.sha256"},
      {"vit-tiny/16", "vit-huge", "vit-huge"},
      {"image_size = 32", "image_size = 33", "image_size"},
      {"[model]", "[model]\nmethod = \"magic\"", "magic"},
      {"[job]", "[job]\ncolour = 1", "colour"},
      {"round_deadline_s = 60", "round_deadline_s = -1", "round_deadline_s"},
      {"[job]", "[job]\nstrategy = \"krum\"", "not one of fedavg, fedprox, ffa-lora, lora-svd, fedavgm"},
  };
  for (const auto& c : cases) {
    std::string text = good;
    text.replace(text.find(c.from), c.from.size(), c.to);

    auto r = ParseJobSpec(text, "job.toml");
    ASSERT_FALSE(r.ok()) << c.to;
    EXPECT_NE(std::string(r.status().message()).find(c.key), std::string::npos) << r.status();
  }
}


// ---- hardening: one session per site identity, bounded input, checked jobs ----

TEST_F(Engine, OneLiveSessionPerSiteIdentity) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a"}).ok());
  ASSERT_TRUE(engine_->Join("site-a", Caps(), Summary(1000), "session-one").ok());
  // A second daemon with the same certificate while the first is live.
  absl::Status second = engine_->Join("site-a", Caps(), Summary(1), "session-two");
  EXPECT_EQ(second.code(), absl::StatusCode::kAlreadyExists) << second;
  EXPECT_TRUE(engine_->CheckSession("site-a", "session-one").ok());
  EXPECT_EQ(engine_->CheckSession("site-a", "session-two").code(), absl::StatusCode::kFailedPrecondition);
  // Its summary did not replace the live daemon's.
  auto sites = engine_->ListSites();
  ASSERT_TRUE(sites.ok());
  EXPECT_EQ(sites->at(0).dataset().splits(0).images(), 1000);
  // The same daemon restarting (same session) gets straight back in.
  EXPECT_TRUE(engine_->Join("site-a", Caps(), Summary(1000), "session-one").ok());
  // Once the first has been silent for the site timeout, the second may take over.
  clock_.now += 121'000;
  EXPECT_TRUE(engine_->Join("site-a", Caps(), Summary(1000), "session-two").ok());
  EXPECT_EQ(engine_->CheckSession("site-a", "session-one").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(Engine, SubmissionIsCheckedAgainstTheFederation) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  for (const char* s : {"site-a", "site-b"}) ASSERT_TRUE(engine_->Join(s, Caps(), Summary(1000)).ok());
  auto too_many = engine_->SubmitJob(JobToml(1, 3), "nightly.toml");
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(too_many.status().message()).find("nightly.toml"), std::string::npos) << too_many.status();
  EXPECT_NE(std::string(too_many.status().message()).find("site-a, site-b"), std::string::npos) << too_many.status();
  auto unknown = engine_->SubmitJob(JobToml(1, 1, "sites = [\"site-a\", \"site-z\"]\n"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(std::string(unknown.status().message()).find("site-z"), std::string::npos) << unknown.status();
  std::string toml = JobToml(1, 2);
  toml.replace(toml.find("Pleural effusion"), 16, "Pneumothorax");
  auto finding = engine_->SubmitJob(toml);
  ASSERT_FALSE(finding.ok());
  EXPECT_NE(std::string(finding.status().message()).find("Pneumothorax"), std::string::npos) << finding.status();
  EXPECT_NE(std::string(finding.status().message()).find("Cardiomegaly, Pleural effusion"), std::string::npos);
  std::string other = JobToml(1, 2);
  other.replace(other.find(std::string(64, 'a')), 64, std::string(64, 'b'));
  auto backbone = engine_->SubmitJob(other);
  ASSERT_FALSE(backbone.ok());
  EXPECT_NE(std::string(backbone.status().message()).find("backbone bbbbbbbbbbbb"), std::string::npos);
  // With a site offline, what it might bring is a warning, not a refusal.
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b", "site-d"}).ok());  // site-d never joined
  auto warned = engine_->SubmitJob(toml);
  ASSERT_TRUE(warned.ok()) << warned.status();
  ASSERT_EQ(warned->warnings.size(), 1u);
  EXPECT_NE(warned->warnings[0].find("site-d"), std::string::npos) << warned->warnings[0];
  bool recorded = false;
  for (const auto& e : Events(warned->job_id)) recorded = recorded || e.kind() == "submission_warning";
  EXPECT_TRUE(recorded);
}

TEST_F(Engine, ProgressIsThrottledPerTask) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  const std::string job = Submit(JobToml(1, 2));
  const v1::Task a = Poll("site-a");
  v1::ProgressReport p;
  p.set_task_id(a.task_id());
  p.set_phase("train");
  for (int i = 0; i < 500; ++i) {
    auto r = engine_->Progress("site-a", p);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(*r);
  }
  clock_.now += 2'500;
  ASSERT_TRUE(engine_->Progress("site-a", p).ok());
  int progress = 0;
  for (const auto& e : Events(job)) progress += e.kind() == "progress" ? 1 : 0;
  EXPECT_EQ(progress, 2) << "one per 2 s interval, however often the site reports";
}

TEST_F(Engine, UploadHeaderIsCheckedBeforeTheBody) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  const std::string job = Submit(JobToml(1, 2));
  const v1::Task a = Poll("site-a");
  auto bytes = SerializeSafetensors(Model(1, 1));
  v1::UpdateHeader h = Header(a, *bytes, 10);
  auto fine = engine_->BeginUpload("site-a", h);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_FALSE(fine->refused);
  EXPECT_GE(fine->max_bytes, static_cast<int64_t>(bytes->size()));
  EXPECT_LT(fine->max_bytes, int64_t{1} << 20) << "capped near the model's size, not at max_update_mb";
  // Another site's task: refused and recorded.
  EXPECT_EQ(engine_->BeginUpload("site-b", h).status().code(), absl::StatusCode::kPermissionDenied);
  // A body announced ten times over what the model can be: refused, recorded.
  h.set_total_size(fine->max_bytes * 10);
  auto huge = engine_->BeginUpload("site-a", h);
  ASSERT_TRUE(huge.ok());
  ASSERT_TRUE(huge->refused);
  EXPECT_NE(huge->refused->reason.find("at most"), std::string::npos) << huge->refused->reason;
  EXPECT_EQ(SiteStates(Status(job).rounds(0))["site-a"], "refused");
  // The task is answered: a replay of the header is a duplicate.
  auto again = engine_->BeginUpload("site-a", Header(a, *bytes, 10));
  ASSERT_TRUE(again.ok() && again->refused);
  EXPECT_NE(again->refused->reason.find("duplicate"), std::string::npos);
}

TEST_F(Engine, FailureReasonsAreCapped) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  const std::string job = Submit(JobToml(1, 2));
  const v1::Task a = Poll("site-a");
  v1::UpdateHeader h;
  h.set_task_id(a.task_id());
  h.set_job_id(a.job_id());
  h.set_round(a.round());
  h.set_failure_reason(std::string(8 << 20, 'x') + "\nFORGED LOG LINE");
  auto r = engine_->Submit("site-a", h, "");
  ASSERT_TRUE(r.ok());
  const std::string stored = Status(job).rounds(0).sites(0).reason();
  EXPECT_LT(stored.size(), 1200u);
  EXPECT_NE(stored.find("more bytes cut"), std::string::npos);
  EXPECT_EQ(stored.find('\n'), std::string::npos);
}

TEST_F(Engine, APermanentFailureExcludesTheSiteAndFailsAJobThatCannotMeetQuorum) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b", "site-c"}).ok());
  const std::string job = Submit(JobToml(2, 2, "on_quorum_failure = \"retry\"\nmax_round_attempts = 5\n"));
  const v1::Task a = Poll("site-a"), b = Poll("site-b"), c = Poll("site-c");
  v1::UpdateHeader h;
  h.set_task_id(c.task_id());
  h.set_job_id(c.job_id());
  h.set_round(c.round());
  h.set_failure_reason("backbone mismatch");
  h.set_failure_permanent(true);
  ASSERT_TRUE(engine_->Submit("site-c", h, "").ok());
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 10).accepted);
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(1, 1), 10).accepted);
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  // Round 2 goes to the two sites that can take part; site-c gets nothing.
  auto none = engine_->Poll("site-c", "");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->task.has_value());
  const v1::JobStatus st = Status(job);
  ASSERT_EQ(st.rounds_size(), 2);
  EXPECT_EQ(st.rounds(1).sites_size(), 2);
  // A second permanent failure leaves one possible site for min_sites = 2:
  // the job fails at once instead of waiting for ever.
  const v1::Task b2 = Poll("site-b");
  h.set_task_id(b2.task_id());
  h.set_round(b2.round());
  ASSERT_TRUE(engine_->Submit("site-b", h, "").ok());
  clock_.now += 61'000;  // round 2's deadline: site-a never answers
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(engine_->Tick().ok());
  const v1::JobStatus failed = Status(job);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(failed.reason().find("can still take part"), std::string::npos) << failed.reason();
}

TEST_F(Engine, AMissingBaselineFileIsRecordedNotACrash) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  const std::string job = Submit(JobToml(1, 2, "baselines = true\n"));
  const v1::Task a = Poll("site-a"), b = Poll("site-b");
  EXPECT_TRUE(SubmitUpdate("site-a", a, Model(1, 1), 10).accepted);
  EXPECT_TRUE(SubmitUpdate("site-b", b, Model(3, 3), 10).accepted);
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  for (const char* site : {"site-a", "site-b"}) {
    const v1::Task t = Poll(site);
    EXPECT_TRUE(SubmitUpdate(site, t, Model(2, 0), 10).accepted);
  }
  // Someone deletes site-a's local-only model before evaluation starts.
  for (const auto& e : fs::recursive_directory_iterator(dir_ + "/blobs")) {
    if (e.path().filename().string().find("update-r2a1-site-a") == 0) fs::remove(e.path());
  }
  ASSERT_TRUE(engine_->Tick().ok());
  ASSERT_TRUE(engine_->Tick().ok());
  bool missing = false;
  for (const auto& e : Events(job)) missing = missing || e.kind() == "baseline_missing";
  EXPECT_TRUE(missing);
  const v1::JobStatus st = Status(job);
  ASSERT_EQ(st.rounds_size(), 3);
  EXPECT_EQ(st.rounds(2).sites_size(), 4) << "federated + site-b's local model at each of two sites";
}

TEST_F(Engine, ADamagedDatabaseIsRefusedAtOpenAndABackupRestores) {
  ASSERT_TRUE(engine_->SetEnrolledSites({"site-a", "site-b"}).ok());
  const std::string job = Submit(JobToml(1, 2));
  const std::string backup = dir_ + "-backup";
  fs::remove_all(backup);
  ASSERT_TRUE(BackupStateDirectory(dir_, backup).ok());
  EXPECT_EQ(BackupStateDirectory(dir_, backup).code(), absl::StatusCode::kAlreadyExists);
  engine_.reset();
  {
    // Damage a page in the middle of the database (not the header).
    std::fstream f(dir_ + "/coordinator.sqlite", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);  // page 2 starts with its b-tree page type
    const std::string junk(2000, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  fs::remove(dir_ + "/coordinator.sqlite-wal");
  fs::remove(dir_ + "/coordinator.sqlite-shm");
  EngineOptions o;
  o.state_dir = dir_;
  auto damaged = RoundEngine::Open(o, &clock_);
  ASSERT_FALSE(damaged.ok());
  EXPECT_NE(std::string(damaged.status().message()).find("backup"), std::string::npos) << damaged.status();
  // Restoring is putting the backup in the state directory's place.
  fs::remove_all(dir_);
  fs::rename(backup, dir_);
  Reopen();
  EXPECT_EQ(Status(job).rounds_size(), 1);
  EXPECT_TRUE(engine_->GetVersion(job, 0).ok());
}


// Promotion: the history (who, what, when), rollback through it, the model
// in use as sites see it, and who may fetch its weights.
TEST_F(Engine, PromotionHistoryRollbackAndTheServedModel) {
  MetricsRegistry metrics;
  {
    engine_.reset();
    EngineOptions o;
    o.state_dir = dir_;
    o.site_timeout_ms = 120'000;
    o.initial_weights = [this](const JobSpec&) -> absl::StatusOr<TensorMap> { return initial_; };
    o.metrics = &metrics;
    auto e = RoundEngine::Open(o, &clock_);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }
  const std::string job = Submit(JobToml(2, 3));
  EXPECT_EQ(engine_->Promote(job, 0, false, "alice").status().code(), absl::StatusCode::kFailedPrecondition);
  for (int round = 1; round <= 2; ++round) {
    for (const char* site : {"site-a", "site-b", "site-c"}) {
      EXPECT_TRUE(SubmitUpdate(site, Poll(site), Model(1.0f * round, 1), 100).accepted);
    }
    ASSERT_TRUE(engine_->Tick().ok());
    ASSERT_TRUE(engine_->Tick().ok());
  }
  EXPECT_TRUE(absl::StrContains(metrics.Exposition(),
                                "fedtune_coordinator_rounds_total{kind=\"train\",outcome=\"aggregated\"} 2\n"))
      << metrics.Exposition();
  EXPECT_EQ(engine_->Rollback("alice").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(engine_->ServedModel().ok());
  EXPECT_FALSE(engine_->ServedModel()->has_value());

  auto first = engine_->Promote(job, 1, false, "alice");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->version(), 1);
  EXPECT_EQ(first->promoted_by(), "alice");
  EXPECT_EQ(first->action(), "promote");
  EXPECT_EQ(first->sha256(), engine_->GetVersion(job, 1)->file.sha256);
  ASSERT_EQ(first->thresholds_size(), 2);  // the job's findings; no validation histograms shared: 0.5
  EXPECT_EQ(first->thresholds(1).finding(), "Pleural effusion");
  EXPECT_DOUBLE_EQ(first->thresholds(0).threshold(), 0.5);
  auto latest = engine_->Promote(job, 0, false, "alice");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->version(), 2);
  EXPECT_EQ(latest->previous_seq(), first->seq());
  EXPECT_EQ(engine_->Promote(job, 7, false, "alice").status().code(), absl::StatusCode::kNotFound);

  // Sites see the latest and may fetch exactly its weights.
  auto served = engine_->ServedModel();
  ASSERT_TRUE(served.ok() && served->has_value());
  EXPECT_EQ((*served)->model().weights().version(), 2);
  EXPECT_EQ((*served)->model().backbone_architecture(), "vit-tiny/16");
  EXPECT_TRUE(engine_->WeightsForServedModel("site-b", (*served)->model().weights()).ok());
  v1::WeightsRef older = (*served)->model().weights();
  older.set_version(1);
  older.set_sha256(first->sha256());
  EXPECT_EQ(engine_->WeightsForServedModel("site-b", older).status().code(), absl::StatusCode::kPermissionDenied);

  // Rollback returns to version 1, then finds nothing further back.
  auto back = engine_->Rollback("bob");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version(), 1);
  EXPECT_EQ(back->action(), "rollback");
  EXPECT_EQ(back->promoted_by(), "bob");
  EXPECT_EQ(engine_->Rollback("bob").status().code(), absl::StatusCode::kFailedPrecondition);
  auto history = engine_->ListPromotions();
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ(history->back().version(), 1);
  EXPECT_EQ((*engine_->ServedModel())->promotion().seq(), back->seq());

  // The history survives a restart; the job's events record each change.
  Reopen();
  EXPECT_EQ(engine_->ListPromotions()->size(), 3u);
  int promoted = 0;
  for (const auto& e : Events(job)) promoted += e.kind() == "model_promoted" || e.kind() == "model_rolled_back";
  EXPECT_EQ(promoted, 3);
}

}  // namespace
}  // namespace fedtune::coordinator
