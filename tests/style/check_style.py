#!/usr/bin/env python3
"""Style checks that a machine can do (STYLE.md, DESIGN.md §1). Prints every violation as
path:line: what, and exits 1 if there is any:

  - a line over 100 characters; a banned call (rand, system, random_device); a FIXME;
  - an include that goes up the layers of DESIGN.md §1 (LAYERS below);
  - a function over 70 lines, a file over 600 lines, unless tests/style/grandfathered.txt
    lists it at least that long. That list may only shrink: an entry whose item grew, or
    that no longer needs to be there (fixed, renamed, moved), fails too.

  check_style.py [--root DIR] [--grandfather FILE]
  check_style.py --write-grandfather    rewrite the list from the tree as it is now (after a
                                        move or a split; never to let a new violation in)
"""
import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GRANDFATHER = os.path.join("tests", "style", "grandfathered.txt")

# DESIGN.md §1, top to bottom: each folder and the folders it may include directly. A folder
# may include anything below it (the closure of this table) and itself; kernels/cuda is part
# of kernels/. config/ fills the structs that the lower folders define for themselves
# (model/ owns ModelConfig, train/ TrainConfig, runtime/ its fault-tolerance settings), so no
# lower folder needs config/. storage/ sits above config/: what it writes (weights metadata,
# checkpoint manifests) records the job's config and checks it on reading. runtime/ moves
# bytes and knows nothing of the model; kernels/ needs nothing. tests/ and bench/ may include
# anything (they are not here). A folder that does not exist yet costs nothing.
LAYERS = {
    "launch": ["chaos"],
    "chaos": ["actors"],
    "actors": ["runtime", "storage"],
    "storage": ["config"],
    "config": ["runtime", "train"],
    "runtime": [],
    "train": ["optim", "data"],
    "optim": ["model"],
    "data": ["model"],
    "model": ["kernels"],
    "kernels": [],
}
FREE_FOLDERS = ["tests", "bench"]  # checked for everything but the layers
SOURCE_EXTS = (".h", ".cc", ".cu", ".cuh")

LINE_CHARS_MAX = 100
FILE_LINES_MAX = 600  # STYLE.md: "a file over ~600 lines is usually two files"
FUNCTION_LINES_MAX = 70  # STYLE.md: "Keep functions short (about 70 lines at most)"
BANNED = [
    (re.compile(r"(?<![\w:])s?rand\s*\("), "rand()/srand(): use the counter RNG (model/rng.h)"),
    (re.compile(r"std::system\s*\(|(?<![\w:.>])system\s*\("), "system(): spawn processes explicitly"),
    (re.compile(r"FIXME"), "FIXME on main"),
    (re.compile(r"std::random_device"), "random_device: results must not depend on entropy"),
]
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def below(layers):
    """Each folder -> the set of folders it may include (itself and its closure)."""
    allowed = {}

    def reach(f, seen):
        for g in layers.get(f, []):
            if g not in seen:
                seen.add(g)
                reach(g, seen)
        return seen

    for f in layers:
        allowed[f] = reach(f, {f})
    return allowed


ALLOWED = below(LAYERS)


# ---- C++ text without comments, strings and character literals -----------------------------


def blank_cpp(text):
    """text with comments, string and char literals and preprocessor lines replaced by spaces
    (newlines kept, so offsets and line numbers stay)."""
    out = list(text)
    n, i = len(text), 0
    line_start = True

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if line_start and c == "#":  # a preprocessor line, with its continuations
            j = i
            while j < n and (text[j] != "\n" or text[j - 1] == "\\"):
                j += 1
            blank(i, j)
            i = j
            continue
        if c == "\n":
            line_start = True
            i += 1
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            blank(i, j)
            i = j
        elif c == '"':
            raw = re.search(r'(?:\bu8|\b[uUL])?R$', text[max(0, i - 3):i])
            if raw:  # R"delim( ... )delim"
                m = re.match(r'"([^()\\\s]{0,16})\(', text[i:])
                end = text.find(")" + m.group(1) + '"', i) if m else -1
                j = n if end < 0 else end + len(m.group(1)) + 2
            else:
                j = i + 1
                while j < n and text[j] != '"' and text[j] != "\n":
                    j += 2 if text[j] == "\\" else 1
                j += 1
            blank(i + 1, min(j - 1, n))
            i = j
        elif c == "'":
            word = re.search(r"[\w.]*$", text[max(0, i - 64):i]).group(0)
            if word[:1].isdigit():  # a digit separator: 1'000'000
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != "'" and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j += 1
            blank(i + 1, min(j - 1, n))
            i = j
        else:
            i += 1
    return "".join(out)


