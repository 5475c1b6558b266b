#include "common/model/vit.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/core/safetensors.h"
#include "common/model/checkpoint.h"
#include "common/model/tensor_convert.h"
#include "tests/testing/python_reference.h"
#include "tests/unit/model/model_test_util.h"

namespace fedtune::model {
namespace {

using testing::RandomizeLoraB;
using testing::TinySpec;

torch::Tensor Images(int64_t batch, int64_t side, int64_t channels = 1) {
  return torch::rand({batch, channels, side, side});
}

TEST(ViT, ParameterNamesFollowHuggingFaceDinov2) {
  torch::manual_seed(0);
  ViTClassifier model(TinySpec(/*layer_scale=*/true, /*registers=*/2));
  std::set<std::string> names;
  for (const auto& p : model->named_parameters()) names.insert(p.key());
  for (const char* n : {"dinov2.embeddings.cls_token", "dinov2.embeddings.mask_token",
                        "dinov2.embeddings.position_embeddings", "dinov2.embeddings.register_tokens",
                        "dinov2.embeddings.patch_embeddings.projection.weight",
                        "dinov2.encoder.layer.1.attention.attention.query.weight",
                        "dinov2.encoder.layer.1.attention.output.dense.bias",
                        "dinov2.encoder.layer.0.layer_scale1.lambda1", "dinov2.encoder.layer.0.mlp.fc2.weight",
                        "dinov2.layernorm.weight", "classifier.weight"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
  auto logits = model->forward(Images(2, 32));
  EXPECT_EQ(logits.sizes().vec(), (std::vector<int64_t>{2, 3}));
}

TEST(ViT, LoraWithZeroBLeavesOutputsUnchanged) {
  torch::manual_seed(1);
  ViTClassifier model(TinySpec());
  model->eval();
  torch::Tensor x = Images(3, 32);
  torch::Tensor before = model->forward(x);
  model->ApplyMethod();  // LoRA on query + value, B = 0
  torch::Tensor after = model->forward(x);
  EXPECT_TRUE(torch::equal(before, after));
  // A has PEFT's kaiming-uniform(a = sqrt 5) init: bound 1 / sqrt(in).
  auto lin = model->Linears().front().second;
  ASSERT_TRUE(lin->has_lora());
  EXPECT_LE(lin->lora_A->weight.abs().max().item<float>(), 1.0 / std::sqrt(32.0) + 1e-6);
  EXPECT_GT(lin->lora_A->weight.abs().max().item<float>(), 0.0f);
}

TEST(ViT, MergedEqualsUnmerged) {
  torch::manual_seed(2);
  ModelSpec spec = TinySpec();
  spec.lora.targets = {"query", "key", "value", "dense", "fc1", "fc2"};
  spec.lora.rslora = true;
  ViTClassifier model(spec);
  model->eval();
  model->ApplyMethod();
  RandomizeLoraB(model);
  torch::Tensor x = Images(2, 32);
  torch::NoGradGuard g;
  torch::Tensor unmerged = model->forward(x);
  auto base = model->Linears().front().second->weight.clone();
  for (auto& [n, lin] : model->Linears()) lin->Merge();
  torch::Tensor merged = model->forward(x);
  EXPECT_LT((merged - unmerged).abs().max().item<float>(), 1e-5);
  for (auto& [n, lin] : model->Linears()) lin->Unmerge();
  EXPECT_LT((model->Linears().front().second->weight - base).abs().max().item<float>(), 1e-6);
  EXPECT_LT((model->forward(x) - unmerged).abs().max().item<float>(), 1e-5);
}

// One optimizer step under each method changes exactly what it trains.
TEST(ViT, AStepChangesOnlyTrainableTensors) {
  for (FineTuneMethod method :
       {FineTuneMethod::kLora, FineTuneMethod::kBitFit, FineTuneMethod::kLinearProbe, FineTuneMethod::kFull}) {
    torch::manual_seed(3);
    ModelSpec spec = TinySpec();
    spec.method = method;
    ViTClassifier model(spec);
    model->ApplyMethod();
    if (method == FineTuneMethod::kLora) RandomizeLoraB(model);
    std::map<std::string, torch::Tensor> before;
    for (const auto& p : model->named_parameters()) before[p.key()] = p.value().detach().clone();
    std::vector<torch::Tensor> trainable;
    for (auto& p : model->parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    torch::optim::AdamW opt(trainable, torch::optim::AdamWOptions(1e-2));
    auto loss = torch::binary_cross_entropy_with_logits(model->forward(Images(4, 32)), torch::ones({4, 3}));
    loss.backward();
    opt.step();
    const auto names = TrainableNames(model);
    const std::set<std::string> trained(names.begin(), names.end());
    for (const auto& p : model->named_parameters()) {
      const bool changed = !torch::equal(before[p.key()], p.value());
      const bool is_trainable = trained.count(p.key()) > 0;
      // mask_token takes no part in the forward pass, so it gets no gradient.
      if (p.key() == "dinov2.embeddings.mask_token") continue;
      EXPECT_EQ(changed, is_trainable) << FineTuneMethodName(method) << " " << p.key();
    }
    if (method == FineTuneMethod::kLinearProbe) {
      EXPECT_EQ(trained.size(), 2u);
    } else if (method == FineTuneMethod::kLora) {
      EXPECT_EQ(trained.size(), 2u + 2 * 2 * 2);  // head + 2 layers x (q, v) x (A, B)
    }
  }
}

TEST(ViT, SingleChannelInputEqualsReplicatedThreeChannels) {
  torch::manual_seed(4);
  ModelSpec spec = TinySpec();
  spec.vit.mean = {0.4f, 0.5f, 0.6f};
  spec.vit.std = {0.2f, 0.25f, 0.3f};
  ViTClassifier model(spec);
  model->eval();
  torch::Tensor gray = Images(2, 32);
  torch::NoGradGuard g;
  EXPECT_LT((model->forward(gray) - model->forward(gray.repeat({1, 3, 1, 1}))).abs().max().item<float>(), 1e-5);
}

TEST(ViT, PresetsIncludeDinov2WithRegisters) {
  for (const char* name : {"dinov2-small/14-reg", "dinov2-base/14-reg"}) {
    auto c = ViTPreset(name);
    ASSERT_TRUE(c.ok()) << name;
    EXPECT_EQ(c->register_tokens, 4);
    EXPECT_TRUE(c->layer_scale);
    EXPECT_EQ(c->patch_size, 14);
  }
  EXPECT_EQ(ViTPreset("dinov2-small/14")->hidden, 384);
  EXPECT_EQ(ViTPreset("dinov2-base/14")->register_tokens, 0);
}

// Shrinking a cached image to the model's size is antialiased: a one-pixel
// checkerboard becomes an even grey, where a plain bilinear shrink by 3
// keeps a pattern of the pixels it happens to sample.
TEST(ViT, ImagesShrinkWithoutAliasing) {
  torch::Tensor board = torch::zeros({1, 1, 96, 96});
  auto b = board.accessor<float, 4>();
  for (int y = 0; y < 96; ++y)
    for (int x = 0; x < 96; ++x) b[0][0][y][x] = static_cast<float>((x + y) % 2);
  const torch::Tensor out = ResizeImages(board, 32);
  ASSERT_EQ(out.sizes().vec(), (std::vector<int64_t>{1, 1, 32, 32}));
  EXPECT_LT((out - 0.5).abs().max().item<float>(), 0.12);
  const torch::Tensor plain = torch::nn::functional::interpolate(
      board, torch::nn::functional::InterpolateFuncOptions()
                 .size(std::vector<int64_t>{32, 32})
                 .mode(torch::kBilinear)
                 .align_corners(false));
  EXPECT_GT((plain - 0.5).abs().max().item<float>(), 0.4);
  EXPECT_TRUE(torch::equal(ResizeImages(board, 96), board));
}

TEST(ViT, PositionEmbeddingsInterpolateForOtherInputSizes) {
  torch::manual_seed(5);
  ViTClassifier model(TinySpec());
  model->eval();
  torch::NoGradGuard g;
  EXPECT_EQ(model->forward(Images(1, 48)).sizes().vec(), (std::vector<int64_t>{1, 3}));  // 6x6 grid
  // Same grid: the stored embeddings are used as they are.
  auto pos = model->dinov2->embeddings->PositionsFor(4, 4);
  EXPECT_TRUE(torch::equal(pos, model->dinov2->embeddings->position_embeddings));
}

// Runs vit_reference.py on `model` and `x`; returns fedtune's logits.
torch::Tensor CompareWithPython(ViTClassifier& model, const ModelSpec& spec, const torch::Tensor& x,
                                const std::string& case_name, nlohmann::json extra = {}) {
  const std::string dir = ::testing::TempDir() + "/vit_ref_" + case_name;
  std::filesystem::create_directories(dir);
  TensorMap params;
  for (const auto& p : model->named_parameters()) params[p.key()] = *FromTorch(p.value());
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", params).ok());
  torch::Tensor logits;
  {
    torch::NoGradGuard g;
    logits = model->forward(x);
  }
  EXPECT_TRUE(WriteSafetensors(dir + "/input.safetensors", {{"images", *FromTorch(x)}}).ok());
  EXPECT_TRUE(WriteSafetensors(dir + "/output.safetensors", {{"logits", *FromTorch(logits)}}).ok());
  nlohmann::json cfg = {{"hidden", spec.vit.hidden},          {"heads", spec.vit.heads},
                        {"patch_size", spec.vit.patch_size},  {"layers", spec.vit.layers},
                        {"layer_norm_eps", spec.vit.layer_norm_eps}, {"lora_scaling", spec.lora.scaling()},
                        {"mean", spec.vit.mean},              {"std", spec.vit.std},
                        {"register_tokens", spec.vit.register_tokens}, {"pooling", PoolingName(spec.pooling)},
                        {"tolerance", 1e-4}};
  cfg.update(extra);
  std::ofstream(dir + "/config.json") << cfg.dump();
  std::string out;
  EXPECT_EQ(fedtune::testing::RunPythonScript("vit_reference.py", dir, &out), 0) << out;
  std::cout << "python reference, " << case_name << ": " << out;
  return logits;
}

// Position embeddings of a 4x4 checkpoint grid at a 7x7 input, resized the
// way each checkpoint family's own code resizes them (Meta's original DINOv2:
// scale factor with the +0.1 offset; with registers: antialiased; Hugging
// Face: to the size), against an independent Python forward.
TEST(ViT, PositionInterpolationFollowsTheCheckpointsFamily) {
  if (!fedtune::testing::PythonHas("torch numpy")) {
    GTEST_SKIP() << "python3-torch is not installed (deploy/install-deps.sh installs it)";
  }
  torch::manual_seed(61);
  ModelSpec spec = TinySpec(/*layer_scale=*/true);
  ViTClassifier model(spec);
  model->ApplyMethod();
  model->eval();
  {
    // Position embeddings of pretrained scale, so that the rules' differences
    // show in the logits.
    torch::NoGradGuard g;
    model->dinov2->embeddings->position_embeddings.normal_(0, 1);
  }
  const torch::Tensor x = Images(2, 56);       // 7x7 patches on the 4x4 grid
  const torch::Tensor shrink = Images(2, 24);  // 3x3, where antialiasing matters
  std::map<std::string, torch::Tensor> outputs;
  for (auto [mode, name] : {std::pair{PositionInterpolation::kSize, "size"},
                            std::pair{PositionInterpolation::kSizeAntialias, "size_antialias"},
                            std::pair{PositionInterpolation::kScaleOffset, "scale_offset"}}) {
    model->dinov2->embeddings->interpolation = mode;
    const nlohmann::json extra = {{"interpolation", name}, {"tolerance", 1e-5}};
    outputs[name] = CompareWithPython(model, spec, x, std::string("grow_") + name, extra);
    outputs[std::string(name) + "_shrink"] = CompareWithPython(model, spec, shrink, std::string("shrink_") + name, extra);
  }
  // The three rules give different models: a mismatch would be visible.
  EXPECT_GT((outputs["size"] - outputs["scale_offset"]).abs().max().item<float>(), 1e-4);
  EXPECT_GT((outputs["size_shrink"] - outputs["size_antialias_shrink"]).abs().max().item<float>(), 1e-4);
}

// MAE fine-tuned with global pooling norms the pooled features (fc_norm),
// not every token.
TEST(ViT, PooledNormMatchesMaesFcNorm) {
  if (!fedtune::testing::PythonHas("torch numpy")) {
    GTEST_SKIP() << "python3-torch is not installed (deploy/install-deps.sh installs it)";
  }
  torch::manual_seed(62);
  ModelSpec spec = TinySpec(/*layer_scale=*/false);
  ViTClassifier model(spec);
  model->ApplyMethod();
  model->eval();
  model->dinov2->set_pooled_norm(true);
  const torch::Tensor x = Images(2, 32);
  const torch::Tensor pooled = CompareWithPython(model, spec, x, "fc_norm", {{"pooled_norm", true}});
  model->dinov2->set_pooled_norm(false);
  torch::NoGradGuard g;
  EXPECT_GT((pooled - model->forward(x)).abs().max().item<float>(), 1e-3);
}

// The C++ forward against an independent Python one (torch.nn.functional),
// reading the same safetensors files. Covers layer scale, registers,
// CLS+mean pooling, non-zero LoRA on every target, and position embedding
// interpolation (64 px input on a 4x4 checkpoint grid).
TEST(ViT, MatchesPythonReferenceForward) {
  if (!fedtune::testing::PythonHas("torch numpy")) {
    GTEST_SKIP() << "python3-torch is not installed (deploy/install-deps.sh installs it)";
  }
  torch::manual_seed(6);
  ModelSpec spec = TinySpec(/*layer_scale=*/true, /*registers=*/2);
  spec.lora.targets = {"query", "key", "value", "dense", "fc1", "fc2"};
  spec.vit.mean = {0.5307f, 0.5307f, 0.5307f};
  spec.vit.std = {0.2583f, 0.2583f, 0.2583f};
  ViTClassifier model(spec);
  model->ApplyMethod();
  RandomizeLoraB(model, 0.1);
  model->eval();
  for (int side : {32, 64}) {
    const std::string dir = ::testing::TempDir() + "/vit_ref_" + std::to_string(side);
    std::filesystem::create_directories(dir);
    TensorMap params;
    for (const auto& p : model->named_parameters()) params[p.key()] = *FromTorch(p.value());
    ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", params).ok());
    torch::Tensor x = Images(3, side);
    torch::Tensor logits;
    {
      torch::NoGradGuard g;
      logits = model->forward(x);
    }
    ASSERT_TRUE(WriteSafetensors(dir + "/input.safetensors", {{"images", *FromTorch(x)}}).ok());
    ASSERT_TRUE(WriteSafetensors(dir + "/output.safetensors", {{"logits", *FromTorch(logits)}}).ok());
    nlohmann::json cfg = {{"hidden", spec.vit.hidden},          {"heads", spec.vit.heads},
                          {"patch_size", spec.vit.patch_size},  {"layers", spec.vit.layers},
                          {"layer_norm_eps", spec.vit.layer_norm_eps}, {"lora_scaling", spec.lora.scaling()},
                          {"mean", spec.vit.mean},              {"std", spec.vit.std},
                          {"register_tokens", spec.vit.register_tokens}, {"pooling", "cls_mean"},
                          {"tolerance", 1e-4}};
    std::ofstream(dir + "/config.json") << cfg.dump();
    std::string out;
    EXPECT_EQ(fedtune::testing::RunPythonScript("vit_reference.py", dir, &out), 0) << out;
    std::cout << "python reference, " << side << " px: " << out;
  }
}

}  // namespace
}  // namespace fedtune::model

namespace fedtune::model {
namespace {

// The CUDA precision scheme (bfloat16 activations and frozen weights, float32
// trainable masters), exercised on CPU: outputs stay close to float32 and
// gradients reach the float32 adapters.
TEST(ViT, BFloat16ComputeKeepsTrainableWeightsFloat32) {
  torch::manual_seed(10);
  ModelSpec spec = testing::TinySpec();
  ViTClassifier ref(spec), low(spec);
  ref->ApplyMethod();
  low->ApplyMethod();
  testing::RandomizeLoraB(ref);
  {
    torch::NoGradGuard g;
    auto a = ref->named_parameters();
    for (auto& p : low->named_parameters()) p.value().copy_(a[p.key()]);
  }
  PlaceOnDevice(low, torch::kCPU, /*bf16_frozen=*/true);
  ref->eval();
  low->eval();
  torch::Tensor x = torch::rand({2, 1, 32, 32});
  torch::Tensor y_ref = ref->forward(x), y_low = low->forward(x);
  EXPECT_EQ(y_low.scalar_type(), torch::kFloat32);
  EXPECT_LT((y_ref - y_low).abs().max().item<float>(), 0.05);
  for (const auto& p : low->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), p.value().requires_grad() ? torch::kFloat32 : torch::kBFloat16) << p.key();
  }
  low->train();
  torch::binary_cross_entropy_with_logits(low->forward(x), torch::ones({2, 3})).backward();
  for (const auto& p : low->named_parameters()) {
    if (p.value().requires_grad()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_EQ(p.value().grad().scalar_type(), torch::kFloat32);
    }
  }
}

}  // namespace
}  // namespace fedtune::model
