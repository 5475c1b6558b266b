#include "common/model/checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/status.h"
#include "common/model/tensor_convert.h"

namespace fedtune::model {
namespace {

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// One backbone parameter in a file: either a tensor of its own, or one third
// (part 0, 1, 2 = q, k, v) of a fused qkv tensor.
struct FileSlot {
  std::string name;
  int part = -1;
};

// The file name of a backbone parameter (backbone-relative name) in a fused
// layout; empty when the layout does not have it.
FileSlot FusedName(const std::string& p, CheckpointLayout layout, bool fc_norm) {
  static const std::regex kLayer(R"(encoder\.layer\.(\d+)\.(.*))");
  std::smatch m;
  if (p == "embeddings.cls_token") return {"cls_token"};
  if (p == "embeddings.mask_token") return {layout == CheckpointLayout::kDinov2 ? "mask_token" : ""};
  if (p == "embeddings.position_embeddings") return {"pos_embed"};
  if (p == "embeddings.register_tokens") return {"register_tokens"};
  if (StartsWith(p, "embeddings.patch_embeddings.projection.")) return {"patch_embed.proj." + p.substr(39)};
  if (StartsWith(p, "layernorm.")) return {(fc_norm ? "fc_norm." : "norm.") + p.substr(10)};
  if (std::regex_match(p, m, kLayer)) {
    const std::string block = "blocks." + m[1].str() + ".";
    const std::string rest = m[2].str();
    static const std::pair<const char*, int> kQkv[] = {{"query", 0}, {"key", 1}, {"value", 2}};
    for (const auto& [leaf, part] : kQkv) {
      const std::string prefix = std::string("attention.attention.") + leaf + ".";
      if (StartsWith(rest, prefix)) return {block + "attn.qkv." + rest.substr(prefix.size()), part};
    }
    if (StartsWith(rest, "attention.output.dense.")) return {block + "attn.proj." + rest.substr(23)};
    if (rest == "layer_scale1.lambda1") return {block + "ls1.gamma"};
    if (rest == "layer_scale2.lambda1") return {block + "ls2.gamma"};
    return {block + rest};  // norm1.*, norm2.*, mlp.fc1.*, mlp.fc2.*
  }
  return {""};
}

FileSlot FileName(const std::string& param, const BackboneSource& src, bool fc_norm) {
  if (src.layout == CheckpointLayout::kHuggingFace) return {src.prefix + param};
  FileSlot s = FusedName(param, src.layout, fc_norm);
  if (!s.name.empty()) s.name = src.prefix + s.name;
  return s;
}

// Tensors a backbone file may carry that are not part of the backbone: heads,
// and an MAE pretraining checkpoint's decoder (whose mask token sits at the
// top level, next to the encoder's tensors).
bool IsIgnorable(const std::string& name, CheckpointLayout layout) {
  return StartsWith(name, "classifier.") || StartsWith(name, "head.") || StartsWith(name, "decoder") ||
         StartsWith(name, "pooler.") || (layout == CheckpointLayout::kTimm && name == "mask_token");
}

// The mask token only serves masked-image pretraining; fedtune never uses it,
// and timm's DINOv2 files (and some exports) leave it out.
bool IsOptional(const std::string& backbone_param) { return backbone_param == "embeddings.mask_token"; }

absl::StatusOr<BackboneSource> DetectLayout(const SafetensorsFile& file) {
  std::set<std::string> names;
  for (const auto& e : file.entries()) names.insert(e.name);
  BackboneSource src;
  src.metadata = file.metadata();
  if (names.count("dinov2.embeddings.cls_token")) {
    src.prefix = "dinov2.";
    return src;
  }
  if (names.count("embeddings.cls_token")) return src;
  std::string prefix;
  if (names.count("model.cls_token")) prefix = "model.";
  if (names.count(prefix + "cls_token") && names.count(prefix + "blocks.0.attn.qkv.weight")) {
    src.prefix = prefix;
    // DINOv2 has layer scale, and a [1, D] mask token; an MAE pretraining
    // file also has a "mask_token", the decoder's ([1, 1, decoder dim]).
    const TensorEntry* mask = file.Find(prefix + "mask_token");
    const bool dinov2_mask = mask != nullptr && mask->shape.size() == 2;
    src.layout = names.count(prefix + "blocks.0.ls1.gamma") || dinov2_mask ? CheckpointLayout::kDinov2
                                                                              : CheckpointLayout::kTimm;
    return src;
  }
  return absl::InvalidArgumentError(
      "backbone checkpoint layout not recognized: expected Hugging Face Dinov2 names "
      "(embeddings.cls_token), original DINOv2 or timm/MAE names (cls_token, blocks.0.attn.qkv.weight)");
}

std::string ListSome(const std::vector<std::string>& names) {
  constexpr size_t kMax = 12;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kMax));
  std::string out = absl::StrJoin(shown, ", ");
  if (names.size() > kMax) absl::StrAppend(&out, " and ", names.size() - kMax, " more");
  return out;
}

