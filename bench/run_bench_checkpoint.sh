#!/usr/bin/env bash
# make bench-checkpoint (issue 12): what checkpoints cost.
#  (a) tokens/s of `troupe train` on tiny with a checkpoint every 10 steps next to none, the
#      same steps, alternately (A B A B ...), BENCH_CKPT_REPEATS runs each; the whole run's
#      tok/s from the summary (the last checkpoint's write included), medians, printed as a
#      stall percentage and a ratio (issue 12: stall <= 2%).
#  (b) the store's write bandwidth next to the disk's own sequential write + fdatasync
#      (bench_store: the same bytes, the same directory, the same run; issue 12: >= 50%).
#   BENCH_CKPT_STEPS (60)    steps per run        BENCH_CKPT_REPEATS (3)  runs of each
#   BENCH_CKPT_EVERY (10)    steps between checkpoints
#   BENCH_STORE_MIB (256)    synthetic checkpoint size   BENCH_STORE_REPEATS (3)
#   BENCH_CKPT_DIR ($BUILD/bench-checkpoint.tmp)  where runs and the store write (the disk
#                            measured; not /tmp, which may be memory)
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${BENCH_CKPT_STEPS:-60}
REPEATS=${BENCH_CKPT_REPEATS:-3}
EVERY=${BENCH_CKPT_EVERY:-10}
WORK=${BENCH_CKPT_DIR:-$BUILD/bench-checkpoint.tmp}
PY=/usr/bin/python3
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
common=(--config "$ROOT/configs/tiny.toml" --steps "$STEPS" --set train.eval_every=0
        --set data.val_rows_max=4)

run() {  # name every_steps -> the run's tok/s (summary); its checkpoints line into $WORK/name.ck
  "$BUILD/troupe" train "${common[@]}" --set "checkpoint.every_steps=$2" \
    --run-dir "$WORK/$1" >"$WORK/$1.out" 2>"$WORK/$1.err"
  grep -o '[0-9]* tok/s' "$WORK/$1.out" | cut -d' ' -f1
  grep '^checkpoints:' "$WORK/$1.out" >"$WORK/$1.ck" || true
  rm -rf "${WORK:?}/$1"
}

echo "bench-checkpoint: tiny, $STEPS steps, checkpoint every $EVERY vs none, $REPEATS runs" \
     "each, load $(cut -d' ' -f1 /proc/loadavg)"
none=() ckpt=()
for r in $(seq "$REPEATS"); do
  none+=("$(run "none$r" 0)")
  ckpt+=("$(run "ckpt$r" "$EVERY")")
  echo "  run $r: none ${none[-1]} tok/s   every $EVERY ${ckpt[-1]} tok/s   $(cat "$WORK/ckpt$r.ck")"
done
"$PY" - "${none[*]}" "${ckpt[*]}" "$EVERY" <<'PYEOF'
import statistics, sys
none = statistics.median(map(float, sys.argv[1].split()))
ckpt = statistics.median(map(float, sys.argv[2].split()))
print(f"no checkpoints          {none:9.1f} tok/s (median)")
print(f"checkpoint every {sys.argv[3]:>3}   {ckpt:9.1f} tok/s (median)   ratio {ckpt / none:.3f}, "
      f"stall {100 * (1 - ckpt / none):+.2f}% (issue 12: <= 2%)")
PYEOF
"$BUILD/bench/bench_store" "$WORK/store"
