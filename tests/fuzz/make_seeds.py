#!/usr/bin/env python3
"""Writes the safetensors seeds of tests/fuzz/corpus (committed; re-run after
changing the global state in update_validation_fuzz.cc):

  tests/fuzz/make_seeds.py            # writes corpus/safetensors_fuzz, corpus/update_validation_fuzz

Plain Python (struct + json): the files are built byte by byte, so that
seeds can also be slightly wrong on purpose.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PACK = {"F32": "<f", "F64": "<d", "I64": "<q", "I32": "<i", "I16": "<h", "I8": "<b", "U8": "<B", "BOOL": "<?"}


def half(x, dtype):
    """F16 / BF16 bytes of float x (round to nearest even for F16 via struct 'e')."""
    if dtype == "F16":
        return struct.pack("<e", x)
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    return struct.pack("<H", (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)


def tensor_bytes(dtype, values):
    if dtype in ("F16", "BF16"):
        return b"".join(half(v, dtype) for v in values)
    return b"".join(struct.pack(PACK[dtype], v) for v in values)


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, values) in file order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, values in tensors:
        raw = tensor_bytes(dtype, values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(target, name, content):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(content)


# The global state of update_validation_fuzz.cc.
A = "encoder.layer.0.attention.query.lora_A"
B = "encoder.layer.0.attention.query.lora_B"
GLOBAL = [
    (A, [2, 4], [0.5, -0.25, 0.125, 1, -1, 0.75, 0, 0.5]),
    (B, [4, 2], [0.0] * 8),
    ("head.weight", [2, 4], [0.1, 0.2, -0.3, 0.4, -0.5, 0.6, 0.7, -0.8]),
    ("head.bias", [2], [0.01, -0.02]),
]


def update(dtype="F32", step=0.01, drop=None, nan=False):
    out = []
    for name, shape, values in GLOBAL:
        if name == drop:
            continue
        vals = [v + step for v in values]
        if nan and name == B:
            vals[0] = float("nan")
        out.append((name, dtype, shape, vals))
    return safetensors(out, {"fedtune.state": "backbone-differences/1"})


def main():
    t = "safetensors_fuzz"
    write(t, "empty_header.safetensors", safetensors([]))
    write(t, "metadata_only.safetensors", safetensors([], {"format": "pt", "fedtune.state": "backbone-differences/1"}))
    write(t, "every_dtype.safetensors", safetensors([
        ("b", "BOOL", [3], [True, False, True]),
        ("bf16", "BF16", [2], [1.5, -2.0]),
        ("f16", "F16", [2, 1], [0.5, 65504.0]),
        ("f32", "F32", [2, 2], [1.0, -1.0, 0.25, 3.5]),
        ("f64", "F64", [1], [2.0 ** -1074]),
        ("i16", "I16", [2], [-32768, 32767]),
        ("i32", "I32", [1], [-1]),
        ("i64", "I64", [2], [-(2 ** 63), 2 ** 63 - 1]),
        ("i8", "I8", [1], [-128]),
        ("u8", "U8", [4], [0, 1, 254, 255]),
    ], {"note": "every dtype fedtune reads"}))
    write(t, "scalar_and_empty.safetensors", safetensors([
        ("scalar", "F32", [], [7.0]), ("empty", "F32", [0, 3], []), ("after", "U8", [1], [9])]))
    write(t, "unpadded.safetensors", safetensors([("x", "F32", [1], [1.0])], pad=False))
    # Almost valid: the reader must name the problem, not crash.
    good = safetensors([("x", "F32", [2], [1.0, 2.0])])
    write(t, "truncated.safetensors", good[:-3])
    write(t, "trailing.safetensors", good + b"\0")
    gap = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'
    write(t, "gap.safetensors", struct.pack("<Q", len(gap)) + gap + b"\0\0")

    t = "update_validation_fuzz"
    write(t, "valid_f32.safetensors", update())
    write(t, "valid_f16.safetensors", update("F16"))
    write(t, "valid_bf16.safetensors", update("BF16"))
    write(t, "valid_f64.safetensors", update("F64", step=0.05))
    write(t, "too_far.safetensors", update(step=10.0))
    write(t, "nan.safetensors", update(nan=True))
    write(t, "missing_tensor.safetensors", update(drop="head.bias"))


if __name__ == "__main__":
    main()
