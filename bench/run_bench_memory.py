#!/usr/bin/env python3
"""make bench-memory (issue 18): peak RSS and step time of each [memory] setting on a config
(default configs/small.toml), by alternating runs in one go, next to recompute = "none" as
ratios; and every run's weights hash, which must be one (recomputation changes no bit).

Then FP8 next to FP32 (FP8=0 skips it), alternating the same way, as a step-time ratio.
Each run is `troupe train --steps STEPS` (default 8) on THREADS (default 2) threads; its step
time is the median over the steps after WARMUP (2) of the per-step tokens/s in metrics.jsonl;
its peak RSS is the summary's (getrusage). ROUNDS (default 3) alternations; medians of those.
Usage: run_bench_memory.py BUILD_DIR
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
CONFIG = os.environ.get("CONFIG", os.path.join(ROOT, "configs", "small.toml"))
STEPS = int(os.environ.get("STEPS", "8"))
WARMUP = int(os.environ.get("WARMUP", "2"))
THREADS = int(os.environ.get("THREADS", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
MODES = [("none", []), ("attention", ["memory.recompute=attention"]),
         ("block", ["memory.recompute=block"])]
extra = os.environ.get("MODES_EXTRA", "")  # e.g. "block+offload:memory.recompute=block,..."
for item in filter(None, extra.split(";")):
    name, sets = item.split(":", 1)
    MODES.append((name, sets.split(",")))


def run(sets):
    with tempfile.TemporaryDirectory() as d:
        cmd = [os.path.join(BUILD, "troupe"), "train", "--config", CONFIG, "--run-dir", d,
               "--steps", str(STEPS), "--set", "train.eval_every=0", "--set",
               f"train.threads={THREADS}", "--set", "data.val_rows_max=1"]
        for s in sets:
            cmd += ["--set", s]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rss = float(re.search(r"peak RSS ([0-9.]+) MiB \(training\)", out).group(1))
        held = float(re.search(r"held for backward ([0-9.]+) MiB", out).group(1))
        weights = re.search(r"weights ([0-9a-f]{16})", out).group(1)
        tps = [json.loads(l)["tokens_per_s"] for l in open(os.path.join(d, "metrics.jsonl"))]
        return rss, held, statistics.median(tps[WARMUP:]), weights


def main():
    results = {name: [] for name, _ in MODES}
    for r in range(ROUNDS):
        for name, sets in MODES:
            results[name].append(run(sets))
            rss, held, tps, w = results[name][-1]
            print(f"round {r + 1}/{ROUNDS} {name:>16}: peak RSS {rss:7.1f} MiB  held/thread "
                  f"{held:6.1f} MiB  {tps:7.0f} tok/s  weights {w}", flush=True)
    base_rss = statistics.median(x[0] for x in results["none"])
    base_tps = statistics.median(x[2] for x in results["none"])
    print(f"\n{os.path.basename(CONFIG)}, {STEPS} steps, {THREADS} threads, {ROUNDS} rounds "
          "(medians)")
    print(f"{'memory setting':>16}  {'peak RSS':>10}  {'vs none':>8}  {'tok/s':>7}  "
          f"{'step time vs none':>17}")
    hashes = set()
    for name, _ in MODES:
        rss = statistics.median(x[0] for x in results[name])
        tps = statistics.median(x[2] for x in results[name])
        hashes |= {x[3] for x in results[name]}
        print(f"{name:>16}  {rss:7.1f} MiB  {rss / base_rss:7.3f}x  {tps:7.0f}  "
              f"{base_tps / tps:16.3f}x")
    same = len(hashes) == 1
    print(f"weights: {'one hash, ' + hashes.pop() if same else 'DIFFER: ' + str(hashes)}")
    if os.environ.get("FP8", "1") != "0":
        fp8(ROUNDS)
    return 0 if same else 1


def fp8(rounds):
    """FP8 (emulated exactly, each weight quantised once per step and thread) next to FP32,
    recompute = "none", alternating runs: issue 18's <= 1.3x."""
    tps = {"fp32": [], "fp8": []}
    for r in range(rounds):
        for name, sets in (("fp32", []), ("fp8", ["fp8.enabled=true"])):
            tps[name].append(run(sets)[2])
            print(f"round {r + 1}/{rounds} {name:>16}: {tps[name][-1]:7.0f} tok/s", flush=True)
    a, b = statistics.median(tps["fp32"]), statistics.median(tps["fp8"])
    print(f"FP8 step time / FP32 step time: {a / b:.3f}x  (FP32 {a:.0f} tok/s, FP8 {b:.0f} tok/s; "
          "issue 18: <= 1.3x)")


if __name__ == "__main__":
    sys.exit(main())
