#!/usr/bin/python3
"""The determinism contract across node processes (issue 5): `troupe launch` trains tiny
for STEPS steps with 1, 2, 3 and 4 node processes; every run must print the same weights
hash and write the same loss lines (every bit: loss, ce, mtp, bal, grad_norm, val_loss),
and they must equal a plain `troupe train` run of the same job.

  dp_test.py --troupe build/troupe --work DIR [--steps 50] [--nodes 1,2,3,4]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
from launch_checks import TINY, scaled  # noqa: E402

FIELDS = ("step", "loss", "ce", "mtp", "bal", "lr", "grad_norm", "val_loss")


def run(args, timeout):
    res = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=scaled(timeout))
    return res


def loss_lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: j[k] for k in FIELDS if k in j} for j in map(json.loads, f)]


def weights_hash(stdout):
    m = re.search(r"weights ([0-9a-f]{16})", stdout)
    return m.group(1) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--nodes", default="1,2,3,4")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    common = ["--config", TINY, "--steps", str(a.steps), "--set", "train.eval_every=25"]
    runs = {}
    res = run([a.troupe, "train", *common, "--run-dir", os.path.join(a.work, "plain")], 900)
    if res.returncode != 0:
        sys.exit(f"troupe train failed ({res.returncode}):\n{res.stderr}")
    runs["plain process"] = (weights_hash(res.stdout), loss_lines(os.path.join(a.work, "plain")))
    for n in [int(x) for x in a.nodes.split(",")]:
        d = os.path.join(a.work, f"nodes{n}")
        res = run([a.troupe, "launch", *common, "--nodes", str(n), "--run-dir", d], 900)
        if res.returncode != 0:
            logs = ""
            for i in range(1, n + 1):
                p = os.path.join(d, f"node-{i}.log")
                if os.path.exists(p):
                    logs += f"--- node-{i}.log\n" + open(p).read()
            sys.exit(f"troupe launch --nodes {n} failed ({res.returncode}):\n{res.stderr}\n{logs}")
        runs[f"{n} node processes"] = (weights_hash(res.stdout), loss_lines(d))
    ref_name, (ref_hash, ref_lines) = next(iter(runs.items()))
    bad = []
    # The weights files too (dense weights and Engram tables, as `troupe export` reads them).
    with open(os.path.join(a.work, "plain", "weights.safetensors"), "rb") as f:
        ref_file = f.read()
    for n in [int(x) for x in a.nodes.split(",")]:
        with open(os.path.join(a.work, f"nodes{n}", "weights.safetensors"), "rb") as f:
            if f.read() != ref_file:
                bad.append(f"{n} node processes: weights.safetensors differs from the plain run's")
    for name, (h, lines) in runs.items():
        print(f"{name:18s} weights {h}  {len(lines)} loss lines  final loss "
              f"{lines[-1]['loss'] if lines else None!r}")
        if h is None or h != ref_hash:
            bad.append(f"{name}: weights {h} != {ref_hash} ({ref_name})")
        if len(lines) != a.steps:
            bad.append(f"{name}: {len(lines)} loss lines, wanted {a.steps}")
        for x, y in zip(lines, ref_lines):
            if x != y:
                bad.append(f"{name}: step {x['step']} differs from {ref_name}: {x} vs {y}")
                break
    if bad:
        sys.exit("FAILED:\n" + "\n".join(bad))
    print(f"ok: {len(runs)} runs, bitwise identical weights, weights files and loss lines")


if __name__ == "__main__":
    main()
