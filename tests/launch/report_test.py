#!/usr/bin/python3
"""`troupe report RUN_DIR` (tools/report.py) on synthetic run directories: the PNGs exist,
are PNG files and carry real plots; events of today's format, of the typed format and of
unknown kinds are all drawn; a real run directory (a 2-node `troupe launch` of 20 steps that
loses a node) is drawn too; bad input (no metrics.jsonl, an empty one, a line that is not
JSON, no matplotlib, no tools/) fails with a message that names the file and the line.

  report_test.py --troupe build/troupe --work DIR
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_BYTES_MIN = 8000  # an empty 900x450 figure is ~5 KB; one with curves and labels is more
failures = []


def check(name, ok, detail=""):
    print(f"{'ok ' if ok else 'BAD'} {name}{': ' + str(detail) if detail else ''}")
    if not ok:
        failures.append(f"{name}: {detail}")


def report(troupe, run_dir, *extra, env=None):
    return subprocess.run([troupe, "report", run_dir, *extra], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def write_lines(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def synthetic_run(run_dir, steps=40):
    """A 2-node run with a kill after step 10, checkpoints every 10 steps, and a resume that
    re-ran steps 20..24 (logged twice)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    metrics = []
    for s in list(range(steps)) + list(range(20, 25)):
        m = {"step": s, "loss": 5.5 * math.exp(-s / 15) + 1.2, "ce": 1.0, "mtp": 0.1,
             "bal": 0.0, "lr": 1e-3, "grad_norm": 1.0,
             "tokens_per_s": 9000.0 + 300 * math.sin(s) - (4000 if s == 11 else 0)}
        if s % 10 == 9:
            m["val_loss"] = m["loss"] + 0.1
        metrics.append(m)
    write_lines(os.path.join(run_dir, "metrics.jsonl"), metrics)
    write_lines(os.path.join(run_dir, "events.jsonl"), [
        {"t_s": 0.4, "event": "start", "text": "2 nodes"},
        {"t_s": 0.9, "event": "view", "text": "epoch 3: 2 nodes, one worker each"},
        {"t_s": 4.1, "event": "checkpoint", "text": "step 10: 2 shards"},
        {"t_s": 4.3, "event": "recover", "text": "node n2 (pid 77) lost at step 10"},
        {"t_s": 5.0, "event": "recovered", "text": "1 workers at step 10 after 0.70 s"},
        # the typed format (kind, node, step, durations in ms) beside today's fields
        {"t_s": 6.0, "kind": "lost", "event": "lost", "node": "n3", "pid": 78, "step": 15,
         "epoch": 5, "reason": "endpoint error", "text": "node n3 lost"},
        {"t_s": 6.5, "kind": "recovered", "step": 15, "epoch": 6, "recovery_ms": 480},
        {"t_s": 7.0, "kind": "scale_up", "node": "n4", "step": 16},
        {"t_s": 8.2, "event": "checkpoint_skipped", "text": "step 20: disk full"},
        {"t_s": 9.0, "event": "something_new", "text": "a kind report.py does not know"},
    ])
    return run_dir


def check_pngs(name, res, out_dir, want):
    listed = res.stdout.split()
    check(f"{name}: exit 0", res.returncode == 0, f"status {res.returncode}: {res.stderr[-400:]}")
    check(f"{name}: prints the PNGs it wrote",
          sorted(os.path.basename(p) for p in listed) == sorted(want), listed)
    for png in want:
        path = os.path.join(out_dir, png)
        data = open(path, "rb").read() if os.path.isfile(path) else b""
        check(f"{name}: {png} is a PNG of {len(data)} bytes",
              data.startswith(PNG_MAGIC) and len(data) >= PNG_BYTES_MIN,
              f"magic {data[:8]!r}, {len(data)} bytes (want >= {PNG_BYTES_MIN})")


def fails_naming(name, res, *needles):
    err = res.stderr.strip()
    ok = res.returncode != 0 and all(n in err for n in needles) and "Traceback" not in err
    check(f"{name}: exit {res.returncode}, says {needles}", ok, err[-300:])


