"""Python reference for tests/bench/ingest_throughput: the same decode +
modality LUT + VOI + MONOCHROME1 + area-average resize, with pydicom and
numpy, on all cores (multiprocessing).

usage: ingest_throughput.py SIZE PROCESSES FILE...
Prints {"files": N, "seconds": S, "files_per_second": F}.
"""
import json
import sys
import time
from multiprocessing import Pool

import numpy as np
import pydicom
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

SIZE = int(sys.argv[1])
_weights = {}


def area_weights(n_in, n_out):
    """[n_out, n_in] matrix averaging the source pixels each output pixel covers."""
    if (n_in, n_out) not in _weights:
        w = np.zeros((n_out, n_in), dtype=np.float32)
        scale = n_in / n_out
        for o in range(n_out):
            a, b = o * scale, (o + 1) * scale
            for i in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
                w[o, i] = max(0.0, min(b, i + 1) - max(a, i)) / scale
        _weights[(n_in, n_out)] = w
    return _weights[(n_in, n_out)]


def process(path):
    ds = pydicom.dcmread(path)
    arr = apply_modality_lut(ds.pixel_array, ds)
    if "WindowCenter" in ds:
        arr = apply_voi_lut(arr, ds)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / max(hi - lo, 1e-6)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = 1.0 - arr
    h, w = arr.shape
    s = SIZE / max(h, w)
    oh, ow = max(1, round(h * s)), max(1, round(w * s))
    small = area_weights(h, oh) @ arr.astype(np.float32) @ area_weights(w, ow).T
    out = np.zeros((SIZE, SIZE), dtype=np.uint8)
    y, x = (SIZE - oh) // 2, (SIZE - ow) // 2
    out[y:y + oh, x:x + ow] = np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)
    return int(out.sum() > 0)


def main():
    files = sys.argv[3:]
    with Pool(int(sys.argv[2])) as pool:
        pool.map(process, files[:2])  # warm the workers
        t0 = time.perf_counter()
        pool.map(process, files, chunksize=1)
        dt = time.perf_counter() - t0
    print(json.dumps({"files": len(files), "seconds": dt, "files_per_second": len(files) / dt}))


if __name__ == "__main__":
    main()
