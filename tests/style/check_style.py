#!/usr/bin/env python3
"""Style checks that a machine can do (STYLE.md): line length, banned calls, no FIXME,
file length. Prints every violation as path:line: what; exits 1 if there is any."""
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FOLDERS = ["kernels", "model", "launch", "runtime", "actors", "storage", "chaos", "bench", "tests"]
LINE_CHARS_MAX = 100
FILE_LINES_MAX = 700  # STYLE.md: "a file over ~600 lines is usually two files"
BANNED = [
    (re.compile(r"(?<![\w:])s?rand\s*\("), "rand()/srand(): use the counter RNG (model/rng.h)"),
    (re.compile(r"std::system\s*\(|(?<![\w:.>])system\s*\("), "system(): spawn processes explicitly"),
    (re.compile(r"FIXME"), "FIXME on main"),
    (re.compile(r"std::random_device"), "random_device: results must not depend on entropy"),
]


def main():
    bad = []
    for folder in FOLDERS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if not f.endswith((".h", ".cc", ".cu", ".cuh")):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
                if len(lines) > FILE_LINES_MAX:
                    bad.append(f"{rel}: {len(lines)} lines (max {FILE_LINES_MAX}): split it")
                for i, line in enumerate(lines, 1):
                    if len(line) > LINE_CHARS_MAX:
                        bad.append(f"{rel}:{i}: line of {len(line)} chars (max {LINE_CHARS_MAX})")
                    for rx, why in BANNED:
                        if rx.search(line) and "style-ok" not in line:
                            bad.append(f"{rel}:{i}: {why}")
    for b in bad:
        print(b)
    print(f"style: {len(bad)} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
