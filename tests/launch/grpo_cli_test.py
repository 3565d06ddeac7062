#!/usr/bin/python3
"""`troupe train` with [grpo] enabled (docs/grpo.md): a short supervised run of
configs/arith-sft.toml, then two GRPO runs of configs/grpo-tiny.toml from its weights must
finish, write a metrics line per step with the reward, and end with the same weights hash
(bit for bit), moved away from the supervised weights. Each bad input (troupe launch of a GRPO
job without rollout nodes, rollout nodes for a supervised job, init_weights missing, not weights, of another model, a bad [grpo] key, --resume) is one
line on stderr with status 2, and leaves no run directory behind.

  grpo_cli_test.py --troupe build/troupe --work DIR
"""
import argparse
import json
import os
import shutil
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_checks import check, expect_error, failures, run, weights_hash  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
SFT = os.path.join(CONFIGS, "arith-sft.toml")
GRPO = os.path.join(CONFIGS, "grpo-tiny.toml")
SFT_STEPS = 150  # enough for a few right answers among the samples: advantages that are not 0
GRPO_STEPS = 3
# Fewer prompts than the demo: the test checks the machinery, not the curve.
GRPO_SETS = ["--steps", str(GRPO_STEPS), "--set", "grpo.prompts_per_step=4"]
# The metrics fields two runs must agree on bit for bit (not the times).
FIELDS = ("step", "reward", "loss", "kl", "clipped_fraction", "lr", "grad_norm", "tokens")


def train(troupe, config, run_dir, *more):
    res = run([troupe, "train", "--config", config, "--run-dir", run_dir, *more])
    if res.returncode != 0:
        sys.exit(f"troupe train {config} {' '.join(more)} failed ({res.returncode}):\n"
                 f"{res.stderr[-3000:]}")
    return res


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def grpo_runs(troupe, work, init):
    runs = []
    for name in ("grpo-a", "grpo-b"):
        d = os.path.join(work, name)
        res = train(troupe, GRPO, d, *GRPO_SETS, "--set", f"grpo.init_weights={init}")
        runs.append((weights_hash(res.stdout), metrics(d), res))
    (h1, m1, r1), (h2, m2, _) = runs
    ok = len(m1) == GRPO_STEPS and all(0 <= j["reward"] <= 1 for j in m1)
    check("metrics: a line per step with the reward", ok,
          f"{len(m1)} lines, rewards {[j.get('reward') for j in m1]}")
    check("metrics: loss, kl, grad_norm, lr, tokens_per_s on every line",
          all(all(k in j for k in FIELDS + ("tokens_per_s",)) for j in m1), str(m1[:1]))
    check("the progress lines and the summary name the reward",
          r1.stderr.count("grpo step") == GRPO_STEPS and "reward" in r1.stdout, r1.stdout[:200])
    check("two runs: the same weights hash", h1 is not None and h1 == h2, f"{h1} vs {h2}")
    same = [{k: j[k] for k in FIELDS} for j in m1] == [{k: j[k] for k in FIELDS} for j in m2]
    check("two runs: the same metrics, bit for bit", same, f"{len(m1)} and {len(m2)} lines")
    check("the weights file is written",
          os.path.getsize(os.path.join(work, "grpo-a", "weights.safetensors")) > 0, "")
    return h1, m1


def bad_inputs(troupe, work, init):
    d = os.path.join(work, "bad")
    base = [troupe, "train", "--config", GRPO, "--run-dir", d, "--steps", "1"]
    expect_error("troupe launch of GRPO without rollout nodes",
                 [troupe, "launch", "--config", GRPO, "--run-dir", d, "--nodes", "1"],
                 "grpo.enabled = true", "--rollout-nodes N")
    expect_error("rollout nodes for a supervised job",
                 [troupe, "launch", "--config", SFT, "--run-dir", d, "--nodes", "1",
                  "--rollout-nodes", "1"], "--rollout-nodes", "grpo.enabled = false")
    missing = os.path.join(work, "none.safetensors")
    expect_error("init_weights missing", base + ["--set", f"grpo.init_weights={missing}"],
                 "grpo.init_weights", "none.safetensors", "is not a file")
    expect_error("init_weights not a weights file", base + ["--set", f"grpo.init_weights={SFT}"],
                 "grpo.init_weights", "arith-sft.toml")
    expect_error("init_weights of another model",
                 base + ["--set", f"grpo.init_weights={init}", "--set", "model.n_layers=3"],
                 "holds weights of another model", "model.n_layers (file 2, config 3)")
    expect_error("a bad [grpo] value", base + ["--set", "grpo.group_size=1"],
                 "--set grpo.group_size=1", "must be 2 or more")
    expect_error("an unknown [grpo] key", base + ["--set", "grpo.groupsize=8"],
                 "unknown key 'grpo.groupsize'", "did you mean 'group_size'?")
    expect_error("--resume of a GRPO run", base + ["--set", f"grpo.init_weights={init}",
                                                   "--resume"], "--resume", "not built yet")
    check("no run directory is left by a refused job",
          not os.path.exists(os.path.join(d, "config.json")), d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    sft = train(a.troupe, SFT, os.path.join(a.work, "sft"), "--steps", str(SFT_STEPS),
                "--set", "train.eval_every=0")
    init = os.path.join(a.work, "sft", "weights.safetensors")
    h, m = grpo_runs(a.troupe, a.work, init)
    check("GRPO moved the weights", h != weights_hash(sft.stdout),
          f"{weights_hash(sft.stdout)} -> {h}; rewards {[j['reward'] for j in m]}")
    check("some samples were right: the advantages were not all 0",
          any(j["reward"] > 0 for j in m), str([j["reward"] for j in m]))
    bad_inputs(a.troupe, a.work, init)
    if failures:
        sys.exit("grpo_cli_test: " + "; ".join(failures))
    print("grpo_cli_test: ok")


if __name__ == "__main__":
    main()
