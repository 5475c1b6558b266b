#include "common/model/vit.h"

#include <cmath>
#include <stdexcept>

namespace fedtune::model {
namespace F = torch::nn::functional;

namespace {

// ViT initialization for weights trained from scratch (tests, the demo
// without a checkpoint): normal(0, 0.02) weights, zero biases.
constexpr double kInitStd = 0.02;

torch::Tensor Randn(std::vector<int64_t> shape) { return torch::randn(shape) * kInitStd; }

torch::nn::LayerNorm Norm(const ViTConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden}).eps(c.layer_norm_eps));
}

// Parameters are cast to the activations' dtype at use: float32 throughout on
// CPU; on CUDA the activations are bfloat16 while trainable parameters keep
// float32 master copies (gradients flow back through the cast).
torch::Tensor As(const torch::Tensor& p, const torch::Tensor& like) {
  return p.defined() ? p.to(like.scalar_type()) : p;
}

torch::Tensor ApplyNorm(const torch::nn::LayerNorm& norm, const torch::Tensor& x) {
  const auto& o = norm->options;
  return F::layer_norm(x, F::LayerNormFuncOptions(o.normalized_shape())
                              .weight(As(norm->weight, x))
                              .bias(As(norm->bias, x))
                              .eps(o.eps()));
}

}  // namespace

AdaptableLinearImpl::AdaptableLinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", Randn({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

void AdaptableLinearImpl::EnableLora(const LoraConfig& config) {
  if (has_lora()) throw std::logic_error("LoRA is already enabled on this module");
  const int64_t out = weight.size(0), in = weight.size(1);
  // torch::nn::Linear's default initialization is PEFT's lora_A one:
  // kaiming_uniform_(a = sqrt(5)). B starts at zero so the adapter is a no-op.
  lora_A = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(in, config.rank).bias(false)));
  lora_B = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(config.rank, out).bias(false)));
  torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
  torch::nn::init::zeros_(lora_B->weight);
  lora_A->to(weight.device());
  lora_B->to(weight.device());
  scaling_ = config.scaling();
  dropout_ = config.dropout;
}

void AdaptableLinearImpl::AddLoraInto(torch::Tensor y2d, const torch::Tensor& x2d, const torch::Tensor& row_scale) {
  if (!has_lora() || merged_) return;
  torch::Tensor h = dropout_ > 0 ? torch::dropout(x2d, dropout_, is_training()) : x2d;
  torch::Tensor down = torch::mm(h, As(lora_A->weight, x2d).t());   // [N, r]
  torch::Tensor up = As(lora_B->weight, x2d).t() * scaling_;        // [r, out]
  if (row_scale.defined()) up = up * As(row_scale, x2d).unsqueeze(0);
  y2d.addmm_(down, up);
}

torch::Tensor AdaptableLinearImpl::Apply(const torch::Tensor& x, const torch::Tensor& row_scale,
                                         const torch::Tensor& residual) {
  const int64_t out = weight.size(0);
  torch::Tensor w = As(weight, x), b = As(bias, x);
  if (row_scale.defined()) {
    torch::Tensor s = As(row_scale, x);
    w = w * s.unsqueeze(1);
    if (b.defined()) b = b * s;
  }
  torch::Tensor x2 = x.reshape({-1, x.size(-1)});
  torch::Tensor y;
  if (residual.defined()) {
    y = torch::addmm(residual.reshape({-1, out}), x2, w.t());
    if (b.defined()) y.add_(b);
  } else {
    y = b.defined() ? torch::addmm(b, x2, w.t()) : torch::mm(x2, w.t());
  }
  AddLoraInto(y, x2, row_scale);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out;
  return y.view(shape);
}

void AdaptableLinearImpl::Merge() {
  if (!has_lora() || merged_) return;
  torch::NoGradGuard no_grad;
  weight.add_(torch::matmul(lora_B->weight, lora_A->weight) * scaling_);
  merged_ = true;
}

void AdaptableLinearImpl::Unmerge() {
  if (!has_lora() || !merged_) return;
  torch::NoGradGuard no_grad;
  weight.sub_(torch::matmul(lora_B->weight, lora_A->weight) * scaling_);
  merged_ = false;
}

PatchEmbeddingsImpl::PatchEmbeddingsImpl(const ViTConfig& c) : patch_(c.patch_size) {
  projection = register_module(
      "projection", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, c.hidden, /*kernel_size=*/c.patch_size)
                                          .stride(c.patch_size)));
  mean_ = register_buffer("pixel_mean", torch::tensor({c.mean[0], c.mean[1], c.mean[2]}));
  inv_std_ = register_buffer("pixel_inv_std", 1.0 / torch::tensor({c.std[0], c.std[1], c.std[2]}));
}

