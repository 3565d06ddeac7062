#!/usr/bin/python3
"""Pulled scheduling across node processes (issue 17, parallel.schedule = "pull"): workers
take a step's pieces from the coordinator one at a time. `troupe launch` of tiny (16
micro-batches a step) on 3 node processes, with worker 1 computing 3x slower
(TROUPE_SLOW_COMPUTE), with a node killed mid-run, and on 2 with the Engram tables on shards,
must end with the weights hash and loss lines of a plain `troupe train` of the same job, bit
for bit; the slowed worker must have computed fewer pieces than each of the others (the
"pulled" event), and every step's metrics line carries the workers' idle fraction.

  pull_test.py --troupe build/troupe --work DIR [--steps 5]
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_checks import (TINY, check, events, failures, finish, launch_job, losses,  # noqa: E402
                           scaled, weights_hash)

SETS = ["--set", "train.batch_size=32", "--set", "train.eval_every=0"]
PULL = SETS + ["--set", "parallel.schedule=pull"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    plain = os.path.join(a.work, "plain")
    res = subprocess.run([a.troupe, "train", "--config", TINY, "--steps", str(a.steps),
                          "--run-dir", plain, *SETS], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=scaled(300))
    want, want_losses = weights_hash(res.stdout), losses(plain)
    check("plain troupe train", res.returncode == 0 and want is not None,
          f"status {res.returncode}: {res.stderr[-2000:]}")
    slow = dict(os.environ, TROUPE_SLOW_COMPUTE="worker.1:3")
    runs = [("3 nodes, worker 1 three times slower", 3, [], slow),
            ("3 nodes, one killed at step 2", 3, ["--kill-node-at", "2"], None),
            ("2 nodes, Engram on 2 shards", 2, ["--set", "engram.placement=shards",
                                                "--set", "engram.shards=2"], None)]
    for name, nodes, extra, env in runs:
        d = os.path.join(a.work, name.split(",")[0].replace(" ", "_") + str(len(extra)))
        status, h, out, err = finish(launch_job(a.troupe, d, nodes, a.steps, PULL, extra, env))
        check(f"{name}: ran", status == 0, f"status {status}: {err[-2000:]}")
        check(f"{name}: same weights as troupe train", h == want, f"{h} vs {want}")
        check(f"{name}: same loss lines", losses(d) == want_losses,
              f"{losses(d)[:1]} vs {want_losses[:1]}")
        pulled = [e for e in events(d) if e.get("event") == "pulled"]
        check(f"{name}: the pulled event", len(pulled) == 1, f"{len(pulled)} events")
        if env is slow and pulled:
            by = pulled[0]["pieces"]
            slowed = [n for w, n in by.items() if w.endswith("worker.1")]
            others = [n for w, n in by.items() if not w.endswith("worker.1")]
            check(f"{name}: the slow worker computed fewer pieces",
                  len(slowed) == 1 and others and slowed[0] < min(others), f"{by}")
            with open(os.path.join(d, "metrics.jsonl")) as f:
                idle = [l for l in f if '"idle_fraction"' in l]
            check(f"{name}: every step reports its idle fraction", len(idle) == a.steps,
                  f"{len(idle)} of {a.steps} lines")
    if failures:
        sys.exit("pull_test: " + "; ".join(failures))
    print("pull_test: OK")


if __name__ == "__main__":
    main()
