#!/usr/bin/env bash
# make bench: every figure next to its anchor, as a ratio measured in this run.
#  1. GEMM: troupe's deterministic kernel vs OpenBLAS sgemm on the model's shapes; the
#     emulated FP8 Linear vs the FP32 one on the same kind of shapes; tiny's MoE layer vs
#     the Linears inside it.
#  2. Training throughput of `troupe train` vs eager PyTorch (FP32, same threads) on the
#     same config (Engram off: the eager peer has none), and troupe's achieved GFLOP/s next to the machine's sgemm peak.
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
# The machine's sgemm peak with all threads (OpenBLAS, 2048³), measured just now.
PEAK=$($PY -c "import re;m=re.search(r'(\d+) threads ([0-9.]+) GFLOP/s',open('$TMP/gemm.txt').read());print(m.group(2) if m else '')")

for cfg in tiny small; do
  steps=${BENCH_STEPS:-20}
  [ "$cfg" = small ] && steps=${BENCH_STEPS_SMALL:-6}
  echo "== training throughput: $cfg, $steps steps, $THREADS threads =="
  # Both sides without Engram: the eager peer has none.
  sed -E 's/^engram_layers *=.*/engram_layers = []/' "$ROOT/configs/$cfg.toml" > "$TMP/$cfg.toml"
  "$BUILD/troupe" train --config "$TMP/$cfg.toml" --run-dir "$TMP/$cfg" \
      --steps "$steps" --set train.eval_every=0 --set "train.threads=$THREADS" \
      --set data.val_rows_max=2 2>/dev/null | tee "$TMP/$cfg.txt"
  # Steady-state throughput: the median of per-step tokens_per_s after 2 warm-up steps.
  ours=$($PY -c "
import json,statistics,sys
v=[json.loads(l)['tokens_per_s'] for l in open('$TMP/$cfg/metrics.jsonl')][2:]
print(f'{statistics.median(v):.1f}')")
  gflops=$($PY -c "import re;t=open('$TMP/$cfg.txt').read();m=re.search(r'tok/s\s+([0-9.]+) GFLOP/s',t);print(m.group(1) if m else 'nan')")
  theirs_json=$($PY "$ROOT/tests/reference/reference.py" train-bench --config "$TMP/$cfg.toml" \
      --steps "$steps" --threads "$THREADS")
  theirs=$($PY -c "import json;print(json.loads('''$theirs_json''')['tokens_per_s'])")
  $PY -c "print(f'$cfg: troupe {float($ours):.0f} tok/s   eager PyTorch {float($theirs):.0f} tok/s   ratio {float($ours)/float($theirs):.2f}x')"
  if [ -n "$PEAK" ]; then
    $PY -c "print(f'$cfg: troupe {float($gflops):.1f} GFLOP/s (whole run)   sgemm peak {float($PEAK):.1f} GFLOP/s   ratio {float($gflops)/float($PEAK):.2f}')"
  fi
done