# ---- Functions ----------------------------------------------------------------------------

SCOPE_HEAD = re.compile(r"(^|[^\w])(namespace|class|struct|union|extern)([^\w]|$)")
KEYWORDS_BEFORE_PAREN = {"decltype", "alignas", "noexcept", "requires", "__attribute__",
                         "__declspec", "sizeof", "alignof", "throw", "static_assert"}


def head_is_scope(head):
    """namespace/class/struct/union/extern "C" blocks are descended into; enum bodies skipped.
    The keyword must follow the head's last `)`, so `void f(struct stat* s)` is a function and
    `FOO(x) namespace y` (a macro without a semicolon before it) a namespace."""
    h = head
    while True:  # template arguments, innermost first
        shorter = re.sub(r"<[^<>{}]*>", "", h)
        if shorter == h:
            break
        h = shorter
    return bool(SCOPE_HEAD.search(h[h.rfind(")") + 1:])) and not re.search(r"\benum\b", h)


def without_init_list(head):
    """head up to the end of its parameter list when it has a constructor's initializer
    list (`A::A(int x) : a_(x), b_{y}` -> `A::A(int x)`)."""
    for start, end in paren_groups(head):
        if re.match(r"[\s\w&]*(?<!:):(?!:)", head[end + 1:]):
            return head[:end + 1]
    return head


def paren_groups(head):
    """(start, end) of each top-level (...) group in head."""
    groups, depth, start = [], 0, 0
    for k, ch in enumerate(head):
        if ch == "(":
            if depth == 0:
                start = k
            depth += 1
        elif ch == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                groups.append((start, k))
    return groups


def function_name(head):
    """The name a function head declares: `void A::b(int) const` -> A::b; a macro like
    TEST(Suite, Name) -> TEST(Suite,Name); `auto f = [](int x)` -> f; else lambda."""
    head = without_init_list(head)
    for start, end in reversed(paren_groups(head)):
        before = head[:start].rstrip()
        m = re.search(r"((?:[\w~]+(?:<[^<>()]*>)?::)*(?:operator\s*\(\s*\)|operator\s*[^\s\w(]"
                      r"[^\s(]*|[\w~]+))$", before)
        if not m:
            if before.endswith("]"):
                var = re.search(r"(\w+)\s*=\s*\[[^\[\]]*\]$", before)
                return var.group(1) if var else "lambda"
            continue
        name = m.group(1)
        if name.split("::")[-1] in KEYWORDS_BEFORE_PAREN or name == "operator":
            continue
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name):  # a macro: its arguments name it
            return name + re.sub(r"\s+", "", head[start:end + 1])
        return re.sub(r"\s+", "", name)
    return "?"


def is_function_head(head):
    """A `{` after this head opens a function body: `...) {`, `...) const {`, `...) override {`,
    `...) -> T {`, `...) : a_(x), b_(y) {`, a lambda `[...](...) mutable {`."""
    h = head.strip()
    if not h or ")" not in h or head_is_scope(h):
        return False
    if re.search(r"(^|[^\w])(if|for|while|switch|catch)\s*\(", h[:h.find("(") + 1]):
        return False
    tail = h[h.rfind(")") + 1:]
    if re.search(r"[=;]", tail) and not re.search(r"->", tail):
        return False
    return True


