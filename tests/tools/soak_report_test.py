#!/usr/bin/env python3
"""tools/soak.py's verdict (growth, report) on synthetic samples whose growth is known."""
import contextlib
import ctypes
import datetime
import io
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import soak  # noqa: E402

failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))
    failures += 0 if ok else 1


def rows_of(name, pid, start_s, end_s, members, rss_at, fds_at=lambda t: 20,
            threads_at=lambda t: 10, data_kib=300_000, orphans_at=lambda t: 0):
    """A row every 5 s: (t, role, name, pid, members, rss, anon, file, shmem, fds, threads,
    data, orphan segments); rss_at(t, members) in KiB."""
    out = []
    for t in range(start_s, end_s + 1, 5):
        m = members(t)
        rss = rss_at(t, m)
        out.append((float(t), "node", name, pid, m, rss, rss - 30_000, 28_000, 2_000,
                    fds_at(t), threads_at(t), data_kib, orphans_at(t)))
    return out


def verdict(rows, warmup_s=600, end_s=3600):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        ok = soak.report(rows, warmup_s, end_s)
    return ok, text.getvalue()


def orphan_detection():
    """A SysV segment made by a process that has exited and still mapped here counts; one
    this process made does not."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
    libc.shmdt.argtypes = (ctypes.c_void_p,)
    ipc_creat, ipc_rmid = 0o1000, 0
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # makes a segment and exits, as a peer's UCX worker would
        os.write(write, str(libc.shmget(0, 4096, ipc_creat | 0o600)).encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = int(os.read(read, 32))
    mine = libc.shmget(0, 4096, ipc_creat | 0o600)
    check("segments made", theirs >= 0 and mine >= 0, f"{theirs} {mine}")
    if theirs < 0 or mine < 0:
        return
    addrs = [libc.shmat(theirs, None, 0), libc.shmat(mine, None, 0)]
    try:
        n = soak.orphan_segments(os.getpid(), soak.sysv_creators())
        check("a dead process's segment held here is counted, our own is not", n == 1, str(n))
    finally:
        for shmid, addr in zip((theirs, mine), addrs):
            libc.shmdt(ctypes.c_void_p(addr))
            libc.shmctl(shmid, ipc_rmid, None)
    n = soak.orphan_segments(os.getpid(), soak.sysv_creators())
    check("none once let go", n == 0, str(n))


def heap_log():
    """The anchor's heap lines are read from every node log, other nodes' and other lines
    left out, and compared at equal worker count."""
    t0 = 1796554800.0  # 2026-12-06T07:00:00Z
    def line(t, node, workers, in_use):
        stamp = datetime.datetime.fromtimestamp(t0 + t, datetime.timezone.utc)
        return (f"{stamp.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}+0000 [info] [{node}] {node}/worker.0: "
                f"heap after the trim at {workers} workers: {in_use} KiB in use, "
                f"{in_use + 900} KiB held, 64 KiB mapped\n")
    with tempfile.TemporaryDirectory() as run:
        with open(os.path.join(run, "node-n1.log"), "w") as f:
            for k in range(60):  # a view a minute, 2 and 3 workers in turn; 3 grows by 2%
                w = 2 + k % 2
                f.write(line(60 * k, "n1", w, 100_000 if w == 2 or k < 40 else 102_000))
            f.write("2026-12-06T07:00:01.000+0000 [info] [n1] n1/worker.0: committed step 3\n")
        with open(os.path.join(run, "node-n2.log"), "w") as f:
            f.write(line(700, "n2", 2, 999_999))
        lines = soak.heap_lines(run, "n1", t0)
        check("the anchor's 60 heap lines, in time order", len(lines) == 60
              and lines[0][:3] == (0.0, 2, 100_000) and lines[-1][0] == 3540.0, str(lines[:2]))
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            worst = soak.heap_report(lines, 600, 3600)
        check("growth at equal worker count", worst is not None and abs(worst - 2.0) < 1e-9
              and "2 workers" in text.getvalue() and "+0.00%" in text.getvalue(), text.getvalue())


def thread_names():
    """A process's threads by name: this one's, with a thread it started."""
    import threading
    done = threading.Event()
    t = threading.Thread(target=done.wait, name="soak-probe")
    t.start()
    try:
        names = soak.thread_names(os.getpid())
    finally:
        done.set()
        t.join()
    check("two threads named", names.count("×2") == 1 or names.count(",") == 1, names)
    check("a gone process has none", soak.thread_names(2 ** 22 + 7) == "")


def main():
    orphan_detection()
    heap_log()
    thread_names()
    two_three = lambda t: 2 if (t // 60) % 2 else 3  # alternates every minute
    # A node's RSS follows its share (more at 2 nodes than at 3), and does not grow.
    flat = rows_of("n1", 11, 0, 3600, two_three, lambda t, m: 250_000 if m == 3 else 270_000)
    ok, text = verdict(flat)
    check("flat at each node count passes", ok, text)
    check("both node counts in the table", " 2 " in text and " 3 " in text, text)
    check("VmData and dead peers' segments shown", "300000→300000; 0→0" in text, text)

    # 2% more at 3 nodes by the last third: missed, though 2 nodes stayed flat.
    grows = rows_of("n1", 11, 0, 3600, two_three,
                    lambda t, m: (250_000 + (5_000 if t > 2800 else 0)) if m == 3 else 270_000)
    ok, text = verdict(grows)
    check("2% RSS growth at one node count fails", not ok and "MISSES" in text, text)

    # The change of membership alone (a node's share) is no growth.
    by_members = rows_of("n1", 11, 0, 3600, lambda t: 3 if t < 2000 else 2,
                         lambda t, m: 250_000 if m == 3 else 270_000)
    ok, text = verdict(by_members)
    check("no node count in both thirds: nothing to compare, so no verdict", not ok, text)

    fds = rows_of("n1", 11, 0, 3600, lambda t: 3, lambda t, m: 250_000,
                  fds_at=lambda t: 20 if t < 2500 else 21)
    ok, text = verdict(fds)
    check("one more fd fails", not ok and "MISSES" in text, text)

    # A descriptor open for a moment (a control request) now and then is no growth.
    blips = rows_of("n1", 11, 0, 3600, lambda t: 3, lambda t, m: 250_000,
                    fds_at=lambda t: 21 if (t // 5) % 3 == 0 or t > 3000 else 20)
    ok, text = verdict(blips)
    check("fds compared by their floor: more moments open is no leak", ok, text)

    threads = rows_of("n1", 11, 0, 3600, lambda t: 3, lambda t, m: 250_000,
                      threads_at=lambda t: 10 if t < 2500 else 11)
    ok, _ = verdict(threads)
    check("one more thread fails", not ok)

    # A node that joined after the warm-up (a replacement) is not judged; alone, no verdict.
    late = rows_of("n9", 99, 1200, 3600, lambda t: 3, lambda t, m: 250_000 + 10 * t)
    ok, text = verdict(late)
    check("a process younger than the window is left out", not ok and "none" in text, text)
    ok, text = verdict(flat + late)
    check("... and does not fail the ones that lived through it", ok and "n9" not in text, text)

    if failures:
        sys.exit(f"{failures} failed")


if __name__ == "__main__":
    main()
