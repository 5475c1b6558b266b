"""How far honest updates moved, against the default relative bound
(coordinator/engine/job_spec.h: 4 x max(|global|, 0.01 x sqrt(values))),
for every job in a coordinator's state directory.

usage: /usr/bin/python3 tests/bench/update_norms.py STATE_DIR [RATIO] [RMS]
       /usr/bin/python3 tests/bench/update_norms.py --norms STATE_DIR
e.g.   /usr/bin/python3 tests/bench/update_norms.py bench-strategies/federation/coordinator-state

With --norms: the L2 norms of the federated updates' differences from the
global (median, 90th percentile, largest) per job, from which a job's
[privacy] clip_norm is chosen.

Prints per job (name and method from the job file) the largest update of the
federated rounds as a share of the bound; local-only baselines are not bounded
and are left out. FFA-LoRA updates omit LoRA A and are measured without it.
"""
import glob
import os
import re
import sqlite3
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from safetensors_io import read_arrays  # noqa: E402


def update_norms(state, job_id, rounds):
    """||update - global|| of every federated update of a job."""
    out = []
    for path in glob.glob(os.path.join(state, "blobs", job_id, "update-r*.safetensors")):
        r = int(re.search(r"update-r(\d+)a", path).group(1))
        g_path = os.path.join(state, "blobs", job_id, "global-v%d.safetensors" % (r - 1))
        if r > rounds or not os.path.exists(g_path):
            continue
        u, g = read_arrays(path), read_arrays(g_path)
        out.append(float(np.sqrt(sum(((u[k].astype(np.float64) - g[k]) ** 2).sum() for k in g if k in u))))
    return out


def main():
    if sys.argv[1] == "--norms":
        db = sqlite3.connect(os.path.join(sys.argv[2], "coordinator.sqlite"))
        print("| job | updates | median norm | 90th percentile | largest |")
        print("|---|---:|---:|---:|---:|")
        for job_id, name, toml in db.execute("SELECT job_id, name, toml FROM jobs ORDER BY created_ms"):
            rounds = int((re.search(r"rounds = (\d+)", toml) or [None, "3"])[1])
            n = update_norms(sys.argv[2], job_id, rounds)
            if n:
                print("| %s | %d | %.4g | %.4g | %.4g |" % (name, len(n), np.median(n), np.percentile(n, 90), max(n)))
        return
    state = sys.argv[1]
    ratio = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    rms = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
    db = sqlite3.connect(os.path.join(state, "coordinator.sqlite"))
    jobs = db.execute("SELECT job_id, name, toml FROM jobs ORDER BY created_ms").fetchall()
    print("| job | method | strategy | largest update / bound | round of it |")
    print("|---|---|---|---:|---:|")
    for job_id, name, toml in jobs:
        method = (re.search(r'method = "(\w+)"', toml) or [None, "lora"])[1]
        strategy = (re.search(r'strategy = "([\w-]+)"', toml) or [None, "fedavg"])[1]
        rounds = int((re.search(r"rounds = (\d+)", toml) or [None, "3"])[1])
        worst, at = 0.0, 0
        for path in glob.glob(os.path.join(state, "blobs", job_id, "update-r*.safetensors")):
            r = int(re.search(r"update-r(\d+)a", path).group(1))
            g_path = os.path.join(state, "blobs", job_id, "global-v%d.safetensors" % (r - 1))
            if r > rounds or not os.path.exists(g_path):
                continue  # local-only baselines (round rounds + 1) are not bounded
            u, g = read_arrays(path), read_arrays(g_path)
            names = [k for k in g if k in u]
            delta = np.sqrt(sum(((u[k].astype(np.float64) - g[k]) ** 2).sum() for k in names))
            norm = np.sqrt(sum((g[k].astype(np.float64) ** 2).sum() for k in names))
            values = sum(g[k].size for k in names)
            share = delta / (ratio * max(norm, rms * np.sqrt(values)))
            if share > worst:
                worst, at = share, r
        print("| %s | %s | %s | %.2f | %d |" % (name, method, strategy, worst, at))


if __name__ == "__main__":
    main()
