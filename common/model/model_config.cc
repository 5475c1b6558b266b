#include "common/model/model_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/status.h"

namespace fedtune::model {
namespace {

ViTConfig Base(int patch, int image) {
  ViTConfig c;
  c.hidden = 768;
  c.layers = 12;
  c.heads = 12;
  c.mlp_dim = 3072;
  c.patch_size = patch;
  c.image_size = image;
  return c;
}

}  // namespace

absl::StatusOr<ViTConfig> ViTPreset(std::string_view name) {
  ViTConfig c;
  if (name == "vit-tiny/16") return c;
  if (name == "vit-small/16") {
    c.hidden = 384;
    c.heads = 6;
    c.mlp_dim = 1536;
    return c;
  }
  if (name == "mae-base/16") return Base(16, 224);
  if (name == "dinov2-base/14" || name == "rad-dino" || name == "dinov2-base/14-reg") {
    c = Base(14, 518);
    c.layer_scale = true;
    if (name == "rad-dino") {
      c.mean = {0.5307f, 0.5307f, 0.5307f};
      c.std = {0.2583f, 0.2583f, 0.2583f};
    }
    if (name == "dinov2-base/14-reg") c.register_tokens = 4;
    return c;
  }
  if (name == "dinov2-small/14" || name == "dinov2-small/14-reg") {
    c.hidden = 384;
    c.heads = 6;
    c.mlp_dim = 1536;
    c.patch_size = 14;
    c.image_size = 518;
    c.layer_scale = true;
    if (name == "dinov2-small/14-reg") c.register_tokens = 4;
    return c;
  }
  std::vector<std::string> names = ViTPresetNames();
  return absl::NotFoundError(absl::StrCat("unknown backbone preset \"", Sv(name),
                                          "\" (known: ", absl::StrJoin(names, ", "), ")"));
}

std::vector<std::string> ViTPresetNames() {
  return {"vit-tiny/16",    "vit-small/16",        "mae-base/16",       "rad-dino",
          "dinov2-small/14", "dinov2-small/14-reg", "dinov2-base/14", "dinov2-base/14-reg"};
}

absl::Status Validate(const ViTConfig& c) {
  auto bad = [](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("backbone: ", Sv(what)));
  };
  if (c.patch_size <= 0 || c.image_size <= 0 || c.image_size % c.patch_size != 0) {
    return bad(absl::StrCat("image_size ", c.image_size, " must be a positive multiple of patch_size ",
                            c.patch_size));
  }
  if (c.hidden <= 0 || c.heads <= 0 || c.hidden % c.heads != 0) {
    return bad(absl::StrCat("hidden ", c.hidden, " must be a positive multiple of heads ", c.heads));
  }
  if (c.layers <= 0 || c.mlp_dim <= 0) return bad("layers and mlp_dim must be positive");
  if (c.register_tokens < 0) return bad("register_tokens must be >= 0");
  for (float s : c.std) {
    if (!(s > 0)) return bad("normalization std must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<FineTuneMethod> ParseFineTuneMethod(std::string_view name) {
  for (FineTuneMethod m : {FineTuneMethod::kLora, FineTuneMethod::kBitFit, FineTuneMethod::kLinearProbe,
                           FineTuneMethod::kFull}) {
    if (FineTuneMethodName(m) == name) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown fine-tuning method \"", Sv(name),
                                                 "\" (use lora, bitfit, linear_probe or full)"));
}

std::string_view FineTuneMethodName(FineTuneMethod m) {
  switch (m) {
    case FineTuneMethod::kLora: return "lora";
    case FineTuneMethod::kBitFit: return "bitfit";
    case FineTuneMethod::kLinearProbe: return "linear_probe";
    case FineTuneMethod::kFull: return "full";
  }
  return "lora";
}

double LoraConfig::scaling() const {
  return rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / rank;
}

absl::StatusOr<Pooling> ParsePooling(std::string_view name) {
  if (name == "cls") return Pooling::kCls;
  if (name == "cls_mean") return Pooling::kClsMean;
  return absl::InvalidArgumentError(absl::StrCat("unknown pooling \"", Sv(name), "\" (use cls or cls_mean)"));
}

std::string_view PoolingName(Pooling p) { return p == Pooling::kCls ? "cls" : "cls_mean"; }

absl::Status Validate(const ModelSpec& s) {
  RETURN_IF_ERROR(Validate(s.vit));
  if (s.findings.empty()) return absl::InvalidArgumentError("model: at least one finding is needed");
  if (s.method == FineTuneMethod::kLora) {
    if (s.lora.rank <= 0) return absl::InvalidArgumentError("lora: rank must be positive");
    if (s.lora.dropout < 0 || s.lora.dropout >= 1) {
      return absl::InvalidArgumentError("lora: dropout must be in [0, 1)");
    }
    if (s.lora.targets.empty()) return absl::InvalidArgumentError("lora: no target modules");
    for (const std::string& t : s.lora.targets) {
      if (t != "query" && t != "key" && t != "value" && t != "dense" && t != "fc1" && t != "fc2") {
        return absl::InvalidArgumentError(absl::StrCat(
            "lora: unknown target \"", t, "\" (use query, key, value, dense, fc1, fc2)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace fedtune::model
