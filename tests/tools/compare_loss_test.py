#!/usr/bin/env python3
"""tools/compare_loss.py on synthetic runs whose differences are known."""
import json
import os
import re
import subprocess
import sys
import tempfile

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                    "compare_loss.py")
failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))
    failures += 0 if ok else 1


def write_run(root, name, scale, val_scale=1.0, steps=200):
    d = os.path.join(root, name)
    os.makedirs(d)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for s in range(steps):
            r = {"step": s, "loss": scale * (3.0 - s / 200)}
            if (s + 1) % 100 == 0:
                r["val_loss"] = val_scale * 2.0
            f.write(json.dumps(r) + "\n")
    return d


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as t:
    base = write_run(t, "base", 1.0)
    up = write_run(t, "up", 1.01, 1.02)      # +1% loss everywhere, +2% val
    down = write_run(t, "down", 0.995)       # -0.5%
    r = run("--base", base, "--run", f"up={up}", "--anchor", f"down={down}", "--step", "199")
    check("base/run/anchor: exits 0", r.returncode == 0, r.stderr)
    line = next((l for l in r.stdout.splitlines() if l.startswith("up (run)")), "")
    check("the run's step, EMA, max EMA and val differences", re.findall(r"[+-]\d+\.\d+%", line)
          == ["+1.00%", "+1.00%", "+1.00%", "+2.00%"], line)
    check("the ratio to the anchors' largest", "at step: |1.00%| vs the anchors' largest 0.50%: "
          "ratio 2.00" in r.stdout, r.stdout)
    r = run("--pair", f"{base}:{up}", "--pair", f"{base}:{down}", "--step", "199")
    check("pairs: the mean over pairs", "at step: mean +0.25%" in r.stdout, r.stdout)
    check("pairs: the spread, and the bound's default", "at step: mean +0.25%, standard "
          "deviation 1.06% over 2 pairs (standard error of the mean 0.75%);" in r.stdout and
          "outside ±0.5%" in r.stdout, r.stdout)
    for bound, want in (("0.6", "1 of 2 outside ±0.6%"), ("0.4", "2 of 2 outside ±0.4%")):
        r = run("--pair", f"{base}:{up}", "--pair", f"{base}:{down}", "--step", "199",
                "--bound", bound)
        check(f"pairs: --bound {bound}", "at step: mean +0.25%" in r.stdout and want in r.stdout,
              r.stdout)
    r = run("--base", base, "--run", f"up={os.path.join(t, 'missing')}")
    check("a missing run: a clear error", r.returncode != 0 and "cannot read" in r.stderr,
          r.stderr.strip())
    r = run("--base", base, "--run", "no-equals-sign")
    check("a bad --run: a clear error", r.returncode != 0 and "NAME=DIR" in r.stderr,
          r.stderr.strip())

sys.exit(1 if failures else 0)
