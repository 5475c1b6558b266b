"""Independent check of lora-svd's re-factorisation (common/fl/lora_svd.h)
with numpy's LAPACK SVD, for tests/unit/fl/strategy_test.cc.

usage: lowrank_reference.py CASE.safetensors
The file holds, per case k: "k.b.i" (site i's B, out x r), "k.a.i" (A, r x in),
"k.w" (the sites' weights), "k.rank", and fedtune's result "k.B", "k.A" and
"k.energy". Forms M = sum_i w_i B_i A_i / sum_i w_i explicitly, cuts numpy's
SVD to rank r and compares it with fedtune's B A, and the energy kept.
Exits 0 when every case agrees to 1e-9 (relative to |M|).
"""
import sys

import numpy as np

from safetensors_io import read_arrays


def main():
    t = read_arrays(sys.argv[1])
    cases = sorted({name.split(".")[0] for name in t})
    worst = 0.0
    for k in cases:
        t64 = {n: a.astype(np.float64) for n, a in t.items() if n.startswith(k + ".")}
        w = t64[k + ".w"]
        r = int(t[k + ".rank"][0])
        m = sum(w[i] * t64["%s.b.%d" % (k, i)] @ t64["%s.a.%d" % (k, i)] for i in range(len(w))) / w.sum()
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        best = (u[:, :r] * s[:r]) @ vt[:r]
        got = t64[k + ".B"] @ t64[k + ".A"]
        scale = max(np.linalg.norm(m), 1e-300)
        diff = np.linalg.norm(best - got) / scale
        energy = float((s[:r] ** 2).sum() / (s ** 2).sum()) if s.sum() > 0 else 1.0
        energy_diff = abs(energy - float(t[k + ".energy"][0]))
        print("case %s: |M_r - B A| / |M| = %.3g, energy kept %.6f (fedtune %.6f)"
              % (k, diff, energy, float(t[k + ".energy"][0])))
        worst = max(worst, diff, energy_diff)
    sys.exit(0 if worst <= 1e-9 else 1)


if __name__ == "__main__":
    main()
