// What a model is: backbone architecture, fine-tuning method and head.
// Torch-free: the coordinator and the site agent read these from job TOML.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::model {

// How a stored grid of position embeddings is resized to another grid of
// patches, as the code each checkpoint was trained with does it (bicubic,
// align_corners = false, in float32):
enum class PositionInterpolation {
  kSize,           // to the target size (Hugging Face Dinov2, timm / MAE)
  kSizeAntialias,  // to the target size, antialiased (DINOv2 with registers: Meta's and Hugging Face's)
  kScaleOffset,    // scale factor (grid + 0.1) / stored grid (Meta's original DINOv2 release)
};

// A Vision Transformer backbone with pre-norm blocks.
struct ViTConfig {
  int image_size = 224;  // square input side in pixels; a multiple of patch_size
  int patch_size = 16;
  int hidden = 192;
  int layers = 12;
  int heads = 3;
  int mlp_dim = 768;
  double layer_norm_eps = 1e-6;
  bool layer_scale = false;  // per-channel residual scales (DINOv2 "ls1"/"layer_scale1")
  double layer_scale_init = 1.0;
  bool qkv_bias = true;
  int register_tokens = 0;  // DINOv2 with registers
  // Set from the backbone checkpoint's layout when one is loaded.
  PositionInterpolation position_interpolation = PositionInterpolation::kSize;
  // Per-channel normalization of the 3-channel input the backbone was trained
  // on. A single-channel radiograph in [0, 1] is fed exactly as if it had been
  // replicated to 3 channels and normalized with these (see vit.h).
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};

  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
};

// Named presets:
//   vit-tiny/16   DeiT-Ti shape, 224 px (tests, demo)
//   vit-small/16  ViT-S/16, 224 px
//   mae-base/16   MAE ViT-B/16, 224 px, ImageNet normalization
//   rad-dino      RAD-DINO = DINOv2 ViT-B/14 at 518 px, layer scale, mean 0.5307 std 0.2583
//   dinov2-small/14, dinov2-base/14   DINOv2 ViT-S/14, ViT-B/14 at 518 px, ImageNet normalization
//   dinov2-small/14-reg, dinov2-base/14-reg   the same with 4 register tokens
// NOT_FOUND lists the known names.
absl::StatusOr<ViTConfig> ViTPreset(std::string_view name);
std::vector<std::string> ViTPresetNames();
// INVALID_ARGUMENT naming the first inconsistent field.
absl::Status Validate(const ViTConfig& c);

enum class FineTuneMethod { kLora, kBitFit, kLinearProbe, kFull };
absl::StatusOr<FineTuneMethod> ParseFineTuneMethod(std::string_view name);  // "lora", "bitfit", ...
std::string_view FineTuneMethodName(FineTuneMethod m);

// LoRA as in Hugging Face PEFT: A [r, in] kaiming-uniform(a = sqrt 5), B [out, r]
// zeros, output scaled by alpha / r (alpha / sqrt r with rsLoRA), dropout on
// the LoRA branch only.
struct LoraConfig {
  int rank = 16;
  double alpha = 16;
  double dropout = 0.1;
  bool rslora = false;
  // Leaf module names: "query", "key", "value", "dense" (attention output),
  // "fc1", "fc2" (MLP).
  std::vector<std::string> targets = {"query", "value"};
  // FFA-LoRA: A keeps the values it is given (the global model's) and is not
  // trained; only B (and the head) train.
  bool freeze_a = false;
  double scaling() const;
};

enum class Pooling {
  kCls,      // the CLS token
  kClsMean,  // concat(CLS, mean of patch tokens), as Dinov2ForImageClassification
};
absl::StatusOr<Pooling> ParsePooling(std::string_view name);  // "cls", "cls_mean"
std::string_view PoolingName(Pooling p);

struct ModelSpec {
  ViTConfig vit;
  std::vector<std::string> findings;  // one sigmoid output per finding
  Pooling pooling = Pooling::kClsMean;
  FineTuneMethod method = FineTuneMethod::kLora;
  LoraConfig lora;
};

absl::Status Validate(const ModelSpec& s);

// adapter_config.json for PEFT (peft_type LORA, r, lora_alpha, lora_dropout,
// target_modules, modules_to_save, bias, use_rslora): with the trainable state
// under PEFT names it makes a PEFT-loadable adapter directory.
std::string AdapterConfigJson(const ModelSpec& spec);

}  // namespace fedtune::model
