#!/usr/bin/python3
"""Routed experts on expert_shard actors (`[parallel] experts = "shards"`, issue 15): tiny on 3
node processes must end with the weights and loss lines of the in-worker run, bit for bit,
with validation on; again with the slots re-placed by the load every 4 steps ([eplb]); again
through a scale 3 → 4 → 2; and again when a node (its worker and its shard) is killed mid-run and the survivors recover. `troupe train` (one process, no shards) refuses the setting.

  experts_test.py --troupe build/troupe --work DIR [--steps 12]
"""
import argparse
import os
import shutil
import signal
import subprocess

from launch_checks import (TINY, Job, check, children, events, failures, log_lines, losses, scaled,
                           steps_done, wait_for, weights_hash)

SHARDS = ["--set", "parallel.experts=shards"]


def common(steps):
    return ["--config", TINY, "--steps", str(steps), "--set", "train.eval_every=5"]


def served(run_dir):
    """Node logs' lines where a shard answered its first request of an epoch."""
    return log_lines(run_dir, "expert_shard", "serving")


def in_worker(troupe, work, steps):
    run_dir = os.path.join(work, "worker")
    res = subprocess.run([troupe, "launch", *common(steps), "--nodes", "3", "--run-dir", run_dir],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=scaled(600))
    if res.returncode != 0 or not weights_hash(res.stdout):
        raise SystemExit(f"the in-worker run failed ({res.returncode}): {res.stderr[-2000:]}")
    return weights_hash(res.stdout), losses(run_dir)


def on_shards(troupe, work, steps, want):
    run_dir = os.path.join(work, "shards")
    job = Job([troupe, "launch", *common(steps), "--nodes", "3", "--run-dir", run_dir, *SHARDS])
    out, err = job.communicate(timeout=scaled(600))
    h = weights_hash(out)
    check("3 nodes, experts on shards: same weights as in the workers",
          job.returncode == 0 and h == want[0],
          f"status {job.returncode}, {h} vs {want[0]}: {err.strip().splitlines()[-3:]}")
    check("  same loss lines (loss, grad_norm, val_loss: every bit)", losses(run_dir) == want[1],
          f"{len(losses(run_dir))} lines vs {len(want[1])}")
    views = [e["text"] for e in events(run_dir) if e["event"] == "view"]
    check("  the view placed the shards", views and "and an expert shard" in views[-1], views)
    check("  all three shards answered requests", len(served(run_dir)) == 3, served(run_dir))


def rebalanced(troupe, work, steps, want):
    run_dir = os.path.join(work, "shards-eplb")
    job = Job([troupe, "launch", *common(steps), "--nodes", "3", "--run-dir", run_dir, *SHARDS,
               "--set", "eplb.rebalance_every_steps=4", "--set", "eplb.window_steps=3"])
    out, err = job.communicate(timeout=scaled(600))
    h = weights_hash(out)
    check("a rebalance every 4 steps: same weights", job.returncode == 0 and h == want[0],
          f"status {job.returncode}, {h} vs {want[0]}: {err.strip().splitlines()[-3:]}")
    check("  same loss lines", losses(run_dir) == want[1],
          f"{len(losses(run_dir))} lines vs {len(want[1])}")
    rb = [e for e in events(run_dir) if e["event"] == "rebalance"]
    want_steps = [s for s in range(4, steps, 4)]
    check(f"  rebalanced before steps {want_steps}, never less balanced than before",
          [e["step"] for e in rb] == want_steps and
          all(e["imbalance_after"] <= e["imbalance_before"] for e in rb),
          [e["text"] for e in rb])
    check("  each step waited for its placement, which the event carries with its loads",
          all(e["pause_ms"] >= e["compute_ms"] >= 0 and len(e["loads"]) == 3 for e in rb),
          [(e["pause_ms"], e["compute_ms"]) for e in rb])


