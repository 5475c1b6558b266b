#include "common/model/hf_export.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/model/tensor_convert.h"

namespace fedtune::model {

absl::Status SaveHuggingFaceClassifier(ViTClassifier& model, const std::string& dir) {
  const ModelSpec& spec = model->spec();
  const ViTConfig& c = spec.vit;
  if (model->dinov2->pooled_norm()) {
    return absl::FailedPreconditionError(
        "this model norms its pooled features (an MAE checkpoint with fc_norm), which Dinov2ForImageClassification "
        "cannot express: it norms every token before pooling");
  }
  for (auto& [name, lin] : model->Linears()) {
    if (lin->has_lora() && !lin->merged()) {
      return absl::FailedPreconditionError(
          absl::StrCat("module ", name, " carries an unmerged LoRA adapter: export LoRA as a PEFT adapter"));
    }
  }
  const bool registers = c.register_tokens > 0;
  // transformers names the backbone attribute after the model type.
  const std::string prefix = registers ? "dinov2_with_registers." : "dinov2.";
  TensorMap out;
  torch::NoGradGuard no_grad;
  for (const auto& p : model->named_parameters()) {
    std::string name = p.key();
    if (name.rfind("dinov2.", 0) == 0) name = prefix + name.substr(7);
    torch::Tensor v = p.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
    if (p.key() == "classifier.weight" && spec.pooling == Pooling::kCls) {
      // [findings, D] -> [findings, 2D]: the mean-of-patches half weighs 0.
      v = torch::cat({v, torch::zeros_like(v)}, 1);
    }
    ASSIGN_OR_RETURN(Tensor t, FromTorch(v));
    out[name] = std::move(t);
  }
  if (!c.layer_scale) {
    for (int i = 0; i < c.layers; ++i) {
      for (const char* s : {"layer_scale1", "layer_scale2"}) {
        ASSIGN_OR_RETURN(Tensor ones, FromTorch(torch::ones({c.hidden})));
        out[absl::StrCat(prefix, "encoder.layer.", i, ".", s, ".lambda1")] = std::move(ones);
      }
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  RETURN_IF_ERROR(WriteSafetensors(dir + "/model.safetensors", out, {{"format", "pt"}}));

  nlohmann::json cfg;
  cfg["architectures"] = {registers ? "Dinov2WithRegistersForImageClassification" : "Dinov2ForImageClassification"};
  cfg["model_type"] = registers ? "dinov2_with_registers" : "dinov2";
  cfg["hidden_size"] = c.hidden;
  cfg["num_hidden_layers"] = c.layers;
  cfg["num_attention_heads"] = c.heads;
  cfg["mlp_ratio"] = static_cast<double>(c.mlp_dim) / c.hidden;
  cfg["patch_size"] = c.patch_size;
  cfg["image_size"] = c.image_size;
  cfg["num_channels"] = 3;
  cfg["qkv_bias"] = c.qkv_bias;
  cfg["layer_norm_eps"] = c.layer_norm_eps;
  cfg["hidden_act"] = "gelu";
  cfg["layerscale_value"] = c.layer_scale ? c.layer_scale_init : 1.0;
  cfg["drop_path_rate"] = 0.0;
  cfg["hidden_dropout_prob"] = 0.0;
  cfg["attention_probs_dropout_prob"] = 0.0;
  cfg["initializer_range"] = 0.02;
  cfg["use_swiglu_ffn"] = false;
  if (registers) cfg["num_register_tokens"] = c.register_tokens;
  cfg["problem_type"] = "multi_label_classification";
  for (size_t i = 0; i < spec.findings.size(); ++i) {
    cfg["id2label"][std::to_string(i)] = spec.findings[i];
    cfg["label2id"][spec.findings[i]] = i;
  }
  cfg["torch_dtype"] = "float32";
  cfg["fedtune"] = {{"method", FineTuneMethodName(spec.method)},
                    {"pooling", PoolingName(spec.pooling)},
                    {"input", "a single-channel radiograph in [0, 1], replicated to 3 channels and normalized with "
                              "the preprocessor's image_mean and image_std"}};
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", cfg.dump(2) + "\n"));

  nlohmann::json pre;
  pre["image_processor_type"] = "BitImageProcessor";
  pre["do_resize"] = true;
  pre["size"] = {{"height", c.image_size}, {"width", c.image_size}};
  pre["resample"] = 2;  // bilinear
  pre["do_center_crop"] = false;
  pre["do_rescale"] = true;
  pre["rescale_factor"] = 1.0 / 255;
  pre["do_normalize"] = true;
  pre["image_mean"] = {c.mean[0], c.mean[1], c.mean[2]};
  pre["image_std"] = {c.std[0], c.std[1], c.std[2]};
  pre["do_convert_rgb"] = true;
  return WriteFileAtomically(dir + "/preprocessor_config.json", pre.dump(2) + "\n");
}

}  // namespace fedtune::model
