// The exported adapter loads in Python PEFT on top of transformers'
// Dinov2ForImageClassification and gives the same logits as fedtune.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/model/checkpoint.h"
#include "common/model/tensor_convert.h"
#include "tests/testing/python_reference.h"
#include "tests/unit/model/model_test_util.h"

namespace fedtune::model {
namespace {

TEST(PeftCompat, AdapterLoadsInPeftWithTheSameLogits) {
  if (!fedtune::testing::PythonHas("torch peft transformers safetensors")) {
    GTEST_SKIP() << "python3 with peft and transformers is not installed (Debian 12 packages neither; "
                    "the GPU machine's python has both)";
  }
  torch::manual_seed(12);
  ModelSpec spec = testing::TinySpec(/*layer_scale=*/true);
  spec.lora.targets = {"query", "value"};
  ViTClassifier model(spec);
  model->ApplyMethod();
  testing::RandomizeLoraB(model, 0.1);
  model->eval();

  const std::string dir = ::testing::TempDir() + "/peft_compat";
  std::filesystem::create_directories(dir);
  BackboneSource hf;  // Hugging Face layout, float32
  auto backbone = BackboneTensors(model->dinov2, hf);
  ASSERT_TRUE(backbone.ok()) << backbone.status();
  ASSERT_TRUE(WriteSafetensors(dir + "/backbone.safetensors", *backbone).ok());
  ASSERT_TRUE(SaveAdapter(model, dir + "/adapter").ok());
  torch::Tensor x = torch::rand({2, 1, 32, 32});
  torch::Tensor logits;
  {
    torch::NoGradGuard g;
    logits = model->forward(x);
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/input.safetensors", {{"images", *FromTorch(x)}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/output.safetensors", {{"logits", *FromTorch(logits)}}).ok());
  nlohmann::json cfg = {{"hidden", spec.vit.hidden},         {"layers", spec.vit.layers},
                        {"heads", spec.vit.heads},           {"mlp", spec.vit.mlp_dim},
                        {"patch_size", spec.vit.patch_size}, {"image_size", spec.vit.image_size},
                        {"layer_norm_eps", spec.vit.layer_norm_eps}, {"findings", spec.findings.size()},
                        {"mean", spec.vit.mean},             {"std", spec.vit.std},
                        {"tolerance", 1e-4}};
  std::ofstream(dir + "/config.json") << cfg.dump();
  std::string out;
  EXPECT_EQ(fedtune::testing::RunPythonScript("peft_reference.py", dir, &out), 0) << out;
  std::cout << out;
}

}  // namespace
}  // namespace fedtune::model
