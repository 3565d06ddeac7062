#!/usr/bin/python3
"""make bench-recovery (issue 13 item 7): how long a live `troupe launch` job of tiny takes to
notice a fault and train again, next to its own step time measured in the same run.

Three jobs (one per kind of disturbance, each run until its disturbances are done and then
stopped with SIGINT; `--set train.eval_every=0`, no checkpoints):
  kill   BENCH_RECOVERY_NODES (3) nodes, fault_tolerance.replace_lost=true, so that every
         kill is followed by a fresh node process and the job keeps its node count. Each of
         BENCH_RECOVERY_KILLS (20) rounds waits for a steady job (running, no reshape, all
         nodes back, BENCH_RECOVERY_QUIET (3) steps committed since the last event), sleeps a
         random time in [0, 1.5 steps), and sends SIGKILL to a random active node process.
  hang   the same with SIGSTOP (BENCH_RECOVERY_HANGS, 5), detected by missed heartbeats only;
         fault_tolerance.heartbeat_interval_ms/heartbeat_timeout_ms set to
         BENCH_RECOVERY_HEARTBEAT (100/1000, the defaults: 50/250 evicts healthy nodes on
         a loaded 2-core box; such evictions are counted and said, and launch replaces
         them). Once it is declared lost, launch ends it (SIGKILL) and replaces it.
  scale  NODES nodes, --max-nodes NODES+1; BENCH_RECOVERY_SCALES (5) times `troupe scale
         RUN_DIR NODES+1` and back to NODES, each from a steady job.
Then a coordinator restart (the coordinator runs in a process of its own, `coordinator_pid`
in `troupe status`): kill -9 of the coordinator process, the gap between
the metrics lines around it minus a step. Otherwise it says it was not measured.

Figures (all wall clock, unix ms; events.jsonl and metrics.jsonl carry unix_ms):
  detection  the kill (time.time() just before os.kill) → the coordinator knows: the
             `detected_unix_ms` of that node's `recover` event (before the new view is
             journaled and the event written; its unix_ms is later by that much);
  gone       the kill → the killed process has exited (its pidfd, polled by this bench): the
             floor of any detection, since the kernel tears a node's memory and threads down
             before its sockets close or its parent can see it; printed next to detection;
  recovery   the kill → the first metrics.jsonl line committed after the `recovered` event;
  pause      scaled/drained's pause_ms (step boundary → every worker of the new view ready),
             and as training sees it: the gap between the metrics lines around the reshape
             minus one step;
  step time  the anchor: the median gap between consecutive metrics lines of the same job
             with no disturbance (an injection or an event other than a checkpoint) within
             a step of either line.

BENCH_RECOVERY_SEED=S replays the choices (victims, moments); the timings are the machine's.
  run_bench_recovery.py BUILD_DIR
"""
import math
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from job_driver import (BenchError, Job, first_metrics_after, last_metrics_before,  # noqa: E402
                        troupe_scale, wait_for)

DETECTION_TARGET_MS = 20
RECOVERY_SLACK_MS = 200  # recovery target: one step + this
RESHAPE_SLACK_MS = 500   # scale target: one step + this
COORDINATOR_TARGET_MS = 2000  # coordinator restart: this plus the step in flight


def env_int(name, default):
    return int(os.environ.get(name, default))


class Knobs:
    def __init__(self):
        self.kills = env_int("BENCH_RECOVERY_KILLS", 20)
        self.hangs = env_int("BENCH_RECOVERY_HANGS", 5)
        self.scales = env_int("BENCH_RECOVERY_SCALES", 5)
        self.coordinator = env_int("BENCH_RECOVERY_COORDINATOR", 3)
        self.nodes = env_int("BENCH_RECOVERY_NODES", 3)
        self.quiet = env_int("BENCH_RECOVERY_QUIET", 3)
        hb = os.environ.get("BENCH_RECOVERY_HEARTBEAT", "100/1000").split("/")
        self.hb_interval_ms, self.hb_timeout_ms = int(hb[0]), int(hb[1])
        self.seed = env_int("BENCH_RECOVERY_SEED", random.SystemRandom().randrange(1, 1 << 31))
        self.wait_s = env_int("BENCH_RECOVERY_WAIT_S", 120)  # for any one thing to happen


