#!/usr/bin/python3
"""What a process's live heap holds over time, by allocation site, from one heaptrack
recording: is a growing RSS a leak (a site whose live bytes keep rising) or the allocator?

  heap_trend.py RAW --minutes 5,8,11,...  [--top 25] [--frames 6]

RAW is heaptrack's raw stream of one process (the file libheaptrack_preload.so writes
where DUMP_HEAPTRACK_OUTPUT points, `heaptrack.PID` by default), possibly still growing.
For each minute M it keeps the stream up to the first timestamp at or after M minutes
since the process started, interprets it (heaptrack_interpret) and asks heaptrack_print for
the bytes still allocated then, per stack (a "leaked" flamegraph). It prints the total at
each cut and the sites (the innermost --frames frames) whose live bytes grew most from the
first third of the cuts to the last third, with every cut's figure (KiB): a leak rises
from cut to cut; a buffer in flight or a state that follows the worker count comes and goes.

Recording a node of a soak (docs/operations.md, "Soaking a job"): `troupe launch` starts
its nodes from its own binary, and libheaptrack removes itself from the environment of the
processes it traces, so the preload goes through /etc/ld.so.preload for the moment the
first nodes start (root; every process started meanwhile writes heaptrack.PID in its
working directory):

  make build         # first: nothing may be compiled while the preload is on
  cd /tmp/ht && echo /usr/lib/heaptrack/libheaptrack_preload.so > /etc/ld.so.preload
  SOAK_MINUTES=30 SOAK_FAULT_EVERY_S=10 SOAK_HEARTBEAT_TIMEOUT_MS=8000 \
    python3 REPO/tools/soak.py REPO/build &
  # once `pgrep -fc "troupe node --join"` reads 3:
  rm /etc/ld.so.preload

The anchor is the node whose pid `soak.py`'s samples.csv gives for the anchor's name.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

LIBEXEC = "/usr/lib/heaptrack/libexec/heaptrack_interpret"


def cut(raw, ms, out):
    """Copies RAW up to its first timestamp line ("c <hex ms>") at or after ms."""
    with open(raw, "rb") as f, open(out, "wb") as o:
        for line in f:
            if not line.endswith(b"\n"):
                break  # the writer's last, unfinished line
            if line.startswith(b"c ") and int(line[2:], 16) >= ms:
                return True
            o.write(line)
    return False


def live_by_stack(raw, minute, work):
    """{stack (outermost first, ';'-joined): bytes live at that minute}, or None when the
    recording ends before it."""
    part, interpreted, flame = (os.path.join(work, n) for n in ("cut.raw", "cut.ht", "cut.fg"))
    if not cut(raw, int(minute * 60000), part):
        return None
    with open(part, "rb") as i, open(interpreted, "wb") as o:
        subprocess.run([LIBEXEC], stdin=i, stdout=o, stderr=subprocess.DEVNULL, check=True)
    subprocess.run(["heaptrack_print", "-f", interpreted, "--flamegraph-cost-type", "leaked",
                    "-F", flame, "-l", "0", "-p", "0", "-a", "0", "-T", "0"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    out = {}
    with open(flame, errors="replace") as f:
        for line in f:
            stack, _, v = line.rstrip("\n").rpartition(" ")
            out[stack] = out.get(stack, 0) + int(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw")
    ap.add_argument("--minutes", required=True, help="the cuts, e.g. 5,8,11,14")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--frames", type=int, default=6, help="innermost frames naming a site")
    a = ap.parse_args()
    for tool in (LIBEXEC, "/usr/bin/heaptrack_print"):
        if not os.path.exists(tool):
            sys.exit(f"heap_trend: {tool} is missing: apt-get install heaptrack")
    try:
        minutes = [float(m) for m in a.minutes.split(",")]
    except ValueError:
        sys.exit(f"heap_trend: --minutes {a.minutes!r}: give minutes separated by commas")
    if len(minutes) < 2 or minutes != sorted(minutes):
        sys.exit("heap_trend: --minutes needs two or more cuts in increasing order")
    cuts = []
    with tempfile.TemporaryDirectory() as work:
        for m in minutes:
            got = live_by_stack(a.raw, m, work)
            if got is None:
                print(f"heap_trend: the recording ends before minute {m:g}; cuts stop there")
                break
            site = {}
            for stack, v in got.items():
                key = " <- ".join(reversed(stack.split(";")[-a.frames:]))
                site[key] = site.get(key, 0) + v
            cuts.append((m, site))
    if len(cuts) < 2:
        sys.exit("heap_trend: fewer than two cuts inside the recording")
    k = max(1, len(cuts) // 3)
    print("minute:  " + " ".join(f"{m:>8g}" for m, _ in cuts))
    print("live KiB:" + " ".join(f"{sum(s.values()) >> 10:>8d}" for _, s in cuts))
    rows = []
    for key in set().union(*(s for _, s in cuts)):
        v = [s.get(key, 0) for _, s in cuts]
        rows.append((statistics.median(v[-k:]) - statistics.median(v[:k]), v, key))
    rows.sort(key=lambda r: -r[0])
    print(f"sites by growth, median of the last {k} cuts minus the first {k} (KiB):")
    for g, v, key in rows[:a.top]:
        print(f"{g / 1024:+10.1f}  {' '.join(str(x >> 10) for x in v)}\n    {key[:300]}")


if __name__ == "__main__":
    main()
