#!/usr/bin/python3
"""The `troupe` command end to end: bad input gets one clear line and exit status 2;
train -> export -> eval round-trips, and eval matches the PyTorch reference to 1e-4.

  cli_test.py --troupe build/troupe --work DIR
"""
import argparse
import json
import os
import re
import shutil
import sys

from launch_checks import check, expect_error, failures, run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TINY = os.path.join(ROOT, "configs", "tiny.toml")
REFERENCE = os.path.join(ROOT, "tests", "reference", "reference.py")


def write(path, data, mode="w"):
    with open(path, mode) as f:
        f.write(data)
    return path


def bad_input_cases(troupe, work):
    cfg = write(os.path.join(work, "typo.toml"), "[model]\nd_model = 64\nd_modle = 3\n")
    expect_error("unknown key", [troupe, "train", "--config", cfg, "--run-dir", work + "/r"],
                 "typo.toml:3", "d_modle")
    cfg = write(os.path.join(work, "neg.toml"), "[model]\nn_heads = -2\n")
    expect_error("bad value", [troupe, "train", "--config", cfg, "--run-dir", work + "/r"],
                 "neg.toml:2", "n_heads")
    cfg = write(os.path.join(work, "sect.toml"), "[modle]\nx = 1\n")
    expect_error("unknown section", [troupe, "train", "--config", cfg, "--run-dir", work + "/r"],
                 "modle")
    expect_error("missing config", [troupe, "train", "--config", work + "/nope.toml",
                                    "--run-dir", work + "/r"], "nope.toml")
    expect_error("bad --set", [troupe, "train", "--config", TINY, "--set", "train.stepz=3",
                               "--run-dir", work + "/r"], "train.stepz")
    expect_error("bad --set value", [troupe, "train", "--config", TINY, "--set",
                                     "model.top_k=abc", "--run-dir", work + "/r"], "model.top_k")
    for cmd in (["train", "--config", TINY, "--run-dir", work + "/r"],
                ["launch", "--config", TINY, "--run-dir", work + "/r"],
                ["node", "--join", "127.0.0.1:1", "--secret-file", work + "/s"]):
        expect_error(f"bad --log-level of {cmd[0]}", [troupe, *cmd, "--log-level", "loud"],
                     "--log-level", "loud", "warn")
    expect_error("export without run", [troupe, "export", "--run-dir", work + "/missing",
                                        "--out", work + "/x.safetensors"], "missing")
    garbage = write(os.path.join(work, "garbage.safetensors"), os.urandom(64), "wb")
    expect_error("foreign weights", [troupe, "eval", "--weights", garbage, "--text", TINY],
                 "garbage.safetensors")
    expect_error("missing weights", [troupe, "eval", "--weights", work + "/none.safetensors",
                                     "--text", TINY], "none.safetensors")
    expect_error("unknown flag", [troupe, "train", "--config", TINY, "--bogus"], "bogus")
    expect_error("negative --steps", [troupe, "train", "--config", TINY, "--steps", "-5",
                                      "--run-dir", work + "/r"], "--steps", "-5")
    expect_error("negative --local-nodes", [troupe, "launch", "--config", TINY, "--nodes", "2",
                                            "--local-nodes", "-3", "--run-dir", work + "/r"],
                 "--local-nodes", "-3")


