#!/usr/bin/python3
"""`troupe generate` (issue 17, item 3) as a command: a completion from the weights of a
one-step tiny run (the same seed, the same bytes), and one line on stderr with exit status 2
for each bad input: a missing file, a file that is not safetensors, a config that does not fit
its tensors, an empty prompt, a negative --max-new or --temperature, a prompt with --max-new
beyond the trained seq_len.

  generate_cli_test.py --troupe build/troupe --work DIR
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "..", "configs", "tiny.toml")
failures = []


def run(args):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def check(name, ok, detail):
    print(f"{'ok ' if ok else 'BAD'} {name}: {detail}", flush=True)
    if not ok:
        failures.append(f"{name}: {detail}")


def expect_error(name, args, *needles):
    """Status 2, one line on stderr naming every needle, nothing on stdout, no crash."""
    res = run(args)
    err = res.stderr.decode(errors="replace").strip()
    ok = (res.returncode == 2 and len(err.splitlines()) == 1 and all(n in err for n in needles)
          and res.stdout == b"" and "terminate called" not in err)
    check(name, ok, f"status {res.returncode}: {err}")


def with_config_changed(src, dst, key, value):
    """A copy of the safetensors file src whose troupe_config has key set to value."""
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    cfg = json.loads(header["__metadata__"]["troupe_config"])
    (cfg["model"] if "model" in cfg else cfg)[key] = value
    header["__metadata__"]["troupe_config"] = json.dumps(cfg)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    run_dir = os.path.join(a.work, "run")
    res = run([a.troupe, "train", "--config", TINY, "--steps", "1", "--run-dir", run_dir,
               "--set", "train.batch_size=4", "--set", "train.eval_every=100",
               "--set", "data.val_rows_max=4"])
    weights = os.path.join(run_dir, "weights.safetensors")
    check("train one step", res.returncode == 0 and os.path.exists(weights),
          f"status {res.returncode}: {res.stderr.decode(errors='replace')[-300:]}")
    if failures:
        return 1
    gen = [a.troupe, "generate", "--weights", weights]
    one = run(gen + ["--prompt", "Hello", "--max-new", "8", "--seed", "3"])
    two = run(gen + ["--prompt", "Hello", "--max-new", "8", "--seed", "3"])
    check("generate", one.returncode == 0 and one.stdout.endswith(b"\n") and
          len(one.stdout) <= 8 + 1, f"status {one.returncode}: {one.stdout!r} {one.stderr!r}")
    check("same seed, same bytes", one.stdout == two.stdout, f"{one.stdout!r} vs {two.stdout!r}")
    greedy = run(gen + ["--prompt", "Hello", "--max-new", "4", "--temperature", "0"])
    check("greedy", greedy.returncode == 0, f"status {greedy.returncode}: {greedy.stderr!r}")
    full = run(gen + ["--prompt", "a" * 100, "--max-new", "28", "--temperature", "0"])
    check("exactly seq_len positions", full.returncode == 0, f"status {full.returncode}")

    expect_error("missing file", [a.troupe, "generate", "--weights",
                                  os.path.join(a.work, "nope.safetensors"), "--prompt", "x"],
                 "nope.safetensors is not a file", "troupe train")
    text = os.path.join(a.work, "text.safetensors")
    with open(text, "w") as f:
        f.write("not a safetensors file\n")
    expect_error("not safetensors", [a.troupe, "generate", "--weights", text, "--prompt", "x"],
                 "--weights", "text.safetensors")
    wrong = os.path.join(a.work, "wrong.safetensors")
    with_config_changed(weights, wrong, "d_model", 64)
    expect_error("config does not fit", [a.troupe, "generate", "--weights", wrong,
                                         "--prompt", "x"], "wrong.safetensors", "wrong shape")
    expect_error("empty prompt", gen + ["--prompt", ""], "--prompt is empty")
    expect_error("negative max-new", gen + ["--prompt", "x", "--max-new=-3"], "--max-new")
    expect_error("zero max-new", gen + ["--prompt", "x", "--max-new", "0"], "--max-new")
    expect_error("negative temperature", gen + ["--prompt", "x", "--temperature=-1"],
                 "--temperature")
    expect_error("prompt too long", gen + ["--prompt", "a" * 200, "--max-new", "1"],
                 "seq_len 128", "shorten the prompt")
    expect_error("beyond seq_len", gen + ["--prompt", "Hi", "--max-new", "200"],
                 "seq_len 128", "--max-new 126")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
