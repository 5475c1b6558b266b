// A fine-tuned model as a Hugging Face transformers directory:
// Dinov2ForImageClassification (Dinov2WithRegistersForImageClassification
// with register tokens), loadable with from_pretrained() as it is.
// Torch-facing.
//
//   DIR/model.safetensors         every parameter under transformers' names, float32
//   DIR/config.json               Dinov2Config (multi-label, id2label = the findings)
//   DIR/preprocessor_config.json  the normalization the model expects
//
// The exported model computes what fedtune computes for a radiograph in
// [0, 1] replicated to 3 channels and normalized with the preprocessor's mean
// and std. Where fedtune's model differs in form it is exported exactly:
// without layer scale, LayerScale of ones; with CLS pooling, a head whose
// mean-of-patches half is zero. A model whose final norm applies after
// pooling (an MAE fc_norm checkpoint) cannot be expressed and is refused.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "common/model/vit.h"

namespace fedtune::model {

absl::Status SaveHuggingFaceClassifier(ViTClassifier& model, const std::string& dir);

}  // namespace fedtune::model
