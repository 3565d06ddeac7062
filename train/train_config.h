#pragma once
// [train] and the sections a training job computes from. Parsed by config/.
#include <cstdint>

#include "data/data_config.h"
#include "model/config.h"
#include "optim/optim_config.h"

namespace troupe::model {

struct TrainConfig {             // [train]
  int64_t steps = 600;           // steps: optimizer steps of the job
  int64_t batch_size = 16;       // global rows of T per step
  int64_t micro_batch_rows = 2;  // rows per logical micro-batch (the unit of determinism)
  // data.mode = "mixed": tokens of a micro-batch (its one row); 0 = micro_batch_rows ·
  // seq_len, the tokens of a packed micro-batch. Unused in packed mode.
  int64_t tokens_per_microbatch = 0;
  double lr = 3e-3;           // peak learning rate (AdamW and Muon), after warm-up
  int64_t warmup_steps = 50;  // steps: linear warm-up from 0 to lr
  double min_lr_ratio = 0.1;  // cosine decays to lr·min_lr_ratio
  double weight_decay = 0.1;  // decoupled weight decay (per unit of lr)
  double grad_clip = 1.0;     // L2 norm: global-norm gradient clipping threshold
  uint64_t seed = 1234;       // the job seed: initialisation, data order, sampling
  // Steps between validations; 0 = none but the last (the last step always runs one).
  int64_t eval_every = 100;
  int64_t threads = 0;  // compute threads; 0 = all cores. Never changes results.
  bool operator==(const TrainConfig&) const = default;
};

struct CheckpointConfig {  // [checkpoint] (docs/storage.md)
  // Steps between checkpoints: one after every every_steps-th committed step; 0 = none.
  int64_t every_steps = 0;
  // Complete checkpoints kept; older ones are deleted (never the newest complete one).
  int64_t keep = 2;
  bool operator==(const CheckpointConfig&) const = default;
};

// The sections that determine what a training job computes: everything the trainer reads.
// config/'s JobConfig adds how the job is run (fault tolerance) and where it came from.
struct TrainJobConfig {
  ModelConfig model;          // [model]: the network
  DataConfig data;            // [data]: corpus, split, order
  TrainConfig train;          // [train]: steps, batch, schedule
  OptimizerConfig optimizer;  // [optimizer]: which update and its constants
  Fp8Config fp8;              // [fp8]: FP8 GEMMs on or off
  MemoryConfig memory;        // [memory]: activation recomputation; never changes a bit
  // [checkpoint]: when the state is written; never changes what is computed.
  CheckpointConfig checkpoint;
};

// data.mode = "mixed": T_max, the tokens of a document at most (data.max_doc_tokens, 0 =
// model.seq_len).
inline int64_t mixed_max_doc_tokens(const TrainJobConfig& c) {
  return c.data.max_doc_tokens > 0 ? c.data.max_doc_tokens : c.model.seq_len;
}
// data.mode = "mixed": the tokens of a micro-batch's one row (train.tokens_per_microbatch, 0 =
// micro_batch_rows · seq_len).
inline int64_t mixed_tokens_per_microbatch(const TrainJobConfig& c) {
  return c.train.tokens_per_microbatch > 0 ? c.train.tokens_per_microbatch
                                           : c.train.micro_batch_rows * c.model.seq_len;
}
// Rows of a training micro-batch: micro_batch_rows, or one in mixed mode.
inline int64_t train_micro_batch_rows(const TrainJobConfig& c) {
  return c.data.mode == DataMode::mixed ? 1 : c.train.micro_batch_rows;
}

}  // namespace troupe::model