def good_runs(troupe, work):
    run_dir = synthetic_run(os.path.join(work, "run"))
    check_pngs("default --out", report(troupe, run_dir), os.path.join(run_dir, "report"),
               ["loss.png", "throughput.png", "events.png"])
    out = os.path.join(work, "elsewhere", "plots")
    check_pngs("--out DIR", report(troupe, run_dir, "--out", out), out,
               ["loss.png", "throughput.png", "events.png"])
    # A `troupe train` run directory has no events.jsonl: no timeline, still exit 0.
    train_dir = os.path.join(work, "train-run")
    shutil.rmtree(train_dir, ignore_errors=True)
    os.makedirs(train_dir)
    shutil.copy(os.path.join(run_dir, "metrics.jsonl"), train_dir)
    res = report(troupe, train_dir)
    check_pngs("no events.jsonl", res, os.path.join(train_dir, "report"),
               ["loss.png", "throughput.png"])
    check("no events.jsonl: says so", "no events.jsonl" in res.stderr, res.stderr.strip())


def launched_run(troupe, work):
    """A real run directory: 2 node processes, 20 steps, one killed (-9) after step 8."""
    run_dir = os.path.join(work, "launched")
    shutil.rmtree(run_dir, ignore_errors=True)
    tiny = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs",
                        "tiny.toml")
    r = subprocess.run([troupe, "launch", "--config", tiny, "--nodes", "2", "--steps", "20",
                        "--kill-node-at", "8", "--run-dir", run_dir, "--set",
                        "train.eval_every=0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=240)
    check("launched run: troupe launch exit 0", r.returncode == 0, r.stderr[-400:])
    kinds = {json.loads(line).get("kind") for line in open(os.path.join(run_dir, "events.jsonl"))}
    check("launched run: events.jsonl has the loss and the recovery",
          {"recover", "recovered"} <= kinds, sorted(k for k in kinds if k))
    check_pngs("launched run", report(troupe, run_dir), os.path.join(run_dir, "report"),
               ["loss.png", "throughput.png", "events.png"])


def bad_runs(troupe, work):
    empty = os.path.join(work, "empty")
    shutil.rmtree(empty, ignore_errors=True)
    os.makedirs(empty)
    fails_naming("no metrics.jsonl", report(troupe, empty),
                 os.path.join(empty, "metrics.jsonl"), "not found")
    write_lines(os.path.join(empty, "metrics.jsonl"), [])
    fails_naming("empty metrics.jsonl", report(troupe, empty), "metrics.jsonl", "empty")
    write_lines(os.path.join(empty, "metrics.jsonl"),
                [{"step": 0, "loss": 3.0}, {"step": 1, "loss": 2.9}, '{"step": 2, "loss": 2.'])
    fails_naming("a cut line", report(troupe, empty), "metrics.jsonl:3:", "not JSON")
    write_lines(os.path.join(empty, "metrics.jsonl"), [{"step": 0, "loss": 3.0}, {"step": 1}])
    fails_naming("a line without loss", report(troupe, empty), "metrics.jsonl:2:", "'loss'")
    run_dir = synthetic_run(os.path.join(work, "bad-events"))
    with open(os.path.join(run_dir, "events.jsonl"), "a") as f:
        f.write("garbage\n")
    fails_naming("a bad events line", report(troupe, run_dir), "events.jsonl:11:", "not JSON")
    # matplotlib shadowed by a package that fails to import, as on a machine without it
    fake = os.path.join(work, "no-matplotlib", "matplotlib")
    os.makedirs(fake, exist_ok=True)
    with open(os.path.join(fake, "__init__.py"), "w") as f:
        f.write("raise ImportError('No module named matplotlib')\n")
    good = synthetic_run(os.path.join(work, "run2"))
    fails_naming("no matplotlib", report(troupe, good, env={"PYTHONPATH": os.path.dirname(fake)}),
                 "install python3-matplotlib")
    fails_naming("no tools/", report(troupe, good, env={"TROUPE_TOOLS_DIR": work + "/none"}),
                 work + "/none/report.py", "TROUPE_TOOLS_DIR")
    fails_naming("no python3", report(troupe, good, env={"TROUPE_PYTHON": work + "/no/python3"}),
                 work + "/no/python3", "install python3-matplotlib")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    good_runs(a.troupe, a.work)
    launched_run(a.troupe, a.work)
    bad_runs(a.troupe, a.work)
    for f in failures:
        print("FAIL:", f)
    print(f"report: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