torch::Tensor PatchEmbeddingsImpl::forward(const torch::Tensor& x) {
  // The folding is computed in float32, then cast to the activations' dtype.
  const torch::Tensor w = projection->weight.to(torch::kFloat32);  // [D, 3, p, p]
  const torch::Tensor b = projection->bias.to(torch::kFloat32);    // [D]
  torch::Tensor y;
  if (x.size(1) == 1) {
    auto inv = inv_std_.view({1, 3, 1, 1});
    torch::Tensor w1 = (w * inv).sum(1, /*keepdim=*/true);  // [D, 1, p, p]
    torch::Tensor shift = (w * (mean_.view({1, 3, 1, 1}) * inv)).sum({1, 2, 3});
    y = torch::conv2d(x, As(w1, x), As(b - shift, x), /*stride=*/patch_);
  } else if (x.size(1) == 3) {
    torch::Tensor xn = ((x.to(torch::kFloat32) - mean_.view({1, 3, 1, 1})) * inv_std_.view({1, 3, 1, 1})).to(x.scalar_type());
    y = torch::conv2d(xn, As(w, x), As(b, x), /*stride=*/patch_);
  } else {
    throw std::invalid_argument("input must have 1 or 3 channels, got " + std::to_string(x.size(1)));
  }
  return y.flatten(2).transpose(1, 2);  // [B, N, D]
}

EmbeddingsImpl::EmbeddingsImpl(const ViTConfig& c) : patch_(c.patch_size) {
  cls_token = register_parameter("cls_token", Randn({1, 1, c.hidden}));
  mask_token = register_parameter("mask_token", torch::zeros({1, c.hidden}));
  position_embeddings = register_parameter("position_embeddings", Randn({1, 1 + c.num_patches(), c.hidden}));
  if (c.register_tokens > 0) {
    register_tokens = register_parameter("register_tokens", Randn({1, c.register_tokens, c.hidden}));
  }
  patch_embeddings = register_module("patch_embeddings", PatchEmbeddings(c));
}

torch::Tensor EmbeddingsImpl::PositionsFor(int64_t gh, int64_t gw) {
  const int64_t n = position_embeddings.size(1) - 1;
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  if (side == gh && side == gw) return position_embeddings;
  const int64_t dim = position_embeddings.size(2);
  torch::Tensor cls_pos = position_embeddings.slice(1, 0, 1);
  torch::Tensor grid = position_embeddings.slice(1, 1).reshape({1, side, side, dim}).permute({0, 3, 1, 2});
  auto options = F::InterpolateFuncOptions().mode(torch::kBicubic).align_corners(false);
  switch (interpolation) {
    case PositionInterpolation::kSize:
      options.size(std::vector<int64_t>{gh, gw});
      break;
    case PositionInterpolation::kSizeAntialias:
      options.size(std::vector<int64_t>{gh, gw}).antialias(true);
      break;
    case PositionInterpolation::kScaleOffset:
      // Meta's historical offset: the output size is floor(side * scale) =
      // gh, but the sampling positions follow the offset scale.
      options
          .scale_factor(std::vector<double>{(static_cast<double>(gh) + 0.1) / static_cast<double>(side),
                                            (static_cast<double>(gw) + 0.1) / static_cast<double>(side)})
          .recompute_scale_factor(false);
      break;
  }
  torch::Tensor resized = F::interpolate(grid.to(torch::kFloat32), options).to(position_embeddings.dtype());
  resized = resized.permute({0, 2, 3, 1}).reshape({1, gh * gw, dim});
  return torch::cat({cls_pos, resized}, 1);
}

void EmbeddingsImpl::ResampleTo(int64_t grid) {
  torch::NoGradGuard no_grad;
  torch::Tensor resized = PositionsFor(grid, grid).detach().clone();
  if (resized.sizes() != position_embeddings.sizes()) position_embeddings.set_data(resized);
}

torch::Tensor EmbeddingsImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0);
  const int64_t gh = x.size(2) / patch_, gw = x.size(3) / patch_;
  torch::Tensor patches = patch_embeddings(x);
  torch::Tensor tokens = torch::cat({cls_token.expand({batch, -1, -1}).to(patches.dtype()), patches}, 1);
  tokens = tokens + PositionsFor(gh, gw).to(tokens.dtype());
  if (register_tokens.defined()) {
    // Registers go after CLS and carry no position (DINOv2 with registers).
    tokens = torch::cat({tokens.slice(1, 0, 1), register_tokens.expand({batch, -1, -1}).to(tokens.dtype()),
                         tokens.slice(1, 1)},
                        1);
  }
  return tokens;
}

