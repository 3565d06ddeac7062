#!/usr/bin/python3
"""make bench-eplb, online part: the EPLB rebalancer in a running job on skewed routing.

Runs configs/skewed-experts.toml (tiny whose gate bias favours experts 0, 1 and 4 and is never
corrected; routed experts on expert_shard actors) on NODES node processes twice, in the same
run: once with the uniform placement all job long, once with a rebalance every EVERY steps on
the last WINDOW steps' token counts. Prints, for each rebalance:
  - the max/mean slot load per shard (mean over MoE layers) of the window's measured counts
    under the uniform placement (the job without rebalancing), under the placement in use
    (the previous rebalance's), and under the new one;
  - the same loads placed by DeepSeek's published eplb.py (tests/reference/eplb_reference.py,
    under torch) with the same slots, groups, node groups and shards, and its balance;
  - the pause: the rebalance's own time on the coordinator, and the rebalanced step's wall
    time against the median step.
The measured lowering: for every window that ran under a rebalanced placement (each
rebalance's but the first), its counts under that placement next to the same counts under the
uniform one. The routing drifts as the gate trains, so a placement made from older counts
is what the job really ran with. Both runs must end with the same weights.

  run_bench_eplb_online.py BUILD_DIR
  env: NODES (3) STEPS (40) EVERY (5) WINDOW (3) CONFIG (configs/skewed-experts.toml)
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import torch

from run_bench_eplb import ROOT, balance, eplb_reference  # the offline part's (bench/)


def launch(troupe, config, run_dir, nodes, steps, sets):
    args = [troupe, "launch", "--config", config, "--nodes", str(nodes), "--steps", str(steps),
            "--run-dir", run_dir]
    for s in sets:
        args += ["--set", s]
    res = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         check=False)
    h = re.search(r"weights ([0-9a-f]{16})", res.stdout)
    if res.returncode != 0 or not h:
        sys.stderr.write(res.stderr[-3000:])
        raise SystemExit(f"bench-eplb: `{' '.join(args)}` failed (status {res.returncode})")
    return h.group(1)


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_wall_ms(run_dir):
    """{step: ms from the previous train step's metrics row to this one's}."""
    rows = sorted(jsonl(os.path.join(run_dir, "metrics.jsonl")), key=lambda r: r["step"])
    return {b["step"]: b["unix_ms"] - a["unix_ms"] for a, b in zip(rows, rows[1:])}


def published(ev):
    """eplb.py's placement of the event's loads, and its balance."""
    weight = torch.tensor(ev["loads"], dtype=torch.float64)
    phy2log, _, logcnt = eplb_reference.rebalance_experts(
        weight, ev["slots"], ev["expert_groups"], ev["node_groups"], ev["shards"])
    return balance(ev["loads"], phy2log.tolist(), logcnt.tolist(), ev["shards"])


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    troupe = os.path.join(build, "troupe")
    nodes, steps = int(os.environ.get("NODES", "3")), int(os.environ.get("STEPS", "40"))
    every, window = int(os.environ.get("EVERY", "5")), int(os.environ.get("WINDOW", "3"))
    config = os.environ.get("CONFIG", os.path.join(ROOT, "configs", "skewed-experts.toml"))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "uniform"), os.path.join(tmp, "rebalanced")
        h_a = launch(troupe, config, a, nodes, steps, ["eplb.rebalance_every_steps=0"])
        h_b = launch(troupe, config, b, nodes, steps, [f"eplb.rebalance_every_steps={every}",
                                                       f"eplb.window_steps={window}"])
        evs = [e for e in jsonl(os.path.join(b, "events.jsonl")) if e.get("event") == "rebalance"]
        wall = step_wall_ms(b)
        tps = [statistics.median(r["tokens_per_s"] for r in jsonl(os.path.join(d, "metrics.jsonl"))
                                 if r["step"] >= 5) for d in (a, b)]
    if not evs:
        raise SystemExit("bench-eplb: the rebalanced run logged no rebalance event")
    median_ms = statistics.median(v for s, v in wall.items() if s % every != 0)
    print(f"bench-eplb (online): {os.path.basename(config)}, {nodes} node processes, {steps} steps,"
          f" a rebalance every {every} steps on {window} steps' counts, load "
          f"{os.getloadavg()[0]:.1f}")
    print("  max/mean slot load per shard (mean over MoE layers) of each window's counts under")
    print(f"  {'step':>4}  {'uniform':>7}  {'in use':>7}  {'new':>7}  {'eplb.py':>7}  "
          f"{'placing':>8}  {'waited':>7}  {'step wall':>9}  {'moved':>13}")
    ok = h_a == h_b
    for ev in evs:
        ref = published(ev)
        ok = ok and ev["imbalance_after"] <= ref + 1e-9
        s = ev["step"]
        print(f"  {s:>4}  {ev['imbalance_uniform']:7.3f}  {ev['imbalance_before']:7.3f}  "
              f"{ev['imbalance_after']:7.3f}  {ref:7.3f}  {ev['compute_ms']:6.2f}ms  "
              f"{ev['pause_ms']:5.2f}ms  {wall.get(s, float('nan')):7.0f}ms  "
              f"{ev.get('moved_slots', 0):3d} slots {ev.get('moved_bytes', 0) / 2**20:5.2f} MiB")
    ran = evs[1:]  # windows that ran under a rebalanced placement
    print(f"  shape: {evs[0]['slots']} slots on {evs[0]['shards']} shards, "
          f"{evs[0]['expert_groups']} expert groups, {evs[0]['node_groups']} node group(s); "
          f"median step {median_ms:.0f} ms; 'placing' is the rebalancer's time, 'waited' the "
          f"step's")
    if ran:
        uni = statistics.mean(e["imbalance_uniform"] for e in ran)
        used = statistics.mean(e["imbalance_before"] for e in ran)
        print(f"  measured: {len(ran)} windows that ran rebalanced, mean {uni:.3f} under the uniform"
              f" placement, {used:.3f} under the placements in use ({100 * (uni - used) / uni:.1f}%"
              f" lower)")
        ok = ok and used < uni
    print(f"  tokens/s: uniform {tps[0]:.0f}, rebalanced {tps[1]:.0f} (ratio {tps[1] / tps[0]:.3f});"
          f" weights {h_a} and {h_b} ({'the same' if h_a == h_b else 'DIFFERENT'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
