#!/usr/bin/env python3
"""Where a process's resident memory grew between two copies of its /proc/PID/smaps.

  tools/smaps_diff.py OLD.smaps NEW.smaps [--top N]

Each mapping is classed: [heap] (glibc's main arena), arena (a glibc thread arena: an
anonymous rw mapping at a 64 MiB boundary followed by its reserved ---p rest), stack, anon
(other anonymous memory: large malloc blocks, UCX's pools, CAF), shm (UCX's shared memory with
its peers: /dev/shm, SYSV), file (the binary and libraries). It prints the RSS and anonymous
KiB of each class in both copies and their difference, then the mappings that grew most
(matched by address range and name) and those that came or went. The soak (tools/soak.py,
SOAK_SMAPS_S) keeps such copies of its anchor node.
"""
import collections
import re
import sys

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")
ARENA_ALIGN = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit


def parse(path):
    """[{start, end, perms, name, Rss, Anonymous, ...}] in address order."""
    maps = []
    with open(path) as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                maps.append({"start": int(m[1], 16), "end": int(m[2], 16), "perms": m[3],
                             "name": m[4].strip()})
                continue
            key, _, rest = line.partition(":")
            if maps and rest.strip().endswith("kB"):
                maps[-1][key] = int(rest.split()[0])
    return maps


def classify(maps):
    for i, m in enumerate(maps):
        name = m["name"]
        if name == "[heap]":
            m["class"] = "heap"
        elif name.startswith("[stack"):
            m["class"] = "stack"
        elif name.startswith("/dev/shm") or "SYSV" in name or "ucx" in name:
            m["class"] = "shm"
        elif name.startswith("/"):
            m["class"] = "file"
        elif name.startswith("["):
            m["class"] = "other"
        else:
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            arena = (m["start"] % ARENA_ALIGN == 0 and "rw" in m["perms"] and
                     (m["end"] - m["start"] == ARENA_ALIGN or
                      (nxt and nxt["start"] == m["end"] and nxt["perms"].startswith("---") and
                       nxt["end"] - m["start"] == ARENA_ALIGN)))
            m["class"] = "arena" if arena else "anon"
    return maps


def key(m):
    return (m["start"], m["end"], m["name"])


def main():
    args = sys.argv[1:]
    top = 15
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    old, new = (classify(parse(p)) for p in args)
    print(f"{'class':8s} {'rss old':>10s} {'rss new':>10s} {'diff':>8s} {'anon diff':>10s} "
          f"{'maps old':>8s} {'maps new':>8s}  (KiB)")
    for cls in ("heap", "arena", "anon", "stack", "shm", "file", "other"):
        o = [m for m in old if m["class"] == cls]
        n = [m for m in new if m["class"] == cls]
        ro, rn = sum(m.get("Rss", 0) for m in o), sum(m.get("Rss", 0) for m in n)
        ao, an = sum(m.get("Anonymous", 0) for m in o), sum(m.get("Anonymous", 0) for m in n)
        print(f"{cls:8s} {ro:10d} {rn:10d} {rn - ro:+8d} {an - ao:+10d} {len(o):8d} {len(n):8d}")
    ro, rn = sum(m.get("Rss", 0) for m in old), sum(m.get("Rss", 0) for m in new)
    print(f"{'all':8s} {ro:10d} {rn:10d} {rn - ro:+8d}")
    by_old = {key(m): m for m in old}
    by_new = {key(m): m for m in new}
    kept = [(by_new[k].get("Rss", 0) - by_old[k].get("Rss", 0), k) for k in by_new if k in by_old]
    kept.sort(reverse=True)
    print(f"\nmappings in both, most grown (of {len(kept)}):")
    for d, k in kept[:top]:
        if d <= 0:
            break
        m = by_new[k]
        print(f"  {d:+8d} KiB  {m['class']:5s} {k[0]:x}-{k[1]:x} {(k[1] - k[0]) >> 10:9d} KiB "
              f"{m['perms']} {k[2]}")
    came = collections.Counter()
    went = collections.Counter()
    for k, m in by_new.items():
        if k not in by_old:
            came[m["class"]] += m.get("Rss", 0)
    for k, m in by_old.items():
        if k not in by_new:
            went[m["class"]] += m.get("Rss", 0)
    print("\nRSS of mappings that came (new only) and went (old only), by class:")
    for cls in sorted(set(came) | set(went)):
        print(f"  {cls:6s} came {came[cls]:8d} KiB  went {went[cls]:8d} KiB")


if __name__ == "__main__":
    main()
