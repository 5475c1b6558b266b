"""Reference figures from scikit-learn for tests/unit/metrics.

usage: sklearn_metrics.py IN.json OUT.json
IN: {"cases": [{"scores": [...], "labels": [...], "threshold": t}, ...]}
OUT: one object per case with roc_auc_score, average_precision_score,
matthews_corrcoef and f1_score (at score >= threshold), plus roc_curve.
"""
import json
import sys

import numpy as np
from sklearn.metrics import (average_precision_score, f1_score, matthews_corrcoef,
                             roc_auc_score, roc_curve)


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)["cases"]
    out = []
    for c in cases:
        y = np.array(c["labels"], dtype=int)
        s = np.array(c["scores"], dtype=float)
        pred = (s >= c["threshold"]).astype(int)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        out.append({
            "auroc": roc_auc_score(y, s),
            "ap": average_precision_score(y, s),
            "mcc": matthews_corrcoef(y, pred),
            "f1": f1_score(y, pred, zero_division=0),
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
        })
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
