#!/usr/bin/env bash
# make bench-checkpoint (issue 12): what checkpoints cost.
#  (a) the stall: `troupe train`'s own loop on tiny (train_step, the journal's commit,
#      CheckpointWriter) in one process, runs of 5 blocks of 10 steps without a checkpoint
#      next to runs with one in every block (as a job checkpoints; the run's last write
#      waited for at its end), alternately; the median of the per-pair tok/s ratios as a
#      stall percentage (issue 12: <= 2%). Four readings: every core training (what troupe
#      train does on this box), the same with every write waited for at its own block's end
#      (BENCH_CKPT_RUN=1: the stricter bound), one core left to the writer (as on a node
#      whose compute is not the CPU), and the noise floor (no checkpoint in either run).
#      Each reading also gives each block's process CPU and the extra CPU per checkpoint
#      (less moved by other processes' load than tok/s), and the snapshot's and writer's CPU.
#  (b) the CPU of each phase of one checkpoint (snapshot, CRC, the shard file's write) next
#      to the CPU of the 10 steps it belongs to (bench_checkpoint_phases), with what the
#      alternatives would cost (the RocksDB SST the store wrote before, buffered writes).
#  (c) the store's write bandwidth next to the disk's own sequential write + fdatasync
#      (bench_store: the same bytes, the same directory, the same run; issue 12: >= 50%).
#   BENCH_CKPT_PAIRS (9)     run pairs per reading        BENCH_CKPT_EVERY (10)
#   BENCH_CKPT_RUN (5)       blocks per run
#   BENCH_STORE_MIB (256)    synthetic checkpoint size    BENCH_STORE_REPEATS (3)
#   BENCH_CKPT_DIR ($BUILD/bench-checkpoint.tmp)  where the runs and the store write (the disk
#                            measured; not /tmp, which may be memory)
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_CKPT_DIR:-$BUILD/bench-checkpoint.tmp}
export BENCH_CKPT_PAIRS=${BENCH_CKPT_PAIRS:-9}
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

stall() {  # label, then env assignments for the run
  local label=$1
  shift
  echo "== $label (load $(cut -d' ' -f1 /proc/loadavg))"
  env "$@" "$BUILD/bench/bench_checkpoint_stall" "$ROOT/configs/tiny.toml" "$WORK/run" 2>/dev/null |
    grep -v '^\[checkpoint\]'
}
stall "every core training" BENCH_CKPT_THREADS=0
stall "every core training, each write waited for at its block's end" BENCH_CKPT_THREADS=0 \
  BENCH_CKPT_RUN=1
stall "one core left to the writer" BENCH_CKPT_THREADS=1
stall "noise floor: no checkpoint in either block" BENCH_CKPT_THREADS=0 BENCH_CKPT_NOISE=1
echo "== the CPU of each phase of a checkpoint"
"$BUILD/bench/bench_checkpoint_phases" "$ROOT/configs/tiny.toml" "$WORK/phases" 2>/dev/null |
  grep -v '^\['
echo "== the store's write bandwidth"
"$BUILD/bench/bench_store" "$WORK/store"
