#!/usr/bin/python3
"""`troupe train` checkpoints and --resume (issue 12), end to end on tiny:

  - an undisturbed run's weights hash is the reference;
  - a run killed with SIGKILL after a checkpoint exists, then --resume: the same hash, and
    `troupe ledger --check` passes (the killed steps' commits undone, redone once);
  - `troupe export --step S` from a checkpoint gives the finished run's bytes at the last step;
  - a second job on a locked run directory is refused naming the holder's pid; a directory
    that holds a run is refused without --resume;
  - TROUPE_STORAGE_FAULT=full@5: that checkpoint is skipped with a message, the run ends with
    the same hash;
  - TROUPE_STORAGE_FAULT=file-full:metrics.jsonl@2000: exit 1 naming metrics.jsonl at the
    first failed write; --resume without the fault ends with the same hash.

  train_resume_test.py --troupe build/troupe --work DIR
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys

from launch_checks import TINY, check, failures, scaled, steps_done, wait_for

STEPS = 15
EVERY = 5
COMMON = ["--config", TINY, "--steps", str(STEPS), "--set", f"checkpoint.every_steps={EVERY}",
          "--set", "train.eval_every=0", "--set", "data.val_rows_max=4"]


def train(troupe, run_dir, *extra, env=None):
    return subprocess.run([troupe, "train", *COMMON, "--run-dir", run_dir, *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=scaled(300))


def start_train(troupe, run_dir, log):
    with open(log, "w") as err:
        return subprocess.Popen([troupe, "train", *COMMON, "--run-dir", run_dir],
                                stdout=subprocess.DEVNULL, stderr=err)


def logged(log, text):
    with open(log) as f:
        return text in f.read()


def weights_hash(res):
    m = re.search(r"weights ([0-9a-f]{16})", res.stdout)
    return m.group(1) if m else None


def fault_env(spec):
    env = dict(os.environ)
    env["TROUPE_STORAGE_FAULT"] = spec
    return env


def last_lines(text, n=3):
    return " | ".join(text.strip().splitlines()[-n:])


def undisturbed(troupe, work):
    run_dir = os.path.join(work, "plain")
    res = train(troupe, run_dir)
    ref = weights_hash(res)
    check("undisturbed run", res.returncode == 0 and ref is not None,
          f"status {res.returncode}, weights {ref}: {last_lines(res.stdout + res.stderr)}")
    if ref is None:
        sys.exit("no reference hash: nothing else can be checked")
    res = train(troupe, run_dir)
    check("a run directory with a run needs --resume", res.returncode == 2 and
          "already holds a run" in res.stderr and "--resume" in res.stderr, res.stderr.strip())
    return ref, run_dir


def killed_and_resumed(troupe, work, ref):
    run_dir = os.path.join(work, "killed")
    log = os.path.join(work, "killed.log")
    p = start_train(troupe, run_dir, log)
    # Killed once step 5's checkpoint is committed (at a step boundary after its write).
    wait_for(lambda: logged(log, f"[checkpoint] step {EVERY} written") or p.poll() is not None,
             240, f"the checkpoint of step {EVERY}")
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = steps_done(run_dir)
    res = train(troupe, run_dir, "--resume")
    m = re.search(r"resumed from the checkpoint of step (\d+)", res.stderr)
    check("killed after a checkpoint, --resume", res.returncode == 0 and weights_hash(res) == ref and m,
          f"killed after {done} steps; status {res.returncode}, "
          f"{m.group(0) if m else 'no checkpoint resumed'}, weights {weights_hash(res)} "
          f"(undisturbed {ref})")
    ledger = subprocess.run([troupe, "ledger", run_dir, "--check"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    check("ledger --check after kill and resume",
          ledger.returncode == 0 and "each consumed once" in ledger.stdout and
          "1 resume" in ledger.stdout, (ledger.stdout + ledger.stderr).strip())
    steps = [int(re.search(r'"step":(\d+)', l).group(1)) for l in
             open(os.path.join(run_dir, "metrics.jsonl"))]
    check("metrics.jsonl after resume", steps == list(range(STEPS)),
          f"steps {steps[:3]}..{steps[-3:]} ({len(steps)} lines)")


def export_checks(troupe, work, run_dir):
    def export(*extra):
        out = os.path.join(work, "export" + "".join(extra).replace("-", "") + ".safetensors")
        res = subprocess.run([troupe, "export", "--run-dir", run_dir, "--out", out, *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return res, out

    finished, fin_out = export()
    last, last_out = export("--step", str(STEPS))
    same = (finished.returncode == 0 and last.returncode == 0 and
            open(fin_out, "rb").read() == open(last_out, "rb").read())
    check("export --step of the last checkpoint = the finished run's weights", same,
          (finished.stdout + finished.stderr + last.stdout + last.stderr).strip())
    earlier, _ = export("--step", str(STEPS - EVERY))
    check("export --step of an earlier checkpoint", earlier.returncode == 0 and
          f"checkpoint of step {STEPS - EVERY}" in earlier.stdout,
          (earlier.stdout + earlier.stderr).strip())
    missing, _ = export("--step", "3")
    check("export --step of no checkpoint names the ones there", missing.returncode == 2 and
          str(STEPS) in missing.stderr, missing.stderr.strip())


def lock_checks(troupe, work):
    run_dir = os.path.join(work, "locked")
    first = start_train(troupe, run_dir, os.path.join(work, "locked.log"))
    lock = os.path.join(run_dir, "troupe.lock")
    wait_for(lambda: (os.path.exists(lock) and os.path.getsize(lock) > 0) or
             first.poll() is not None, 60, "the first job's lock")
    second = train(troupe, run_dir, "--resume")
    first.send_signal(signal.SIGKILL)
    first.wait()
    check("a second job on a locked run directory", second.returncode == 2 and
          str(first.pid) in second.stderr, f"status {second.returncode}: "
          f"{second.stderr.strip()} (holder pid {first.pid})")


def full_disk_checkpoint(troupe, work, ref):
    res = train(troupe, os.path.join(work, "full"), env=fault_env(f"full@{EVERY}"))
    skipped = f"[checkpoint] step {EVERY} skipped" in res.stderr
    check("full@5: checkpoint skipped, training goes on", res.returncode == 0 and skipped and
          weights_hash(res) == ref, f"status {res.returncode}, skipped message {skipped}, "
          f"weights {weights_hash(res)}: {last_lines(res.stderr, 2)}")


def full_metrics_file(troupe, work, ref):
    run_dir = os.path.join(work, "metrics_full")
    res = train(troupe, run_dir, env=fault_env("file-full:metrics.jsonl@2000"))
    err = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
    check("metrics.jsonl full: stops at once, exit 1, names the file",
          res.returncode == 1 and "metrics.jsonl" in err, f"status {res.returncode}: {err}")
    res = train(troupe, run_dir, "--resume")
    m = re.search(r"resumed from the checkpoint of step (\d+)", res.stderr)
    check("metrics.jsonl full, then --resume", res.returncode == 0 and m and
          weights_hash(res) == ref, f"status {res.returncode}, "
          f"{m.group(0) if m else 'no checkpoint resumed'}, weights {weights_hash(res)} "
          f"(undisturbed {ref})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    ref, plain_dir = undisturbed(a.troupe, a.work)
    export_checks(a.troupe, a.work, plain_dir)
    lock_checks(a.troupe, a.work)
    killed_and_resumed(a.troupe, a.work, ref)
    full_disk_checkpoint(a.troupe, a.work, ref)
    full_metrics_file(a.troupe, a.work, ref)
    for f in failures:
        print("FAIL:", f)
    print(f"train_resume: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