def percentile(xs, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(xs)
    return s[max(0, min(len(s), math.ceil(p / 100 * len(s))) - 1)]


def pick_victim(rng, st):
    active = sorted((n for n in st["nodes"] if n["state"] == "active"), key=lambda n: n["id"])
    return rng.choice(active)


def one_fault(job, rng, knobs, step_ms, sig, hang):
    """One kill or hang of a random active node at a random moment: (detection, recovery) ms."""
    st = job.wait_steady(knobs.nodes, knobs.quiet)
    victim = pick_victim(rng, st)
    time.sleep(rng.uniform(0, 1.5 * step_ms) / 1000)
    # The floor of any detection: when the killed process is gone (its pidfd readable here,
    # an observer outside the job); the kernel tears a node's memory and threads down first.
    fd = os.pidfd_open(victim["pid"]) if not hang else None
    t = job.signal_node(victim["pid"], sig)
    gone = None
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(5000)
        gone = time.time() * 1000 - t
        os.close(fd)
    rec = wait_for(lambda: next((e for e in job.events() if e["kind"] == "recover" and
                                 e.get("node") == victim["id"]), None),
                   job.wait_s, f"the recover event of {victim['id']}")
    # hang: launch ends the stopped node once it is declared lost, and replaces it
    done = wait_for(lambda: next((e for e in job.events() if e["kind"] == "recovered" and
                                  e["unix_ms"] >= rec["unix_ms"]), None),
                    job.wait_s, "the recovered event")
    nxt = wait_for(lambda: first_metrics_after(job.metrics(), done["unix_ms"]), job.wait_s,
                   "the first step after the recovery")
    known = rec.get("detected_unix_ms", rec["unix_ms"])  # the coordinator knew (before journaling)
    return known - t, nxt["unix_ms"] - t, victim["id"], rec.get("hung"), gone


def fault_job(troupe, work, knobs, rng, kind):
    hang = kind == "hang"
    count = knobs.hangs if hang else knobs.kills
    extra = ["--set", "fault_tolerance.replace_lost=true"]
    if hang:
        extra += ["--set", f"fault_tolerance.heartbeat_interval_ms={knobs.hb_interval_ms}",
                  "--set", f"fault_tolerance.heartbeat_timeout_ms={knobs.hb_timeout_ms}"]
    job = Job(troupe, os.path.join(work, kind), knobs.nodes, extra, knobs.wait_s)
    try:
        job.wait_steady(knobs.nodes, knobs.quiet + 2)
        rough, _ = job.step_time_ms()
        rows = []
        for i in range(count):
            det, rec, node, hung, gone = one_fault(job, rng, knobs, rough,
                                                   signal.SIGSTOP if hang else signal.SIGKILL, hang)
            rows.append((det, rec, gone))
            print(f"  {kind} {i + 1:2d}/{count}: {node:4s} "
                  f"{'' if gone is None else f'gone {gone:4.0f} ms, '}detected {det:6.0f} ms, training again "
                  f"{rec:6.0f} ms after the {'SIGSTOP' if hang else 'kill'}"
                  f"{'' if hung in (None, hang) else ' (hung=' + str(hung) + '!)'}", flush=True)
        job.wait_steady(knobs.nodes, knobs.quiet + 4)  # undisturbed steps for the anchor
        step_ms, clean = job.step_time_ms()
    finally:
        job.stop()
    return rows, step_ms, clean, job.evicted


def one_reshape(job, troupe, knobs, to_nodes, kind):
    """One `troupe scale` from a steady job: (pause_ms, the metrics gap around it in ms)."""
    job.wait_steady(knobs.nodes if kind == "scaled" else knobs.nodes + 1, knobs.quiet)
    seen = len(job.events())
    job.injections.append(time.time() * 1000)
    troupe_scale(troupe, job.run_dir, to_nodes)
    new = lambda k: next((e for e in job.events()[seen:] if e["kind"] == k), None)  # noqa: E731
    done = wait_for(lambda: new(kind), job.wait_s, f"the {kind} event")
    boundary = new("reshape")
    if boundary is None:
        raise BenchError(f"no reshape event before {kind}")
    after = wait_for(lambda: first_metrics_after(job.metrics(), done["unix_ms"]), job.wait_s,
                     "the first step after the reshape")
    before = last_metrics_before(job.metrics(), boundary["unix_ms"])
    return done["pause_ms"], after["unix_ms"] - before["unix_ms"]


def scale_job(troupe, work, knobs):
    job = Job(troupe, os.path.join(work, "scale"), knobs.nodes,
              ["--max-nodes", str(knobs.nodes + 1)], knobs.wait_s)
    up, down = [], []
    try:
        for i in range(knobs.scales):
            for to, kind, rows in ((knobs.nodes + 1, "scaled", up), (knobs.nodes, "drained", down)):
                pause, gap = one_reshape(job, troupe, knobs, to, kind)
                rows.append((pause, gap))
                print(f"  scale {i + 1}/{knobs.scales} → {to}: paused {pause:6.0f} ms "
                      f"(pause_ms), metrics gap {gap:6.0f} ms", flush=True)
        job.wait_steady(knobs.nodes, knobs.quiet + 4)  # undisturbed steps for the anchor
        step_ms, clean = job.step_time_ms()
    finally:
        job.stop()
    return up, down, step_ms, clean


def coordinator_supported(troupe):
    r = subprocess.run([troupe, "launch", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    return "--coordinator-process" in r.stdout


def coordinator_job(troupe, work, knobs):
    """Gaps (ms) between the metrics lines around each kill -9 of the coordinator process, or
    None when this build has no separate, restartable coordinator."""
    if knobs.coordinator <= 0 or not coordinator_supported(troupe):
        return None
    job = Job(troupe, os.path.join(work, "coordinator"), knobs.nodes, ["--coordinator-process"],
              knobs.wait_s)
    gaps = []
    try:
        for i in range(knobs.coordinator):
            st = job.wait_steady(knobs.nodes, knobs.quiet)
            pid = st.get("coordinator_pid")
            if not pid:
                return None
            seen = len(job.events())
            t = time.time() * 1000
            os.kill(int(pid), signal.SIGKILL)  # the coordinator of our own job (its status)
            job.injections.append(t)
            wait_for(lambda: any(e["kind"] == "coordinator_restarted" for e in job.events()[seen:]),
                     job.wait_s, "the coordinator_restarted event")
            after = wait_for(lambda: first_metrics_after(job.metrics(), t + 1), job.wait_s,
                             "the first step after the coordinator restart")
            before = last_metrics_before(job.metrics(), t)
            gaps.append(after["unix_ms"] - before["unix_ms"])
            print(f"  coordinator {i + 1}/{knobs.coordinator}: metrics gap {gaps[-1]:6.0f} ms",
                  flush=True)
        job.wait_steady(knobs.nodes, knobs.quiet + 4)
        step_ms, _ = job.step_time_ms()
    finally:
        job.stop()
    return gaps, step_ms


def table(title, columns, step_ms):
    """columns: [(name, values ms)]: n, min, median, p90, max and median ÷ step time."""
    print(f"\n{title}")
    print(f"  {'':40s} {'n':>3s} {'min':>7s} {'median':>7s} {'p90':>7s} {'max':>7s}  "
          f"{'median/step':>11s}")
    for name, xs in columns:
        print(f"  {name:40s} {len(xs):3d} {min(xs):7.0f} {statistics.median(xs):7.0f} "
              f"{percentile(xs, 90):7.0f} {max(xs):7.0f}  {statistics.median(xs) / step_ms:11.2f}")


def verdict(ok):
    return "holds" if ok else "MISSES"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build = sys.argv[1]
    troupe = os.path.abspath(os.path.join(build, "troupe"))
    knobs = Knobs()
    work = os.path.abspath(os.environ.get("BENCH_RECOVERY_DIR",
                                          os.path.join(build, "bench-recovery.tmp")))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = random.Random(knobs.seed)
    print(f"bench-recovery: tiny on {knobs.nodes} node processes on 127.0.0.1, "
          f"{knobs.kills} kills, {knobs.hangs} hangs, {knobs.scales} scales each way; "
          f"{os.cpu_count()} cores, shared and noisy (load {os.getloadavg()[0]:.2f})\n"
          f"seed {knobs.seed} (BENCH_RECOVERY_SEED={knobs.seed} replays the victims and moments; "
          f"the timings are the machine's)", flush=True)
    t0 = time.monotonic()
    summary = []
    try:
        if knobs.kills > 0:
            print("== kill -9 (replace_lost=true: a fresh node process takes each one's place)",
                  flush=True)
            rows, step_ms, clean, evicted = fault_job(troupe, work, knobs, rng, "kill")
            if evicted:
                summary.append(f"kill job: {len(evicted)} node(s) evicted by missed heartbeats "
                               f"that the bench did not touch ({', '.join(evicted)})")
            table(f"kill -9: {len(rows)} kills; step time {step_ms:.0f} ms (median of {clean} "
                  "undisturbed steps, same job)",
                  [("process gone (kill → its pidfd): the floor", [r[2] for r in rows]),
                   ("detection (kill → coordinator knows)", [r[0] for r in rows]),
                   ("detection − process gone", [r[0] - r[2] for r in rows]),
                   ("recovery (kill → next committed step)", [r[1] for r in rows])], step_ms)
            det = statistics.median(r[0] for r in rows)
            rec = statistics.median(r[1] for r in rows)
            floor = statistics.median(r[2] for r in rows)
            beyond = statistics.median(r[0] - r[2] for r in rows)
            summary.append(f"kill -9 detection: median {det:.0f} ms, step time {step_ms:.0f} ms, "
                           f"ratio {det / step_ms:.3f}; target ≤ {DETECTION_TARGET_MS} ms: "
                           f"{verdict(det <= DETECTION_TARGET_MS)}")
            summary.append(f"  its floor, the killed process gone (kill → pidfd): median "
                           f"{floor:.0f} ms; detection beyond it: median {beyond:.0f} ms, ratio "
                           f"detection/floor {det / max(floor, 1e-9):.2f}; ≤ {DETECTION_TARGET_MS} "
                           f"ms: {verdict(beyond <= DETECTION_TARGET_MS)}")
            summary.append(f"kill -9 recovery: median {rec:.0f} ms, step time {step_ms:.0f} ms, "
                           f"ratio {rec / step_ms:.2f}; target ≤ one step + {RECOVERY_SLACK_MS} "
                           f"ms = {step_ms + RECOVERY_SLACK_MS:.0f} ms: "
                           f"{verdict(rec <= step_ms + RECOVERY_SLACK_MS)}")
        if knobs.hangs > 0:
            print(f"\n== SIGSTOP (heartbeat every {knobs.hb_interval_ms} ms, declared dead after "
                  f"{knobs.hb_timeout_ms} ms; then SIGKILL; replace_lost=true)", flush=True)
            rows, step_ms, clean, evicted = fault_job(troupe, work, knobs, rng, "hang")
            if evicted:
                summary.append(f"hang job: {len(evicted)} node(s) evicted by missed heartbeats "
                               f"that the bench did not touch ({', '.join(evicted)})")
            table(f"SIGSTOP: {len(rows)} hangs; step time {step_ms:.0f} ms (median of {clean} "
                  f"undisturbed steps), heartbeat_timeout_ms {knobs.hb_timeout_ms}",
                  [("detection (stop → coordinator knows)", [r[0] for r in rows]),
                   ("recovery (stop → next committed step)", [r[1] for r in rows])], step_ms)
            det = statistics.median(r[0] for r in rows)
            rec = statistics.median(r[1] for r in rows)
            summary.append(f"hang detection: median {det:.0f} ms, heartbeat timeout "
                           f"{knobs.hb_timeout_ms} ms, ratio {det / knobs.hb_timeout_ms:.2f} "
                           "(no target: a hang is seen only by missed heartbeats)")
            summary.append(f"hang recovery: median {rec:.0f} ms, heartbeat timeout + step time "
                           f"{knobs.hb_timeout_ms + step_ms:.0f} ms, ratio "
                           f"{rec / (knobs.hb_timeout_ms + step_ms):.2f}; recovery after "
                           f"detection {rec - det:.0f} ms vs one step + {RECOVERY_SLACK_MS} ms: "
                           f"{verdict(rec - det <= step_ms + RECOVERY_SLACK_MS)}")
        if knobs.scales > 0:
            n = knobs.nodes
            print(f"\n== troupe scale {n} → {n + 1} → {n}, {knobs.scales} times", flush=True)
            up, down, step_ms, clean = scale_job(troupe, work, knobs)
            table(f"scale: {len(up)} up, {len(down)} down; step time {step_ms:.0f} ms (median of "
                  f"{clean} undisturbed steps, same job)",
                  [(f"up {n}→{n + 1}: pause_ms", [r[0] for r in up]),
                   (f"up {n}→{n + 1}: metrics gap − step", [r[1] - step_ms for r in up]),
                   (f"down {n + 1}→{n}: pause_ms", [r[0] for r in down]),
                   (f"down {n + 1}→{n}: metrics gap − step", [r[1] - step_ms for r in down])],
                  step_ms)
            for name, rows in (("scale up", up), ("scale down", down)):
                pause = statistics.median(r[0] for r in rows)
                seen = statistics.median(r[1] - step_ms for r in rows)
                limit = step_ms + RESHAPE_SLACK_MS
                summary.append(f"{name} pause: median pause_ms {pause:.0f} ms, as training sees "
                               f"it (gap − step) {seen:.0f} ms, step time {step_ms:.0f} ms, "
                               f"ratio {seen / step_ms:.2f}; target ≤ one step + "
                               f"{RESHAPE_SLACK_MS} ms = {limit:.0f} ms: "
                               f"{verdict(max(pause, seen) <= limit)}")
        coord = coordinator_job(troupe, work, knobs)
        if coord is None:
            summary.append("coordinator restart: not measured (" +
                           ("BENCH_RECOVERY_COORDINATOR=0)" if knobs.coordinator <= 0
                            else "this build has no restartable coordinator)"))
        else:
            gaps, step_ms = coord
            seen = [g - step_ms for g in gaps]
            table(f"coordinator kill -9: {len(gaps)}; step time {step_ms:.0f} ms",
                  [("metrics gap − step", seen)], step_ms)
            med = statistics.median(seen)
            summary.append(f"coordinator restart pause (gap − step): median {med:.0f} ms, step "
                           f"time {step_ms:.0f} ms, ratio {med / step_ms:.2f}; target ≤ "
                           f"{COORDINATOR_TARGET_MS} ms plus the step in flight: "
                           f"{verdict(med <= COORDINATOR_TARGET_MS)}")
    except BenchError as e:
        sys.exit(f"bench-recovery: {e} (run directories kept in {work})")
    print(f"\nsummary (seed {knobs.seed}, {time.monotonic() - t0:.0f} s, load "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} shared cores: noisy):")
    for line in summary:
        print("  " + line)
    if not os.environ.get("BENCH_RECOVERY_KEEP"):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
