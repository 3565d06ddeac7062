#!/usr/bin/python3
"""`troupe eplb` (issue 15) as a command: one JSON object on stdout for good input; for every
bad input (file, JSON, shape, value, option) one line naming it on stderr and exit status 2.
The placements themselves are checked against eplb.py in tests/reference/eplb_parity.py.

  eplb_cli_test.py --troupe build/troupe --work DIR
"""
import argparse
import functools
import json
import os
import sys

import launch_checks
from launch_checks import failures, run

# troupe eplb prints its JSON only when it succeeds: an error leaves stdout empty.
expect_error = functools.partial(launch_checks.expect_error, stdout_empty=True)

def write(work, name, text):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def eplb(troupe, path, r=16, g=4, n=2, p=8, *more):
    return [troupe, "eplb", "--loads", path, "--replicas", str(r), "--groups", str(g),
            "--nodes", str(n), "--gpus", str(p), *more]


def good_input(troupe, work):
    path = write(work, "good.json", json.dumps({"loads": [[5, 1, 4, 2, 8, 3, 7, 6, 1, 2, 3, 4],
                                                          [1.5, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0]]}))
    for (g, n), policy in (((4, 2), "hierarchical"), ((3, 2), "global")):
        res = run(eplb(troupe, path, 16, g, n, 8))
        lines = res.stdout.splitlines()
        out = json.loads(lines[0]) if res.returncode == 0 and len(lines) == 1 else {}
        keys = {"phy2log", "log2phy", "logcnt", "policy", "balance_before", "balance_after"}
        ok = set(out) == keys and out["policy"] == policy and len(out["phy2log"]) == 2 \
            and all(len(row) == 16 for row in out["phy2log"]) and res.stderr == ""
        ok = ok and 1 <= out["balance_after"] <= out["balance_before"]
        print(f"{'ok ' if ok else 'BAD'} good input, G={g} N={n}: {policy}")
        if not ok:
            failures.append(f"good input G={g} N={n}: status {res.returncode}, "
                            f"stdout {res.stdout[:200]!r}, stderr {res.stderr!r}")


def bad_inputs(troupe, work):
    good = write(work, "ok.json", json.dumps({"loads": [list(range(1, 13))]}))
    expect_error("missing file", eplb(troupe, work + "/nope.json"), "nope.json", "--loads")
    expect_error("bad JSON", eplb(troupe, write(work, "b.json", '{"loads": [[1, 2')),
                 "b.json", "not valid JSON")
    expect_error("no loads", eplb(troupe, write(work, "n.json", '{"load": [[1]]}')),
                 'no "loads"')
    expect_error("loads not a list", eplb(troupe, write(work, "s.json", '{"loads": 3}')),
                 "loads in", "a number")
    expect_error("row not a list", eplb(troupe, write(work, "r.json", '{"loads": [1, 2]}')),
                 "loads[0]", "a number")
    for name, value, kind in (("string", '"7"', "a string"), ("bool", "true", "a boolean"),
                              ("null", "null", "null")):
        row = ", ".join(["1"] * 11 + [value])
        expect_error(f"a {name} load", eplb(troupe, write(work, name + ".json",
                                                          '{"loads": [[' + row + ']]}')),
                     "loads[0][11]", kind, "not a number")
    expect_error("no layers", eplb(troupe, write(work, "e.json", '{"loads": []}')), "no layers")
    expect_error("no experts", eplb(troupe, write(work, "e2.json", '{"loads": [[]]}')),
                 "no experts")
    ragged = json.dumps({"loads": [list(range(12)), list(range(11))]})
    expect_error("ragged", eplb(troupe, write(work, "rag.json", ragged)), "loads[1] has 11")
    negative = json.dumps({"loads": [[1] * 11 + [-3]]})
    expect_error("negative load", eplb(troupe, write(work, "neg.json", negative)),
                 "loads[0][11]", ">= 0")
    expect_error("R not a multiple of P", eplb(troupe, good, 18), "replicas 18", "gpus 8")
    expect_error("G not dividing E", eplb(troupe, good, 16, 5, 1), "groups 5", "12 experts")
    expect_error("R < E", eplb(troupe, good, 8, 4, 2, 8), "replicas 8", "fewer than the 12")
    expect_error("N not dividing P", eplb(troupe, good, 16, 4, 3, 8), "nodes 3", "gpus 8")
    expect_error("zero GPUs", eplb(troupe, good, 16, 4, 2, 0), "--gpus")
    expect_error("not an integer", eplb(troupe, good, "x"), "--replicas", "got x")
    expect_error("unknown policy", eplb(troupe, good, 16, 4, 2, 8, "--policy", "best"),
                 "--policy", "best")
    expect_error("missing option", [troupe, "eplb", "--loads", good, "--replicas", "16"],
                 "--groups")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    good_input(args.troupe, args.work)
    bad_inputs(args.troupe, args.work)
    if failures:
        print(f"{len(failures)} failure(s):\n  " + "\n  ".join(failures))
        return 1
    print("eplb cli: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
