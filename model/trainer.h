#pragma once
// Single-process training (the library the worker actors will call): the global batch of
// each step is split into logical micro-batches, computed on a thread pool, and reduced
// in the canonical tree — so the result is independent of the thread count (DESIGN §5).
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/data.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/params.h"

namespace troupe::model {

struct StepStats {
  int64_t step = 0;
  double loss = 0, ce = 0, mtp = 0, bal = 0;
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // valid main-head targets of the step
};

// Forward (+ backward) of a global batch split into logical micro-batches of mb_rows,
// computed on a thread pool and reduced in the canonical tree over micro-batch ids. The
// result depends on the batch and the weights alone, not on the thread count.
template <typename T>
class GradEngine {
 public:
  GradEngine(const ModelConfig& mcfg, const ParamTable& table, int threads);
  ~GradEngine();
  // Returns the reduced loss parts; with backward, grad() holds the reduced gradient.
  LossParts<T> run(const T* params, const Batch& batch, int64_t mb_rows, bool backward,
                   bool with_mtp);
  const std::vector<T>& grad() const { return grads_.front(); }
  // Tokens per expert per layer over the whole batch (integers: order-free).
  const std::vector<std::vector<int64_t>>& counts() const { return counts_; }

 private:
  const ModelConfig& mcfg_;
  const ParamTable& table_;
  int threads_;
  std::vector<std::unique_ptr<Model<T>>> workers_;  // one activation workspace per thread
  std::vector<std::vector<T>> grads_;               // one gradient buffer per micro-batch
  std::vector<std::vector<int64_t>> counts_;
};

class Trainer {
 public:
  // Members first, as a table of contents.
  const JobConfig cfg;
  const ParamTable table;
  std::vector<float> params;  // the one contiguous parameter buffer

 private:
  int threads_;
  std::unique_ptr<Corpus> corpus_;
  std::unique_ptr<PackedStream> train_stream_, val_stream_;
  std::unique_ptr<GradEngine<float>> engine_;
  AdamW adamw_;

 public:
  // Loads the corpus and initialises the weights from the job seed.
  explicit Trainer(const JobConfig& cfg);
  ~Trainer();

  // Runs step s (0-based) of the job: forward, backward, reduce, clip, update, rebalance.
  StepStats train_step(int64_t step);
  // Mean main-head cross-entropy (nats per byte) over the validation rows.
  double validate();

  int threads() const { return threads_; }
  int64_t micro_batches() const { return cfg.train.batch_size / cfg.train.micro_batch_rows; }
  // Fingerprint of the weights: xxh64 of the raw parameter bytes.
  uint64_t weights_hash() const;
};

}  // namespace troupe::model
