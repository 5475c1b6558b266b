// A site workspace holding a promoted model, as the daemon leaves it: one
// synthetic radiograph ingested at 32 px, a tiny LoRA ViT whose global state
// is held in workspace/models/current (job "job-inf", version 3, a 0.25
// threshold for the first finding), its backbone file, and the classifier it
// was made from (the reference a served answer is compared with).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "site-agent/inference/served_model.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::testing {

struct ServedSiteFiles {
  std::string root;
  std::string dicom_path;  // the ingested file (DCMTK-written)
  std::string workspace;
  std::string backbone;
  std::string backbone_sha256;
  ingest::IngestOptions ingest;
  std::unique_ptr<model::Classifier> reference;

  // The workspace's one cached image, as training reads it.
  std::vector<float> CachedImage() const {
    const std::string shard = *ReadFileBytes(workspace + "/cache/" + ingest::CacheShardName(0, 8));
    std::vector<float> out;
    for (char c : shard) out.push_back(static_cast<float>(static_cast<uint8_t>(c)) / 255.0f);
    return out;
  }

  // The reference classifier's probabilities for n images of side x side.
  std::vector<double> Reference(const std::vector<float>& images, int n, int side) const {
    model::InMemoryDataset data(side, side, reference->spec().findings.size());
    const std::vector<float> labels(reference->spec().findings.size(), -1.0f);
    const size_t per = static_cast<size_t>(side) * side;
    for (int i = 0; i < n; ++i) EXPECT_TRUE(data.Add(std::span(images).subspan(i * per, per), labels).ok());
    return *reference->Predict(data);
  }
};

// Fails the calling test (ASSERT in a void helper) and leaves *out partial
// on error.
inline void MakeServedSite(const std::string& root, ServedSiteFiles* out) {
  namespace fs = std::filesystem;
  fs::remove_all(root);
  out->root = root;
  ingest::SynthOptions synth;
  synth.site = "INF";
  synth.patients = 2;
  synth.image_size = 96;
  auto written = ingest::WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  fs::create_directories(root + "/one");
  out->dicom_path = root + "/one/image.dcm";
  fs::copy_file(written->files[0], out->dicom_path);
  out->workspace = root + "/ws";
  ingest::IngestOptions& io = out->ingest;
  io.workspace = out->workspace;
  io.image_size = 32;
  io.filters.min_rows = io.filters.min_columns = 64;
  auto summary = ingest::IngestDirectory(root + "/one", io);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->ingested, 1);

  v1::TrainConfig config;
  for (const auto& f : ingest::SynthFindings()) config.add_findings(f);
  config.set_method("lora");
  config.set_lora_rank(16);
  config.set_lora_alpha(16);
  config.add_lora_targets("query");
  config.add_lora_targets("value");
  config.set_image_size(32);
  auto spec = fl::ModelSpecFor("vit-tiny/16", config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  model::ClassifierOptions mo;
  mo.device = "cpu";
  mo.threads = 1;
  mo.seed = 7;
  auto first = model::Classifier::Create(*spec, mo);
  ASSERT_TRUE(first.ok()) << first.status();
  out->backbone = root + "/backbone.safetensors";
  ASSERT_TRUE((*first)->SaveBackbone(out->backbone).ok());
  mo.backbone_path = out->backbone;
  auto reference = model::Classifier::Create(*spec, mo);  // as a site builds it: on the saved backbone
  ASSERT_TRUE(reference.ok()) << reference.status();
  // A trained-looking state: LoRA B and the head away from their initial values.
  TensorMap state = *(*reference)->GlobalState();
  for (auto& [name, t] : state) {
    std::vector<float> v = *t.ToFloats();
    for (size_t i = 0; i < v.size(); ++i) v[i] += 0.05f * std::sin(static_cast<float>(i + name.size()));
    t = *Tensor::FromFloats(t.shape, v);
  }
  ASSERT_TRUE((*reference)->SetGlobalState(state).ok());
  out->reference = std::move(*reference);
  const std::string weights =
      *SerializeSafetensors(state, {{"format", "pt"}, {fl::kGlobalStateFormatKey, fl::kGlobalStateFormat}});
  out->backbone_sha256 = *Sha256FileHex(out->backbone);
  v1::ServedModel served;
  v1::Promotion* p = served.mutable_promotion();
  p->set_seq(4);
  p->set_job_id("job-inf");
  p->set_version(3);
  p->set_sha256(Sha256Hex(weights));
  p->set_promoted_by("alice");
  v1::FindingThreshold* t = p->add_thresholds();
  t->set_finding(config.findings(0));
  t->set_threshold(0.25);
  v1::EvaluateTask* m = served.mutable_model();
  m->set_backbone_sha256(out->backbone_sha256);
  m->set_backbone_architecture("vit-tiny/16");
  *m->mutable_config() = config;
  ASSERT_TRUE(site::InstallServedModel(out->workspace, served, weights).ok());
}

}  // namespace fedtune::testing
