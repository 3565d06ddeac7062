#!/usr/bin/python3
"""make demo: the job users came for, on 127.0.0.1.

1. The undisturbed weights hash: `troupe train` of the same config and steps in one process,
   in runs/demo-ref (kept, and reused while the troupe binary and the arguments are the same).
2. `troupe launch` of tiny on DEMO_NODES (3) node processes into runs/demo, with its progress
   streamed; one node process is killed (-9) after step DEMO_KILL_AT (30) and, with
   fault_tolerance.replace_lost=true, a fresh one takes its place. Around step
   DEMO_SCALE_UP_AT (50) this script runs `troupe scale runs/demo DEMO_SCALE_UP_TO` (4), around
   DEMO_SCALE_DOWN_AT (80) `troupe scale runs/demo DEMO_SCALE_DOWN_TO` (2), printing each
   command as it runs it.
3. The launch summary, the undisturbed hash and whether they match (exit 1 if not), and what
   happened, from events.jsonl and metrics.jsonl: one row per fault, scale and drain.

  demo.py BUILD_DIR     (DEMO_STEPS 120, checkpoints every 20 steps for `make demo-resume`)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/tiny.toml"
RUN = "runs/demo"
REF = "runs/demo-ref"


def knob(name, default):
    return int(os.environ.get(name, default))


STEPS = knob("DEMO_STEPS", 120)
NODES = knob("DEMO_NODES", 3)
KILL_AT = knob("DEMO_KILL_AT", 30)
UP_AT, UP_TO = knob("DEMO_SCALE_UP_AT", 50), knob("DEMO_SCALE_UP_TO", 4)
DOWN_AT, DOWN_TO = knob("DEMO_SCALE_DOWN_AT", 80), knob("DEMO_SCALE_DOWN_TO", 2)
JOB_SETS = ["--set", "checkpoint.every_steps=20"]
TTY = sys.stderr.isatty()


def say(text):
    """A line between the job's own: over its progress line on a terminal, as launch does."""
    sys.stderr.write(("\r%-90s\n" if TTY else "%s\n") % text)
    sys.stderr.flush()


def read_jsonl(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f.read().split("\n")[:-1] if line.strip()]
    except FileNotFoundError:
        return []


def reference_hash(troupe):
    """The weights hash of one undisturbed process training the same job."""
    args = [troupe, "train", "--config", CONFIG, "--run-dir", REF, "--steps", str(STEPS),
            *JOB_SETS]
    st = os.stat(troupe)
    key = {"args": args[1:], "troupe": [st.st_size, st.st_mtime_ns]}
    cache = os.path.join(REF, "demo-ref.json")
    try:
        with open(cache) as f:
            got = json.load(f)
        if got["key"] == key:
            print(f"undisturbed hash (troupe train, {REF}, from an earlier make demo): "
                  f"{got['hash']}", flush=True)
            return got["hash"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    print(f"computing the undisturbed hash: {' '.join(args)}", flush=True)
    shutil.rmtree(REF, ignore_errors=True)
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    h = re.search(r"weights ([0-9a-f]{16})", r.stdout)
    if r.returncode != 0 or not h:
        sys.exit(f"demo: the undisturbed troupe train failed (exit {r.returncode}):\n"
                 f"{r.stderr[-2000:]}")
    with open(cache, "w") as f:
        json.dump({"key": key, "hash": h.group(1)}, f)
    print(f"undisturbed hash: {h.group(1)}", flush=True)
    return h.group(1)


class Job:
    """The launched job's control endpoint, read the way `troupe status` reads it."""

    def __init__(self, launch):
        self.launch = launch

    def status(self):
        try:
            with open(os.path.join(RUN, "control.json")) as f:
                address = json.load(f)["address"]
            with open(os.path.join(RUN, "control.token")) as f:
                token = f.read().strip()
            req = urllib.request.Request(address + "/status",
                                         headers={"Authorization": "Bearer " + token})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read().decode())
        except (OSError, ValueError):
            return None  # not up yet, or gone

    def steps_done(self):
        return len(read_jsonl(os.path.join(RUN, "metrics.jsonl")))

    def ready_for(self, step):
        """True once `step` steps are committed and no recovery or reshape is under way."""
        if self.steps_done() < step:
            return False
        st = self.status()
        return bool(st) and st["phase"] == "running" and not st["reshape"] and all(
            n["state"] == "active" for n in st["nodes"])


def scale_when(job, troupe, step, nodes):
    """Runs `troupe scale runs/demo N` once `step` steps are done and the job is steady."""
    while job.launch.poll() is None and not job.ready_for(step):
        time.sleep(0.05)  # the job's progress, polled
    if job.launch.poll() is not None:
        say(f"[demo] the job ended before step {step}: no scale to {nodes}")
        return
    cmd = [troupe, "scale", RUN, str(nodes)]
    say(f"[demo] $ {os.path.relpath(troupe)} scale {RUN} {nodes}")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    say(f"[demo]   {r.stdout.strip()}  (exit {r.returncode})")


