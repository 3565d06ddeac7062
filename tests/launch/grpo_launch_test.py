#!/usr/bin/python3
"""GRPO under `troupe launch` with rollout actors (issue 17, docs/grpo.md): from the weights of
a short supervised run, the same GRPO job ends with the same weights, bit for bit, when it is
  - trained in one process (`troupe train`),
  - launched on 1 worker node with 1 rollout node,
  - launched on 3 worker nodes with 3 rollout nodes, one of them killed after step 2 (its
    prompts go to the others),
  - launched on 3 worker nodes with 2 rollout nodes, a worker node killed after step 3 (the
    view changes while groups and streamed weights are on their way: none is dropped),
  - launched on 2 worker nodes with 2 rollout nodes and grpo.overlap = false (generate, then
    train).
The launched runs write the mean reward on every metrics line and progress line, and the
kill is an event. A bad --kill-rollout-at is one line with status 2.

  grpo_launch_test.py --troupe build/troupe --work DIR
"""
import argparse
import json
import os
import shutil
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_checks import check, events, expect_error, failures, run, weights_hash  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
SFT = os.path.join(CONFIGS, "arith-sft.toml")
GRPO = os.path.join(CONFIGS, "grpo-tiny.toml")
SFT_STEPS = 150  # enough for a few right answers among the samples: advantages that are not 0
STEPS = 8


def ok_run(args, what):
    res = run(args)
    if res.returncode != 0:
        sys.exit(f"{what} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def launch(troupe, work, name, init, nodes, rollouts, *more):
    d = os.path.join(work, name)
    res = ok_run([troupe, "launch", "--config", GRPO, "--run-dir", d, "--nodes", str(nodes),
                  "--rollout-nodes", str(rollouts), "--steps", str(STEPS), "--set",
                  f"grpo.init_weights={init}", "--set", "train.eval_every=0", *more],
                 f"launch {name}")
    with open(os.path.join(d, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return weights_hash(res.stdout), lines, res, d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    ok_run([a.troupe, "train", "--config", SFT, "--run-dir", os.path.join(a.work, "sft"),
            "--steps", str(SFT_STEPS), "--set", "train.eval_every=0"], "the supervised run")
    init = os.path.join(a.work, "sft", "weights.safetensors")
    one = ok_run([a.troupe, "train", "--config", GRPO, "--run-dir", os.path.join(a.work, "train"),
                  "--steps", str(STEPS), "--set", f"grpo.init_weights={init}",
                  "--set", "train.eval_every=0"], "troupe train")
    want = weights_hash(one.stdout)
    h1, m1, r1, _ = launch(a.troupe, a.work, "w1-r1", init, 1, 1)
    check("1 worker node, 1 rollout node: troupe train's weights", h1 == want, f"{h1} vs {want}")
    check("a reward on every metrics line", len(m1) == STEPS and
          all(0 <= j.get("reward", -1) <= 1 for j in m1), str([j.get("reward") for j in m1]))
    check("some samples were right", any(j["reward"] > 0 for j in m1), str(m1[:1]))
    check("the progress lines show the reward", r1.stderr.count(" reward ") >= 1, r1.stderr[-500:])
    h3, _, r3, d3 = launch(a.troupe, a.work, "w3-r3-kill", init, 3, 3, "--kill-rollout-at", "2")
    check("3 worker nodes, 3 rollout nodes, one killed: the same weights", h3 == want,
          f"{h3} vs {want}")
    lost = [e for e in events(d3) if e.get("kind") == "rollout_lost"]
    check("the kill is a rollout_lost event", len(lost) == 1 and "[chaos] kill -9" in r3.stderr,
          str(lost)[:300])
    hk, _, rk, _ = launch(a.troupe, a.work, "w3-r2-kill-worker", init, 3, 2, "--kill-node-at", "3")
    check("3 worker nodes, one killed after step 3 (a new epoch while groups are in flight): "
          "the same weights", hk == want and "lost, recovered" in rk.stdout, f"{hk} vs {want}")
    h2, _, _, _ = launch(a.troupe, a.work, "w2-r2-sync", init, 2, 2, "--set", "grpo.overlap=false")
    check("generate, then train (grpo.overlap = false): the same weights", h2 == want,
          f"{h2} vs {want}")
    expect_error("--kill-rollout-at with one rollout node",
                 [a.troupe, "launch", "--config", GRPO, "--run-dir", os.path.join(a.work, "bad"),
                  "--rollout-nodes", "1", "--kill-rollout-at", "1"],
                 "--kill-rollout-at", "--rollout-nodes 2 or more")
    if failures:
        sys.exit("grpo_launch_test: " + "; ".join(failures))
    print(f"grpo_launch_test: ok (weights {want})")


if __name__ == "__main__":
    main()
