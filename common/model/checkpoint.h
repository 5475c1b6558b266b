// Backbone checkpoints in the layouts hospitals will point fedtune at, and the
// trainable state (adapters + head) in PEFT's layout. Torch-facing.
//
// Backbone layouts (safetensors):
//   huggingface  Dinov2Model / Dinov2ForImageClassification names
//                ("embeddings.cls_token", optionally under "dinov2."); RAD-DINO.
//   dinov2       the original DINOv2 release: "cls_token", "pos_embed",
//                "patch_embed.proj.*", "blocks.N.attn.qkv.*" (fused q, k, v),
//                "blocks.N.attn.proj.*", "blocks.N.ls1.gamma", "norm.*".
//   timm         timm / MAE: as dinov2 without layer scale or mask token,
//                "norm.*" or "fc_norm.*", possibly nested under "model.";
//                an MAE pretraining file's decoder (decoder_*, its top-level
//                mask_token) is ignored.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/core/safetensors.h"
#include "common/model/vit.h"

namespace fedtune::model {

enum class CheckpointLayout { kHuggingFace, kDinov2, kTimm };
std::string_view CheckpointLayoutName(CheckpointLayout layout);

// How a backbone file was laid out, so it can be written back the same way.
struct BackboneSource {
  CheckpointLayout layout = CheckpointLayout::kHuggingFace;
  std::string prefix;                    // "", "dinov2." or "model."
  std::map<std::string, DType> dtypes;   // file dtype per file tensor name
  DType default_dtype = DType::kF32;     // for tensors not in `dtypes`
  SafetensorsMetadata metadata;
  std::string sha256;                    // hex SHA-256 of the whole file
  std::vector<std::string> ignored;      // file tensors that are not backbone (heads, MAE decoder)
};

// Loads `file` into `backbone`. Detects the layout; splits fused qkv; accepts
// position embeddings of any square grid (the forward pass interpolates them
// as the layout's own code does: PositionInterpolation); accepts a missing
// mask token (unused by fedtune); an MAE "fc_norm" becomes a norm applied
// after pooling (ViTBackbone::pooled_norm).
// INVALID_ARGUMENT names every missing tensor, every unexpected one, and
// every shape mismatch (with both shapes).
absl::StatusOr<BackboneSource> LoadBackbone(ViTBackbone& backbone, const SafetensorsFile& file);
absl::StatusOr<BackboneSource> LoadBackboneFile(ViTBackbone& backbone, const std::string& path);

// The backbone's tensors named and typed as `source` describes (fused qkv
// re-joined): loading a file then saving with the BackboneSource it returned
// reproduces the file's tensors bit for bit. A fresh BackboneSource writes the
// backbone in any layout.
absl::StatusOr<TensorMap> BackboneTensors(ViTBackbone& backbone, const BackboneSource& source);

// PEFT's name for a model parameter: "base_model.model." + name.
std::string PeftName(const std::string& parameter_name);

// The global state: what a federation's model versions hold and what sites
// send back, under PEFT names, float32. LoRA adapters (trained, or frozen as
// FFA-LoRA's A) and the head travel as values; the backbone tensors a method
// trains (BitFit's biases, every weight under full fine-tuning) travel as
// their difference from the base weights. Version 0 is therefore zero there,
// and a site that applies it keeps exactly the base checkpoint it holds (the
// job names that file by SHA-256): no method starts from random weights, and
// the coordinator never needs the base file.
//
// BaseWeights: those backbone tensors' values right after the base was
// loaded (CPU, float32).
using BaseWeights = std::map<std::string, torch::Tensor>;
BaseWeights CaptureBase(ViTClassifier& model);
// Every global tensor, or (trained_only) what training changes: an update.
absl::StatusOr<TensorMap> ExportGlobalState(ViTClassifier& model, const BaseWeights& base, bool trained_only);
// Sets every global tensor. INVALID_ARGUMENT names missing, unexpected and
// mis-shaped tensors; nothing changes unless everything fits.
absl::Status ImportGlobalState(ViTClassifier& model, const BaseWeights& base, const TensorMap& state);

// The trainable state (what the method trains; what federation ships) under
// PEFT names, as float32.
absl::StatusOr<TensorMap> ExportTrainable(ViTClassifier& model);
// Replaces the trainable state. INVALID_ARGUMENT names missing, unexpected and
// mis-shaped tensors; nothing is changed unless everything matches.
absl::Status ImportTrainable(ViTClassifier& model, const TensorMap& state);

// Writes DIR/adapter_model.safetensors + DIR/adapter_config.json (creating DIR).
absl::Status SaveAdapter(ViTClassifier& model, const std::string& dir);

}  // namespace fedtune::model
