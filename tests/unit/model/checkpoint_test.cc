#include "common/model/checkpoint.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/model/tensor_convert.h"
#include "tests/unit/model/model_test_util.h"

namespace fedtune::model {
namespace {

using testing::TinySpec;

std::string Tmp(const std::string& name) { return ::testing::TempDir() + "/" + name; }

// A checkpoint file in `layout`, written from a randomly initialized backbone.
std::string WriteCheckpoint(const ModelSpec& spec, CheckpointLayout layout, const std::string& prefix, DType dtype,
                            const std::string& name, TensorMap extra = {}) {
  torch::manual_seed(42);
  ViTBackbone source(spec.vit);
  BackboneSource how;
  how.layout = layout;
  how.prefix = prefix;
  how.default_dtype = dtype;
  auto all = BackboneTensors(source, how);
  EXPECT_TRUE(all.ok()) << all.status();
  for (auto& [k, v] : extra) (*all)[k] = v;
  const std::string path = Tmp(name);
  EXPECT_TRUE(WriteSafetensors(path, *all, {{"format", "pt"}, {"source", name}}).ok());
  return path;
}

struct LayoutCase {
  const char* label;
  CheckpointLayout layout;
  const char* prefix;
  bool layer_scale;
  DType dtype;
};

class CheckpointLayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(CheckpointLayoutTest, LoadThenSaveIsBitExact) {
  const LayoutCase c = GetParam();
  ModelSpec spec = TinySpec(c.layer_scale);
  const std::string path = WriteCheckpoint(spec, c.layout, c.prefix, c.dtype, std::string(c.label) + ".safetensors");

  ViTBackbone model(spec.vit);
  auto src = LoadBackboneFile(model, path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->layout, c.layout);
  EXPECT_EQ(src->prefix, c.prefix);
  EXPECT_EQ(src->sha256, *Sha256FileHex(path));

