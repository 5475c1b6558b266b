"""Checks fedtune's transformers export (common/model/hf_export.h) for
tests/unit/model/hf_export_test.cc: reads DIR/config.json (a Dinov2Config),
DIR/model.safetensors and DIR/preprocessor_config.json as transformers would,
and runs Dinov2ForImageClassification's forward pass: written here with
torch.nn.functional from the config alone (every parameter the architecture
has must be in the file, and nothing else), and, where the transformers
package is installed, with transformers itself.

usage: hf_reference.py CASE_DIR
CASE_DIR: model/ (the export), input.safetensors ("images" [B,1,H,W] in
[0, 1]), output.safetensors ("logits" from fedtune's own forward pass).
Exits 0 when the logits agree within 1e-4.
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

from safetensors_io import read_arrays


def forward(p, cfg, pixel_values):
    prefix = "dinov2_with_registers." if cfg["model_type"] == "dinov2_with_registers" else "dinov2."
    d, heads, patch = cfg["hidden_size"], cfg["num_attention_heads"], cfg["patch_size"]
    eps = cfg["layer_norm_eps"]
    regs = cfg.get("num_register_tokens", 0)
    used = set()

    def w(name):
        used.add(name)
        return p[name]

    e = prefix + "embeddings."
    x = F.conv2d(pixel_values, w(e + "patch_embeddings.projection.weight"), w(e + "patch_embeddings.projection.bias"),
                 stride=patch)
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = w(e + "position_embeddings")
    assert pos.shape[1] - 1 == gh * gw, "the exported grid must be the configured image size's"
    w(e + "mask_token")  # part of the architecture, unused in classification
    x = torch.cat([w(e + "cls_token").expand(b, -1, -1), x], 1) + pos
    if regs:
        x = torch.cat([x[:, :1], w(e + "register_tokens").expand(b, -1, -1), x[:, 1:]], 1)
    for i in range(cfg["num_hidden_layers"]):
        L = prefix + "encoder.layer.%d." % i
        h = F.layer_norm(x, (d,), w(L + "norm1.weight"), w(L + "norm1.bias"), eps)
        t = h.shape[1]
        q, k, v = (F.linear(h, w(L + "attention.attention.%s.weight" % n), w(L + "attention.attention.%s.bias" % n))
                   .view(b, t, heads, d // heads).transpose(1, 2) for n in ("query", "key", "value"))
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), -1) @ v
        a = F.linear(a.transpose(1, 2).reshape(b, t, d), w(L + "attention.output.dense.weight"),
                     w(L + "attention.output.dense.bias"))
        x = x + a * w(L + "layer_scale1.lambda1")
        h = F.layer_norm(x, (d,), w(L + "norm2.weight"), w(L + "norm2.bias"), eps)
        m = F.linear(F.gelu(F.linear(h, w(L + "mlp.fc1.weight"), w(L + "mlp.fc1.bias"))), w(L + "mlp.fc2.weight"),
                     w(L + "mlp.fc2.bias"))
        x = x + m * w(L + "layer_scale2.lambda1")
    x = F.layer_norm(x, (d,), w(prefix + "layernorm.weight"), w(prefix + "layernorm.bias"), eps)
    feat = torch.cat([x[:, 0], x[:, 1 + regs:].mean(1)], 1)
    logits = F.linear(feat, w("classifier.weight"), w("classifier.bias"))
    extra = set(p) - used
    assert not extra, "tensors the architecture does not have: %s" % sorted(extra)[:5]
    return logits


def main():
    case = sys.argv[1]
    with open(case + "/model/config.json") as f:
        cfg = json.load(f)
    with open(case + "/model/preprocessor_config.json") as f:
        pre = json.load(f)
    assert cfg["problem_type"] == "multi_label_classification"
    assert len(cfg["id2label"]) == cfg.get("num_labels", len(cfg["id2label"]))
    params = {k: torch.from_numpy(v) for k, v in read_arrays(case + "/model/model.safetensors").items()}
    images = torch.from_numpy(read_arrays(case + "/input.safetensors")["images"])
    got = torch.from_numpy(read_arrays(case + "/output.safetensors")["logits"])
    mean = torch.tensor(pre["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["image_std"]).view(1, 3, 1, 1)
    pixel_values = (images.repeat(1, 3, 1, 1) - mean) / std
    with torch.no_grad():
        want = forward(params, cfg, pixel_values)
    diff = (want - got).abs().max().item()
    print("transformers' Dinov2ForImageClassification, from config.json: max abs difference %.3g" % diff)
    ok = diff <= 1e-4
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is not None:
        model = transformers.AutoModelForImageClassification.from_pretrained(case + "/model").eval()
        with torch.no_grad():
            hf = model(pixel_values=pixel_values).logits
        hdiff = (hf - got).abs().max().item()
        print("transformers %s from_pretrained: max abs difference %.3g" % (transformers.__version__, hdiff))
        ok = ok and hdiff <= 1e-4
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
