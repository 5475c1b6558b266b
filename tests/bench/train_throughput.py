"""Python reference for tests/bench/train_throughput: the same ViT + LoRA
training step in Python torch, timed the same way.

usage: train_throughput.py DEVICE CONFIG_JSON
CONFIG_JSON: {"cases": [{"name", "hidden", "layers", "heads", "mlp", "patch",
"image", "layer_scale", "batch", "rank", "steps", "warmup"}], "threads": N}
Prints one JSON object: {"impl": ..., "results": [{"name", "batch", "images_per_second"}]}.
On CUDA with transformers + peft installed the model is transformers'
Dinov2ForImageClassification wrapped by peft's LoRA (query, value); otherwise a
plain torch module with LoRA written here.
"""
import contextlib
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoraLinear(nn.Module):
    def __init__(self, d_in, d_out, rank, alpha):
        super().__init__()
        self.base = nn.Linear(d_in, d_out)
        self.base.weight.requires_grad_(False)
        self.base.bias.requires_grad_(False)
        self.rank = rank
        if rank:
            self.lora_A = nn.Linear(d_in, rank, bias=False)
            self.lora_B = nn.Linear(rank, d_out, bias=False)
            nn.init.zeros_(self.lora_B.weight)
            self.scaling = alpha / rank

    def forward(self, x):
        y = self.base(x)
        if self.rank:
            y = y + self.lora_B(self.lora_A(x)) * self.scaling
        return y


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, r = c["hidden"], c["rank"]
        self.heads = c["heads"]
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.q, self.k, self.v = LoraLinear(d, d, r, r), LoraLinear(d, d, 0, 0), LoraLinear(d, d, r, r)
        self.proj = LoraLinear(d, d, 0, 0)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.fc1, self.fc2 = LoraLinear(d, c["mlp"], 0, 0), LoraLinear(c["mlp"], d, 0, 0)
        self.ls1 = nn.Parameter(torch.ones(d)) if c["layer_scale"] else None
        self.ls2 = nn.Parameter(torch.ones(d)) if c["layer_scale"] else None

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (m(h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), -1) @ v
        a = self.proj(a.transpose(1, 2).reshape(b, t, d))
        x = x + (a * self.ls1 if self.ls1 is not None else a)
        m = self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return x + (m * self.ls2 if self.ls2 is not None else m)


class ViT(nn.Module):
    def __init__(self, c, findings=17):
        super().__init__()
        d, p = c["hidden"], c["patch"]
        self.patch = nn.Conv2d(3, d, p, p)
        n = (c["image"] // p) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, d))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(2 * d, findings)

    def forward(self, x):
        x = self.patch(x.repeat(1, 3, 1, 1)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.head(torch.cat([x[:, 0], x[:, 1:].mean(1)], 1))


def plain_model(c):
    m = ViT(c)
    for name, p in m.named_parameters():
        p.requires_grad_("lora_" in name or name.startswith("head"))
    return m, "python torch (plain module)"


def peft_model(c):
    from peft import LoraConfig, get_peft_model
    from transformers import Dinov2Config, Dinov2ForImageClassification
    cfg = Dinov2Config(hidden_size=c["hidden"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                       intermediate_size=c["mlp"], patch_size=c["patch"], image_size=c["image"], num_labels=17,
                       problem_type="multi_label_classification", attn_implementation="sdpa")
    m = Dinov2ForImageClassification(cfg)
    m = get_peft_model(m, LoraConfig(r=c["rank"], lora_alpha=c["rank"], target_modules=["query", "value"],
                                     modules_to_save=["classifier"], lora_dropout=0.0))

    class Wrap(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x.repeat(1, 3, 1, 1)).logits
    return Wrap(m), "python torch + transformers Dinov2 + peft LoRA"


def main():
    device = torch.device(sys.argv[1])
    with open(sys.argv[2]) as f:
        config = json.load(f)
    if device.type == "cpu" and config.get("threads"):
        torch.set_num_threads(config["threads"])
    use_peft = False
    if device.type == "cuda":
        try:
            import peft  # noqa: F401
            import transformers  # noqa: F401
            use_peft = True
        except ImportError:
            pass
    results, impl = [], ""
    for c in config["cases"]:
        torch.manual_seed(0)
        model, impl = (peft_model if use_peft else plain_model)(c)
        model = model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        x = torch.rand(c["batch"], 1, c["image"], c["image"], device=device)
        y = (torch.rand(c["batch"], 17, device=device) < 0.3).float()

        def step():
            ctx = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda"
                   else contextlib.nullcontext())
            with ctx:
                logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for _ in range(c["warmup"]):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(c["steps"]):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        results.append({"name": c["name"], "batch": c["batch"], "images_per_second": c["batch"] * c["steps"] / dt})
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps({"impl": impl, "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
