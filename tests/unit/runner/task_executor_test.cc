// TaskExecutor on a real (synthetic, ingested) workspace: weights in the
// format of an older coordinator are refused for the methods whose backbone
// tensors travel as differences from the base weights.
#include "site-agent/runner/task_executor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/core/safetensors.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::site {
namespace {

namespace fs = std::filesystem;

TEST(TaskExecutor, BitFitWeightsWithoutTheFormatTagAreRefused) {
  const std::string root = ::testing::TempDir() + "/task_executor_" + std::to_string(getpid());
  fs::remove_all(root);
  ingest::SynthOptions synth;
  synth.site = "EXEC";
  synth.patients = 12;
  synth.image_size = 96;
  auto written = ingest::WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  fs::rename(written->labels_csv, root + "/labels.csv");
  ingest::IngestOptions io;
  io.workspace = root + "/ws";
  io.image_size = 32;
  io.filters.min_rows = io.filters.min_columns = 64;
  io.labels_path = root + "/labels.csv";
  io.labels.findings = ingest::SynthFindings();
  io.split = {0.2, 0.4, 0.4};
  ASSERT_TRUE(ingest::IngestDirectory(root + "/pacs", io).ok());

  v1::TrainConfig config;
  for (const auto& f : ingest::SynthFindings()) config.add_findings(f);
  config.set_method("bitfit");
  config.set_image_size(32);
  config.set_class_weights("site");
  auto spec = fl::ModelSpecFor("vit-tiny/16", config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  model::ClassifierOptions mo;
  mo.device = "cpu";
  mo.threads = 1;
  auto coordinator = model::Classifier::Create(*spec, mo);
  ASSERT_TRUE(coordinator.ok());
  ASSERT_TRUE((*coordinator)->SaveBackbone(root + "/backbone.safetensors").ok());
  const TensorMap v0 = *(*coordinator)->GlobalState();

  ExecutorOptions eo;
  eo.site_id = "exec";
  eo.workspace = io.workspace;
  eo.backbone_path = root + "/backbone.safetensors";
  eo.device = "cpu";
  eo.threads = 1;
  eo.k_threshold = 1;
  eo.bootstrap_resamples = 0;
  auto executor = TaskExecutor::Create(eo);
  ASSERT_TRUE(executor.ok()) << executor.status();
  v1::Task task;
  task.set_task_id("t1");
  task.set_job_id("job-exec");
  task.set_round(2);
  auto* ev = task.mutable_evaluate();
  ev->set_split("test");
  ev->set_backbone_sha256(executor->backbone_sha256());
  ev->set_backbone_architecture("vit-tiny/16");
  *ev->mutable_config() = config;
  ev->set_model_label("federated");

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
  fs::remove_all(root);
}

}  // namespace
}  // namespace fedtune::site
