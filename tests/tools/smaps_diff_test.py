#!/usr/bin/env python3
"""tools/smaps_diff.py on two synthetic smaps whose growth is known: the classes (heap, a
glibc thread arena, other anonymous memory, shared memory, files), the mapping that grew
most, and the mappings that came and went."""
import contextlib
import io
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, os.path.join(HERE, "..", "launch"))
import smaps_diff  # noqa: E402
from launch_checks import check, failures  # noqa: E402


def mapping(start, end, perms, name, rss, anon):
    return (f"{start:x}-{end:x} {perms} 00000000 00:00 0          {name}\n"
            f"Size: {(end - start) >> 10} kB\nRss: {rss} kB\nAnonymous: {anon} kB\n")


ARENA = 64 << 20


def smaps(heap_rss, arena_rss, anon_rss, extra_anon):
    text = mapping(0x1000000, 0x9000000, "rw-p", "[heap]", heap_rss, heap_rss)
    text += mapping(ARENA * 2, ARENA * 2 + (8 << 20), "rw-p", "", arena_rss, arena_rss)
    text += mapping(ARENA * 2 + (8 << 20), ARENA * 3, "---p", "", 0, 0)
    text += mapping(0x7f0000001000, 0x7f0000801000, "rw-p", "", anon_rss, anon_rss)
    text += mapping(0x7f1000000000, 0x7f1000400000, "rw-s", "/SYSV00000000 (deleted)", 40, 0)
    text += mapping(0x7f2000000000, 0x7f2000100000, "r-xp", "/usr/lib/libc.so.6", 900, 0)
    if extra_anon:
        text += mapping(0x7f3000000000, 0x7f3000100000, "rw-p", "", extra_anon, extra_anon)
    return text


def main():
    with tempfile.TemporaryDirectory() as d:
        old, new = os.path.join(d, "old.smaps"), os.path.join(d, "new.smaps")
        with open(old, "w") as f:
            f.write(smaps(100_000, 4_000, 2_000, 0))
        with open(new, "w") as f:
            f.write(smaps(100_000, 4_000, 7_000, 512))
        classes = {m["name"] or f"{m['start']:x}": m["class"]
                   for m in smaps_diff.classify(smaps_diff.parse(old))}
        check("the heap is heap", classes.get("[heap]") == "heap", classes)
        check("an arena at 64 MiB with its reserve is an arena",
              classes.get(f"{ARENA * 2:x}") == "arena", classes)
        check("other anonymous memory is anon", classes.get("7f0000001000") == "anon", classes)
        check("SYSV is shared memory", classes.get("/SYSV00000000 (deleted)") == "shm", classes)
        check("a library is a file", classes.get("/usr/lib/libc.so.6") == "file", classes)
        out = io.StringIO()
        sys.argv = ["smaps_diff.py", old, new]
        with contextlib.redirect_stdout(out):
            smaps_diff.main()
        text = out.getvalue()
        anon_line = next((l for l in text.splitlines() if l.startswith("anon ")), "")
        check("anon grew by 5000 + 512 KiB", "+5512" in anon_line, anon_line)
        lines = text.splitlines()
        heap_line = next((l for l in lines if l.startswith("heap ")), "")
        check("the heap did not grow", " +0 " in heap_line, heap_line)
        grown = next((l for l in lines if "KiB  anon  " in l), "")
        check("the grown mapping is named", "+5000 KiB  anon  7f0000001000-7f0000801000" in grown,
              grown)
        came = next((l for l in lines if "came" in l and "anon" in l), "")
        check("the new mapping came", "anon   came      512 KiB  went        0 KiB" in came, came)
    print("smaps_diff_test:", "ok" if not failures else f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