def round_trip(troupe, work):
    run_dir = os.path.join(work, "run")
    shutil.rmtree(run_dir, ignore_errors=True)  # a run directory holds one run (issue 12)
    res = run([troupe, "train", "--config", TINY, "--run-dir", run_dir, "--steps", "6",
               "--set", "train.eval_every=3", "--set", "data.val_rows_max=4"])
    if res.returncode != 0:
        failures.append(f"train failed: {res.stderr}")
        return
    print(res.stdout.strip())
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    need = {"step", "loss", "lr", "tokens_per_s"}
    if len(lines) != 6 or any(not need <= set(l) for l in lines):
        failures.append(f"metrics.jsonl: wanted 6 lines with {need}, got {lines[:1]}")
    if [l["step"] for l in lines if "val_loss" in l] != [2, 5]:
        failures.append("metrics.jsonl: val_loss wanted on steps 2 and 5 (eval_every=3)")
    out = os.path.join(work, "exported.safetensors")
    res = run([troupe, "export", "--run-dir", run_dir, "--out", out])
    if res.returncode != 0:
        failures.append(f"export failed: {res.stderr}")
        return
    # A truncated copy of a real weights file is refused with the file named.
    data = open(out, "rb").read()
    cut = write(os.path.join(work, "truncated.safetensors"), data[: len(data) // 2], "wb")
    expect_error("truncated weights", [troupe, "eval", "--weights", cut, "--text", TINY],
                 "truncated.safetensors")
    text = "/usr/share/games/fortunes/goedel"
    ours = json.loads(run([troupe, "eval", "--weights", out, "--text", text]).stdout)
    res = run(["/usr/bin/python3", REFERENCE, "eval", "--weights", out, "--text", text])
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    rel = abs(ours["loss"] - theirs["loss"]) / theirs["loss"]
    print(f"eval after training: troupe {ours} reference {theirs} relative {rel:.2e}")
    if ours["tokens"] != theirs["tokens"] or rel > 1e-4:
        failures.append(f"eval mismatch: troupe {ours} reference {theirs}")


def log_levels(troupe, work):
    """Log lines carry time, level and who (runtime/log.h); --log-level warn hides info lines
    (a checkpoint written) and keeps the progress output."""
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \[info\] "
                      r"\[train\] \[checkpoint\] step 2 written: \d+ shards$", re.M)
    for level, want in (("info", True), ("warn", False)):
        run_dir = os.path.join(work, f"log-{level}")
        shutil.rmtree(run_dir, ignore_errors=True)
        res = run([troupe, "train", "--config", TINY, "--run-dir", run_dir, "--steps", "2",
                   "--set", "checkpoint.every_steps=2", "--set", "train.eval_every=0",
                   "--log-level", level])
        shown = bool(line.search(res.stderr))
        ok = res.returncode == 0 and shown == want and "summary:" in res.stdout
        print(f"{'ok ' if ok else 'BAD'} --log-level {level}: checkpoint line "
              f"{'shown' if shown else 'hidden'}")
        if not ok:
            failures.append(f"--log-level {level}: status {res.returncode}, checkpoint line "
                            f"shown {shown}, want {want}: {res.stderr[-400:]!r}")


def node_heap(troupe, work):
    """`troupe node` runs with its heap in 2 MiB pages (launch/node_heap.h): it executes itself
    again with glibc's tunables set, keeping others' and leaving an operator's choice alone."""
    added = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=1048576"
    cases = ((None, added),
             ("glibc.malloc.tcache_count=0", "glibc.malloc.tcache_count=0:" + added),
             ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"))
    for before, want in cases:
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if before is not None:
            env["GLIBC_TUNABLES"] = before
        res = run([troupe, "node", "--join", "127.0.0.1:1", "--secret-file", work + "/no-secret",
                   "--log-level", "debug"], env=env)
        seen = re.search(r"heap: GLIBC_TUNABLES=(\S+)", res.stderr)
        check(f"node heap from GLIBC_TUNABLES={before}", res.returncode == 2 and seen is not None
              and seen.group(1) == want, f"status {res.returncode}, {res.stderr[-300:]!r}")


def print_params(troupe):
    """--print-params: every tensor with its update, the Engram tables included (SPEC §5)."""
    res = run([troupe, "train", "--config", TINY, "--print-params", "--set", "optimizer.name=muon"])
    out = res.stdout
    groups = {m.group(1): int(m.group(2))
              for m in re.finditer(r"^group (\S+)\s+(\d+) parameters", out, re.M)}
    total = re.search(r"^total (\d+) parameters", out, re.M)
    tables = re.findall(r"^model\.layers\.1\.engram\.tables\.\d\.\d\s+(\d+)x16\s+engram-adam",
                        out, re.M)
    ok = (res.returncode == 0 and len(tables) == 8 and groups.get("muon", 0) > 0 and
          groups.get("engram-adam") == sum(int(r) * 16 for r in tables) and total and
          int(total.group(1)) == sum(groups.values()))
    print(f"{'ok ' if ok else 'BAD'} --print-params: groups {groups}, {len(tables)} Engram tables")
    if not ok:
        failures.append(f"--print-params: status {res.returncode}, groups {groups}, "
                        f"{len(tables)} tables, total {total.group(1) if total else None}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    bad_input_cases(a.troupe, a.work)
    print_params(a.troupe)
    node_heap(a.troupe, a.work)
    log_levels(a.troupe, a.work)
    round_trip(a.troupe, a.work)
    for f in failures:
        print("FAIL:", f)
    print(f"cli: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