def drive(job, troupe):
    scale_when(job, troupe, UP_AT, UP_TO)
    # the scale up done (its `scaled` event) before the scale down is asked for
    while job.launch.poll() is None and not any(
            e["kind"] == "scaled" and e.get("workers") == UP_TO
            for e in read_jsonl(os.path.join(RUN, "events.jsonl"))):
        time.sleep(0.05)
    scale_when(job, troupe, DOWN_AT, DOWN_TO)


def run_job(troupe):
    """Streams the launch (its progress on stderr, its summary on stdout); returns its exit
    status and summary lines."""
    shutil.rmtree(RUN, ignore_errors=True)
    args = [troupe, "launch", "--config", CONFIG, "--nodes", str(NODES), "--run-dir", RUN,
            "--steps", str(STEPS), "--kill-node-at", str(KILL_AT), *JOB_SETS,
            "--set", "fault_tolerance.replace_lost=true"]
    print(f"$ {' '.join([os.path.relpath(troupe), *args[1:]])}", flush=True)
    launch = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    job = Job(launch)
    driver = threading.Thread(target=drive, args=(job, troupe), daemon=True)
    driver.start()
    summary = []
    for line in launch.stdout:
        summary.append(line.rstrip("\n"))
    launch.wait()
    driver.join(timeout=5)
    return launch.returncode, summary


def first_commit_after(metrics, unix_ms):
    return next((m for m in metrics if m["unix_ms"] >= unix_ms), None)


def why_lost(reason):
    """'node n2 (pid 7) lost at step 30: peer_down: its connection closed: End of file' →
    'peer_down: its connection closed'."""
    why = reason.split(": ", 1)[-1]
    return ": ".join(why.split(": ")[:2])[:64]


def happenings(events, metrics):
    """(event, at step, detected after ms, recovered/paused after ms, steps redone, note)."""
    rows = []
    kill_commit = next((m for m in metrics if m["step"] == KILL_AT - 1), None)
    for i, e in enumerate(events):
        if e["kind"] == "recover":
            done = next((x for x in events[i:] if x["kind"] == "recovered"), None)
            nxt = first_commit_after(metrics, done["unix_ms"]) if done else None
            # --kill-node-at kills from the commit callback of step KILL_AT, before the next
            # step begins: that commit is the moment of the kill, and no step is redone.
            t = kill_commit["unix_ms"] if kill_commit and e.get("step") == KILL_AT else None
            rows.append((f"lost {e.get('node', '?')} (kill -9)", e.get("step", "?"),
                         f"{e['unix_ms'] - t:.0f}" if t else "?",
                         f"{nxt['unix_ms'] - t:.0f}" if t and nxt else "?",
                         "0" if t else "?", why_lost(e.get("reason") or "")))
        elif e["kind"] in ("scaled", "drained"):
            start = next((x for x in reversed(events[:i]) if x["kind"] == "reshape"), {})
            what = re.match(r"([^:]*)", e.get("text", "")).group(1)
            rows.append((what, start.get("step", "?"), "-", f"{e['pause_ms']:.0f}", "0",
                         f"request → done {e['duration_ms']:.0f} ms"))
    return rows


def print_table(rows):
    head = ("event", "step", "detected after ms", "training again after ms", "steps redone",
            "")
    widths = [max(len(str(r[k])) for r in rows + [head]) for k in range(len(head))]
    for r in [head] + rows:
        print("  " + "  ".join(str(v).ljust(w) if k in (0, 5) else str(v).rjust(w)
                               for k, (v, w) in enumerate(zip(r, widths))).rstrip())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.chdir(ROOT)
    troupe = os.path.abspath(os.path.join(sys.argv[1], "troupe"))
    ref = reference_hash(troupe)
    t0 = time.monotonic()
    code, summary = run_job(troupe)
    print(f"\n== the launch ({time.monotonic() - t0:.0f} s, exit {code})")
    for line in summary:
        print(line)
    h = next((m.group(1) for m in map(re.compile(r"weights ([0-9a-f]{16})").search, summary)
              if m), None)
    print(f"undisturbed (troupe train, one process): {ref}  launched: {h or 'none'}  → "
          f"{'the same weights, bit for bit' if h == ref else 'DIFFERENT'}")
    rows = happenings(read_jsonl(os.path.join(RUN, "events.jsonl")),
                      read_jsonl(os.path.join(RUN, "metrics.jsonl")))
    print("\nwhat happened (events.jsonl, metrics.jsonl; wall clock on a shared machine):")
    print_table(rows)
    print("  detected after: the kill → the coordinator's recover event; training again: the "
          "kill → the next committed step,\n  or for a scale the pause at the step boundary "
          "(pause_ms). The kill of --kill-node-at lands between two steps,\n  so no step is "
          "redone; a kill mid-step redoes that one step. `make demo-resume` continues runs/demo.")
    if code != 0 or h != ref:
        sys.exit(1)


if __name__ == "__main__":
    main()