// INVALID_ARGUMENT "<what>: missing N [...]; unexpected N [...]; shape
// mismatch N [...];" naming what does not fit, or OK when everything does.
absl::Status FitStatus(const std::string& what, const std::vector<std::string>& missing,
                       const std::vector<std::string>& unexpected, const std::vector<std::string>& mismatched) {
  if (missing.empty() && unexpected.empty() && mismatched.empty()) return absl::OkStatus();
  std::string msg = what + ":";
  if (!missing.empty()) absl::StrAppend(&msg, " missing ", missing.size(), " [", ListSome(missing), "];");
  if (!unexpected.empty()) absl::StrAppend(&msg, " unexpected ", unexpected.size(), " [", ListSome(unexpected), "];");
  if (!mismatched.empty()) {
    absl::StrAppend(&msg, " shape mismatch ", mismatched.size(), " [", ListSome(mismatched), "];");
  }
  return absl::InvalidArgumentError(msg);
}

}  // namespace

std::string_view CheckpointLayoutName(CheckpointLayout layout) {
  switch (layout) {
    case CheckpointLayout::kHuggingFace: return "huggingface";
    case CheckpointLayout::kDinov2: return "dinov2";
    case CheckpointLayout::kTimm: return "timm";
  }
  return "huggingface";
}

absl::StatusOr<BackboneSource> LoadBackbone(ViTBackbone& backbone, const SafetensorsFile& file) {
  ASSIGN_OR_RETURN(BackboneSource src, DetectLayout(file));
  const bool fc_norm = file.Find(src.prefix + "fc_norm.weight") != nullptr &&
                       file.Find(src.prefix + "norm.weight") == nullptr;
  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> assignments;  // (parameter, value)
  std::map<std::string, torch::Tensor> fused_cache;

  for (auto& item : backbone->named_parameters()) {
    const std::string& param = item.key();
    if (IsAdapterParameter(param)) continue;
    torch::Tensor target = item.value();
    const FileSlot slot = FileName(param, src, fc_norm);
    if (slot.name.empty()) continue;  // not in this layout (mask token of timm): keep initial value
    const TensorEntry* e = file.Find(slot.name);
    if (e == nullptr) {
      if (!IsOptional(param)) missing.push_back(slot.name);
      continue;
    }
    used.insert(slot.name);
    src.dtypes[slot.name] = e->dtype;
    torch::Tensor value;
    if (auto it = fused_cache.find(slot.name); it != fused_cache.end()) {
      value = it->second;
    } else {
      auto bytes = file.Bytes(*e);
      Tensor t{e->dtype, e->shape, std::vector<std::byte>(bytes.begin(), bytes.end())};
      ASSIGN_OR_RETURN(value, ToTorch(t));
      value = value.to(torch::kFloat32);
      if (slot.part >= 0) fused_cache[slot.name] = value;
    }
    if (slot.part >= 0) {
      if (value.size(0) % 3 != 0) {
        mismatched.push_back(absl::StrCat(slot.name, " ", ShapeString(e->shape), " is not a fused q/k/v tensor"));
        continue;
      }
      value = value.chunk(3, 0)[static_cast<size_t>(slot.part)];
    }
    const bool positions = param == "embeddings.position_embeddings";
    const bool ok = positions ? value.dim() == 3 && value.size(0) == 1 && value.size(2) == target.size(2)
                              : value.sizes() == target.sizes();
    if (!ok) {
      mismatched.push_back(absl::StrCat(slot.name, ": checkpoint ", ShapeString(value.sizes().vec()),
                                        ", model ", ShapeString(target.sizes().vec())));
      continue;
    }
    if (positions) {
      const int64_t n = value.size(1) - 1;
      const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
      if (side * side != n) {
        mismatched.push_back(absl::StrCat(slot.name, ": ", n, " patch positions do not form a square grid"));
        continue;
      }
    }
    assignments.emplace_back(target, value);
  }
  std::vector<std::string> unexpected;
  for (const auto& e : file.entries()) {
    if (used.count(e.name)) continue;
    const std::string local = e.name.substr(StartsWith(e.name, src.prefix) ? src.prefix.size() : 0);
    if (IsIgnorable(local, src.layout)) {
      src.ignored.push_back(e.name);
    } else {
      unexpected.push_back(e.name);
    }
  }
  RETURN_IF_ERROR(FitStatus(absl::StrCat("backbone checkpoint (", Sv(CheckpointLayoutName(src.layout)),
                                         " layout) does not fit the configured model"),
                            missing, unexpected, mismatched));
  torch::NoGradGuard no_grad;
  for (auto& [param, value] : assignments) {
    if (param.sizes() == value.sizes()) {
      param.copy_(value);
    } else {
      param.set_data(value.clone());  // a different position grid
    }
  }
  // Resize position embeddings the way the code this checkpoint comes from
  // does, and norm as it norms (MAE's fc_norm: after pooling).
  if (backbone->config().register_tokens > 0) {
    backbone->embeddings->interpolation = PositionInterpolation::kSizeAntialias;
  } else if (src.layout == CheckpointLayout::kDinov2) {
    backbone->embeddings->interpolation = PositionInterpolation::kScaleOffset;
  } else {
    backbone->embeddings->interpolation = PositionInterpolation::kSize;
  }
  backbone->set_pooled_norm(fc_norm);
  return src;
}

