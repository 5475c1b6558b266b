// TaskExecutor on a real (synthetic, ingested) workspace: weights in the
// format of an older coordinator are refused for the methods whose backbone
// tensors travel as differences from the base weights.
#include "site-agent/runner/task_executor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::site {
namespace {

namespace fs = std::filesystem;

// A synthetic site ingested into a workspace, a random backbone saved, and
// version 0 of a BitFit model over it.
struct Site {
  std::string root;
  ingest::IngestOptions io;
  v1::TrainConfig config;
  TensorMap v0;

  explicit Site(const std::string& name, double train = 0.2) {
    root = ::testing::TempDir() + "/task_executor_" + name + "_" + std::to_string(getpid());
    fs::remove_all(root);
    ingest::SynthOptions synth;
    synth.site = "EXEC";
    synth.patients = 12;
    synth.image_size = 96;
    auto written = ingest::WriteSyntheticSite(synth, root + "/pacs");
    EXPECT_TRUE(written.ok()) << written.status();
    fs::rename(written->labels_csv, root + "/labels.csv");
    io.workspace = root + "/ws";
    // A fixed site key makes the patient pseudonyms, and so the split, the
    // same on every run (a random one left the training split empty in
    // about one run of fourteen).
    fs::create_directories(io.workspace);
    EXPECT_TRUE(WriteFileAtomically(io.workspace + "/site.key", Sha256Hex("task executor " + name).substr(0, 32), 0600)
                    .ok());
    io.image_size = 32;
    io.filters.min_rows = io.filters.min_columns = 64;
    io.labels_path = root + "/labels.csv";
    io.labels.findings = ingest::SynthFindings();
    io.split = {train, (1 - train) / 2, (1 - train) / 2};
    EXPECT_TRUE(ingest::IngestDirectory(root + "/pacs", io).ok());
    for (const auto& f : ingest::SynthFindings()) config.add_findings(f);
    config.set_method("bitfit");
    config.set_image_size(32);
    config.set_class_weights("site");
    auto spec = fl::ModelSpecFor("vit-tiny/16", config);
    EXPECT_TRUE(spec.ok()) << spec.status();
    model::ClassifierOptions mo;
    mo.device = "cpu";
    mo.threads = 1;
    auto coordinator = model::Classifier::Create(*spec, mo);
    EXPECT_TRUE(coordinator.ok());
    EXPECT_TRUE((*coordinator)->SaveBackbone(root + "/backbone.safetensors").ok());
    v0 = *(*coordinator)->GlobalState();
  }
  ~Site() { fs::remove_all(root); }

  ExecutorOptions Options() const {
    ExecutorOptions eo;
    eo.site_id = "exec";
    eo.workspace = io.workspace;
    eo.backbone_path = root + "/backbone.safetensors";
    eo.device = "cpu";
    eo.threads = 1;
    eo.k_threshold = 1;
    eo.bootstrap_resamples = 0;
    return eo;
  }

