#!/usr/bin/env python3
"""mHC (n = 4) next to residual = "plain" (issue 18): step time by alternating runs, next to
mHC's share of the step's FLOPs, on tiny and small (Engram off, as in make bench).

Each run is `troupe train --steps STEPS` on THREADS threads (default 1) for each of CONFIGS
(default "tiny small"); its tokens/s is the median of the per-step tokens/s after 2 warm-up
steps. ROUNDS (default 5) rounds each run plain and mHC, in alternating order. The overhead
is the median over the rounds of plain / mHC − 1 (mHC step time / plain step time − 1),
printed with its range. mHC's FLOPs count every operation (`troupe dev flops`,
model/flops.h), the rest of the step its matmuls; the share is mHC FLOPs / all the mHC
step's FLOPs, and overhead / share has the bound 1.3.
Usage: run_bench_mhc.py BUILD_DIR
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
THREADS = int(os.environ.get("THREADS", "1"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
CONFIGS = os.environ.get("CONFIGS", "tiny small").split()
# Each run's median is over its steps after the first 2: fewer than 8 measured steps of small
# swung the overhead by ±5 points on a 2-core machine.
STEPS = {"tiny": int(os.environ.get("STEPS_TINY", "16")),
         "small": int(os.environ.get("STEPS_SMALL", "10"))}
TROUPE = os.path.join(BUILD, "troupe")


def config_without_engram(name, d):
    path = os.path.join(d, name + ".toml")
    text = open(os.path.join(ROOT, "configs", name + ".toml")).read()
    open(path, "w").write(re.sub(r"(?m)^engram_layers *=.*$", "engram_layers = []", text))
    return path


def tokens_per_s(config, residual, steps):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([TROUPE, "train", "--config", config, "--run-dir", d, "--steps", str(steps),
                        "--set", "train.eval_every=0", "--set", f"train.threads={THREADS}",
                        "--set", "data.val_rows_max=1", "--set", f"model.residual={residual}"],
                       check=True, capture_output=True)
        v = [json.loads(line)["tokens_per_s"] for line in open(os.path.join(d, "metrics.jsonl"))]
        return statistics.median(v[2:])


def main():
    with tempfile.TemporaryDirectory() as d:
        for name in CONFIGS:
            config = config_without_engram(name, d)
            flops = json.loads(subprocess.run([TROUPE, "dev", "flops", "--config", config],
                                              check=True, capture_output=True, text=True).stdout)
            share = flops["mhc_flops_per_token"] / (flops["plain_flops_per_token"] +
                                                    flops["mhc_flops_per_token"])
            runs = {"plain": [], "mhc": []}
            for r in range(ROUNDS):  # ABBA: a drift of the machine's speed cancels in pairs
                order = ("plain", "mhc") if r % 2 == 0 else ("mhc", "plain")
                for residual in order:
                    runs[residual].append(tokens_per_s(config, residual, STEPS[name]))
            plain, mhc = statistics.median(runs["plain"]), statistics.median(runs["mhc"])
            per_round = sorted(p / m - 1 for p, m in zip(runs["plain"], runs["mhc"]))
            overhead = statistics.median(per_round)
            print(f"{name}: plain {plain:.0f} tok/s  mHC {mhc:.0f} tok/s  ({THREADS} thread(s), "
                  f"{ROUNDS} alternations, medians)")
            print(f"{name}: mHC step-time overhead {100 * overhead:.1f}% (median of the rounds; "
                  f"they ranged {100 * per_round[0]:.1f}% to {100 * per_round[-1]:.1f}%)   mHC "
                  f"share of the step's FLOPs {100 * share:.1f}%   overhead / share "
                  f"{overhead / share:.2f} (bound 1.30)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
