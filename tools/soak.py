#!/usr/bin/env python3
"""make soak: one long job of tiny on 3 node processes (replace_lost, up to 5 nodes, a
checkpoint every 50 steps) with a random fault every SOAK_FAULT_EVERY_S (30) seconds for
SOAK_MINUTES (120) minutes, while the resident memory (VmRSS), open file descriptors and
threads of every process of the job are sampled every SOAK_SAMPLE_S (5) seconds, and the
anchor's /proc/PID/smaps is kept every SOAK_SMAPS_S (600) seconds in SOAK_DIR/smaps/
(tools/smaps_diff.py A B: which mappings grew between two of them).

  tools/soak.py BUILD_DIR
  tools/soak.py --report SAMPLES_CSV   (the table again, from a soak's samples.csv)

Faults, drawn from SOAK_SEED (random; printed, and it replays the choices): kill -9 of a
node, a hang (SIGSTOP; the coordinator declares it lost, launch kills and replaces it),
scale up by one (`troupe scale`), drain one node (`troupe drain`), kill -9 of the
coordinator process (launch restarts it from the journal). SOAK_FAULTS=kill,hang,up,drain,
coordinator chooses among them. The first node (the anchor) is never a victim, so that one
node process lives through the whole soak; so does `troupe launch`, and the coordinator
when SOAK_FAULTS leaves out `coordinator`.

A node silent for SOAK_HEARTBEAT_TIMEOUT_MS (3000; tiny's own is 1000) is declared dead: a
few seconds keep a node that a busy 2-core box left without CPU from being taken for a hang.

Every fault must be followed by a steady job (running, every node back, 2 steps committed)
within SOAK_RECOVER_S (120) seconds, else the soak stops and fails, naming the seed. At the
end: samples.csv, threads.log (each process's threads by name whenever its count changes)
and soak.png (matplotlib) in SOAK_DIR (BUILD/soak), and a table of each
process that lived through the measured window (after SOAK_WARMUP_MIN, 10, minutes): its
RSS then and at the end (growth ≤ 1%), its file descriptors and threads (no growth). Beside
the growth, the spread of the medians of the window's six equal blocks at that node count:
a node's RSS swings by tens of MiB with each trim and refill of its heap, and a growth below
that spread is not told from noise by these samples. File descriptors and threads are
compared by their floor (the least in each third): one open for a moment is no leak. Last,
the anchor's live heap as its worker logged it after each view change's trim (mallinfo2:
exact, where RSS moves by whole huge pages), first third against last third.
Exit 1 when a fault was not recovered or a bound was missed.
"""
import csv
import datetime
import glob
import json
import os
import re
import random
import signal
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from job_driver import BenchError, Job, troupe_control, troupe_scale, wait_for  # noqa: E402

KINDS = ("kill", "hang", "up", "drain", "coordinator")
RSS_GROWTH_MAX_PCT = 1.0


def env_num(name, default, kind=float):
    try:
        return kind(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"soak: {name}={os.environ[name]!r} is not a number")


def sysv_creators():
    """{shmid: the pid that created it} of every SysV shared-memory segment (UCX's sysv
    transport puts each worker's receive FIFO and buffers in them)."""
    try:
        with open("/proc/sysvipc/shm") as f:
            next(f)
            return {int(r[1]): int(r[4]) for r in (line.split() for line in f) if len(r) > 4}
    except (OSError, StopIteration, ValueError):
        return {}


def orphan_segments(pid, creators):
    """The SysV segments process pid has mapped whose creator has exited: a peer's FIFO and
    buffers that UCX never let go of (its endpoint's discard waits for room in a FIFO that a
    dead reader will never drain; docs/operations.md, "Known problems")."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            ids = {int(line.split()[4]) for line in f if "/SYSV" in line}
    except (OSError, ValueError, IndexError):
        return 0
    return sum(1 for i in ids if i in creators and creators[i] != pid and
               not os.path.exists(f"/proc/{creators[i]}"))


def proc_sample(pid, creators=None):
    """(rss, anon, file, shmem (KiB), fds, threads, data (KiB), orphan segments) of a live
    process, or None once it is gone. RSS = anon (heap, stacks) + file (the binary's and libraries' pages as
    they are first run: clean, shared, reclaimable) + shmem (UCX's shared memory with its
    peers). data (VmData) is the address space of the heap and anonymous mappings, resident
    or not: RSS that grows within a flat VmData is trimmed heap filled in again (2 MiB at a
    time on huge pages), bounded by it; a growing VmData is the heap itself spreading."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        kib = [int(fields[k].split()[0]) for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")]
        return (*kib, fds, int(fields["Threads"]), int(fields["VmData"].split()[0]),
                orphan_segments(pid, creators or {}))
    except (FileNotFoundError, ProcessLookupError, KeyError):
        return None


