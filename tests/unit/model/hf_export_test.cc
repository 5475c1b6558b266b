// A fine-tuned model exported as a transformers Dinov2ForImageClassification
// directory computes what fedtune computes (checked by tests/python/
// hf_reference.py, and by transformers itself where it is installed).
#include "common/model/hf_export.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/core/safetensors.h"
#include "common/model/tensor_convert.h"
#include "tests/testing/python_reference.h"
#include "tests/unit/model/model_test_util.h"

namespace fedtune::model {
namespace {

namespace fs = std::filesystem;

// Exports `model` and runs the reference on 3 random images.
void ExpectTheExportComputesTheSame(ViTClassifier& model, const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/hf_export_" + std::to_string(getpid()) + "_" + name;
  fs::remove_all(dir);
  ASSERT_TRUE(SaveHuggingFaceClassifier(model, dir + "/model").ok());
  model->eval();
  const int side = model->spec().vit.image_size;
  torch::Tensor x = torch::rand({3, 1, side, side});
  torch::Tensor logits;
  {
    torch::NoGradGuard g;
    logits = model->forward(x);
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/input.safetensors", {{"images", *FromTorch(x)}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/output.safetensors", {{"logits", *FromTorch(logits)}}).ok());
  std::string out;
  EXPECT_EQ(fedtune::testing::RunPythonScript("hf_reference.py", dir, &out), 0) << out;
  std::cout << name << ": " << out;
  fs::remove_all(dir);
}

// A trained-looking model: every parameter moved off its initial value.
ViTClassifier Trained(const ModelSpec& spec, uint64_t seed) {
  torch::manual_seed(seed);
  ViTClassifier m(spec);
  m->ApplyMethod();
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.05);
  return m;
}

TEST(HuggingFaceExport, MatchesDinov2ForImageClassification) {
  if (!fedtune::testing::PythonHas("torch numpy")) {
    GTEST_SKIP() << "python3-torch is not installed (deploy/install-deps.sh installs it)";
  }
  ModelSpec with_scale = testing::TinySpec(/*layer_scale=*/true);
  with_scale.method = FineTuneMethod::kFull;
  auto a = Trained(with_scale, 1);
  ExpectTheExportComputesTheSame(a, "full_cls_mean");
  // Without layer scale (exported as ones) and with CLS pooling (a head
  // whose mean half is zero): still exact.
  ModelSpec plain = testing::TinySpec(/*layer_scale=*/false);
  plain.method = FineTuneMethod::kBitFit;
  plain.pooling = Pooling::kCls;
  auto b = Trained(plain, 2);
  ExpectTheExportComputesTheSame(b, "bitfit_cls_no_layer_scale");
  // Registers: Dinov2WithRegistersForImageClassification.
  ModelSpec registers = testing::TinySpec(/*layer_scale=*/true, /*registers=*/2);
  registers.method = FineTuneMethod::kLinearProbe;
  auto c = Trained(registers, 3);
  ExpectTheExportComputesTheSame(c, "linear_probe_registers");
}

TEST(HuggingFaceExport, ConfigNamesTheFindingsAndWhatCannotBeExpressedIsRefused) {
  ModelSpec spec = testing::TinySpec();
  spec.method = FineTuneMethod::kBitFit;
  auto m = Trained(spec, 4);
  const std::string dir = ::testing::TempDir() + "/hf_export_config_" + std::to_string(getpid());
  ASSERT_TRUE(SaveHuggingFaceClassifier(m, dir).ok());
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  EXPECT_EQ(cfg["architectures"][0], "Dinov2ForImageClassification");
  EXPECT_EQ(cfg["id2label"]["1"], "Pleural effusion");
  EXPECT_EQ(cfg["label2id"]["Nodule/Mass"], 2);
  EXPECT_EQ(cfg["image_size"], 32);
  fs::remove_all(dir);
  m->dinov2->set_pooled_norm(true);
  auto st = SaveHuggingFaceClassifier(m, dir);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("fc_norm"), std::string::npos) << st;
  ModelSpec lora = testing::TinySpec();
  auto l = Trained(lora, 5);
  EXPECT_NE(SaveHuggingFaceClassifier(l, dir).message().find("PEFT adapter"), std::string::npos);
}

}  // namespace
}  // namespace fedtune::model