def functions(blanked):
    """(name, first line, lines) of every function body at namespace or class scope. Lambdas
    and local classes count as part of the function they are in."""
    found = []
    n = len(blanked)
    line_of = [0] * (n + 1)
    ln = 1
    for k, ch in enumerate(blanked):
        line_of[k] = ln
        if ch == "\n":
            ln += 1
    line_of[n] = ln

    def match(i):  # index of the } closing the { at i
        depth = 0
        for k in range(i, n):
            if blanked[k] == "{":
                depth += 1
            elif blanked[k] == "}":
                depth -= 1
                if depth == 0:
                    return k
        return n - 1

    def scan(a, b):  # a scope's inside: heads end at ; { } (and labels like public:)
        head_start = a
        i = a
        while i < b:
            ch = blanked[i]
            if ch == ";" or ch == "}":
                head_start = i + 1
            elif ch == "{":
                lead = re.match(r"\s*(?:(?:public|private|protected)\s*:(?!:)\s*)?",
                                blanked[head_start:i]).end()  # spaces and an access label
                head = blanked[head_start + lead:i]
                close = match(i)
                if head.count("(") > head.count(")"):
                    i = close + 1  # inside parentheses: `f(Options o = {}) {`, `size_t{8}`
                    continue
                if without_init_list(head) != head and re.search(r"[\w>]\s*$", head) and \
                        not re.search(r"\b(const|override|final|noexcept|mutable|try)\s*$", head):
                    i = close + 1  # a brace initializer in a constructor's initializer list
                    continue
                if head_is_scope(head):
                    scan(i + 1, close)
                    head_start = close + 1
                elif is_function_head(head):
                    first = line_of[head_start + lead]
                    found.append((function_name(head), first, line_of[close] - first + 1))
                    head_start = close + 1
                # else: an initializer (`x = {1, 2}`), an enum: skipped whole
                i = close + 1
                continue
            i += 1

    scan(0, n)
    return found


# ---- The checks ---------------------------------------------------------------------------


def source_files(root):
    """Relative paths of the C++ sources under the layer folders, tests/ and bench/."""
    out = []
    for folder in sorted(set(LAYERS) | set(FREE_FOLDERS)):
        for dirpath, dirs, files in os.walk(os.path.join(root, folder)):
            dirs.sort()
            for f in sorted(files):
                if f.endswith(SOURCE_EXTS):
                    out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def layer_errors(rel, lines):
    folder = rel.split(os.sep)[0]
    if folder not in ALLOWED:
        return []
    bad = []
    for i, line in enumerate(lines, 1):
        m = INCLUDE.match(line)
        if not m or "/" not in m.group(1):
            continue
        target = m.group(1).split("/")[0]
        if target in ALLOWED and target not in ALLOWED[folder]:
            bad.append(f"{rel}:{i}: {folder}/ includes {m.group(1)}: {target}/ is not below "
                       f"{folder}/ in DESIGN.md §1 ({folder}/ may include: "
                       f"{', '.join(sorted(ALLOWED[folder]))})")
    return bad


def line_errors(rel, lines):
    bad = []
    for i, line in enumerate(lines, 1):
        if len(line) > LINE_CHARS_MAX:
            bad.append(f"{rel}:{i}: line of {len(line)} chars (max {LINE_CHARS_MAX})")
        for rx, why in BANNED:
            if rx.search(line) and "style-ok" not in line:
                bad.append(f"{rel}:{i}: {why}")
    return bad


def size_items(rel, text):
    """Items over their size limit: (kind, path, name, size, line, message)."""
    items = []
    n_lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if n_lines > FILE_LINES_MAX:
        items.append(("file", rel, "-", n_lines, 1,
                      f"{rel}: file is {n_lines} lines (max {FILE_LINES_MAX}): split it"))
    for name, line, size in functions(blank_cpp(text)):
        if size > FUNCTION_LINES_MAX:
            items.append(("function", rel, name, size, line,
                          f"{rel}:{line}: function {name} is {size} lines "
                          f"(max {FUNCTION_LINES_MAX})"))
    return items