SelfAttentionImpl::SelfAttentionImpl(const ViTConfig& c) : heads_(c.heads) {
  query = register_module("query", AdaptableLinear(c.hidden, c.hidden, c.qkv_bias));
  key = register_module("key", AdaptableLinear(c.hidden, c.hidden, c.qkv_bias));
  value = register_module("value", AdaptableLinear(c.hidden, c.hidden, c.qkv_bias));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2), hd = d / heads_;
  torch::Tensor w = torch::cat({As(query->weight, x), As(key->weight, x), As(value->weight, x)}, 0);
  torch::Tensor bias;
  if (query->bias.defined()) bias = torch::cat({As(query->bias, x), As(key->bias, x), As(value->bias, x)}, 0);
  torch::Tensor x2 = x.reshape({b * t, d});
  torch::Tensor fused = bias.defined() ? torch::addmm(bias, x2, w.t()) : torch::mm(x2, w.t());  // [BT, 3D]
  AdaptableLinear parts[3] = {query, key, value};
  for (int64_t i = 0; i < 3; ++i) parts[i]->AddLoraInto(fused.narrow(1, i * d, d), x2);
  // [BT, 3D] -> 3 x [B, H, T, hd]
  std::vector<torch::Tensor> qkv = fused.view({b, t, 3, heads_, hd}).permute({2, 0, 3, 1, 4}).unbind(0);
  const torch::Tensor &q = qkv[0], &k = qkv[1], &v = qkv[2];
#if TORCH_VERSION_MAJOR >= 2
  torch::Tensor o = at::scaled_dot_product_attention(q, k, v);
#else
  // Scaling q (T x hd) rather than the scores (T x T) is the cheaper pass.
  torch::Tensor attn = torch::softmax(torch::matmul(q * (1.0 / std::sqrt(static_cast<double>(hd))), k.transpose(-2, -1)), -1);
  torch::Tensor o = torch::matmul(attn, v);
#endif
  return o.transpose(1, 2).reshape({b, t, d});
}

AttentionOutputImpl::AttentionOutputImpl(const ViTConfig& c) {
  dense = register_module("dense", AdaptableLinear(c.hidden, c.hidden, true));
}

AttentionImpl::AttentionImpl(const ViTConfig& c) {
  attention = register_module("attention", SelfAttention(c));
  output = register_module("output", AttentionOutput(c));
}

LayerScaleImpl::LayerScaleImpl(int64_t dim, double init) {
  lambda1 = register_parameter("lambda1", torch::full({dim}, init));
}

MlpImpl::MlpImpl(const ViTConfig& c) {
  fc1 = register_module("fc1", AdaptableLinear(c.hidden, c.mlp_dim, true));
  fc2 = register_module("fc2", AdaptableLinear(c.mlp_dim, c.hidden, true));
}

ViTLayerImpl::ViTLayerImpl(const ViTConfig& c) {
  norm1 = register_module("norm1", Norm(c));
  attention = register_module("attention", Attention(c));
  if (c.layer_scale) layer_scale1 = register_module("layer_scale1", LayerScale(c.hidden, c.layer_scale_init));
  norm2 = register_module("norm2", Norm(c));
  mlp = register_module("mlp", Mlp(c));
  if (c.layer_scale) layer_scale2 = register_module("layer_scale2", LayerScale(c.hidden, c.layer_scale_init));
}

torch::Tensor ViTLayerImpl::forward(const torch::Tensor& x) {
  // x + ls1 * dense(attn(norm1(x))), then h + ls2 * fc2(gelu(fc1(norm2(h)))),
  // with each LayerScale folded into its projection and each residual added
  // inside the projection's GEMM.
  torch::Tensor ls1 = layer_scale1.is_empty() ? torch::Tensor() : layer_scale1->lambda1;
  torch::Tensor ls2 = layer_scale2.is_empty() ? torch::Tensor() : layer_scale2->lambda1;
  torch::Tensor o = attention->attention(ApplyNorm(norm1, x));
  torch::Tensor h = attention->output->dense->Apply(o, ls1, x);
  torch::Tensor f = torch::gelu(mlp->fc1(ApplyNorm(norm2, h)));
  return mlp->fc2->Apply(f, ls2, h);
}

EncoderImpl::EncoderImpl(const ViTConfig& c) {
  layer = register_module("layer", torch::nn::ModuleList());
  for (int i = 0; i < c.layers; ++i) layer->push_back(ViTLayer(c));
}

torch::Tensor EncoderImpl::forward(torch::Tensor x) {
  for (const auto& l : *layer) x = l->as<ViTLayer>()->forward(x);
  return x;
}

ViTBackboneImpl::ViTBackboneImpl(const ViTConfig& c) : config_(c) {
  embeddings = register_module("embeddings", Embeddings(c));
  encoder = register_module("encoder", Encoder(c));
  layernorm = register_module("layernorm", Norm(c));
}

