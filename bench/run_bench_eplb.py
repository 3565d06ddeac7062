#!/usr/bin/python3
"""make bench-eplb-offline: troupe's EPLB placement (train/eplb.h, `troupe eplb`) next to
DeepSeek's published eplb.py under torch (tests/reference/eplb_reference.py), in the same run,
on the shape issue 15 names: 61 layers x 256 experts, R=288, G=8, N=4, P=32, Zipf loads.

Prints, for each: the placement's time (best thread-CPU time per call, one thread each: the
box is shared), troupe's whole command (process start, JSON in and out; best CPU and wall), the
ratio eplb.py / troupe (issue 15 aims at >= 10), and the balances (mean over layers of max/mean
GPU load; 1 is perfect) with the identity placement's before them. This is the offline part of
issue 15's bench-eplb; the online rebalancer's part (imbalance and pause in a running job)
comes with the eplb_rebalancer actor.

  run_bench_eplb.py BUILD_DIR
  run_bench_eplb.py --reference-command LOADS.json    (eplb.py as a command, timed by the above)
  BENCH_EPLB_SEED (1)  loads seed   BENCH_EPLB_ZIPF (1.0)  Zipf exponent   BENCH_EPLB_RUNS (3)
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import eplb_reference  # noqa: E402

LAYERS, EXPERTS, R, G, N, P = 61, 256, 288, 8, 4, 32


def zipf_loads(seed, exponent):
    """Per layer: expert ranks shuffled, load 1e5 / rank^exponent, each times U(0.5, 1.5)."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(LAYERS):
        ranks = rng.permutation(EXPERTS) + 1.0
        out.append([float(v) for v in 1e5 / ranks ** exponent * rng.uniform(0.5, 1.5, EXPERTS)])
    return out


def balance(loads, phy2log, logcnt, gpus=P):
    """Mean over layers of max/mean load per GPU, each replica taking load/replicas."""
    per_layer = []
    for load, p2l, cnt in zip(loads, phy2log, logcnt):
        load, p2l, cnt = np.asarray(load), np.asarray(p2l), np.asarray(cnt)
        gpu = (load[p2l] / cnt[p2l]).reshape(gpus, -1).sum(axis=1)
        per_layer.append(gpu.max() / (load.sum() / gpus))
    return float(np.mean(per_layer))


def best_wall(fn, runs):
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def best_child_cpu(fn, runs):
    """Best user + system CPU time of the child processes that fn runs, and its result."""
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = fn()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return best, result


def best_cpu(fn, runs):
    best = float("inf")
    for _ in range(runs):
        t0 = time.thread_time()
        result = fn()
        best = min(best, time.thread_time() - t0)
    return best, result


def troupe_eplb(troupe, path, policy):
    res = subprocess.run([troupe, "eplb", "--loads", path, "--replicas", str(R), "--groups", str(G),
                          "--nodes", str(N), "--gpus", str(P), "--policy", policy],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"troupe eplb failed: {res.stderr.strip()}")
    return json.loads(res.stdout)


def reference_command(path):
    """eplb.py as a command, the peer of `troupe eplb`: read the JSON, place, print JSON."""
    with open(path) as f:
        weight = torch.tensor(json.load(f)["loads"], dtype=torch.float64)
    phy2log, log2phy, logcnt = eplb_reference.rebalance_experts(weight, R, G, N, P)
    print(json.dumps({"phy2log": phy2log.tolist(), "log2phy": log2phy.tolist(),
                      "logcnt": logcnt.tolist()}))
    return 0


def run_reference_command(path):
    subprocess.run([sys.executable, os.path.abspath(__file__), "--reference-command", path],
                   stdout=subprocess.DEVNULL, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--reference-command":
        return reference_command(sys.argv[2])
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    seed = int(os.environ.get("BENCH_EPLB_SEED", "1"))
    exponent = float(os.environ.get("BENCH_EPLB_ZIPF", "1.0"))
    runs = int(os.environ.get("BENCH_EPLB_RUNS", "3"))
    troupe, bench = os.path.join(build, "troupe"), os.path.join(build, "bench", "bench_eplb")
    torch.set_num_threads(1)
    loads = zipf_loads(seed, exponent)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "loads.json")
        with open(path, "w") as f:
            json.dump({"loads": loads}, f)
        algo = json.loads(subprocess.run([bench, path, str(R), str(G), str(N), str(P)],
                                         stdout=subprocess.PIPE, check=True, text=True).stdout)
        cmd_s, out = best_wall(lambda: troupe_eplb(troupe, path, "improved"), runs)
        cmd_cpu_s, _ = best_child_cpu(lambda: troupe_eplb(troupe, path, "improved"), runs)
        weight = torch.tensor(loads, dtype=torch.float64)
        ref_s, ref = best_cpu(lambda: eplb_reference.rebalance_experts(weight, R, G, N, P), runs)
        pub = troupe_eplb(troupe, path, "published")
        ref_cmd_cpu_s, _ = best_child_cpu(lambda: run_reference_command(path), runs)
    ref_phy2log, _, ref_logcnt = (t.tolist() for t in ref)
    b_ref = balance(loads, ref_phy2log, ref_logcnt)
    b_troupe = balance(loads, out["phy2log"], out["logcnt"])
    same = pub["phy2log"] == ref_phy2log
    print(f"bench-eplb-offline: {LAYERS} layers x {EXPERTS} experts, R={R} G={G} N={N} P={P}, "
          f"Zipf {exponent} loads (seed {seed}), one thread, load {os.getloadavg()[0]:.1f}")
    print(f"  eplb.py (torch {torch.__version__})      {ref_s * 1e3:9.2f} ms   balance {b_ref:.4f}")
    print(f"  troupe, improved placement    {algo['improved_s'] * 1e3:9.2f} ms   balance "
          f"{b_troupe:.4f}   ({ref_s / algo['improved_s']:.0f}x faster)")
    print(f"  troupe, published placement   {algo['published_s'] * 1e3:9.2f} ms   balance "
          f"{algo['balance_published']:.4f}   ({ref_s / algo['published_s']:.0f}x faster; "
          f"phy2log {'equal to' if same else 'DIFFERS from'} eplb.py's)")
    print(f"  eplb.py as a command          {ref_cmd_cpu_s * 1e3:9.2f} ms CPU (python3, import torch, "
          f"JSON in and out)")
    print(f"  troupe eplb, whole command    {cmd_cpu_s * 1e3:9.2f} ms CPU, {cmd_s * 1e3:.2f} ms wall "
          f"(process start, JSON in and out; {ref_cmd_cpu_s / cmd_cpu_s:.0f}x less CPU than the "
          f"eplb.py command, {ref_s / cmd_cpu_s:.1f}x than eplb.py's placement alone)")
    print(f"  balance before (identity)     {out['balance_before']:.4f}; troupe's max/mean "
          f"{100 * (b_ref - b_troupe) / b_ref:.1f}% below eplb.py's")
    ok = abs(b_troupe - algo["balance_improved"]) < 1e-9 and b_troupe <= b_ref + 1e-9 and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