def thread_names(pid):
    """'name×count, …' of a process's threads (/proc/PID/task/*/comm), or '' once gone."""
    names = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                n = f.read().strip()
            names[n] = names.get(n, 0) + 1
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return ", ".join(f"{n}×{c}" if c > 1 else n for n, c in sorted(names.items()))


class Sampler(threading.Thread):
    """Every period_s: one row per process of the job (launch, coordinator, each node)."""

    def __init__(self, job, path, period_s, anchor=None, smaps_s=0):
        super().__init__(daemon=True)
        self.job, self.period_s, self.stop_flag = job, period_s, threading.Event()
        # every smaps_s (0: never), a copy of the anchor's /proc/PID/smaps in smaps/ beside
        # samples.csv, named by time and node count: tools/smaps_diff.py says what grew
        self.anchor, self.smaps_s, self.smaps_last = anchor, smaps_s, None
        self.smaps_dir = os.path.join(os.path.dirname(path), "smaps")
        self.rows = []
        self.out = open(path, "w", newline="")
        self.csv = csv.writer(self.out)
        self.csv.writerow(["t_s", "role", "name", "pid", "members", "rss_kib", "anon_kib",
                           "file_kib", "shmem_kib", "fds", "threads", "data_kib",
                           "orphan_shm"])
        self.t0 = time.monotonic()
        self.wall_t0 = time.time()  # the node logs' clock
        # a process's threads by name whenever its count changes (threads.log): which one
        # a growing count is
        self.threads_seen = {}
        self.threads_log = open(os.path.join(os.path.dirname(path), "threads.log"), "w")

    def processes(self):
        """(members, [(role, name, pid)]): members is the number of active nodes."""
        try:
            st = self.job.status()
        except OSError:
            return None, []  # the coordinator is restarting: its endpoint is down for a moment
        procs = [("launch", "launch", self.job.p.pid)]
        if st.get("coordinator_pid"):
            procs.append(("coordinator", "coordinator", int(st["coordinator_pid"])))
        procs += [("node", n["id"], int(n["pid"])) for n in st["nodes"] if n.get("pid")]
        return sum(n["state"] == "active" for n in st["nodes"]), procs

    def run(self):
        while not self.stop_flag.wait(self.period_s):
            t = time.monotonic() - self.t0
            members, procs = self.processes()
            creators = sysv_creators()
            for role, name, pid in procs:
                if name == self.anchor and self.smaps_s > 0 and (
                        self.smaps_last is None or t - self.smaps_last >= self.smaps_s):
                    self.smaps_last = t
                    self.copy_smaps(pid, t, members)
                got = proc_sample(pid, creators)
                if got:
                    row = (round(t, 1), role, name, pid, members, *got)
                    self.rows.append(row)
                    self.csv.writerow(row)
                    self.note_threads(t, name, pid, got[5])
            self.out.flush()
            self.threads_log.flush()

    def note_threads(self, t, name, pid, threads):
        if self.threads_seen.get(pid) == threads:
            return
        self.threads_seen[pid] = threads
        self.threads_log.write(f"{t:.1f} s {name} (pid {pid}): {threads} threads: "
                               f"{thread_names(pid)}\n")

    def copy_smaps(self, pid, t, members):
        os.makedirs(self.smaps_dir, exist_ok=True)
        try:
            with open(f"/proc/{pid}/smaps") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return
        with open(os.path.join(self.smaps_dir, f"{int(t):06d}s-{members}nodes.smaps"), "w") as f:
            f.write(text)

    def finish(self):
        self.stop_flag.set()
        self.join()
        self.out.close()
        self.threads_log.close()


def steady_nodes(job, nodes, recover_s):
    job.wait_s = recover_s
    return job.wait_steady(nodes, 2)


def status_now(job):
    try:
        return job.status()
    except OSError:
        return None  # the coordinator is restarting