  auto tensors = BackboneTensors(model, *src);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  auto original = SafetensorsFile::Open(path);
  ASSERT_TRUE(original.ok());
  EXPECT_EQ(*tensors, original->ReadAll());
  EXPECT_EQ(*SerializeSafetensors(*tensors, src->metadata), *ReadFileBytes(path));
}

// A DINOv2-layout file without a mask token (timm's DINOv2 exports) loads,
// and is written back without one.
TEST(Checkpoint, Dinov2WithoutMaskTokenLoadsAndRoundTrips) {
  ModelSpec spec = TinySpec(true);
  const std::string full = WriteCheckpoint(spec, CheckpointLayout::kDinov2, "", DType::kF32, "with_mask.safetensors");
  TensorMap tensors = SafetensorsFile::Open(full)->ReadAll();
  ASSERT_EQ(tensors.erase("mask_token"), 1u);
  const std::string path = Tmp("no_mask.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  ViTBackbone model(spec.vit);
  auto src = LoadBackboneFile(model, path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->layout, CheckpointLayout::kDinov2);
  EXPECT_EQ(model->embeddings->interpolation, PositionInterpolation::kScaleOffset);
  auto back = BackboneTensors(model, *src);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, tensors);
}

// An MAE pretraining file: the encoder in timm names, plus the decoder and its
// top-level mask_token [1, 1, decoder dim]. It is MAE (timm), not DINOv2.
TEST(Checkpoint, MaePretrainingFileIsTimmAndItsDecoderIsIgnored) {
  ModelSpec spec = TinySpec(false);
  TensorMap decoder;
  decoder["mask_token"] = *Tensor::FromFloats({1, 1, 8}, std::vector<float>(8, 0.1f));
  decoder["decoder_embed.weight"] = *Tensor::FromFloats({8, 32}, std::vector<float>(256, 0.1f));
  decoder["decoder_pos_embed"] = *Tensor::FromFloats({1, 17, 8}, std::vector<float>(136, 0.1f));
  const std::string path =
      WriteCheckpoint(spec, CheckpointLayout::kTimm, "", DType::kF32, "mae_pretrain.safetensors", decoder);
  ViTBackbone model(spec.vit);
  auto src = LoadBackboneFile(model, path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->layout, CheckpointLayout::kTimm);
  std::set<std::string> ignored(src->ignored.begin(), src->ignored.end());
  EXPECT_EQ(ignored, (std::set<std::string>{"decoder_embed.weight", "decoder_pos_embed", "mask_token"}));
  EXPECT_EQ(model->embeddings->interpolation, PositionInterpolation::kSize);
  EXPECT_FALSE(model->pooled_norm());
}

// MAE fine-tuned with global pooling names its final norm fc_norm: fedtune
// applies it after pooling.
TEST(Checkpoint, MaeFcNormBecomesAPooledNorm) {
  ModelSpec spec = TinySpec(false);
  const std::string plain = WriteCheckpoint(spec, CheckpointLayout::kTimm, "", DType::kF32, "mae_plain.safetensors");
  TensorMap tensors = SafetensorsFile::Open(plain)->ReadAll();
  tensors["fc_norm.weight"] = tensors.at("norm.weight");
  tensors["fc_norm.bias"] = tensors.at("norm.bias");
  tensors.erase("norm.weight");
  tensors.erase("norm.bias");
  const std::string path = Tmp("mae_fc_norm.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  ViTBackbone model(spec.vit);
  auto src = LoadBackboneFile(model, path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE(model->pooled_norm());
  EXPECT_EQ(*BackboneTensors(model, *src), tensors);
}

TEST(Checkpoint, RegisterModelsInterpolateAntialiased) {
  ModelSpec spec = TinySpec(true, /*registers=*/2);
  for (auto layout : {CheckpointLayout::kDinov2, CheckpointLayout::kHuggingFace}) {
    const std::string path = WriteCheckpoint(spec, layout, "", DType::kF32, "reg.safetensors");
    ViTBackbone model(spec.vit);
    ASSERT_TRUE(LoadBackboneFile(model, path).ok());
    EXPECT_EQ(model->embeddings->interpolation, PositionInterpolation::kSizeAntialias);
  }
  const std::string hf = WriteCheckpoint(TinySpec(true), CheckpointLayout::kHuggingFace, "", DType::kF32, "hf.safetensors");
  ViTBackbone model(TinySpec(true).vit);
  ASSERT_TRUE(LoadBackboneFile(model, hf).ok());
  EXPECT_EQ(model->embeddings->interpolation, PositionInterpolation::kSize);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, CheckpointLayoutTest,
    ::testing::Values(LayoutCase{"huggingface", CheckpointLayout::kHuggingFace, "", true, DType::kF32},
                      LayoutCase{"huggingface_dinov2_prefix", CheckpointLayout::kHuggingFace, "dinov2.", true, DType::kF32},
                      LayoutCase{"huggingface_f16", CheckpointLayout::kHuggingFace, "", true, DType::kF16},
                      LayoutCase{"dinov2_original", CheckpointLayout::kDinov2, "", true, DType::kF32},
                      LayoutCase{"dinov2_original_bf16", CheckpointLayout::kDinov2, "", true, DType::kBF16},
                      LayoutCase{"timm_mae", CheckpointLayout::kTimm, "", false, DType::kF32},
                      LayoutCase{"timm_mae_nested", CheckpointLayout::kTimm, "model.", false, DType::kF32}),
    [](const auto& info) { return std::string(info.param.label); });

// The same weights in fused (original) and split (HF) layouts give the same model.
TEST(Checkpoint, FusedQkvIsSplitInQueryKeyValueOrder) {
  ModelSpec spec = TinySpec();
  const std::string hf = WriteCheckpoint(spec, CheckpointLayout::kHuggingFace, "", DType::kF32, "same_hf.safetensors");
  const std::string orig = WriteCheckpoint(spec, CheckpointLayout::kDinov2, "", DType::kF32, "same_orig.safetensors");
  ViTBackbone a(spec.vit), b(spec.vit);
  ASSERT_TRUE(LoadBackboneFile(a, hf).ok());
  ASSERT_TRUE(LoadBackboneFile(b, orig).ok());
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  auto file = SafetensorsFile::Open(orig);
  auto qkv = ToTorch(*file->Read("blocks.1.attn.qkv.weight"));
  EXPECT_TRUE(torch::equal(qkv->chunk(3, 0)[1], pb["encoder.layer.1.attention.attention.key.weight"]));
}

TEST(Checkpoint, HeadsAndDecodersAreIgnoredAndReported) {
  ModelSpec spec = TinySpec(false);
  TensorMap extra;
  extra["head.weight"] = *Tensor::FromFloats({2, 32}, std::vector<float>(64, 0.f));
  extra["decoder_embed.weight"] = *Tensor::FromFloats({1}, std::vector<float>{1.f});
  const std::string path = WriteCheckpoint(spec, CheckpointLayout::kTimm, "", DType::kF32, "with_head.safetensors", extra);
  ViTBackbone model(spec.vit);
  auto src = LoadBackboneFile(model, path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->ignored, (std::vector<std::string>{"decoder_embed.weight", "head.weight"}));
}

TEST(Checkpoint, MismatchesAreReportedByName) {
  ModelSpec spec = TinySpec();
  const std::string path = WriteCheckpoint(spec, CheckpointLayout::kHuggingFace, "", DType::kF32, "mismatch.safetensors",
                                           {{"encoder.layer.7.norm1.weight", *Tensor::FromFloats({1}, std::vector<float>{1})}});
  ModelSpec wider = spec;
  wider.vit.mlp_dim = 128;
  wider.vit.layers = 3;
  ViTBackbone model(wider.vit);
  auto src = LoadBackboneFile(model, path);
  ASSERT_FALSE(src.ok());
  const std::string msg(src.status().message());
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("encoder.layer.2.norm1.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected 1 [encoder.layer.7.norm1.weight]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("encoder.layer.0.mlp.fc1.weight: checkpoint [64, 32], model [128, 32]"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos);

  // Not a backbone at all.
  const std::string junk = Tmp("junk.safetensors");
  ASSERT_TRUE(WriteSafetensors(junk, {{"x", *Tensor::FromFloats({1}, std::vector<float>{1})}}).ok());
  EXPECT_NE(std::string(LoadBackboneFile(model, junk).status().message()).find("layout not recognized"),
            std::string::npos);
}

TEST(Checkpoint, OtherPositionGridIsAcceptedAndInterpolated) {
  ModelSpec big = TinySpec();
  big.vit.image_size = 64;  // 8x8 grid in the checkpoint
  const std::string path = WriteCheckpoint(big, CheckpointLayout::kHuggingFace, "", DType::kF32, "grid8.safetensors");
  ModelSpec small = TinySpec();  // 4x4 grid configured
  ViTClassifier model(small);
  ASSERT_TRUE(LoadBackboneFile(model->dinov2, path).ok());
  EXPECT_EQ(model->dinov2->embeddings->position_embeddings.size(1), 65);
  torch::NoGradGuard g;
  EXPECT_EQ(model->forward(torch::rand({1, 1, 32, 32})).size(1), 3);
}

// Adapters never leak into a backbone checkpoint, and an adapted model still
// loads a plain backbone.
TEST(Checkpoint, BackboneExcludesAdapters) {
  ViTClassifier m(TinySpec());
  m->ApplyMethod();
  auto tensors = BackboneTensors(m->dinov2, BackboneSource{});
  ASSERT_TRUE(tensors.ok());
  for (const auto& [name, t] : *tensors) EXPECT_EQ(name.find("lora_"), std::string::npos) << name;
  const std::string path = Tmp("adapted_backbone.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, *tensors).ok());
  EXPECT_TRUE(LoadBackboneFile(m->dinov2, path).ok());
}

TEST(Adapter, ExportImportRoundTripWithPeftNames) {
  torch::manual_seed(8);
  ViTClassifier a(TinySpec());
  a->ApplyMethod();
  testing::RandomizeLoraB(a);
  auto state = ExportTrainable(a);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->size(), 2u + 8u);
  EXPECT_TRUE(state->count("base_model.model.dinov2.encoder.layer.0.attention.attention.query.lora_A.weight"));
  EXPECT_TRUE(state->count("base_model.model.dinov2.encoder.layer.1.attention.attention.value.lora_B.weight"));
  EXPECT_TRUE(state->count("base_model.model.classifier.weight"));

  torch::manual_seed(9);
  ViTClassifier b(TinySpec());
  b->ApplyMethod();
  ASSERT_TRUE(ImportTrainable(b, *state).ok());
  EXPECT_EQ(*ExportTrainable(b), *state);

  TensorMap broken = *state;
  broken.erase("base_model.model.classifier.bias");
  broken["base_model.model.extra"] = broken.begin()->second;
  broken["base_model.model.classifier.weight"].shape = {1, 1};
  auto s = ImportTrainable(b, broken);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("missing 1 [base_model.model.classifier.bias]"), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find("unexpected 1 [base_model.model.extra]"), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find("shape mismatch"), std::string::npos) << s;
  EXPECT_EQ(*ExportTrainable(b), *state);  // unchanged after a refused import
}

TEST(Adapter, SaveWritesPeftFiles) {
  ViTClassifier m(TinySpec());
  m->ApplyMethod();
  const std::string dir = Tmp("adapter_out");
  ASSERT_TRUE(SaveAdapter(m, dir).ok());
  auto cfg = nlohmann::json::parse(*ReadFileBytes(dir + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 8.0);
  EXPECT_EQ(cfg["target_modules"], (std::vector<std::string>{"query", "value"}));
  EXPECT_EQ(cfg["modules_to_save"], (std::vector<std::string>{"classifier"}));
  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->entries().size(), 10u);
}

}  // namespace
}  // namespace fedtune::model
