"""What the tests of whole jobs share (tests/launch/*_test.py): the tiny config, one line
per check with its failures kept for the exit status, and the child processes of launch, and waiting for a job's progress."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "..", "configs", "tiny.toml")
failures = []
# Under a sanitizer a job runs 3-20 times slower: `make test-asan` and `make test-tsan` give
# every test TROUPE_TIMEOUT_SCALE (tests/CMakeLists.txt), and every wait of these tests for a
# job (not the job's own timeouts, which are what some tests check) is that much longer.
TIMEOUT_SCALE = float(os.environ.get("TROUPE_TIMEOUT_SCALE", "1"))


def scaled(seconds):
    """A test's wait of `seconds` under this build's TROUPE_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def check(name, ok, detail):
    print(f"{'ok ' if ok else 'BAD'} {name}: {detail}", flush=True)
    if not ok:
        failures.append(f"{name}: {detail}")


def run(args, env=None):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def expect_error(name, args, *needles, stdout_empty=False):
    """A command that must fail with status 2 and one line on stderr naming every needle
    (and, with stdout_empty, print nothing on stdout), never a crash or a Python trace."""
    res = run(args)
    err = res.stderr.strip()
    ok = res.returncode == 2 and len(err.splitlines()) == 1 and all(n in err for n in needles)
    ok = ok and "terminate called" not in err and "Traceback" not in err
    ok = ok and (res.stdout == "" or not stdout_empty)
    print(f"{'ok ' if ok else 'BAD'} {name}: status {res.returncode}: {err}", flush=True)
    if not ok:
        failures.append(f"{name}: wanted status 2 and one line naming {needles}; got "
                        f"{res.returncode}, stderr {res.stderr!r}")


def children(pid):
    """The node processes launch `pid` started (not its coordinator process), oldest first."""
    out = subprocess.run(["pgrep", "-f", "troupe node ", "-P", str(pid)], stdout=subprocess.PIPE,
                         text=True).stdout
    return [int(x) for x in out.split()]


def coordinator_pid(run_dir, timeout_s=60):
    """The pid of the job's coordinator process (run_dir/coordinator.json, written once it
    listens)."""
    path = os.path.join(run_dir, "coordinator.json")
    wait_for(lambda: os.path.exists(path), timeout_s, "the coordinator process")
    with open(path) as f:
        return json.load(f)["pid"]


# The loss lines of metrics.jsonl that must match bit for bit (not the times).
LOSS_FIELDS = ("step", "loss", "ce", "mtp", "bal", "lr", "grad_norm", "val_loss")


def losses(run_dir):
    """Each step's loss line of the job in run_dir, without its times."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: j[k] for k in LOSS_FIELDS if k in j} for j in map(json.loads, f)]


def weights_hash(out):
    """The final weights hash launch printed on stdout, or None."""
    m = re.search(r"weights ([0-9a-f]{16})", out)
    return m.group(1) if m else None


def log_lines(run_dir, *words):
    """The lines of the job's node logs that hold every one of `words`."""
    lines = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("node-") and name.endswith(".log"):
            with open(os.path.join(run_dir, name)) as f:
                lines += [l.strip() for l in f if all(w in l for w in words)]
    return lines


def steps_done(run_dir):
    """Steps the job in run_dir has logged so far."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def wait_for(pred, timeout_s, what, job=None):
    """Polls pred until it holds (True), or exits the test naming what never came. With job
    (a Job), it stops as soon as the job ends and shows the end of the job's stderr."""
    timeout_s = scaled(timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        if job is not None and job.poll() is not None:
            sys.exit(f"the job ended (status {job.returncode}) before {what}:\n{job.tail()}")
        time.sleep(0.05)  # polling another process's progress: nothing to await
    tail = f":\n{job.tail()}" if job is not None else ""
    sys.exit(f"timed out after {timeout_s} s waiting for {what}{tail}")


class Job(subprocess.Popen):
    """A child whose stdout and stderr go to files, not pipes: a test that polls the run
    directory for minutes never reads the pipes, and a job that logs more than a pipe holds
    (64 KiB) would block on its next write. communicate() returns both, as with pipes."""

    def __init__(self, args, **kw):
        self.out_file = tempfile.TemporaryFile("w+")
        self.err_file = tempfile.TemporaryFile("w+")
        super().__init__(args, stdout=self.out_file, stderr=self.err_file, text=True, **kw)

    def communicate(self, input=None, timeout=None):
        self.wait(timeout)
        return self._read(self.out_file), self._read(self.err_file)

    def tail(self, lines=40):
        return "\n".join(self._read(self.err_file).splitlines()[-lines:])

    @staticmethod
    def _read(f):
        f.flush()
        f.seek(0)
        return f.read()


def launch_job(troupe, run_dir, nodes, steps, settings, extra=(), env=None):
    """`troupe launch` of tiny in its own process group (so that killpg takes the nodes with
    it), its output piped; settings: the --set flags every job of the suite shares."""
    return Job([troupe, "launch", "--config", TINY, "--nodes", str(nodes), "--steps", str(steps),
                "--run-dir", run_dir, *settings, *extra], start_new_session=True, env=env)


def finish(p, timeout=300):
    """(exit status, the final weights hash or None, stdout, stderr) of a launched job."""
    out, err = p.communicate(timeout=scaled(timeout))
    h = re.search(r"weights ([0-9a-f]{16})", out)
    return p.returncode, (h.group(1) if h else None), out, err


def events(run_dir):
    """The job's events.jsonl so far ([] before it exists)."""
    try:
        with open(os.path.join(run_dir, "events.jsonl")) as f:
            return [json.loads(l) for l in f if l.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def node_pids(run_dir):
    """{node id: pid} of every node that joined the job so far (its join events)."""
    return {e["node"]: e["pid"] for e in events(run_dir) if e.get("event") == "join"}


def memory_nodes_hold_the_shards(run_dir):
    """(ok, the memory nodes that joined, the engram_shards placements' texts): ok when 2
    memory nodes joined and the first placement names each of them and no worker's node."""
    memory = [e["node"] for e in events(run_dir) if e["event"] == "join" and e.get("memory")]
    placed = [e["text"] for e in events(run_dir) if e["event"] == "engram_shards"]
    workers = [e["node"] for e in events(run_dir) if e["event"] == "join" and not e.get("memory")]
    ok = (len(memory) == 2 and bool(placed) and all(n in placed[0] for n in memory) and
          not any(f" {n}" in placed[0] for n in workers))
    return ok, memory, placed


def end_of(job, timeout=300):
    """(stdout, stderr) of a job (started with start_new_session) once it ends. Still
    running after `timeout` s: killed with its process group, recorded as a failure with the
    tail of its log."""
    try:
        return job.communicate(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        check("the job ends", False, f"still running after {scaled(timeout)} s:\n{job.tail()}")
        return out, err


def endpoint(run_dir):
    """(address, bearer token) of the job's control endpoint (run_dir/control.json)."""
    with open(os.path.join(run_dir, "control.json")) as f:
        address = json.load(f)["address"]
    with open(os.path.join(run_dir, "control.token")) as f:
        return address, f.read().strip()


def http(run_dir, method, path, body=None, token=None):
    """(status, parsed JSON or text) of one request; token None: the run dir's."""
    address, real = endpoint(run_dir)
    headers = {"Content-Type": "application/json"}
    if token != "":
        headers["Authorization"] = "Bearer " + (real if token is None else token)
    data = body.encode() if isinstance(body, str) else None
    req = urllib.request.Request(address + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=scaled(10)) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text
