#!/usr/bin/env bash
# make bench-fp8-loss: SPEC §10's FP8 claim ("a run with FP8 stays within 0.5% of the FP32
# loss curve at the same step") next to its anchor, the FP32 run's own noise floor: tiny
# trained in FP32, in FP8, and in FP32 twice more with the learning rate moved by one part
# per million (train.lr × (1 ± 1e-6)), same seed and data. Training is chaotic (MoE routing
# and the balancing rule are discontinuous), so the twins diverge from FP32 as FP8 does;
# the ratio says whether FP8's deviation is larger than that.
#   BENCH_FP8_STEPS (600)   steps of each run
#   BENCH_THREADS (nproc)   compute threads of each run
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${BENCH_FP8_STEPS:-600}
THREADS=${BENCH_THREADS:-$(nproc)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LR=$(grep -E '^lr *=' "$ROOT/configs/tiny.toml" | sed -E 's/^lr *= *([^ #]+).*/\1/')

run() {  # name, extra --set arguments
  local name=$1
  shift
  echo "== tiny, $name: $STEPS steps, $THREADS threads =="
  "$BUILD/troupe" train --config "$ROOT/configs/tiny.toml" --run-dir "$TMP/$name" \
      --steps "$STEPS" --set "train.threads=$THREADS" "$@" 2>&1 | grep -E '^summary' || true
}
run fp32
run fp8 --set fp8.enabled=true
run fp32_lr_up --set "train.lr=$($PY -c "print(repr($LR * (1 + 1e-6)))")"
run fp32_lr_down --set "train.lr=$($PY -c "print(repr($LR * (1 - 1e-6)))")"
$PY "$ROOT/tools/compare_loss.py" --base "$TMP/fp32" --run "fp8=$TMP/fp8" \
    --anchor "lr×(1+1e-6)=$TMP/fp32_lr_up" --anchor "lr×(1−1e-6)=$TMP/fp32_lr_down" \
    --step "$((STEPS - 1))"
