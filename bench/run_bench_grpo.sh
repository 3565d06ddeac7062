#!/usr/bin/env bash
# make bench-grpo (issue 17): completion tokens/s of lag-1 asynchronous GRPO (grpo.overlap =
# true: the rollout node samples step s + 1 while the worker trains step s) next to the same
# job generating, then training (grpo.overlap = false), in the same run, with the same bits
# (run_bench_placement.sh checks the weights; REPEATS (2), STEPS (30), WARMUP (5)).
#
# One worker node and one rollout node, one thread each (--threads-per-node 1): each phase has
# a core of its own, as trainers and rollout nodes have their own devices in a real job. The
# model is tiny's width (d_model 128) from its initialisation, and a completion has at most
# MAX_NEW (3) tokens, so that sampling a step costs the same order as training it; overlap
# gains at most 1 + min(sample, train) / max(sample, train). docs/grpo.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
model="--set model.d_model=128 --set model.dense_inter=256 --set model.moe_inter=64"
model+=" --set model.q_lora_rank=32 --set model.kv_lora_rank=32 --set model.qk_nope_head_dim=16"
model+=" --set model.qk_rope_head_dim=16 --set model.v_head_dim=16"
env CONFIG="$ROOT/configs/grpo-tiny.toml" NODES=1 STEPS="${STEPS:-30}" \
  EXTRA_SETS="--rollout-nodes 1 --threads-per-node 1 --set grpo.overlap=false --set grpo.init_weights= \
--set grpo.max_new_tokens=${MAX_NEW:-3} $model" \
  "$ROOT/bench/run_bench_placement.sh" "$BUILD" bench-grpo "generate, then train" \
  "lag-1 overlap" "--set grpo.overlap=true" "issue 17: >= 1.3x" \
  < /dev/null
