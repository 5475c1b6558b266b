#!/usr/bin/env python3
"""Independent reference for the DP accountant (tests/unit/fl/dp_test.cc).

The Renyi divergence of the sampled Gaussian mechanism computed from its
definition by numerical integration, not from the series the C++ code sums:

    A_alpha = E_{x ~ N(0, z^2)} [ ((1 - q) + q exp((2x - 1) / (2 z^2)))^alpha ]
    RDP(alpha) = log(A_alpha) / (alpha - 1)

integrated on a fine grid in log space (scipy's logsumexp), wide enough to
hold every binomial component of the integrand. Then epsilon from the RDP
curve with the conversion of Balle et al. 2020, minimised over the orders
given.

usage: rdp_reference.py IN.json OUT.json
IN: {"rdp": [{"q", "z", "order"}...], "epsilon": [{"q", "z", "steps", "delta", "orders": [...]}...]}
OUT: {"rdp": [value...], "epsilon": [value...]}
"""
import json
import sys

import numpy as np
from scipy.special import logsumexp


def log_a(q, z, alpha):
    if q == 0:
        return 0.0
    if q == 1:
        return alpha * (alpha - 1) / (2 * z * z)
    # The integrand's components are Gaussians of sd z centred between 0 and
    # alpha; cover them with 40 sd to spare on each side.
    lo, hi = -40.0 * z - 1.0, alpha + 40.0 * z + 1.0
    n = int(np.ceil((hi - lo) / (z / 400.0))) + 1
    x = np.linspace(lo, hi, n)
    log_pdf = -x * x / (2 * z * z) - np.log(z * np.sqrt(2 * np.pi))
    log_ratio = np.logaddexp(np.log1p(-q), np.log(q) + (2 * x - 1) / (2 * z * z))
    f = log_pdf + alpha * log_ratio
    # Trapezoid rule in log space.
    w = np.full(n, np.log(x[1] - x[0]))
    w[0] = w[-1] = np.log((x[1] - x[0]) / 2)
    return float(logsumexp(f + w))


def rdp(q, z, alpha):
    return log_a(q, z, alpha) / (alpha - 1)


def epsilon(q, z, steps, delta, orders):
    best = float("inf")
    for a in orders:
        r = steps * rdp(q, z, a)
        e = r + np.log((a - 1) / a) - (np.log(delta) + np.log(a)) / (a - 1)
        best = min(best, max(e, 0.0))
    return best


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = {
        "rdp": [rdp(c["q"], c["z"], c["order"]) for c in cases.get("rdp", [])],
        "epsilon": [epsilon(c["q"], c["z"], c["steps"], c["delta"], c["orders"]) for c in cases.get("epsilon", [])],
    }
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
