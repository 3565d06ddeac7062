#!/usr/bin/env python3
"""Compares training runs' loss curves (metrics.jsonl of run directories) with a base run.

For each run: the relative difference to the base at one step (the logged batch loss), of the
curves smoothed by an exponential moving average (EMA, β = 0.98, ~50 steps) at that step, the
largest smoothed difference after the warm-up, and the validation loss at that step. Anchors
are runs that differ from the base by a perturbation too small to matter (the base's noise
floor): the run's figures are printed next to the anchors' largest, as a ratio.

  compare_loss.py --base DIR --run NAME=DIR [--anchor NAME=DIR ...] [--step S]
  compare_loss.py --pair BASE_DIR:RUN_DIR [--pair ...] [--step S] [--bound PCT]

--pair: paired runs (e.g. FP32 and FP8 with the same seed, one pair per seed): each pair's
figures, then their mean and standard deviation over the pairs, and how many pairs differ
by more than --bound percent (default 0.5, SPEC §10's FP8 bound).
"""
import math
import argparse
import json
import os
import sys


def load(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    loss, val = {}, {}
    try:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if "loss" in r:
                    loss[r["step"]] = r["loss"]
                if "val_loss" in r:
                    val[r["step"]] = r["val_loss"]
    except (OSError, ValueError) as e:
        sys.exit(f"compare_loss: cannot read {path}: {e}")
    if not loss:
        sys.exit(f"compare_loss: {path} has no loss lines")
    return loss, val


def ema(curve, beta=0.98):
    out, m = {}, None
    for s in sorted(curve):
        m = curve[s] if m is None else beta * m + (1 - beta) * curve[s]
        out[s] = m
    return out


def figures(base, other, step, skip=100):
    (bl, bv), (ol, ov) = base, other
    if step not in bl or step not in ol:
        sys.exit(f"compare_loss: step {step} is missing from a run")
    be, oe = ema(bl), ema(ol)
    rel = lambda a, b: a / b - 1
    worst = max((abs(rel(oe[s], be[s])) for s in be if s >= skip and s in oe), default=0.0)
    val = rel(ov[step], bv[step]) if step in bv and step in ov else None
    return {"at step": rel(ol[step], bl[step]), "EMA at step": rel(oe[step], be[step]),
            f"max |EMA| from {skip}": worst, "val": val}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base")
    ap.add_argument("--pair", action="append", default=[], help="BASE_DIR:RUN_DIR")
    ap.add_argument("--run", action="append", default=[], help="NAME=DIR")
    ap.add_argument("--anchor", action="append", default=[], help="NAME=DIR")
    ap.add_argument("--step", type=int, default=None, help="0-based step (default: the last)")
    ap.add_argument("--bound", type=float, default=0.5, help="percent, for --pair (0.5)")
    a = ap.parse_args()
    if a.pair:
        return paired(a.pair, a.step, a.bound / 100)
    if not a.base:
        sys.exit("compare_loss: give --base with --run, or --pair")
    base = load(a.base)
    step = a.step if a.step is not None else max(base[0])

    def parse(spec):
        if "=" not in spec:
            sys.exit(f"compare_loss: '{spec}' is not NAME=DIR")
        name, d = spec.split("=", 1)
        return name, figures(base, load(d), step)

    runs, anchors = [parse(r) for r in a.run], [parse(r) for r in a.anchor]
    keys = list(figures(base, base, step).keys())
    pct = lambda v: "    n/a" if v is None else f"{100 * v:+6.2f}%"
    print(f"relative to the base run at step {step + 1} (1-based; logged loss "
          f"{base[0][step]:.4f}):")
    print(f"{'run':<22}" + "".join(f"{k:>22}" for k in keys))
    for name, f in anchors + runs:
        kind = "anchor" if (name, f) in anchors else "run"
        print(f"{name + ' (' + kind + ')':<22}" + "".join(f"{pct(f[k]):>22}" for k in keys))
    for name, f in runs:
        for k in keys:
            floor = max((abs(x[k]) for _, x in anchors if x[k] is not None), default=None)
            if f[k] is None or not floor:
                continue
            print(f"{name}: {k}: |{100 * f[k]:.2f}%| vs the anchors' largest "
                  f"{100 * floor:.2f}%: ratio {abs(f[k]) / floor:.2f}")


def paired(pairs, step, bound):
    rows = []
    for spec in pairs:
        if ":" not in spec:
            sys.exit(f"compare_loss: '{spec}' is not BASE_DIR:RUN_DIR")
        b, r = spec.split(":", 1)
        base = load(b)
        s = step if step is not None else max(base[0])
        rows.append((os.path.basename(r.rstrip("/")), figures(base, load(r), s)))
    keys = list(rows[0][1].keys())
    pct = lambda v: "    n/a" if v is None else f"{100 * v:+6.2f}%"
    print(f"{'pair (run vs its base)':<24}" + "".join(f"{k:>22}" for k in keys))
    for name, f in rows:
        print(f"{name:<24}" + "".join(f"{pct(f[k]):>22}" for k in keys))
    for k in keys:
        v = [f[k] for _, f in rows if f[k] is not None]
        if len(v) < 2:
            continue
        mean = sum(v) / len(v)
        sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
        out = sum(1 for x in v if abs(x) > bound)
        print(f"{k}: mean {100 * mean:+.2f}%, standard deviation {100 * sd:.2f}% over "
              f"{len(v)} pairs (standard error of the mean {100 * sd / math.sqrt(len(v)):.2f}%); "
              f"{out} of {len(v)} outside ±{100 * bound:g}%")


if __name__ == "__main__":
    main()
