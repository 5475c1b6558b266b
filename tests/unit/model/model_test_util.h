// Small models and helpers shared by the model tests.
#pragma once

#include "common/model/vit.h"

namespace fedtune::model::testing {

// A ViT small enough for unit tests: 32 px, patch 8 (4x4 grid), 2 layers.
inline ModelSpec TinySpec(bool layer_scale = true, int registers = 0) {
  ModelSpec s;
  s.vit.image_size = 32;
  s.vit.patch_size = 8;
  s.vit.hidden = 32;
  s.vit.layers = 2;
  s.vit.heads = 4;
  s.vit.mlp_dim = 64;
  s.vit.layer_scale = layer_scale;
  s.vit.layer_scale_init = 0.5;
  s.vit.register_tokens = registers;
  s.findings = {"Cardiomegaly", "Pleural effusion", "Nodule/Mass"};
  s.lora.rank = 4;
  s.lora.alpha = 8;
  s.lora.dropout = 0.0;
  return s;
}

// Fills every LoRA B with small random values so adapters change the output.
inline void RandomizeLoraB(ViTClassifier& model, double std = 0.05) {
  torch::NoGradGuard g;
  for (auto& [name, lin] : model->Linears()) {
    if (lin->has_lora()) lin->lora_B->weight.normal_(0, std);
  }
}

}  // namespace fedtune::model::testing
