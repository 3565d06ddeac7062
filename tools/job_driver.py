"""Drives a running `troupe launch` job from outside, as an operator would: its control
endpoint (status), its events.jsonl and metrics.jsonl, signals to its node processes and
`troupe scale`. Shared by bench/run_bench_recovery.py and tools/soak.py (Python is allowed
in tools and benchmarks, never in the runtime)."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.toml")
JOB_STEPS = 1000000  # never reached: each job is stopped once its disturbances are done
BENCH_COMMON = ["--set", "train.eval_every=0", "--set", "checkpoint.every_steps=0"]
# Kinds of events that are not disturbances of the step time: the checkpoint is off, the
# rest are the job's start (before the first step) and its end.
QUIET_KINDS = {"checkpoint", "start", "resume", "job_done", "done", "stop", "stopping"}


class BenchError(Exception):
    """A job did not do what a driver waited for (its message says what)."""


def read_jsonl(path):
    """The complete lines of a JSONL file that another process is appending to."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.split("\n")[:-1]:  # the last piece may be a line being written
        if line.strip():
            rows.append(json.loads(line))
    return rows


def wait_for(pred, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)  # another process's progress: polled
    raise BenchError(f"timed out after {timeout_s} s waiting for {what}")


class Job:
    """One `troupe launch` of tiny in its own session, with its run directory and endpoint.
    `common`: the settings after the node count (default BENCH_COMMON: no eval, no checkpoint)."""

    def __init__(self, troupe, run_dir, nodes, extra, wait_s, common=None):
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(os.path.dirname(run_dir), exist_ok=True)
        self.troupe, self.run_dir, self.wait_s = troupe, run_dir, wait_s
        self.out = open(run_dir + ".out", "w")
        self.p = subprocess.Popen(
            [troupe, "launch", "--config", TINY, "--nodes", str(nodes), "--run-dir", run_dir,
             "--steps", str(JOB_STEPS), *(BENCH_COMMON if common is None else common), *extra],
            stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        self.injections = []  # unix ms of every signal this bench sent
        self.signalled = set()  # pids this bench sent a signal to
        self.evicted = []  # node ids declared dead that the bench had not touched
        wait_for(lambda: all(os.path.exists(os.path.join(run_dir, f))
                             for f in ("control.json", "control.token")) or self.dead(),
                 wait_s, "the control endpoint")
        if self.dead():
            raise BenchError(f"troupe launch exited {self.p.returncode}; see {run_dir}.out")
        with open(os.path.join(run_dir, "control.json")) as f:
            self.address = json.load(f)["address"]
        with open(os.path.join(run_dir, "control.token")) as f:
            self.token = f.read().strip()

    def dead(self):
        return self.p.poll() is not None

    def status(self):
        req = urllib.request.Request(self.address + "/status",
                                     headers={"Authorization": "Bearer " + self.token})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def events(self):
        return read_jsonl(os.path.join(self.run_dir, "events.jsonl"))

    def metrics(self):
        return read_jsonl(os.path.join(self.run_dir, "metrics.jsonl"))

    def steady(self, nodes, quiet_steps):
        """The status once the job runs on `nodes` active nodes, with no reshape, and has
        committed quiet_steps steps since its last event and the last injection; else None."""
        if self.dead():
            raise BenchError(f"troupe launch exited {self.p.returncode}; see {self.run_dir}.out")
        try:
            st = self.status()
        except OSError:
            return None  # the coordinator is restarting: its endpoint is back in a moment
        active = [n for n in st["nodes"] if n["state"] == "active"]
        if st["phase"] != "running" or st["reshape"]:
            return None
        if len(active) < nodes:
            self.unexpected_eviction()  # counted; launch replaces it (replace_lost)
            return None
        if len(active) != nodes:
            return None
        if len(st["nodes"]) != nodes:  # a joiner or a leaver still around
            return None
        last = max([e["unix_ms"] for e in self.events() if e["kind"] not in QUIET_KINDS] +
                   self.injections + [0])
        after = [m for m in self.metrics() if m["unix_ms"] > last]
        return st if len(after) >= quiet_steps else None

    def wait_steady(self, nodes, quiet_steps):
        return wait_for(lambda: self.steady(nodes, quiet_steps), self.wait_s,
                        f"{self.run_dir} steady on {nodes} nodes")

    def unexpected_eviction(self):
        """Nodes declared lost that the bench did not touch (missed heartbeats on a loaded
        machine): launch replaces them (replace_lost); each is counted once and said."""
        for e in self.events():
            if (e["kind"] == "recover" and e.get("node") and e.get("pid") not in self.signalled
                    and e["node"] not in self.evicted):
                self.evicted.append(e["node"])
                print(f"  (a node lost that the bench did not touch: {e['node']}: "
                      f"{e.get('reason', '')})", flush=True)

    def signal_node(self, pid, sig):
        """Sends sig to a node process of this job: checked to be launch's child first."""
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        if ppid != self.p.pid:
            raise BenchError(f"pid {pid} is not a node process of {self.run_dir} (parent {ppid})")
        t = time.time() * 1000
        os.kill(pid, sig)
        self.injections.append(t)
        self.signalled.add(pid)
        return t

    def stop(self):
        if not self.dead():
            os.killpg(self.p.pid, signal.SIGINT)  # the job's own Ctrl-C: it stops its nodes
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.out.close()

    def step_time_ms(self):
        """The anchor: median gap between consecutive metrics lines with no disturbance within
        a (provisional) step of either line."""
        ms = [m["unix_ms"] for m in self.metrics()]
        gaps = [(a, b) for a, b in zip(ms, ms[1:])]
        if len(gaps) < 3:
            raise BenchError(f"{self.run_dir}: too few steps to measure a step time")
        rough = statistics.median(b - a for a, b in gaps)
        marks = sorted([e["unix_ms"] for e in self.events() if e["kind"] not in QUIET_KINDS] +
                       self.injections)
        clean = [b - a for a, b in gaps
                 if not any(a - rough <= d <= b + rough for d in marks)]
        if len(clean) < 3:
            raise BenchError(f"{self.run_dir}: fewer than 3 undisturbed steps")
        return statistics.median(clean), len(clean)


def first_metrics_after(metrics, unix_ms):
    for m in metrics:
        if m["unix_ms"] >= unix_ms:
            return m
    return None


def last_metrics_before(metrics, unix_ms):
    before = [m for m in metrics if m["unix_ms"] <= unix_ms]
    return before[-1] if before else None


def troupe_control(troupe, verb, run_dir, arg):
    """`troupe scale RUN_DIR N` or `troupe drain RUN_DIR NODE`; raises with its output."""
    r = subprocess.run([troupe, verb, run_dir, str(arg)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"troupe {verb} {run_dir} {arg}: {r.stdout.strip()}")


def troupe_scale(troupe, run_dir, n):
    troupe_control(troupe, "scale", run_dir, n)
