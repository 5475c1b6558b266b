// The Vision Transformer and its adapters, as LibTorch modules. Torch-facing:
// include only inside common/model.
//
// Module names reproduce Hugging Face's Dinov2ForImageClassification, so the
// model's parameter names are the checkpoint's and PEFT's:
//   dinov2.embeddings.{cls_token, mask_token, position_embeddings, register_tokens}
//   dinov2.embeddings.patch_embeddings.projection.{weight, bias}
//   dinov2.encoder.layer.N.{norm1, norm2}.*
//   dinov2.encoder.layer.N.attention.attention.{query, key, value}.*
//   dinov2.encoder.layer.N.attention.output.dense.*
//   dinov2.encoder.layer.N.{layer_scale1, layer_scale2}.lambda1
//   dinov2.encoder.layer.N.mlp.{fc1, fc2}.*
//   dinov2.layernorm.*, classifier.*
// and a LoRA-adapted linear adds <module>.lora_A.weight / <module>.lora_B.weight.
//
// Single-channel input. Radiographs arrive as [B, 1, H, W] in [0, 1]. The
// backbone was trained on 3-channel images normalized per channel, so the
// patch embedding folds "replicate to 3 channels, then normalize" into an
// equivalent 1-channel convolution: W1 = sum_c W_c / std_c and
// b1 = b - sum_c (mean_c / std_c) * sum(W_c). This is exact (convolution is
// linear), costs a third of the 3-channel convolution, and keeps the
// checkpoint's weights untouched. [B, 3, H, W] input is normalized and used as is.
#pragma once

#include "common/model/model_config.h"
#include "common/model/pch.h"

namespace fedtune::model {

// A linear layer whose weight and bias may be frozen, with an optional LoRA
// branch. Parameter names match torch::nn::Linear ("weight", "bias").
class AdaptableLinearImpl : public torch::nn::Module {
 public:
  AdaptableLinearImpl(int64_t in, int64_t out, bool bias);

  torch::Tensor forward(const torch::Tensor& x) { return Apply(x); }
  // y = x W^T + b + scaling * B A dropout(x), with every output channel
  // multiplied by `row_scale` when given (a LayerScale folded into the
  // weights) and `residual` added when given. Bias, residual and adapter are
  // accumulated into the GEMM's output rather than in separate passes.
  torch::Tensor Apply(const torch::Tensor& x, const torch::Tensor& row_scale = {},
                      const torch::Tensor& residual = {});
  // Adds this module's LoRA branch (if any, and not merged) into `y2d`
  // ([N, out], possibly a column slice of a wider output) for input x2d [N, in].
  void AddLoraInto(torch::Tensor y2d, const torch::Tensor& x2d, const torch::Tensor& row_scale = {});

  // Adds lora_A / lora_B (PEFT initialization). Refused when already present.
  void EnableLora(const LoraConfig& config);
  bool has_lora() const { return !lora_A.is_empty(); }
  // Folds scaling * B A into the weight (inference); Unmerge() undoes it.
  void Merge();
  void Unmerge();
  bool merged() const { return merged_; }

  torch::Tensor weight, bias;
  torch::nn::Linear lora_A{nullptr}, lora_B{nullptr};

 private:
  double scaling_ = 0;
  double dropout_ = 0;
  bool merged_ = false;
};
TORCH_MODULE(AdaptableLinear);

class PatchEmbeddingsImpl : public torch::nn::Module {
 public:
  PatchEmbeddingsImpl(const ViTConfig& c);
  // [B, 1 or 3, H, W] -> [B, N, D]
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d projection{nullptr};

 private:
  int patch_;
  torch::Tensor mean_, inv_std_;  // [3] buffers
};
TORCH_MODULE(PatchEmbeddings);

class EmbeddingsImpl : public torch::nn::Module {
 public:
  EmbeddingsImpl(const ViTConfig& c);
  // [B, C, H, W] -> [B, 1 + R + N, D]: CLS, registers, patches.
  torch::Tensor forward(const torch::Tensor& x);
  // Position embeddings for a grid of gh x gw patches: the stored grid, or
  // its bicubic interpolation (as `interpolation` says) when it differs.
  torch::Tensor PositionsFor(int64_t gh, int64_t gw);
  // Replaces the stored grid by its interpolation to grid x grid patches
  // (PositionsFor(grid, grid)): a model that always runs at one input size
  // then computes exactly what it computed before, without interpolating at
  // every step, and its position embeddings have the shape the model's
  // configuration implies (the federation ships them under full fine-tuning).
  void ResampleTo(int64_t grid);

  torch::Tensor cls_token, mask_token, position_embeddings, register_tokens;
  PatchEmbeddings patch_embeddings{nullptr};
  PositionInterpolation interpolation = PositionInterpolation::kSize;

 private:
  int patch_;
};
TORCH_MODULE(Embeddings);

// Multi-head self-attention. query, key and value are separate modules (their
// names and adapters are PEFT's) but run as one fused GEMM over the
// concatenated weights, each adapter's branch added to its slice.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(const ViTConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  AdaptableLinear query{nullptr}, key{nullptr}, value{nullptr};