  std::string Weights() const {
    return *SerializeSafetensors(v0, {{"format", "pt"}, {fl::kGlobalStateFormatKey, fl::kGlobalStateFormat}});
  }
};

v1::Task EvaluateTask(const TaskExecutor& executor, const v1::TrainConfig& config, const std::string& id) {
  v1::Task task;
  task.set_task_id(id);
  task.set_job_id("job-exec");
  task.set_round(2);
  auto* ev = task.mutable_evaluate();
  ev->set_split("test");
  ev->set_backbone_sha256(executor.backbone_sha256());
  ev->set_backbone_architecture("vit-tiny/16");
  *ev->mutable_config() = config;
  ev->set_model_label("federated");
  return task;
}

TEST(TaskExecutor, BitFitWeightsWithoutTheFormatTagAreRefused) {
  Site site("format");
  const v1::TrainConfig& config = site.config;
  const TensorMap& v0 = site.v0;
  auto executor = TaskExecutor::Create(site.Options());
  ASSERT_TRUE(executor.ok()) << executor.status();
  const v1::Task task = EvaluateTask(*executor, config, "t1");
  const std::string untagged = *SerializeSafetensors(v0, {{"format", "pt"}});
  auto old = executor->Run(task, untagged, {}, nullptr);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_NE(old->header.failure_reason().find("older than this site agent"), std::string::npos)
      << old->header.failure_reason();
  const std::string tagged =
      *SerializeSafetensors(v0, {{"format", "pt"}, {fl::kGlobalStateFormatKey, fl::kGlobalStateFormat}});
  auto now = executor->Run(task, tagged, {}, nullptr);
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_TRUE(now->header.failure_reason().empty()) << now->header.failure_reason();
  EXPECT_GT(now->header.evaluation().examples(), 0);
}

// Disclosure control played as a curious coordinator: a training task
// asking for a handful of images (max_train_samples = 2) and more
// evaluations than the site allows are refused, for good.
TEST(TaskExecutor, TooFewTrainingImagesAndTooManyEvaluationsAreRefused) {
  Site site("disclosure");
  ExecutorOptions eo = site.Options();
  eo.k_threshold = 2;
  eo.min_train_images = 4;
  eo.max_evaluations_per_job = 2;
  auto executor = TaskExecutor::Create(eo);
  ASSERT_TRUE(executor.ok()) << executor.status();

  v1::Task train;
  train.set_task_id("train-1");
  train.set_job_id("job-exec");
  train.set_round(1);
  auto* tt = train.mutable_train();
  tt->set_backbone_sha256(executor->backbone_sha256());
  tt->set_backbone_architecture("vit-tiny/16");
  *tt->mutable_config() = site.config;
  tt->mutable_config()->set_max_train_samples(2);
  tt->mutable_config()->set_local_epochs(1);
  tt->mutable_config()->set_batch_size(4);
  auto few = executor->Run(train, site.Weights(), {}, nullptr);
  ASSERT_TRUE(few.ok()) << few.status();
  EXPECT_NE(few->header.failure_reason().find("trains on at least 4 images per task"), std::string::npos)
      << few->header.failure_reason();
  EXPECT_TRUE(few->header.failure_permanent());
  EXPECT_TRUE(few->weights.empty());

  for (int i = 1; i <= 3; ++i) {
    auto r = executor->Run(EvaluateTask(*executor, site.config, "eval-" + std::to_string(i)), site.Weights(), {},
                           nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    if (i <= 2) {
      EXPECT_TRUE(r->header.failure_reason().empty()) << i << ": " << r->header.failure_reason();
    } else {
      EXPECT_NE(r->header.failure_reason().find("evaluates at most 2 models per job"), std::string::npos)
          << r->header.failure_reason();
      EXPECT_FALSE(r->header.has_evaluation());
    }
  }
  // A split smaller than k is not evaluated: its size would be shared.
  ExecutorOptions strict = site.Options();
  strict.k_threshold = 1000;
  strict.min_train_images = 1000;
  auto cautious = TaskExecutor::Create(strict);
  ASSERT_TRUE(cautious.ok());
  auto small = cautious->Run(EvaluateTask(*cautious, site.config, "eval-small"), site.Weights(), {}, nullptr);
  ASSERT_TRUE(small.ok());
  EXPECT_NE(small->header.failure_reason().find("fewer than k (1000) test images"), std::string::npos)
      << small->header.failure_reason();
  // The count survives a new executor (a restarted daemon).
  auto again = TaskExecutor::Create(eo);
  ASSERT_TRUE(again.ok());
  auto r = again->Run(EvaluateTask(*again, site.config, "eval-4"), site.Weights(), {}, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->header.failure_reason().empty());
}

// [stats] share_local_model: a local-only baseline trained here carries
// this site's id when it is not shared, and an agent refuses to evaluate
// another site's model so marked.
TEST(TaskExecutor, ALocalModelNotSharedIsMarkedAndRefusedElsewhere) {
  Site site("home_only", 0.6);
  for (const bool share : {false, true}) {
    ExecutorOptions eo = site.Options();
    eo.min_train_images = 1;
    eo.share_local_model = share;
    auto executor = TaskExecutor::Create(eo);
    ASSERT_TRUE(executor.ok()) << executor.status();
    v1::Task train;
    train.set_task_id(share ? "local-shared" : "local-kept");
    train.set_job_id("job-home");
    train.set_round(2);
    auto* tt = train.mutable_train();
    tt->set_backbone_sha256(executor->backbone_sha256());
    tt->set_backbone_architecture("vit-tiny/16");
    *tt->mutable_config() = site.config;
    tt->mutable_config()->set_local_epochs(1);
    tt->mutable_config()->set_batch_size(4);
    tt->mutable_config()->set_learning_rate(1e-3);
    tt->mutable_weights()->set_model_label("local:exec");
    auto r = executor->Run(train, site.Weights(), {}, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->header.failure_reason().empty()) << r->header.failure_reason();
    auto file = SafetensorsFile::FromBytes(r->weights);
    ASSERT_TRUE(file.ok());
    const auto& meta = file->metadata();
    if (share) {
      EXPECT_FALSE(meta.count(fl::kHomeOnlyKey));
    } else {
      ASSERT_TRUE(meta.count(fl::kHomeOnlyKey));
      EXPECT_EQ(meta.at(fl::kHomeOnlyKey), "exec");
    }
  }
  // Another site's model marked for its home only: refused here.
  auto executor = TaskExecutor::Create(site.Options());
  ASSERT_TRUE(executor.ok());
  v1::Task eval = EvaluateTask(*executor, site.config, "eval-foreign");
  eval.mutable_evaluate()->set_model_label("local:hospital-z");
  const std::string foreign = *SerializeSafetensors(
      site.v0, {{"format", "pt"}, {fl::kGlobalStateFormatKey, fl::kGlobalStateFormat}, {fl::kHomeOnlyKey, "hospital-z"}});
  auto refused = executor->Run(eval, foreign, {}, nullptr);
  ASSERT_TRUE(refused.ok());
  EXPECT_NE(refused->header.failure_reason().find("the local-only model of hospital-z, which that site keeps"),
            std::string::npos)
      << refused->header.failure_reason();
  EXPECT_FALSE(refused->header.has_evaluation());
}

}  // namespace
}  // namespace fedtune::site
