#!/usr/bin/env bash
# make bench: every figure next to its anchor, as a ratio measured in this run.
#  1. GEMM: troupe's deterministic kernel vs OpenBLAS sgemm on the model's shapes; the
#     emulated FP8 Linear vs the FP32 one on the same kind of shapes; tiny's MoE layer vs
#     the Linears inside it.
#  2. Training throughput of `troupe train` vs eager PyTorch (FP32, same threads) on tiny and
#     small at 1 thread and all threads (Engram off: the eager peer has none); small's achieved
#     GFLOP/s over 100 steps next to the machine's sgemm peak; mHC vs the plain residual next
#     to mHC's share of the FLOPs (bench/run_bench_mhc.py: alternating runs; bench_mhc_step:
#     alternating steps in one process). Env: BENCH_STEPS (tiny, 20), BENCH_STEPS_SMALL (6),
#     BENCH_STEPS_PEAK (100), BENCH_THREAD_COUNTS ("1 nproc"), BENCH_MHC_STEPS (tiny, 40),
#     BENCH_MHC_STEPS_SMALL (16).
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
THREADS=${BENCH_THREADS:-$(nproc)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== GEMM (single thread) =="
"$BUILD/bench/bench_gemm" | tee "$TMP/gemm.txt"
echo "== emulated FP8 Linear vs FP32 Linear (single thread) =="
"$BUILD/bench/bench_fp8"
echo "== MoE layer vs its Linears (single thread) =="
"$BUILD/bench/bench_moe"
echo "== mHC vs its projection GEMMs (single thread) =="
"$BUILD/bench/bench_mhc"
# The machine's sgemm peak with all threads (OpenBLAS, 2048³), measured just now.
PEAK=$($PY -c "import re;m=re.search(r'(\d+) threads ([0-9.]+) GFLOP/s',open('$TMP/gemm.txt').read());print(m.group(2) if m else '')")

# Steady-state GFLOP/s of a run: the median per-step tokens/s after 2 warm-up steps times a
# token's matmul FLOPs (model/flops.h, via `troupe dev flops`).
steady() {  # run_dir config -> "tok/s GFLOP/s"
  local fpt
  fpt=$("$BUILD/troupe" dev flops --config "$2" | $PY -c "import json,sys;print(json.load(sys.stdin)['train_flops_per_token'])")
  $PY -c "
import json,statistics
v=[json.loads(l)['tokens_per_s'] for l in open('$1/metrics.jsonl')][2:]
m=statistics.median(v);print(f'{m:.1f} {m*$fpt/1e9:.2f}')"
}

for cfg in tiny small; do
  # Both sides without Engram: the eager peer has none.
  sed -E 's/^engram_layers *=.*/engram_layers = []/' "$ROOT/configs/$cfg.toml" > "$TMP/$cfg.toml"
  steps=${BENCH_STEPS:-20}
  [ "$cfg" = small ] && steps=${BENCH_STEPS_SMALL:-6}
  for threads in ${BENCH_THREAD_COUNTS:-1 $THREADS}; do
    echo "== training throughput: $cfg, $steps steps, $threads thread(s) =="
    rm -rf "$TMP/$cfg"
    "$BUILD/troupe" train --config "$TMP/$cfg.toml" --run-dir "$TMP/$cfg" \
        --steps "$steps" --set train.eval_every=0 --set "train.threads=$threads" \
        --set data.val_rows_max=2 2>/dev/null | grep -E "^summary|^memory" || true
    read -r ours _ < <(steady "$TMP/$cfg" "$TMP/$cfg.toml")
    theirs=$($PY "$ROOT/tests/reference/reference.py" train-bench --config "$TMP/$cfg.toml" \
        --steps "$steps" --threads "$threads" | $PY -c "import json,sys;print(json.load(sys.stdin)['tokens_per_s'])")
    $PY -c "print(f'$cfg, $threads thread(s): troupe {float($ours):.0f} tok/s   eager PyTorch {float($theirs):.0f} tok/s   ratio {float($ours)/float($theirs):.2f}x')"
  done
done

# small's achieved GFLOP/s over a long run (issue 18: >= 100 steps) next to the sgemm peak of
# all threads measured above, in this run.
peak_steps=${BENCH_STEPS_PEAK:-100}
echo "== small at $THREADS threads, $peak_steps steps: achieved GFLOP/s vs the sgemm peak =="
rm -rf "$TMP/small"
"$BUILD/troupe" train --config "$TMP/small.toml" --run-dir "$TMP/small" --steps "$peak_steps" \
    --set train.eval_every=0 --set "train.threads=$THREADS" --set data.val_rows_max=2 \
    2>/dev/null | grep -E "^summary" || true
read -r tps gflops < <(steady "$TMP/small" "$TMP/small.toml")
if [ -n "$PEAK" ]; then
  $PY -c "print(f'small: troupe {float($gflops):.1f} GFLOP/s (median step, {float($tps):.0f} tok/s)   sgemm peak ($THREADS threads) {float($PEAK):.1f} GFLOP/s   ratio {float($gflops)/float($PEAK):.2f}')"
fi

echo "== mHC (n = 4) vs residual = plain, 1 thread, alternating runs =="
$PY "$ROOT/bench/run_bench_mhc.py" "$BUILD"
echo "== the same, alternating steps inside one process (drift falls on both alike) =="
"$BUILD/bench/bench_mhc_step" --steps "${BENCH_MHC_STEPS:-40}" "$ROOT/configs/tiny.toml"
"$BUILD/bench/bench_mhc_step" --steps "${BENCH_MHC_STEPS_SMALL:-16}" "$ROOT/configs/small.toml"