 private:
  int heads_;
};
TORCH_MODULE(SelfAttention);

// The next four modules hold parameters under Hugging Face's names; ViTLayer
// runs them (LayerScale folded into the projections, residuals fused).
class AttentionOutputImpl : public torch::nn::Module {
 public:
  explicit AttentionOutputImpl(const ViTConfig& c);
  AdaptableLinear dense{nullptr};
};
TORCH_MODULE(AttentionOutput);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ViTConfig& c);
  SelfAttention attention{nullptr};
  AttentionOutput output{nullptr};
};
TORCH_MODULE(Attention);

class LayerScaleImpl : public torch::nn::Module {
 public:
  LayerScaleImpl(int64_t dim, double init);
  torch::Tensor lambda1;
};
TORCH_MODULE(LayerScale);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ViTConfig& c);
  AdaptableLinear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

// Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).
class ViTLayerImpl : public torch::nn::Module {
 public:
  explicit ViTLayerImpl(const ViTConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attention{nullptr};
  Mlp mlp{nullptr};
  LayerScale layer_scale1{nullptr}, layer_scale2{nullptr};  // null without layer scale
};
TORCH_MODULE(ViTLayer);

class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const ViTConfig& c);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(Encoder);

class ViTBackboneImpl : public torch::nn::Module {
 public:
  explicit ViTBackboneImpl(const ViTConfig& c);
  // [B, C, H, W] -> tokens [B, 1 + R + N, D], final-normed unless
  // pooled_norm() (then the caller norms what it pools).
  torch::Tensor forward(const torch::Tensor& x);
  // The final norm of an MAE checkpoint fine-tuned with global pooling
  // ("fc_norm"): applied to the mean of the patch tokens (and to the CLS
  // token) rather than to every token. Set when such a checkpoint is loaded.
  bool pooled_norm() const { return pooled_norm_; }
  void set_pooled_norm(bool on) { pooled_norm_ = on; }
  Embeddings embeddings{nullptr};
  Encoder encoder{nullptr};
  torch::nn::LayerNorm layernorm{nullptr};
  const ViTConfig& config() const { return config_; }

 private:
  ViTConfig config_;
  bool pooled_norm_ = false;
};
TORCH_MODULE(ViTBackbone);

// Backbone + multi-label linear head (logits; sigmoid gives probabilities).
class ViTClassifierImpl : public torch::nn::Module {
 public:
  explicit ViTClassifierImpl(const ModelSpec& spec);
  torch::Tensor forward(const torch::Tensor& x);
  // Pooled features fed to the classifier: [B, D] or [B, 2D].
  torch::Tensor Features(const torch::Tensor& x);
  // The dtype activations are computed in (float32 unless PlaceOnDevice chose
  // bfloat16); logits are always returned as float32.
  void set_compute_dtype(torch::Dtype dtype) { compute_dtype_ = dtype; }

  ViTBackbone dinov2{nullptr};
  torch::nn::Linear classifier{nullptr};
  const ModelSpec& spec() const { return spec_; }

  // Applies spec().method: freezes what it does not train and, for LoRA, adds
  // the adapters to the target modules. Call once, after loading a backbone.
  void ApplyMethod();
  // Every AdaptableLinear with its full name.
  std::vector<std::pair<std::string, AdaptableLinear>> Linears();

 private:
  ModelSpec spec_;
  torch::Dtype compute_dtype_ = torch::kFloat32;
};
TORCH_MODULE(ViTClassifier);

// Moves the model to `device`. With `bf16_frozen` (CUDA) activations are
// computed in bfloat16 and the parameters that are not trained are stored in
// bfloat16 (they need no float32 master copy); trainable parameters keep
// float32 master copies and are cast at use, so optimizer state and updates
// stay float32. LayerNorm, softmax and the loss accumulate in float32 inside
// their kernels.
void PlaceOnDevice(ViTClassifier& model, torch::Device device, bool bf16_frozen);

// Names (full parameter paths) of what the model's method trains, in name order.
std::vector<std::string> TrainableNames(ViTClassifier& model);

// [B, C, H, W] images resized to side x side (bilinear, align_corners =
// false), antialiased when shrinking: how the trainer brings cached images
// to the model's input size.
torch::Tensor ResizeImages(const torch::Tensor& images, int side);

// LoRA adapter parameters (".lora_A." / ".lora_B."), trained or frozen.
bool IsAdapterParameter(const std::string& name);
// Whether a parameter belongs to what a federation ships as the global model:
// everything trained, plus LoRA adapters kept frozen (FFA-LoRA's A).
bool IsGlobalParameter(const std::string& name, const torch::Tensor& value);
// Parameters that AdamW must not decay: biases, norms, LayerScale, position
// embeddings and the CLS / mask / register tokens.
bool IsNoDecayParameter(const std::string& name);

}  // namespace fedtune::model
