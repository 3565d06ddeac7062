#!/usr/bin/python3
"""Engram tables 20x tiny's (issue 16): tiny with model.engram_table_rows 20x larger trains
with its tables on 2 shard nodes of their own (`--engram-nodes 2`: troupe node --role
engram) beside 2 worker nodes; the 2 shards are each held twice (4 holders, one of each
shard per memory node), each holder's host cache bounded to 4000 rows, so that the 4 caches
together hold ~3% of the tables' values (1% with their moments; the issue asks for under
25%): the rest in RocksDB. The weights must equal a replicated run's on the 2 worker nodes,
bit for bit, and the holders must have read rows back from RocksDB.

  engram_large_test.py --troupe build/troupe --work DIR [--steps 6]
"""
import argparse
import os
import re
import shutil

from launch_checks import (TINY, Job, check, failures, log_lines, memory_nodes_hold_the_shards,
                           scaled, weights_hash)

ROWS = 200140        # 20x tiny's engram_table_rows (10007)
TABLES = 8           # tiny: orders [2, 3] x 4 heads
DIM = 16             # engram_head_dim
CACHE_BYTES = 768_000  # 4000 rows with their moments, per holder: ~3% of a shard's rows
SHARDS = 2
HOLDERS = 4          # each shard held by 1 + buddy_copies = 2 nodes, each with this bound
TIER = re.compile(r"host cache (\d+) of (\d+) rows; (\d+) hits, (\d+) misses "
                  r"\([0-9.]+%: (\d+) from RocksDB")


def first_prime_from(n):
    def prime(k):
        return k > 1 and all(k % d for d in range(2, int(k ** 0.5) + 1))
    while not prime(n):
        n += 1
    return n


def run(troupe, run_dir, steps, extra):
    # A node gathering 20x tables under ctest -j2 missed tiny's 1 s heartbeat timeout in CI.
    job = Job([troupe, "launch", "--config", TINY, "--steps", str(steps), "--nodes", "2",
               "--run-dir", run_dir, "--set", f"model.engram_table_rows={ROWS}",
               "--set", "fault_tolerance.heartbeat_timeout_ms=4000", *extra])
    out, err = job.communicate(timeout=scaled(900))
    return job.returncode, weights_hash(out), err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    status, want, err = run(a.troupe, os.path.join(a.work, "replicated"), a.steps, [])
    if status != 0 or not want:
        raise SystemExit(f"the replicated run failed ({status}): {err[-2000:]}")
    print(f"replicated run, tables 20x tiny's: weights {want}", flush=True)
    run_dir = os.path.join(a.work, "shards")
    status, got, err = run(a.troupe, run_dir, a.steps,
                           ["--engram-nodes", "2",
                            "--set", "engram.placement=shards", "--set", "engram.shards=2",
                            "--set", f"engram.host_cache_bytes={CACHE_BYTES}"])
    check("tables 20x tiny's on 2 shard nodes over RocksDB: the replicated run's weights and "
          "tables", status == 0 and got == want,
          f"status {status}, {got} vs {want}: {err.strip().splitlines()[-3:]}")
    ok, memory, placed = memory_nodes_hold_the_shards(run_dir)
    check("  2 memory nodes joined and hold every holder", ok, f"{memory}: {placed}")
    lines = log_lines(run_dir, "host cache", "from RocksDB")
    tiers = [tuple(map(int, m.groups())) for m in map(TIER.search, lines) if m]
    # The lookup holder of each shard logs its counts at the end; its copy has the same bound.
    check(f"  the {SHARDS} lookup holders reported their cold tier", len(tiers) == SHARDS, lines)
    row_bytes = 3 * DIM * 4
    values_bytes = TABLES * first_prime_from(ROWS) * DIM * 4
    cached_bytes = HOLDERS * max([capacity for _, capacity, *_ in tiers] or [0]) * row_bytes
    share = cached_bytes / values_bytes
    print(f"host caches together: {cached_bytes / 2**20:.1f} MiB = {100 * share:.1f}% of the "
          f"tables' values ({100 * share / 3:.1f}% with their moments)", flush=True)
    check("  the host caches together hold under 25% of the tables", 0 < share < 0.25, share)
    check("  no cache beyond its bound", all(cached <= cap for cached, cap, *_ in tiers), tiers)
    check("  every lookup holder read rows back from RocksDB", all(t[4] > 0 for t in tiers), tiers)
    if failures:
        raise SystemExit("FAILED:\n" + "\n".join(failures))
    print("ok")


if __name__ == "__main__":
    main()