def read_grandfather(path):
    """{(kind, path, name): [recorded sizes]} and the errors in the list itself."""
    entries, bad = {}, []
    if not os.path.exists(path):
        return entries, bad
    for i, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        f = line.split()
        if len(f) == 3 and f[0] == "file" and f[2].isdigit():
            f = [f[0], f[1], "-", f[2]]
        if len(f) != 4 or f[0] not in ("file", "function") or not f[3].isdigit():
            bad.append(f"{GRANDFATHER}:{i}: cannot read '{line}': want 'function PATH NAME "
                       f"LINES' or 'file PATH LINES'")
            continue
        entries.setdefault((f[0], f[1], f[2]), []).append(int(f[3]))
    return entries, bad


def judge_sizes(items, entries):
    """Size violations not covered by the list, entries whose item grew, stale entries."""
    bad, notes = [], []
    current = {}
    for it in items:
        current.setdefault(it[:3], []).append(it)
    for key in sorted(set(current) | set(entries)):
        have = sorted(current.get(key, []), key=lambda it: -it[3])
        recorded = sorted(entries.get(key, []), reverse=True)
        for k, it in enumerate(have):
            if k >= len(recorded):
                bad.append(it[5])
            elif it[3] > recorded[k]:
                bad.append(f"{it[5]}; grandfathered at {recorded[k]}, and the list may only "
                           f"shrink: make it shorter, not longer")
            elif it[3] < recorded[k]:
                notes.append(f"{it[1]}:{it[4]}: {key[0]} {key[2]} shrank to {it[3]} lines "
                             f"(listed at {recorded[k]}): lower its entry in {GRANDFATHER}")
        for size in recorded[len(have):]:
            what = f"file {key[1]}" if key[0] == "file" else f"function {key[1]} {key[2]}"
            bad.append(f"{GRANDFATHER}: '{what} {size}' no longer exceeds its limit (fixed, "
                       f"renamed or moved): remove it from the list (or run check_style.py "
                       f"--write-grandfather after a move)")
    return bad, notes


HEADER = """\
# The functions over {fn} lines and the files over {fl} lines that were there before the
# limits (STYLE.md, issue 11), each with its size when it was listed. This list is for
# SHRINKING ONLY: an item that grows beyond its size fails tests/style/check_style.py, and so
# does an entry that no longer exceeds its limit (remove the line). Split a function and
# delete its line; never add one. After files move, regenerate it with
#   python3 tests/style/check_style.py --write-grandfather
# and check in the diff that only paths changed.
# function PATH NAME LINES  |  file PATH LINES
"""


def write_grandfather(path, items):
    with open(path, "w", encoding="utf-8") as out:
        out.write(HEADER.format(fn=FUNCTION_LINES_MAX, fl=FILE_LINES_MAX))
        for kind, rel, name, size, _, _ in sorted(items, key=lambda it: it[:4]):
            if kind == "file":
                out.write(f"file {rel} {size}\n")
            else:
                out.write(f"function {rel} {name} {size}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=ROOT, help="the tree to check (default: this repo)")
    ap.add_argument("--grandfather", help=f"the list (default: ROOT/{GRANDFATHER})")
    ap.add_argument("--write-grandfather", action="store_true",
                    help="write the current size violations as the list, then check")
    a = ap.parse_args(argv)
    root = os.path.abspath(a.root)
    gf_path = a.grandfather or os.path.join(root, GRANDFATHER)
    bad, items = [], []
    for rel in source_files(root):
        text = open(os.path.join(root, rel), encoding="utf-8", errors="replace").read()
        lines = text.split("\n")
        bad += line_errors(rel, lines)
        bad += layer_errors(rel, lines)
        items += size_items(rel, text)
    if a.write_grandfather:
        write_grandfather(gf_path, items)
        print(f"style: wrote {len(items)} entries to {gf_path}")
    entries, list_bad = read_grandfather(gf_path)
    size_bad, notes = judge_sizes(items, entries)
    bad += list_bad + size_bad
    for b in bad:
        print(b)
    for note in notes:
        print("note: " + note)
    print(f"style: {len(bad)} violation(s); {sum(len(v) for v in entries.values())} "
          f"grandfathered item(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
