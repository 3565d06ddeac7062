#!/usr/bin/python3
"""Fabric faults (chaos/faulty_fabric.h) in a real 3-node job, every process reading the plan
named by TROUPE_FABRIC_FAULTS:

1. Gradient and control traffic duplicated, reordered, delayed, slowed, dropped where the
   protocol tolerates a loss (Commit, implied by the next StepBegin; some heartbeats) and
   corrupted (Commit headers: the receivers' decoder refuses them): the job ends with the
   weights of an undisturbed run, and every process reports what it injected.
2. No split brain: a partition cuts n1 off from the coordinator and the other nodes (both
   ways) for 2.5 s, then heals. The coordinator declares n1 lost by its missed heartbeats;
   the majority re-runs the step under a new epoch and ends with the undisturbed weights;
   every step is committed once, by one view, and no later view holds n1; once the
   partition heals, n1's late messages are refused as an evicted node's; n1 leaves by itself
   (it hears no coordinator) without ever joining another view.
3. A bad plan is refused before anything starts, naming the file, line and key.

  fabric_faults_test.py --troupe build/troupe --work DIR
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

from launch_checks import TINY, check, failures, scaled

STEPS = 5
# The partition's job: long enough that it still runs when n1, cut off 5 s after the start,
# gives up on the coordinator (coordinator_timeout_ms after it last heard it) on a quiet
# machine too (tiny steps there take ~0.3 s; 5 steps ended before the cut, and 40 ended at
# ~11.0 s, just before n1 gave up at ~11.2 s, in 3 of 8 runs of stop 53).
PARTITION_STEPS = 60
COUNTS = re.compile(r"fabric faults injected \([^)]*\): (.*)$", re.M)


def reference(troupe, work, steps=STEPS):
    """`troupe train` of the same job, undisturbed: the weights every faulted run must end with."""
    res = subprocess.run([troupe, "train", "--config", TINY, "--steps", str(steps), "--set",
                          "train.eval_every=0", "--run-dir", os.path.join(work, f"plain{steps}")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=scaled(300))
    h = re.search(r"weights ([0-9a-f]{16})", res.stdout)
    return h.group(1) if h else None


def launch(troupe, work, name, plan, extra=(), steps=STEPS):
    run_dir = os.path.join(work, name)
    plan_file = os.path.join(work, name + ".toml")
    with open(plan_file, "w") as f:
        f.write(plan)
    env = dict(os.environ, TROUPE_FABRIC_FAULTS=plan_file)
    res = subprocess.run([troupe, "launch", "--config", TINY, "--nodes", "3", "--steps", str(steps),
                          "--set", "train.eval_every=0", "--run-dir", run_dir, *extra],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=scaled(240))
    return run_dir, res


def injected(run_dir, stderr):
    """What every process of the job says it injected, summed: {"dropped": n, ...}."""
    texts = [stderr] + [open(os.path.join(run_dir, f)).read()
                        for f in sorted(os.listdir(run_dir)) if re.match(r"node-\d+\.log$", f)]
    total, processes = {}, 0
    for text in texts:
        for line in COUNTS.findall(text):
            processes += 1
            for key, value in re.findall(r"(\w+)=(\d+)", line):
                total[key] = total.get(key, 0) + int(value)
    return total, processes


def events(run_dir):
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        return [json.loads(line) for line in f]


def weights_of(res):
    h = re.search(r"weights ([0-9a-f]{16})", res.stdout)
    return h.group(1) if h else None


def common_checks(troupe, name, run_dir, res, want, steps=STEPS):
    """The job ended with the reference's bits, each step committed once, every micro-batch
    consumed once (troupe ledger --check)."""
    last = (res.stdout + res.stderr).strip().splitlines()[-1:]
    check(f"{name}: the job ends well", res.returncode == 0, f"status {res.returncode}: {last}")
    check(f"{name}: same weights as an undisturbed run", weights_of(res) == want,
          f"{weights_of(res)} vs {want}")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        committed = [json.loads(line)["step"] for line in f]
    check(f"{name}: every step committed once", committed == list(range(steps)), f"{committed}")
    led = subprocess.run([troupe, "ledger", "--check", run_dir], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=scaled(60))
    check(f"{name}: ledger --check passes", led.returncode == 0, led.stdout.strip()[-200:])


DISTURBED = """seed = 42
[[rule]]
action = "duplicate"
types = ["GradSlices", "Weights", "Stats"]
probability = 0.5
[[rule]]
action = "reorder"
types = ["GradSlices", "NormParts", "EngramSlices"]
delay_ms = 40
[[rule]]
action = "delay"
types = ["Weights", "StepDone"]
delay_ms = 30
[[rule]]
action = "drop"
types = ["Commit"]
probability = 0.5
[[rule]]
action = "corrupt"
types = ["Commit"]
[[rule]]
action = "drop"
types = ["Heartbeat"]
probability = 0.2
[[rule]]
action = "slow"
from = ["n2"]
delay_ms = 5
"""


def disturbed(troupe, work, want):
    name = "disturbed"
    run_dir, res = launch(troupe, work, name, DISTURBED)
    common_checks(troupe, name, run_dir, res, want)
    check(f"{name}: no node was lost", "lost" not in res.stdout, res.stdout.strip()[-200:])
    total, processes = injected(run_dir, res.stderr)
    check(f"{name}: every process reports its counts", processes == 4, f"{processes} processes")
    acted = ["dropped", "delayed", "reordered", "slowed", "duplicated", "corrupted"]
    check(f"{name}: every action acted", all(total.get(k, 0) > 0 for k in acted), f"{total}")
    # Duplicates and corrupted headers reach the receivers, whose checks refuse them.
    check(f"{name}: the receivers refused the duplicates and the corrupted headers",
          re.search(r"dropped messages:.*duplicate \d+", res.stdout) is not None and
          re.search(r"dropped messages:.*undecodable \d+", res.stdout) is not None,
          [l for l in res.stdout.splitlines() if l.startswith("dropped messages")])


PARTITION = """seed = 7
[[rule]]
action = "partition"
groups = [["n1"], ["coordinator", "n2", "n3"]]
after_ms = 5000
for_ms = 2500
"""


def partition(troupe, work):
    """A minority (n1) partitioned from the coordinator and the others, then healed."""
    name = "partition"
    # n1 waits for the coordinator longer than the partition lasts: it is still there, sending,
    # when the partition heals.
    want = reference(troupe, work, PARTITION_STEPS)
    run_dir, res = launch(troupe, work, name, PARTITION,
                          ["--set", "fault_tolerance.coordinator_timeout_ms=6000"], PARTITION_STEPS)
    common_checks(troupe, name, run_dir, res, want, PARTITION_STEPS)
    ev = events(run_dir)
    lost = [e for e in ev if e["kind"] == "recover"]
    check(f"{name}: the coordinator declared n1 lost by its missed heartbeats, once",
          len(lost) == 1 and lost[0]["node"] == "n1" and "missed heartbeats" in lost[0]["reason"],
          [e.get("reason") for e in lost])
    views = [e for e in ev if e["kind"] == "view"]
    epochs = [e["epoch"] for e in views]
    check(f"{name}: one view at a time, epochs strictly increasing",
          epochs == sorted(set(epochs)), f"{epochs}")
    after = [v for v in views if lost and v["epoch"] >= lost[0]["epoch"]]
    check(f"{name}: no view after the loss holds n1",
          after and all("n1" not in v["nodes"] for v in after), [v["nodes"] for v in after])
    fenced = [e for e in ev if e["kind"] == "connection_refused" and e.get("node") == "n1"]
    check(f"{name}: after the heal, n1's late messages are refused as an evicted node's",
          fenced and all(e["cause"] == "evicted" for e in fenced),
          f"{len(fenced)} refusals, causes {sorted(set(e['cause'] for e in fenced))}")
    exits = [e for e in ev if e["kind"] == "node_exit" and e["node"] == "n1"]
    log = open(os.path.join(run_dir, exits[0]["log"])).read() if exits else ""
    check(f"{name}: n1 leaves by itself, hearing no coordinator",
          "the coordinator has sent nothing" in log, exits[0]["text"] if exits else "no exit")
    check(f"{name}: n1 never joined another view",
          len(re.findall(r"joined as node", log)) == 1 and "rejoin" not in log.lower(),
          re.findall(r"joined as node.*", log))
    total, _ = injected(run_dir, res.stderr)
    check(f"{name}: messages were partitioned", total.get("partitioned", 0) > 0, f"{total}")


def bad_plan(troupe, work):
    name = "bad plan"
    run_dir, res = launch(troupe, work, "bad", 'seed = 1\n[[rule]]\naction = "explode"\n')
    check(f"{name}: refused before anything starts, naming file, line and key",
          res.returncode != 0 and "bad.toml:3: key 'action'" in res.stderr and
          not os.path.exists(os.path.join(run_dir, "coordinator.json")),
          res.stderr.strip()[-300:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    bad_plan(a.troupe, a.work)
    want = reference(a.troupe, a.work)
    check("reference: an undisturbed run's weights", want is not None, f"{want}")
    disturbed(a.troupe, a.work, want)
    partition(a.troupe, a.work)
    if failures:
        print(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