def rescaled(troupe, work, steps, want):
    """Scale 3 → 4 → 2 while the slots are re-placed every 3 steps in 2 node groups: each view
    gets shards of its own size, the newcomers' shards included, node groups where 2 divides
    the shards (4 and 2, not 3), and the bits stay."""
    run_dir = os.path.join(work, "shards-scale")
    job = Job([troupe, "launch", *common(steps), "--nodes", "3", "--max-nodes", "4",
               "--run-dir", run_dir, *SHARDS, "--set", "eplb.rebalance_every_steps=3",
               "--set", "eplb.window_steps=2", "--set", "parallel.node_groups=2",
               "--scale-at", "4:4", "--scale-at", "8:2"])
    out, err = job.communicate(timeout=scaled(600))
    h = weights_hash(out)
    reshapes = [e["text"] for e in events(run_dir) if e["event"] == "reshape"]
    check("scaled 3 -> 4 -> 2 with rebalances: same weights",
          job.returncode == 0 and h == want[0] and len(reshapes) == 2,
          f"status {job.returncode}, {h} vs {want[0]}, {reshapes}: {err.strip().splitlines()[-2:]}")
    rb = [e for e in events(run_dir) if e["event"] == "rebalance"]
    slots = [e["slots"] for e in rb]
    check("  rebalanced in each view, slots sized to it", 12 in slots and 10 in slots, slots)
    groups = {(e["shards"], e["node_groups"]) for e in rb}
    check("  in 2 node groups where 2 divides the shards, else 1",
          all(g == (2 if w % 2 == 0 else 1) for w, g in groups) and (4, 2) in groups, groups)


def lose_a_node(troupe, work, steps, want):
    run_dir = os.path.join(work, "shards-kill")
    job = Job([troupe, "launch", *common(steps), "--nodes", "3", "--run-dir", run_dir, *SHARDS],
              start_new_session=True)
    wait_for(lambda: steps_done(run_dir) >= 3, 300, "three steps", job)
    nodes = children(job.pid)
    check("kill: three node processes", len(nodes) == 3, f"children {nodes}")
    os.kill(nodes[1], signal.SIGKILL)  # worker.1 and expert_shard.1
    try:
        out, err = job.communicate(timeout=scaled(300))
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        check("kill: the job ends", False, f"still running 300 s after the kill:\n{job.tail()}")
        return
    h = weights_hash(out)
    check("a node with a worker and an expert shard killed: recovered, same weights",
          job.returncode == 0 and "1 lost, recovered" in out and h == want[0],
          f"status {job.returncode}, {h} vs {want[0]}: {(out + err).strip().splitlines()[-3:]}")
    check("  same loss lines", losses(run_dir) == want[1],
          f"{len(losses(run_dir))} lines vs {len(want[1])}")
    check("  the survivors' shards served the new epoch",
          len({l.split("epoch ")[1].split()[0] for l in served(run_dir)}) >= 2, served(run_dir))


def one_process_refuses(troupe, work):
    res = subprocess.run([troupe, "train", *common(2), "--run-dir", os.path.join(work, "train"),
                          *SHARDS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=scaled(60))
    check("troupe train refuses experts on shards, naming the key",
          res.returncode == 2 and "parallel.experts" in res.stderr and "troupe launch" in res.stderr,
          f"status {res.returncode}: {res.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=12)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    want = in_worker(a.troupe, a.work, a.steps)
    print(f"in-worker run: weights {want[0]}, {len(want[1])} loss lines", flush=True)
    on_shards(a.troupe, a.work, a.steps, want)
    rebalanced(a.troupe, a.work, a.steps, want)
    rescaled(a.troupe, a.work, a.steps, want)
    lose_a_node(a.troupe, a.work, a.steps, want)
    one_process_refuses(a.troupe, a.work)
    if failures:
        raise SystemExit("FAILED:\n" + "\n".join(failures))
    print("ok")


if __name__ == "__main__":
    main()
