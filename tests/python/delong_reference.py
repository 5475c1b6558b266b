"""Paired DeLong test written from the definition (DeLong, DeLong &
Clarke-Pearson 1988, equations for two correlated AUROCs), O(m n) with numpy,
for tests/unit/metrics: an independent check of fedtune's midrank version.

usage: delong_reference.py IN.json OUT.json
IN: {"cases": [{"a": [...], "b": [...], "labels": [...]}, ...]}
OUT: per case {"auroc_a", "auroc_b", "z", "p"}; p from scipy's normal law when
scipy is installed, otherwise from math.erfc.
"""
import json
import math
import sys

import numpy as np

try:
    from scipy.stats import norm
except ImportError:  # python3-scipy is optional here
    norm = None


def psi(x, y):
    """1 where the positive outscores the negative, 1/2 for a tie."""
    return (x[:, None] > y[None, :]).astype(float) + 0.5 * (x[:, None] == y[None, :])


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)["cases"]
    out = []
    for c in cases:
        y = np.array(c["labels"], dtype=int)
        v10, v01, auc = [], [], []
        for key in ("a", "b"):
            s = np.array(c[key], dtype=float)
            k = psi(s[y == 1], s[y == 0])
            auc.append(k.mean())
            v10.append(k.mean(axis=1))  # per positive
            v01.append(k.mean(axis=0))  # per negative
        m, n = len(v10[0]), len(v01[0])
        s10 = np.cov(np.vstack(v10))  # 2 x 2, ddof 1
        s01 = np.cov(np.vstack(v01))
        contrast = np.array([1.0, -1.0])
        var = contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n
        z = (auc[0] - auc[1]) / math.sqrt(var)
        p = 2 * norm.sf(abs(z)) if norm is not None else math.erfc(abs(z) / math.sqrt(2))
        out.append({"auroc_a": auc[0], "auroc_b": auc[1], "z": z, "p": p})
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
