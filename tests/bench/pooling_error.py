"""How far pooled AUROC and average precision computed from score histograms
are from the exact figures of the pooled cases, for the binning of the first
release (100 equal-width probability bins) and for fedtune's logit bins
(1024 bins uniform in logit over [-16, 16], common/metrics/pooling.h).

Three sites' calibrated scores of a rare finding (prevalence 3 %), logits of
positives and negatives 4.5 apart, with a site offset and a spread of 1, 2
and 3 logits. Exact figures from scikit-learn.

usage: /usr/bin/python3 tests/bench/pooling_error.py [--seed N]
"""
import argparse

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def binned(y, bins):
    hp = np.bincount(bins[y], minlength=bins.max() + 1)
    hn = np.bincount(bins[~y], minlength=bins.max() + 1)
    below = np.concatenate([[0], np.cumsum(hn)[:-1]])
    auc = (hp * (below + 0.5 * hn)).sum() / (hp.sum() * hn.sum())
    tp = fp = ap = 0.0
    for i in range(len(hp) - 1, -1, -1):  # each bin one threshold, as fedtune pools
        if hp[i] == 0 and hn[i] == 0:
            continue
        tp += hp[i]
        fp += hn[i]
        ap += hp[i] / hp.sum() * tp / (tp + fp)
    return auc, ap


def main():
    ap_ = argparse.ArgumentParser()
    ap_.add_argument("--seed", type=int, default=5)
    seed = ap_.parse_args().seed
    rng = np.random.default_rng(seed)
    print("| spread (logits) | exact AUROC | 100 prob. bins | 1024 logit bins | exact AP | 100 prob. bins | 1024 logit bins |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for spread in (1.0, 2.0, 3.0):
        ys, ps = [], []
        for site in range(3):
            pos = rng.random(3000) < 0.03
            logit = np.where(pos, -1.0, -5.5) + 0.4 * site + spread * rng.normal(size=3000)
            ys.append(pos)
            ps.append(1 / (1 + np.exp(-logit)))
        y, p = np.concatenate(ys), np.concatenate(ps)
        auc, ap = roc_auc_score(y, p), average_precision_score(y, p)
        old = binned(y, np.minimum((p * 100).astype(int), 99))
        logit = np.log(p) - np.log1p(-p)
        new = binned(y, np.clip(np.floor((logit + 16) / 32 * 1024), 0, 1023).astype(int))
        print("| %.0f | %.4f | %+.4f | %+.5f | %.4f | %+.4f | %+.5f |"
              % (spread, auc, old[0] - auc, new[0] - auc, ap, old[1] - ap, new[1] - ap))


if __name__ == "__main__":
    main()
