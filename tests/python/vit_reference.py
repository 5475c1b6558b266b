"""Independent forward pass of fedtune's ViT classifier, written with
torch.nn.functional only, for tests/unit/model/vit_test.cc.

usage: vit_reference.py CASE_DIR
CASE_DIR holds model.safetensors (parameters, fedtune/HF names, LoRA A/B
included), input.safetensors ("images" [B,1,H,W] in [0,1]), output.safetensors
("logits" from C++) and config.json. Exits 0 when the logits agree within
the tolerance in config.json, printing the largest difference.
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

from safetensors_io import read_arrays


def read_safetensors(path):
    return {name: torch.from_numpy(a) for name, a in read_arrays(path).items()}


def lora_linear(p, name, x, scaling):
    y = F.linear(x, p[name + ".weight"], p.get(name + ".bias"))
    if name + ".lora_A.weight" in p:
        y = y + F.linear(F.linear(x, p[name + ".lora_A.weight"]), p[name + ".lora_B.weight"]) * scaling
    return y


def forward(p, cfg, images):
    d, heads, patch = cfg["hidden"], cfg["heads"], cfg["patch_size"]
    eps, scaling = cfg["layer_norm_eps"], cfg["lora_scaling"]
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    # The reference replicates the gray image to 3 channels and normalizes.
    x = (images.repeat(1, 3, 1, 1) - mean) / std
    e = "dinov2.embeddings."
    x = F.conv2d(x, p[e + "patch_embeddings.projection.weight"], p[e + "patch_embeddings.projection.bias"],
                 stride=patch)
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = p[e + "position_embeddings"]
    side = int(round(math.sqrt(pos.shape[1] - 1)))
    if (side, side) != (gh, gw):
        grid = pos[:, 1:].reshape(1, side, side, d).permute(0, 3, 1, 2)
        how = cfg.get("interpolation", "size")
        if how == "scale_offset":
            # Meta's original DINOv2: the historical +0.1 in the scale factor.
            grid = F.interpolate(grid, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
        else:
            # Hugging Face Dinov2 (size), DINOv2 with registers (antialiased).
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False,
                                 antialias=how == "size_antialias")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], 1)
    x = torch.cat([p[e + "cls_token"].expand(b, -1, -1), x], 1) + pos
    regs = cfg["register_tokens"]
    if regs:
        x = torch.cat([x[:, :1], p[e + "register_tokens"].expand(b, -1, -1), x[:, 1:]], 1)
    for i in range(cfg["layers"]):
        L = "dinov2.encoder.layer.%d." % i
        h = F.layer_norm(x, (d,), p[L + "norm1.weight"], p[L + "norm1.bias"], eps)
        t = h.shape[1]
        q, k, v = (lora_linear(p, L + "attention.attention." + n, h, scaling).view(b, t, heads, d // heads)
                   .transpose(1, 2) for n in ("query", "key", "value"))
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), -1) @ v
        a = lora_linear(p, L + "attention.output.dense", a.transpose(1, 2).reshape(b, t, d), scaling)
        if L + "layer_scale1.lambda1" in p:
            a = a * p[L + "layer_scale1.lambda1"]
        x = x + a
        h = F.layer_norm(x, (d,), p[L + "norm2.weight"], p[L + "norm2.bias"], eps)
        m = lora_linear(p, L + "mlp.fc2", F.gelu(lora_linear(p, L + "mlp.fc1", h, scaling)), scaling)
        if L + "layer_scale2.lambda1" in p:
            m = m * p[L + "layer_scale2.lambda1"]
        x = x + m
    def norm(t):
        return F.layer_norm(t, (d,), p["dinov2.layernorm.weight"], p["dinov2.layernorm.bias"], eps)
    if cfg.get("pooled_norm", False):
        # MAE fine-tuned with global pooling: fc_norm on what is pooled.
        feat = norm(x[:, 0])
        if cfg["pooling"] == "cls_mean":
            feat = torch.cat([feat, norm(x[:, 1 + regs:].mean(1))], 1)
    else:
        x = norm(x)
        feat = x[:, 0]
        if cfg["pooling"] == "cls_mean":
            feat = torch.cat([feat, x[:, 1 + regs:].mean(1)], 1)
    return F.linear(feat, p["classifier.weight"], p["classifier.bias"])


def main():
    case = sys.argv[1]
    with open(case + "/config.json") as f:
        cfg = json.load(f)
    params = read_safetensors(case + "/model.safetensors")
    images = read_safetensors(case + "/input.safetensors")["images"]
    got = read_safetensors(case + "/output.safetensors")["logits"]
    with torch.no_grad():
        want = forward(params, cfg, images)
    diff = (want - got).abs().max().item()
    print("max abs difference %.3g (tolerance %.3g)" % (diff, cfg["tolerance"]))
    sys.exit(0 if diff <= cfg["tolerance"] else 1)


if __name__ == "__main__":
    main()
