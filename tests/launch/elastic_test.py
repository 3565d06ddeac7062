#!/usr/bin/python3
"""Elastic jobs under `troupe launch`, driven through the control endpoint (issue 13). Every
job must end with the weights of an undisturbed `troupe train` of the same config:

1. scale: 2 → 4 → 1 node processes through `troupe scale RUN_DIR N`; the leavers exit 0,
   nothing is recovered from, nothing is redone.
2. the endpoint on a live job: no token or a wrong one is 401, a malformed body or an
   impossible request (N < 1, N above --max-nodes, draining an unknown node) is 400, and
   none of them changes the job; GET /metrics parses with prometheus_client's text parser;
   pause stops the steps, checkpoint writes one, resume goes on; then `troupe drain`.
3. replace_lost: a node killed with -9 is recovered from and replaced by a fresh node
   process that joins by the scale-up path, with every worker's second state transfer
   corrupted on the wire (TROUPE_TRANSFER_FAULT): each is detected and fetched again. The
   chaos line names the node as the coordinator does (n3), with its pid.
   evict: a node stopped (SIGSTOP) for good is evicted for its missed heartbeats; launch
   ends its process (SIGKILL) and replaces it like a killed one. (A woken evicted node
   exits 3: fault_test.py "wake".)
4. coordinator: the coordinator process is killed with -9 mid-run; launch restarts it
   from the journal, every node rejoins, nothing is rolled back.
5. cluster: `launch --local-nodes 0` with the nodes started outside is killed -9 whole;
   `launch --resume --local-nodes 0` restarts the coordinator and the nodes rejoin it.
6. reshape-coordinator: the coordinator process dies mid-reshape; the restarted one undoes
   the reshape (newcomer fenced) and the job ends bitwise.

  elastic_test.py --troupe build/troupe --work DIR [--only NAME]
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from launch_checks import (TINY, check, events, failures, finish, http, launch_job, scaled,
                           steps_done, wait_for)

STEPS = 40
COMMON = ["--set", "train.eval_every=0"]


def launch(troupe, run_dir, nodes, extra=(), env=None):
    return launch_job(troupe, run_dir, nodes, STEPS, ["--max-nodes", "4", *COMMON], extra, env)


def kinds(run_dir, kind):
    return [e for e in events(run_dir) if e.get("kind") == kind]


def troupe_cmd(troupe, *args):
    r = subprocess.run([troupe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=scaled(60))
    return r.returncode, r.stdout + r.stderr


def reference(troupe, work):
    run = os.path.join(work, "ref")
    r = subprocess.run([troupe, "train", "--config", TINY, "--steps", str(STEPS), "--run-dir",
                        run, *COMMON], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=scaled(600))
    h = re.search(r"weights ([0-9a-f]{16})", r.stdout)
    if r.returncode != 0 or not h:
        sys.exit(f"the undisturbed troupe train failed: {r.stderr[-500:]}")
    print(f"undisturbed: {h.group(1)}", flush=True)
    return h.group(1)


def wait_event(run_dir, kind, timeout_s=60, count=1):
    wait_for(lambda: len(kinds(run_dir, kind)) >= count, timeout_s, f"{count} '{kind}' event(s)")


def test_scale(troupe, work, ref):
    run = os.path.join(work, "scale")
    p = launch(troupe, run, 2)
    wait_for(lambda: steps_done(run) >= 4, 120, "step 4")
    rc, out = troupe_cmd(troupe, "scale", run, "4")
    check("scale: troupe scale 4 is accepted", rc == 0, out.strip())
    wait_event(run, "scaled")
    at = steps_done(run)
    wait_for(lambda: steps_done(run) >= at + 3, 120, "3 steps on 4 nodes")
    rc, out = troupe_cmd(troupe, "scale", run, "1")
    check("scale: troupe scale 1 is accepted", rc == 0, out.strip())
    wait_event(run, "drained")
    rc, h, out, err = finish(p)
    check("scale: 2 → 4 → 1 ends with the undisturbed weights", rc == 0 and h == ref,
          f"exit {rc}, weights {h} vs {ref}; {err.strip().splitlines()[-1:] if rc else ''}")
    exits = kinds(run, "node_exit")
    check("scale: the 3 leavers exit 0", sum(e.get("exit_code") == 0 for e in exits) >= 3,
          [e["text"] for e in exits])
    check("scale: nothing recovered, no step redone", not kinds(run, "recover"),
          [e["text"] for e in kinds(run, "recover")])
    for e in kinds(run, "scaled") + kinds(run, "drained"):
        print(f"    {e['kind']}: paused {e['pause_ms']:.0f} ms, {e['duration_ms']:.0f} ms after "
              "the request", flush=True)


def endpoint_refusals(run):
    status0 = http(run, "GET", "/status")[1]
    for name, token in (("no token", ""), ("a wrong token", "0" * 64)):
        code, _ = http(run, "POST", "/scale", '{"nodes": 1}', token=token)
        check(f"endpoint: POST /scale with {name} is 401", code == 401, code)
        code, _ = http(run, "GET", "/status", token=token)
        check(f"endpoint: GET /status with {name} is 401", code == 401, code)
    for body, why in (('{"nodes": "two"}', "a string"), ('{"nodes": 0}', "N < 1"),
                      ('{"nodes": 5}', "N above --max-nodes 4"), ("{nodes", "malformed JSON"),
                      ("{}", "no nodes")):
        code, reply = http(run, "POST", "/scale", body)
        check(f"endpoint: POST /scale with {why} is 400", code == 400, f"{code} {reply}")
    code, reply = http(run, "POST", "/drain", '{"node": "n9"}')
    check("endpoint: draining an unknown node is 400 naming it", code == 400 and "n9" in str(reply),
          f"{code} {reply}")
    status1 = http(run, "GET", "/status")[1]
    same = [n["id"] for n in status0["nodes"]] == [n["id"] for n in status1["nodes"]]
    check("endpoint: the refused requests changed nothing", same and not status1["reshape"]
          and status1["epoch"] == status0["epoch"], f"{status0['epoch']} → {status1['epoch']}")


def endpoint_metrics(run):
    code, text = http(run, "GET", "/metrics")
    try:
        from prometheus_client.parser import text_string_to_metric_families
        names = {f.name for f in text_string_to_metric_families(text)}
        ok = {"troupe_steps", "troupe_nodes", "troupe_recovery_seconds", "troupe_expert_tokens",
              "troupe_expert_imbalance"} <= names
    except Exception as e:  # a parse error is the failure this checks for
        names, ok = str(e), False
    check("endpoint: GET /metrics parses with prometheus_client", code == 200 and ok, names)


def pause_checkpoint_resume(troupe, run):
    rc, out = troupe_cmd(troupe, "pause", run)
    check("pause: accepted", rc == 0, out.strip())
    wait_event(run, "training_paused")
    held = steps_done(run)
    time.sleep(1.0)  # the job must not move while paused: watched for a second
    check("pause: no step while paused", steps_done(run) == held, f"{held} → {steps_done(run)}")
    rc, out = troupe_cmd(troupe, "checkpoint", run)
    check("checkpoint: accepted", rc == 0, out.strip())
    wait_for(lambda: any(e.get("step") == held for e in kinds(run, "checkpoint")), 60,
             f"the checkpoint of step {held}")
    rc, out = troupe_cmd(troupe, "resume", run)
    check("resume: accepted", rc == 0, out.strip())


def test_endpoint(troupe, work, ref):
    run = os.path.join(work, "endpoint")
    p = launch(troupe, run, 3)
    wait_for(lambda: steps_done(run) >= 3, 120, "step 3")
    endpoint_refusals(run)
    endpoint_metrics(run)
    pause_checkpoint_resume(troupe, run)
    rc, out = troupe_cmd(troupe, "drain", run, "n2")
    check("drain: troupe drain n2 is accepted", rc == 0, out.strip())
    wait_event(run, "drained")
    rc, h, out, err = finish(p)
    check("drain: ends with the undisturbed weights", rc == 0 and h == ref,
          f"exit {rc}, weights {h} vs {ref}")
    left = [e for e in kinds(run, "node_exit") if e.get("node") == "n2"]
    check("drain: n2 exits 0, an event naming it", left and left[0]["exit_code"] == 0, left)


def test_replace(troupe, work, ref):
    run = os.path.join(work, "replace")
    env = dict(os.environ, TROUPE_TRANSFER_FAULT="corrupt@2")
    p = launch(troupe, run, 3, ["--kill-node-at", "8", "--set",
                                "fault_tolerance.replace_lost=true"], env=env)
    rc, h, out, err = finish(p)
    check("replace: ends with the undisturbed weights", rc == 0 and h == ref,
          f"exit {rc}, weights {h} vs {ref}; {err.strip().splitlines()[-1:] if rc else ''}")
    joins = [e for e in kinds(run, "join") if "running job" in e["text"]]
    check("replace: a fresh node joined the running job", len(joins) == 1,
          [e["text"] for e in joins])
    check("replace: it entered by a reshape", len(kinds(run, "scaled")) == 1,
          [e["text"] for e in kinds(run, "scaled")])
    logs = ""
    for name in os.listdir(run):
        if name.startswith("node-") and name.endswith(".log"):
            with open(os.path.join(run, name)) as f:
                logs += f.read()
    check("replace: corrupted transfers were detected and fetched again",
          "fails its CRC32C" in logs and "again" in logs, "no CRC32C failure in the node logs")
    chaos = re.search(r"\[chaos\] kill -9 (n\d+) \(pid (\d+)\) after step 8", err)
    killed = [e for e in kinds(run, "node_exit") if chaos and e.get("node") == chaos.group(1)]
    check("replace: the chaos line names the node id the events use, with its pid",
          killed and killed[0]["pid"] == int(chaos.group(2)) and killed[0]["signal"] == 9,
          [l for l in err.splitlines() if "[chaos]" in l] + [e["text"] for e in killed])


def test_evict(troupe, work, ref):
    run = os.path.join(work, "evict")
    p = launch(troupe, run, 3, ["--set", "fault_tolerance.replace_lost=true"])
    wait_for(lambda: steps_done(run) >= 3, 120, "step 3")
    pid = next(e["pid"] for e in kinds(run, "join") if e.get("node") == "n2")
    os.kill(pid, signal.SIGSTOP)  # hung for good: never resumed by the test
    try:
        rc, h, out, err = finish(p)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    check("evict: ends with the undisturbed weights", rc == 0 and h == ref,
          f"exit {rc}, weights {h} vs {ref}; {err.strip().splitlines()[-1:] if rc else ''}")
    lost = [e for e in kinds(run, "recover") if e.get("node") == "n2"]
    check("evict: n2 was declared lost for its missed heartbeats",
          lost and lost[0].get("hung") is True, [e["text"] for e in lost])
    exits = [e for e in kinds(run, "node_exit") if e.get("node") == "n2"]
    check("evict: launch ends the hung n2 (SIGKILL) to replace it",
          exits and exits[0]["signal"] == signal.SIGKILL, [e["text"] for e in exits])
    joins = [e for e in kinds(run, "join") if "running job" in e["text"]]
    check("evict: a fresh node replaced it by a reshape",
          len(joins) == 1 and len(kinds(run, "scaled")) == 1, [e["text"] for e in joins])
    for e in kinds(run, "connection_refused"):  # its late messages, if any came first
        print(f"    {e['text']}", flush=True)
        check("evict: its late messages are refused as evicted", e.get("cause") == "evicted" and
              e.get("evicted_epoch") == lost[0]["epoch"], e)


def test_coordinator(troupe, work, ref):
    run = os.path.join(work, "coordinator")
    p = launch(troupe, run, 3)  # the coordinator runs in a process of its own by default
    wait_for(lambda: steps_done(run) >= 5, 120, "step 5")
    with open(os.path.join(run, "coordinator.json")) as f:
        pid = json.load(f)["pid"]
    os.kill(pid, 9)
    rc, h, out, err = finish(p)
    check("coordinator: killed -9 mid-run, restarted: the undisturbed weights",
          rc == 0 and h == ref, f"exit {rc}, weights {h} vs {ref}; {err.strip()[-300:]}")
    check("coordinator: it restarted from the journal", len(kinds(run, "coordinator_restarted")) == 1,
          [e["text"] for e in kinds(run, "coordinator_restarted")])
    back = kinds(run, "rejoined")
    check("coordinator: every node rejoined", back and not back[0].get("missing"),
          [e["text"] for e in back])
    check("coordinator: no rollback", not kinds(run, "rollback"),
          [e["text"] for e in kinds(run, "rollback")])


def test_cluster(troupe, work, ref):
    """The cluster form: the nodes run elsewhere (here, started by the test as srun would),
    `troupe launch --local-nodes 0` is the coordinator. It is killed -9 mid-run with its
    coordinator process; the site's launcher runs `troupe launch --resume --local-nodes 0`:
    the journal holds a job that did not end, so it restarts the coordinator on the same
    port, the waiting nodes rejoin, and nothing is rolled back."""
    run = os.path.join(work, "cluster")
    secret = os.path.join(work, "cluster.secret")
    with open(secret, "w") as f:
        f.write("cluster-test-secret-0123456789abcdef\n")
    os.chmod(secret, 0o600)
    outside = ["--local-nodes", "0", "--secret-file", secret]
    p = launch(troupe, run, 3, outside)
    wait_for(lambda: os.path.exists(os.path.join(run, "coordinator.json")), 60, "coordinator")
    with open(os.path.join(run, "coordinator.json")) as f:
        address = json.load(f)["address"]
    nodes = []
    for k in range(3):
        with open(os.path.join(work, f"cluster-node-{k}.log"), "w") as log:
            nodes.append(subprocess.Popen([troupe, "node", "--join", address, "--secret-file",
                                           secret], stdout=log, stderr=log))
    wait_for(lambda: steps_done(run) >= 5, 120, "step 5")
    os.killpg(p.pid, 9)  # launch and its coordinator process; the nodes are not theirs
    # (a node evicted under load before this exits 3: the job goes on without it)
    p.communicate()
    again = launch(troupe, run, 3, outside + ["--resume"])
    rc, h, out, err = finish(again)
    codes = [n.wait(timeout=scaled(60)) for n in nodes]
    check("cluster: launch --resume --local-nodes 0 restarts it: the undisturbed weights",
          rc == 0 and h == ref and all(c in (0, 3) for c in codes),
          f"exit {rc}, nodes {codes}, weights {h} vs {ref}; {err.strip()[-300:]}")
    back = kinds(run, "rejoined")
    check("cluster: every node rejoined, no rollback",
          back and not back[-1].get("missing") and not kinds(run, "rollback"),
          [e["text"] for e in back + kinds(run, "rollback")])


def test_reshape_coordinator(troupe, work, ref):
    """The coordinator process dies in the middle of a scale 2 → 3 (TROUPE_COORDINATOR_FAULT:
    once the first worker of the new view answered): the restarted one undoes the reshape
    from the journal (the newcomer is fenced, the two old nodes rejoin) and the job ends
    bitwise on 2 nodes."""
    run = os.path.join(work, "reshape-coordinator")
    env = dict(os.environ, TROUPE_COORDINATOR_FAULT="kill@reshape")
    p = launch(troupe, run, 2, ["--scale-at", "5:3"], env=env)
    rc, h, out, err = finish(p)
    check("reshape-coordinator: the undisturbed weights", rc == 0 and h == ref,
          f"exit {rc}, weights {h} vs {ref}; {err.strip()[-300:]}")
    restarted = kinds(run, "coordinator_restarted")
    check("reshape-coordinator: restarted, the reshape undone",
          len(restarted) == 1 and restarted[0].get("reshape_undone") is True,
          [e["text"] for e in restarted])
    back = kinds(run, "rejoined")
    check("reshape-coordinator: both old nodes rejoined; the newcomer fenced",
          back and not back[-1].get("missing") and kinds(run, "fenced"),
          [e["text"] for e in back + kinds(run, "fenced")])


TESTS = {"scale": test_scale, "endpoint": test_endpoint, "replace": test_replace,
         "evict": test_evict, "coordinator": test_coordinator, "cluster": test_cluster,
         "reshape-coordinator": test_reshape_coordinator}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", choices=sorted(TESTS))
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    ref = reference(a.troupe, a.work)
    for name, test in TESTS.items():
        if a.only in (None, name):
            test(a.troupe, a.work, ref)
    if failures:
        sys.exit(f"{len(failures)} check(s) failed: " + "; ".join(failures))
    print("elastic: all checks passed")


if __name__ == "__main__":
    main()
