#!/usr/bin/python3
"""`troupe engram export|import` (issue 16) as commands: a table set out of a run's newest
checkpoint and into a run directory's engram/sets/; an existing set kept unless --force, a
set made for another model config and a run with no checkpoint refused with one line and
exit status 2.

  engram_cli_test.py --troupe build/troupe --work DIR
"""
import argparse
import json
import os
import shutil
import struct
import sys

from launch_checks import TINY, check, expect_error, failures, run

# A short job: the tables and their moments after a few steps are what a set carries.
SMALL = ["--set", "train.batch_size=4", "--set", "train.eval_every=100",
         "--set", "data.val_rows_max=4"]


def train(troupe, run_dir, steps, *sets):
    shutil.rmtree(run_dir, ignore_errors=True)  # a run directory holds one run (issue 12)
    res = run([troupe, "train", "--config", TINY, "--steps", str(steps), "--run-dir", run_dir,
               *SMALL, *[x for s in sets for x in ("--set", s)]])
    check(f"train {os.path.basename(run_dir)}", res.returncode == 0,
          f"status {res.returncode}" + (f": {res.stderr.strip()[-400:]}" if res.returncode else ""))
    return res.returncode == 0


def metadata(path):
    """The __metadata__ of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


def export_import(troupe, work):
    run_dir, out = os.path.join(work, "run"), os.path.join(work, "a.safetensors")
    if not train(troupe, run_dir, 4, "checkpoint.every_steps=2"):
        return
    res = run([troupe, "engram", "export", "--run-dir", run_dir, "--out", out])
    line = res.stdout.strip()
    check("export", res.returncode == 0 and len(line.splitlines()) == 1 and
          line.startswith("exported table set a (step 4, 8 tables, hash ") and
          "from the checkpoint of step 4" in line, f"status {res.returncode}: {line}{res.stderr}")
    imp = [troupe, "engram", "import", out, "--run-dir", run_dir, "--name", "b"]
    res = run(imp)
    dest = os.path.join(run_dir, "engram", "sets", "b.safetensors")
    ok = res.returncode == 0 and os.path.exists(dest)
    meta = metadata(dest) if ok else {}
    check("import", ok and meta.get("troupe_engram_set") == "b" and
          meta.get("troupe_engram_step") == "4", f"status {res.returncode}: "
          f"{res.stdout.strip()}{res.stderr.strip()}; metadata {meta}")
    expect_error("import over an existing set", imp, "already has a table set b", "--force")
    res = run(imp + ["--force"])
    check("import --force", res.returncode == 0, f"status {res.returncode}: {res.stderr.strip()}")
    return out


def refusals(troupe, work, out):
    other = os.path.join(work, "rows")
    if train(troupe, other, 2, "model.engram_table_rows=20011"):
        expect_error("import into another config", [troupe, "engram", "import", out,
                                                    "--run-dir", other],
                     "a.safetensors", "engram_table_rows = 10007", "this job has 20011")
        # That run wrote no checkpoint (no checkpoint.every_steps).
        expect_error("export without a checkpoint", [troupe, "engram", "export", "--run-dir",
                                                     other, "--out", work + "/x.safetensors"],
                     "rows", "no good checkpoint")
    plain = os.path.join(work, "plain")
    if train(troupe, plain, 2, "model.engram_layers=[]", "checkpoint.every_steps=2"):
        expect_error("export of a run without Engram", [troupe, "engram", "export", "--run-dir",
                                                        plain, "--out", work + "/x.safetensors"],
                     "plain", "no Engram tables")
    run_dir = os.path.join(work, "run")
    res = run([troupe, "engram", "export", "--run-dir", run_dir, "--step", "2", "--out",
               work + "/s2.safetensors", "--name", "two"])
    check("export --step 2", res.returncode == 0 and
          res.stdout.startswith("exported table set two (step 2, 8 tables, hash "),
          f"status {res.returncode}: {res.stdout.strip()}{res.stderr.strip()}")
    expect_error("export of a step without a checkpoint", [troupe, "engram", "export",
                                                           "--run-dir", run_dir, "--step", "3",
                                                           "--out", work + "/x.safetensors"],
                 "step 3", "complete checkpoints: 2, 4")
    expect_error("export from no run", [troupe, "engram", "export", "--run-dir",
                                        work + "/missing", "--out", work + "/x.safetensors"],
                 "missing")
    expect_error("import of no file", [troupe, "engram", "import", work + "/none.safetensors",
                                       "--run-dir", os.path.join(work, "run")], "none.safetensors")
    expect_error("bad name", [troupe, "engram", "import", out, "--run-dir",
                              os.path.join(work, "run"), "--name", "../x"], "--name", "../x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    out = export_import(args.troupe, args.work)
    if out:
        refusals(args.troupe, args.work, out)
    if failures:
        print(f"{len(failures)} failure(s):\n  " + "\n  ".join(failures))
        return 1
    print("engram cli: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