def inject(job, troupe, rng, kinds, nodes, anchor, max_nodes):
    """One random fault; returns (what, the node count the job must come back to)."""
    st = wait_for(lambda: status_now(job), 60, "the job's status")
    victims = sorted((n for n in st["nodes"] if n["state"] == "active" and n["id"] != anchor),
                     key=lambda n: n["id"])
    allowed = [k for k in kinds if not (k == "up" and nodes >= max_nodes) and
               not (k == "drain" and nodes <= 2) and not (k in ("kill", "hang", "drain") and
                                                          not victims)]
    kind = rng.choice(allowed)
    victim = rng.choice(victims) if victims else None
    if kind == "kill":
        job.signal_node(victim["pid"], signal.SIGKILL)
        return f"kill -9 {victim['id']}", nodes
    if kind == "hang":
        job.signal_node(victim["pid"], signal.SIGSTOP)  # declared lost, killed, replaced
        return f"SIGSTOP {victim['id']}", nodes
    if kind == "up":
        troupe_scale(troupe, job.run_dir, nodes + 1)
        return f"scale {nodes} → {nodes + 1}", nodes + 1
    if kind == "drain":
        troupe_control(troupe, "drain", job.run_dir, victim["id"])
        return f"drain {victim['id']}", nodes - 1
    pid = int(st["coordinator_pid"])
    os.kill(pid, signal.SIGKILL)  # the coordinator of our own job, as its status names it
    job.injections.append(time.time() * 1000)
    return f"kill -9 coordinator (pid {pid})", nodes


def thirds(rows, start_s, end_s):
    """The rows (time first) of the first and of the last third of [start_s, end_s]."""
    third = (end_s - start_s) / 3
    return ([r for r in rows if start_s <= r[0] < start_s + third],
            [r for r in rows if r[0] >= end_s - third])


HEAP_LINE = re.compile(r"^(\S+) \[info\] \[[^\]]*\] (\S+)/worker\.\d+: heap after the trim at "
                       r"(\d+) workers: (\d+) KiB in use, (\d+) KiB held, (\d+) KiB mapped")


def heap_lines(run_dir, node, wall_t0):
    """The live heap a node's worker reported after each view change's trim (exact, where
    RSS moves by whole huge pages): [(t_s since wall_t0, workers, in use, held, mapped KiB)]
    from the job's node logs, in time order."""
    out = []
    for path in glob.glob(os.path.join(run_dir, "node-*.log")):
        with open(path, errors="replace") as f:
            for line in f:
                m = HEAP_LINE.match(line)
                if m and m.group(2) == node:
                    t = datetime.datetime.fromisoformat(m.group(1)).timestamp() - wall_t0
                    out.append((t, *(int(m.group(i)) for i in range(3, 7))))
    return sorted(out)


def heap_report(lines, warmup_s, end_s):
    """Prints the live heap, first third vs last third of the window at equal worker count
    (medians); returns the largest growth in % (None when no count is in both thirds)."""
    first, last = thirds(lines, warmup_s, end_s)
    worst = None
    print(f"live heap of the anchor after each view change's trim ({len(lines)} views; mallinfo2, "
          f"KiB): first third vs last third at equal worker count")
    for w in sorted({x[1] for x in first} & {x[1] for x in last}):
        a = [statistics.median(x[i] for x in first if x[1] == w) for i in (2, 3, 4)]
        b = [statistics.median(x[i] for x in last if x[1] == w) for i in (2, 3, 4)]
        pct = 100.0 * (b[0] - a[0]) / a[0]
        worst = pct if worst is None else max(worst, pct)
        n_a, n_b = sum(x[1] == w for x in first), sum(x[1] == w for x in last)
        print(f"  {w} workers ({n_a} → {n_b} views): in use {a[0]:.0f} → {b[0]:.0f} ({pct:+.2f}%), "
              f"held {a[1]:.0f} → {b[1]:.0f}, mapped {a[2]:.0f} → {b[2]:.0f}")
    if worst is None:
        print("  no worker count in both thirds")
    return worst


def series_of(rows):
    """{(role, name, pid): [(t, members, rss, anon, file, shmem, fds, threads, data,
    orphan segments)]}"""
    series = {}
    for t, role, name, pid, members, *figures in rows:
        series.setdefault((role, name, pid), []).append((t, members, *figures))
    return series


def growth(v, start_s, end_s):
    """The growth of one process from the start to the end of the measured window, compared
    at equal membership (a node's fds, threads and buffers follow its number of peers): for
    each node count seen both in the first and in the last third of the window, the median
    of each figure there: [(count, (rss, anon, file, shmem, fds, threads, data, orphan
    segments) then, the same at the end, RSS %)]."""
    first, last = thirds(v, start_s, end_s)
    out = []
    # fds and threads (6, 7) by their floor: a control request or a peer being replaced adds
    # one for a moment (the coordinator's swing 37-42 within a minute), a leak raises the floor
    pick = lambda i: min if i in (6, 7) else statistics.median  # noqa: E731
    for m in sorted({r[1] for r in first} & {r[1] for r in last}):
        a = [pick(i)(r[i] for r in first if r[1] == m) for i in range(2, 10)]
        b = [pick(i)(r[i] for r in last if r[1] == m) for i in range(2, 10)]
        out.append((m, a, b, 100.0 * (b[0] - a[0]) / a[0]))
    return out


