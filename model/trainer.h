#pragma once
// Single-process training (the library the worker actors will call): the global batch of
// each step is split into logical micro-batches, computed on a thread pool, and reduced
// in the canonical tree — so the result is independent of the thread count (DESIGN §5).
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/data.h"
#include "model/engram.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/params.h"

namespace troupe::model {

struct StepStats {
  int64_t step = 0;
  double loss = 0, ce = 0, mtp = 0, bal = 0;
  // grad_norm: the global norm clipped to grad_clip, over the dense gradient and the Engram
  // tables' sparse gradient together: sqrt(‖dense‖² + Σ_tables Σ_rows ‖g_row‖²).
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // valid main-head targets of the step
};

// Forward (+ backward) of a global batch split into logical micro-batches of mb_rows,
// computed on a thread pool and reduced in the canonical tree over micro-batch ids. The
// result depends on the batch and the weights alone, not on the thread count.
template <typename T>
class GradEngine {
 public:
  // seed keys Engram's hashing; engram supplies its tables (both unused without Engram;
  // engram is required with it and must outlive the engine).
  GradEngine(const ModelConfig& mcfg, const ParamTable& table, int threads, uint64_t seed = 0,
             const EngramStore<T>* engram = nullptr);
  ~GradEngine();
  // Returns the reduced loss parts; with backward, grad() holds the reduced gradient.
  LossParts<T> run(const T* params, const Batch& batch, int64_t mb_rows, bool backward,
                   bool with_mtp);
  const std::vector<T>& grad() const { return grads_.front(); }
  // The reduced sparse Engram table gradient (one entry per table; empty without Engram).
  const EngramGrad<T>& engram_grad() const { return egrads_.front(); }
  // Tokens per expert per layer over the whole batch (integers: order-free).
  const std::vector<std::vector<int64_t>>& counts() const { return counts_; }

 private:
  const ModelConfig& mcfg_;
  const ParamTable& table_;
  int threads_;
  std::vector<std::unique_ptr<Model<T>>> workers_;  // one activation workspace per thread
  std::vector<std::vector<T>> grads_;               // one gradient buffer per micro-batch
  const EngramStore<T>* engram_ = nullptr;
  std::vector<EngramGrad<T>> egrads_;  // one sparse table gradient per micro-batch
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
  std::unique_ptr<PackedStream> train_stream_;
  Batch val_batch_;  // the validation rows: the same every time, so built once
  std::unique_ptr<InProcessEngramStore<float>> engram_;  // Engram tables (null without Engram)
  std::unique_ptr<GradEngine<float>> engine_;
  Optimizer optimizer_;

 public:
  // Loads the corpus and initialises the weights from the job seed.
  explicit Trainer(const JobConfig& cfg);
  ~Trainer();

  // Runs step s (0-based) of the job: forward, backward, reduce, clip, update, rebalance.
  StepStats train_step(int64_t step);
  // Mean main-head cross-entropy (nats per byte) over the validation rows.
  double validate();

  int threads() const { return threads_; }
  // The Engram tables, or null when the config has no Engram layer.
  const InProcessEngramStore<float>* engram() const { return engram_.get(); }
  int64_t micro_batches() const { return cfg.train.batch_size / cfg.train.micro_batch_rows; }
  // Fingerprint of the weights: xxh64 of the raw parameter bytes, then of each Engram
  // table's bytes in table order (seeded with the running hash).
  uint64_t weights_hash() const;
};

}  // namespace troupe::model