torch::Tensor ViTBackboneImpl::forward(const torch::Tensor& x) {
  torch::Tensor tokens = encoder(embeddings(x));
  return pooled_norm_ ? tokens : ApplyNorm(layernorm, tokens);
}

ViTClassifierImpl::ViTClassifierImpl(const ModelSpec& spec) : spec_(spec) {
  dinov2 = register_module("dinov2", ViTBackbone(spec.vit));
  const int64_t features = spec.pooling == Pooling::kClsMean ? 2 * spec.vit.hidden : spec.vit.hidden;
  classifier = register_module(
      "classifier", torch::nn::Linear(features, static_cast<int64_t>(spec.findings.size())));
  torch::NoGradGuard no_grad;
  classifier->weight.normal_(0, kInitStd);
  classifier->bias.zero_();
}

torch::Tensor ViTClassifierImpl::Features(const torch::Tensor& x) {
  torch::Tensor tokens = dinov2(x);
  const bool pooled_norm = dinov2->pooled_norm();
  torch::Tensor cls = tokens.select(1, 0);
  if (pooled_norm) cls = ApplyNorm(dinov2->layernorm, cls);
  if (spec_.pooling == Pooling::kCls) return cls;
  torch::Tensor mean = tokens.slice(1, 1 + spec_.vit.register_tokens).mean(1);
  if (pooled_norm) mean = ApplyNorm(dinov2->layernorm, mean);
  return torch::cat({cls, mean}, 1);
}

torch::Tensor ViTClassifierImpl::forward(const torch::Tensor& x) {
  // The head runs in float32 whatever the activations' dtype: it is small,
  // and its logits are what the loss and the thresholds see.
  torch::Tensor f = Features(x.to(compute_dtype_)).to(torch::kFloat32);
  return F::linear(f, As(classifier->weight, f), As(classifier->bias, f));
}

std::vector<std::pair<std::string, AdaptableLinear>> ViTClassifierImpl::Linears() {
  std::vector<std::pair<std::string, AdaptableLinear>> out;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto lin = std::dynamic_pointer_cast<AdaptableLinearImpl>(item.value())) {
      out.emplace_back(item.key(), AdaptableLinear(lin));
    }
  }
  return out;
}

void ViTClassifierImpl::ApplyMethod() {
  for (auto& p : parameters()) p.set_requires_grad(false);
  auto train_all = [](torch::nn::Module& m) {
    for (auto& p : m.parameters()) p.set_requires_grad(true);
  };
  switch (spec_.method) {
    case FineTuneMethod::kFull:
      train_all(*this);
      break;
    case FineTuneMethod::kLinearProbe:
      break;
    case FineTuneMethod::kBitFit:
      for (auto& p : dinov2->named_parameters()) {
        const std::string& name = p.key();
        if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) p.value().set_requires_grad(true);
      }
      break;
    case FineTuneMethod::kLora:
      for (auto& [name, lin] : Linears()) {
        const std::string leaf = name.substr(name.rfind('.') + 1);
        for (const std::string& t : spec_.lora.targets) {
          if (leaf != t) continue;
          lin->EnableLora(spec_.lora);  // new parameters are trainable
          if (spec_.lora.freeze_a) lin->lora_A->weight.set_requires_grad(false);
        }
      }
      break;
  }
  train_all(*classifier);
}

void PlaceOnDevice(ViTClassifier& model, torch::Device device, bool bf16_frozen) {
  model->to(device);
  if (!bf16_frozen) return;
  model->set_compute_dtype(torch::kBFloat16);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) {
    if (!p.requires_grad() && p.is_floating_point()) p.set_data(p.to(torch::kBFloat16));
  }
}

torch::Tensor ResizeImages(const torch::Tensor& images, int side) {
  const int64_t h = images.size(2), w = images.size(3);
  if (h == side && w == side) return images;
  return F::interpolate(images, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{side, side})
                                    .mode(torch::kBilinear)
                                    .align_corners(false)
                                    .antialias(h > side || w > side));
}

bool IsAdapterParameter(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
}

bool IsGlobalParameter(const std::string& name, const torch::Tensor& value) {
  return value.requires_grad() || IsAdapterParameter(name);
}

bool IsNoDecayParameter(const std::string& name) {
  auto ends = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  auto has = [&](std::string_view part) { return name.find(part) != std::string::npos; };
  return ends(".bias") || has("norm") || has("layer_scale") || ends("position_embeddings") || ends("cls_token") ||
         ends("mask_token") || ends("register_tokens");
}

std::vector<std::string> TrainableNames(ViTClassifier& model) {
  std::vector<std::string> out;
  for (const auto& p : model->named_parameters()) {
    if (p.value().requires_grad()) out.push_back(p.key());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace fedtune::model
