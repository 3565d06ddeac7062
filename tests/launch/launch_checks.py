"""What the tests of whole jobs share (tests/launch/*_test.py): the tiny config, one line
per check with its failures kept for the exit status, and the child processes of launch."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "..", "configs", "tiny.toml")
failures = []


def check(name, ok, detail):
    print(f"{'ok ' if ok else 'BAD'} {name}: {detail}", flush=True)
    if not ok:
        failures.append(f"{name}: {detail}")


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.PIPE, text=True).stdout
    return [int(x) for x in out.split()]
