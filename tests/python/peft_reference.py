"""Loads fedtune's exported backbone (Hugging Face layout) and adapter into
transformers' Dinov2ForImageClassification + peft, for
tests/unit/model/peft_compat_test.cc.

usage: peft_reference.py CASE_DIR
CASE_DIR: backbone.safetensors, adapter/ (adapter_model.safetensors +
adapter_config.json), input.safetensors ("images" [B,1,H,W] in [0,1]),
output.safetensors ("logits" from C++), config.json. Exits 0 when PEFT's
logits match within the tolerance.
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import Dinov2Config, Dinov2ForImageClassification


def main():
    case = sys.argv[1]
    with open(case + "/config.json") as f:
        c = json.load(f)
    cfg = Dinov2Config(hidden_size=c["hidden"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                       mlp_ratio=c["mlp"] // c["hidden"], patch_size=c["patch_size"], image_size=c["image_size"],
                       layer_norm_eps=c["layer_norm_eps"], num_labels=c["findings"], qkv_bias=True)
    model = Dinov2ForImageClassification(cfg)
    model.dinov2.load_state_dict(load_file(case + "/backbone.safetensors"), strict=True)
    peft_model = PeftModel.from_pretrained(model, case + "/adapter").eval()
    images = load_file(case + "/input.safetensors")["images"]
    mean = torch.tensor(c["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(c["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = peft_model(pixel_values=(images.repeat(1, 3, 1, 1) - mean) / std).logits
    got = load_file(case + "/output.safetensors")["logits"]
    diff = (want - got).abs().max().item()
    print("PEFT logits vs fedtune: max abs difference %.3g (tolerance %.3g)" % (diff, c["tolerance"]))
    sys.exit(0 if diff <= c["tolerance"] else 1)


if __name__ == "__main__":
    main()