absl::StatusOr<BackboneSource> LoadBackboneFile(ViTBackbone& backbone, const std::string& path) {
  ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  auto src = LoadBackbone(backbone, file);
  if (!src.ok()) return Annotate(src.status(), path);
  ASSIGN_OR_RETURN(src->sha256, Sha256FileHex(path));
  return src;
}

absl::StatusOr<TensorMap> BackboneTensors(ViTBackbone& backbone, const BackboneSource& source) {
  const bool fc_norm = source.dtypes.count(source.prefix + "fc_norm.weight") > 0;
  std::map<std::string, std::vector<torch::Tensor>> parts;  // fused name -> q, k, v
  TensorMap out;
  auto put = [&](const std::string& name, const torch::Tensor& value) -> absl::Status {
    auto it = source.dtypes.find(name);
    const DType dtype = it == source.dtypes.end() ? source.default_dtype : it->second;
    ASSIGN_OR_RETURN(Tensor t, FromTorch(value.to(ToTorchDtype(dtype))));
    out[name] = std::move(t);
    return absl::OkStatus();
  };
  for (const auto& item : backbone->named_parameters()) {
    if (IsAdapterParameter(item.key())) continue;
    const FileSlot slot = FileName(item.key(), source, fc_norm);
    if (slot.name.empty()) continue;  // not in this layout
    // An optional tensor the source file did not have is not written back.
    if (IsOptional(item.key()) && !source.dtypes.empty() && !source.dtypes.count(slot.name)) continue;
    if (slot.part >= 0) {
      auto& v = parts[slot.name];
      v.resize(3);
      v[static_cast<size_t>(slot.part)] = item.value().detach();
      continue;
    }
    RETURN_IF_ERROR(put(slot.name, item.value().detach()));
  }
  for (const auto& [name, qkv] : parts) RETURN_IF_ERROR(put(name, torch::cat(qkv, 0)));
  return out;
}

std::string PeftName(const std::string& parameter_name) { return "base_model.model." + parameter_name; }

BaseWeights CaptureBase(ViTClassifier& model) {
  BaseWeights out;
  torch::NoGradGuard no_grad;
  for (const auto& p : model->named_parameters()) {
    if (!p.value().requires_grad() || IsAdapterParameter(p.key()) || !StartsWith(p.key(), "dinov2.")) continue;
    out[p.key()] = p.value().detach().to(torch::kCPU, torch::kFloat32).clone();
  }
  return out;
}

