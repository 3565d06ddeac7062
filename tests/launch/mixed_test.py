#!/usr/bin/python3
"""Mixed-length mode across node processes (issue 17): `troupe launch` of tiny with
data.mode = "mixed" (one row of whole documents per micro-batch, document masking) on 1 and 3
node processes, on 3 with one node killed mid-run (--kill-node-at), and on 2 with the Engram
tables on shards (whose prefetch hashes within documents), must end with the weights hash and
loss lines of a plain `troupe train` of the same job, bit for bit.

  mixed_test.py --troupe build/troupe --work DIR [--steps 6]
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_checks import TINY, check, failures, losses, scaled, weights_hash  # noqa: E402

# 4 micro-batches a step, each one row of 256 tokens holding documents of at most 96. As --set
# flags on tiny.toml itself: the config text and these travel to every node in the Welcome's
# payload (they outgrew its envelope once).
MIXED = ["--set", "data.mode=mixed", "--set", "data.max_doc_tokens=96",
         "--set", "train.batch_size=8", "--set", "train.eval_every=0"]


def job(troupe, cmd, run_dir, steps, extra=()):
    """(weights hash, loss lines) of one finished job; a failed job fails the test."""
    res = subprocess.run([troupe, cmd, "--config", TINY, "--steps", str(steps),
                          "--run-dir", run_dir, *MIXED, *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=scaled(300))
    if res.returncode != 0:
        sys.exit(f"troupe {cmd} {' '.join(extra)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return weights_hash(res.stdout), losses(run_dir), res.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    want_hash, want_losses, _ = job(a.troupe, "train", os.path.join(a.work, "plain"), a.steps)
    check("plain troupe train", want_hash is not None and len(want_losses) == a.steps,
          f"weights {want_hash}, {len(want_losses)} loss lines, losses "
          f"{[round(l['loss'], 4) for l in want_losses]}")
    runs = [("1 node", ["--nodes", "1"]), ("3 nodes", ["--nodes", "3"]),
            ("3 nodes, one killed at step 3", ["--nodes", "3", "--kill-node-at", "3"]),
            ("2 nodes, Engram on 2 shards", ["--nodes", "2", "--set", "engram.placement=shards",
                                             "--set", "engram.shards=2"])]
    for name, extra in runs:
        d = os.path.join(a.work, name.replace(" ", "_").replace(",", ""))
        h, lines, out = job(a.troupe, "launch", d, a.steps, extra)
        check(f"{name}: same weights as troupe train", h == want_hash, f"{h} vs {want_hash}")
        check(f"{name}: same loss lines", lines == want_losses,
              f"{len(lines)} lines vs {len(want_losses)}")
        if "--kill-node-at" in extra:
            check(f"{name}: the loss was recovered from", "1 lost, recovered" in out,
                  out.strip().splitlines()[-1:])
    if failures:
        sys.exit("mixed_test: " + "; ".join(failures))
    print("mixed_test: OK")


if __name__ == "__main__":
    main()