def block_spread(v, m, start_s, end_s, first_rss):
    """The range of the medians of the window's six blocks at node count m (those with 5
    samples or more), as % of the first third's median RSS: the noise a growth is read
    against."""
    size = (end_s - start_s) / 6
    medians = []
    for k in range(6):
        lo, hi = start_s + k * size, start_s + (k + 1) * size
        block = [r[2] for r in v if r[1] == m and lo <= r[0] < hi]
        if len(block) >= 5:
            medians.append(statistics.median(block))
    return 100.0 * (max(medians) - min(medians)) / first_rss if len(medians) > 1 else 0.0


def report(rows, warmup_s, end_s):
    """Prints the table of the processes sampled from the warm-up to the end; returns False
    when one grew (RSS > 1%, any fd or thread) or none lived that long."""
    ok, shown = True, 0
    print(f"\nprocesses that lived through the measured window ({warmup_s / 60:.1f} min → "
          f"{end_s / 60:.1f} min), first third vs last third at equal node count:")
    print(f"  {'process':28s} {'nodes':>5s} {'RSS then':>9s} {'RSS end':>9s} {'growth':>8s} "
          f"{'spread':>7s} {'fds':>9s} {'threads':>9s}   of which anon / file / shmem; VmData (KiB, then → end); "
          f"dead peers' SysV segments held")
    for (role, name, pid), v in sorted(series_of(rows).items()):
        if v[0][0] > warmup_s + 30 or v[-1][0] < end_s - 30:
            continue  # started after the warm-up or gone before the end (killed, drained)
        for m, a, b, pct in growth(v, warmup_s, end_s):
            good = pct <= RSS_GROWTH_MAX_PCT and b[4] <= a[4] and b[5] <= a[5]
            ok &= good
            shown += 1
            parts = " / ".join(f"{a[i]:.0f}→{b[i]:.0f}" for i in (1, 2, 3))
            parts += f"; {a[6]:.0f}→{b[6]:.0f}; {a[7]:.0f}→{b[7]:.0f}"
            print(f"  {f'{role} {name} ({pid})':28s} {m:5d} {a[0] / 1024:7.1f}Mi "
                  f"{b[0] / 1024:7.1f}Mi {pct:+7.2f}% "
                  f"{block_spread(v, m, warmup_s, end_s, a[0]):6.1f}% {a[4]:4.0f}→{b[4]:<4.0f} "
                  f"{a[5]:4.0f}→{b[5]:<4.0f}   {parts}{'' if good else '  MISSES'}")
    if not shown:
        print("  none (the soak was shorter than its warm-up, or every process was replaced)")
    return ok and shown > 0


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: no matplotlib (python3-matplotlib): no plot, samples.csv has the figures")
        return
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    series = {}
    for t, role, name, pid, _, rss, _anon, _file, _shmem, fds, threads, *_ in rows:
        series.setdefault(f"{role} {name} ({pid})", []).append((t / 60, rss / 1024, fds, threads))
    for label, v in series.items():
        if len(v) < 12:
            continue  # short-lived nodes (killed, drained) would hide the long lines
        for ax, i in zip(axes, (1, 2, 3)):
            ax.plot([r[0] for r in v], [r[i] for r in v], label=label, linewidth=1)
    for ax, name in zip(axes, ("RSS (MiB)", "open fds", "threads")):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    axes[2].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"soak: plot {path}")