absl::StatusOr<TensorMap> ExportGlobalState(ViTClassifier& model, const BaseWeights& base, bool trained_only) {
  TensorMap out;
  torch::NoGradGuard no_grad;
  for (const auto& p : model->named_parameters()) {
    if (trained_only ? !p.value().requires_grad() : !IsGlobalParameter(p.key(), p.value())) continue;
    torch::Tensor v = p.value().detach().to(torch::kCPU, torch::kFloat32);
    if (auto it = base.find(p.key()); it != base.end()) v = v - it->second;
    ASSIGN_OR_RETURN(Tensor t, FromTorch(v.contiguous()));
    out[PeftName(p.key())] = std::move(t);
  }
  return out;
}

namespace {

// Sets the parameters `select` picks from `state` (plus their `base` value,
// where there is one); `what` names the state in the error. Nothing changes
// unless every tensor fits.
template <typename Select>
absl::Status ImportSelected(ViTClassifier& model, const TensorMap& state, const BaseWeights& base, Select select,
                            const std::string& what) {
  std::vector<std::string> missing, mismatched;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> assignments;
  std::set<std::string> used;
  for (const auto& p : model->named_parameters()) {
    if (!select(p.key(), p.value())) continue;
    const std::string name = PeftName(p.key());
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
      continue;
    }
    used.insert(name);
    if (it->second.shape != p.value().sizes().vec()) {
      mismatched.push_back(absl::StrCat(name, ": got ", ShapeString(it->second.shape), ", model ",
                                        ShapeString(p.value().sizes().vec())));
      continue;
    }
    ASSIGN_OR_RETURN(torch::Tensor v, ToTorch(it->second));
    v = v.to(torch::kFloat32);
    if (auto b = base.find(p.key()); b != base.end()) v = v + b->second;
    assignments.emplace_back(p.value(), v);
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : state) {
    if (!used.count(name)) unexpected.push_back(name);
  }
  RETURN_IF_ERROR(FitStatus(what + " does not fit the model", missing, unexpected, mismatched));
  torch::NoGradGuard no_grad;
  for (auto& [param, value] : assignments) param.copy_(value.to(param.dtype()).to(param.device()));
  return absl::OkStatus();
}

}  // namespace

absl::Status ImportGlobalState(ViTClassifier& model, const BaseWeights& base, const TensorMap& state) {
  return ImportSelected(model, state, base, IsGlobalParameter, "global state");
}

absl::StatusOr<TensorMap> ExportTrainable(ViTClassifier& model) { return ExportGlobalState(model, {}, true); }

absl::Status ImportTrainable(ViTClassifier& model, const TensorMap& state) {
  return ImportSelected(
      model, state, {}, [](const std::string&, const torch::Tensor& v) { return v.requires_grad(); },
      "trainable state");
}

std::string AdapterConfigJson(const ModelSpec& spec) {
  nlohmann::json j;
  j["peft_type"] = "LORA";
  j["task_type"] = nullptr;
  j["base_model_name_or_path"] = nullptr;
  j["inference_mode"] = true;
  j["r"] = spec.lora.rank;
  j["lora_alpha"] = spec.lora.alpha;
  j["lora_dropout"] = spec.lora.dropout;
  j["use_rslora"] = spec.lora.rslora;
  j["target_modules"] = spec.method == FineTuneMethod::kLora ? spec.lora.targets : std::vector<std::string>{};
  j["modules_to_save"] = {"classifier"};
  j["bias"] = spec.method == FineTuneMethod::kBitFit ? "all" : "none";
  j["fan_in_fan_out"] = false;
  j["init_lora_weights"] = true;
  return j.dump(2);
}

absl::Status SaveAdapter(ViTClassifier& model, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  ASSIGN_OR_RETURN(TensorMap state, ExportTrainable(model));
  RETURN_IF_ERROR(WriteSafetensors(dir + "/adapter_model.safetensors", state, {{"format", "pt"}}));
  return WriteFileAtomically(dir + "/adapter_config.json", AdapterConfigJson(model->spec()) + "\n");
}

}  // namespace fedtune::model