def report_file(path):
    """--report: the table of a finished (or running) soak, from its samples.csv."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append((float(r["t_s"]), r["role"], r["name"], int(r["pid"]), int(r["members"]),
                         *(int(r[k]) for k in ("rss_kib", "anon_kib", "file_kib", "shmem_kib",
                                               "fds", "threads")),
                         # older soaks recorded neither VmData nor orphan segments
                         int(r.get("data_kib") or 0), int(r.get("orphan_shm") or 0)))
    if not rows:
        sys.exit(f"soak: {path} has no samples")
    end_s = rows[-1][0]
    warmup_s = 60 * env_num("SOAK_WARMUP_MIN", 10)
    ok = report(rows, warmup_s, end_s)
    meta = os.path.join(os.path.dirname(os.path.abspath(path)), "soak.json")
    if os.path.exists(meta):  # older soaks did not write it
        with open(meta) as f:
            m = json.load(f)
        heap_report(heap_lines(m["run_dir"], m["anchor"], m["wall_t0"]), warmup_s, end_s)
    sys.exit(0 if ok else 1)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        return report_file(sys.argv[2])
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build = sys.argv[1]
    troupe = os.path.abspath(os.path.join(build, "troupe"))
    minutes = env_num("SOAK_MINUTES", 120)
    every_s = env_num("SOAK_FAULT_EVERY_S", 30)
    sample_s = env_num("SOAK_SAMPLE_S", 5)
    warmup_s = 60 * env_num("SOAK_WARMUP_MIN", 10)
    recover_s = env_num("SOAK_RECOVER_S", 120)
    heartbeat_ms = env_num("SOAK_HEARTBEAT_TIMEOUT_MS", 3000, int)
    seed = env_num("SOAK_SEED", random.SystemRandom().randrange(1, 1 << 31), int)
    kinds = os.environ.get("SOAK_FAULTS", ",".join(KINDS)).split(",")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        sys.exit(f"soak: SOAK_FAULTS names {bad or 'nothing'}; choose among {','.join(KINDS)}")
    work = os.path.abspath(os.environ.get("SOAK_DIR", os.path.join(build, "soak")))
    os.makedirs(work, exist_ok=True)
    nodes, max_nodes = 3, 5
    print(f"soak: {minutes:g} min of tiny on {nodes} node processes, a fault every {every_s:g} s "
          f"from {kinds}; seed {seed} (SOAK_SEED={seed} replays the choices); samples every "
          f"{sample_s:g} s; heartbeat timeout {heartbeat_ms} ms; load {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores", flush=True)
    rng = random.Random(seed)
    job = Job(troupe, os.path.join(work, "run"), nodes,
              ["--max-nodes", str(max_nodes), "--set", "fault_tolerance.replace_lost=true"],
              recover_s, common=["--set", "train.eval_every=0", "--set",
                                 "checkpoint.every_steps=50", "--set", "checkpoint.keep=2",
                                 "--set", f"fault_tolerance.heartbeat_timeout_ms={heartbeat_ms}"])
    sampler, anchor = None, None
    ok, recovered, faults = True, True, 0
    try:
        st = steady_nodes(job, nodes, recover_s)
        anchor = min(n["id"] for n in st["nodes"])
        print(f"soak: {anchor} is the anchor (never a victim)", flush=True)
        sampler = Sampler(job, os.path.join(work, "samples.csv"), sample_s, anchor,
                          env_num("SOAK_SMAPS_S", 600))
        with open(os.path.join(work, "soak.json"), "w") as f:
            json.dump({"anchor": anchor, "wall_t0": sampler.wall_t0, "run_dir": job.run_dir}, f)
        sampler.start()
        t_end = time.monotonic() + 60 * minutes
        while time.monotonic() < t_end:
            time.sleep(max(0.0, min(every_s, t_end - time.monotonic())))
            if time.monotonic() >= t_end:
                break
            t0 = time.monotonic()
            what, nodes = inject(job, troupe, rng, kinds, nodes, anchor, max_nodes)
            steady_nodes(job, nodes, recover_s)
            faults += 1
            print(f"  {(time.monotonic() - sampler.t0) / 60:6.1f} min  fault {faults:3d}: "
                  f"{what:34s} steady again after {time.monotonic() - t0:5.1f} s", flush=True)
    except (BenchError, OSError) as e:
        ok = recovered = False
        print(f"soak: FAILED after {faults} faults: {e}\n  replay: SOAK_SEED={seed} "
              f"SOAK_MINUTES={minutes:g} SOAK_FAULTS={','.join(kinds)} make soak "
              f"(run directory kept: {job.run_dir})", flush=True)
    finally:
        end_s = time.monotonic() - sampler.t0 if sampler else 0.0
        if sampler and sampler.is_alive():
            sampler.finish()
        job.stop()
    if sampler is None:
        sys.exit(f"soak: the job never became steady; see {job.run_dir}.out")
    ok &= report(sampler.rows, warmup_s, end_s)
    heap_report(heap_lines(job.run_dir, anchor, sampler.wall_t0), warmup_s, end_s)
    plot(sampler.rows, os.path.join(work, "soak.png"))
    print(f"soak: {faults} faults injected, {'each' if recovered else 'NOT each'} recovered; "
          f"samples in {work}/samples.csv; {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
