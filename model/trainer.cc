#include "model/trainer.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <thread>

#include "model/ffn.h"
#include "model/parallel.h"

namespace troupe::model {

template <typename T>
GradEngine<T>::GradEngine(const ModelConfig& mcfg, const ParamTable& table, int threads,
                          uint64_t seed, const EngramStore<T>* engram)
    : mcfg_(mcfg), table_(table), threads_(std::max(1, threads)), engram_(engram) {
  if (!mcfg.engram_layers.empty() && !engram)
    throw std::invalid_argument("GradEngine: the config has Engram layers but no EngramStore");
  for (int w = 0; w < threads_; ++w)
    workers_.push_back(std::make_unique<Model<T>>(mcfg, table, seed));
}

namespace {
// The sparse table gradients follow the same canonical tree as the dense ones (DESIGN §5):
// at each node, left += right rowwise (rows on one side copied, on both added left + right).
// Parallel over tables, which cannot change any bit.
template <typename T>
void engram_tree_reduce(std::vector<EngramGrad<T>>& g, int64_t lo, int64_t hi,
                        const EngramStore<T>& store, int threads) {
  if (hi - lo <= 1) return;
  const int64_t mid = tree_split(lo, hi);
  engram_tree_reduce(g, lo, mid, store, threads);
  engram_tree_reduce(g, mid, hi, store, threads);
  const auto& info = store.tables();
  parallel_for(int64_t(info.size()), threads,
               [&](int64_t t, int) { sparse_rows_add(g[lo][t], g[mid][t], info[t].dim); });
}
}  // namespace

template <typename T>
GradEngine<T>::~GradEngine() = default;

template <typename T>
LossParts<T> GradEngine<T>::run(const T* params, const Batch& batch, int64_t mb_rows, bool backward,
                                bool with_mtp) {
  if (mb_rows <= 0 || batch.rows % mb_rows != 0)
    throw std::invalid_argument("batch rows must be a multiple of the micro-batch rows");
  const int64_t n_mb = batch.rows / mb_rows;
  const LossScale scale = loss_scale_of(batch, with_mtp);
  const int64_t P = table_.total();
  if (backward) {
    grads_.resize(static_cast<size_t>(std::max<int64_t>(n_mb, 1)));
    for (auto& g : grads_) g.resize(static_cast<size_t>(P));
  }
  egrads_.resize(static_cast<size_t>(std::max<int64_t>(n_mb, 1)));
  for (auto& g : egrads_) g.assign(engram_ ? engram_->tables().size() : 0, {});
  std::vector<LossParts<T>> parts(static_cast<size_t>(n_mb));
  std::vector<std::vector<std::vector<int64_t>>> counts(static_cast<size_t>(n_mb));
  parallel_for(n_mb, threads_, [&](int64_t i, int w) {
    const Batch mb = batch.slice(i * mb_rows, mb_rows);
    T* g = nullptr;
    if (backward) {
      std::fill(grads_[i].begin(), grads_[i].end(), T(0));
      g = grads_[i].data();
    }
    parts[i] = workers_[w]->step(params, g, mb, scale, with_mtp, engram_,
                                 backward && engram_ ? &egrads_[i] : nullptr);
    counts[i] = workers_[w]->expert_counts();
  });
  if (backward) tree_reduce(grads_, 0, n_mb, P, threads_);
  if (backward && engram_) engram_tree_reduce(egrads_, 0, n_mb, *engram_, threads_);
  // Scalars follow the same canonical tree as the gradients.
  std::vector<T> ce(n_mb), mtp(n_mb), bal(n_mb), ce_sum(n_mb);
  LossParts<T> out;
  for (int64_t i = 0; i < n_mb; ++i) {
    ce[i] = parts[i].ce, mtp[i] = parts[i].mtp, bal[i] = parts[i].bal;
    ce_sum[i] = parts[i].ce_sum;
    out.ce_count += parts[i].ce_count;
  }
  if (n_mb > 0) {
    out.ce = tree_sum(ce, 0, n_mb), out.mtp = tree_sum(mtp, 0, n_mb);
    out.bal = tree_sum(bal, 0, n_mb), out.ce_sum = tree_sum(ce_sum, 0, n_mb);
  }
  counts_.assign(static_cast<size_t>(mcfg_.n_layers), {});
  for (int64_t i = 0; i < n_mb; ++i)
    for (size_t l = 0; l < counts[i].size(); ++l) {
      auto& dst = counts_[l];
      if (dst.size() < counts[i][l].size()) dst.resize(counts[i][l].size(), 0);
      for (size_t e = 0; e < counts[i][l].size(); ++e) dst[e] += counts[i][l][e];
    }
  return out;
}

template class GradEngine<float>;
template class GradEngine<double>;

namespace {
constexpr double kEngramLrMultiplier = 5.0;  // SPEC §4: tables train at lr × 5

// The first val_rows_max rows of the unshuffled validation stream (0 = every row that ends
// inside one pass over the validation documents), in whole micro-batches.
Batch validation_rows(const JobConfig& c, const std::vector<std::string>& docs) {
  const PackedStream stream(&docs, c.train.seed, false, c.model.seq_len);
  const int64_t mb = c.train.micro_batch_rows;
  const int64_t all = (stream.epoch_tokens() - 1) / c.model.seq_len;
  int64_t rows = c.data.val_rows_max > 0 ? std::min(c.data.val_rows_max, all) : all;
  rows = std::max<int64_t>(mb, rows / mb * mb);
  return stream.rows(0, rows);
}

int resolve_threads(int64_t configured) {
  if (configured > 0) return static_cast<int>(configured);
  return std::max(1u, std::thread::hardware_concurrency());
}
}  // namespace

Trainer::Trainer(const JobConfig& c)
    : cfg(c),
      table(c.model),
      params(static_cast<size_t>(table.total())),
      threads_(resolve_threads(c.train.threads)),
      optimizer_(table, c.optimizer, c.train.weight_decay, threads_) {
  corpus_ = std::make_unique<Corpus>(load_fortunes(c.data.corpus_dir, c.data.val_modulus));
  train_stream_ = std::make_unique<PackedStream>(&corpus_->train, c.train.seed, c.data.shuffle,
                                                 c.model.seq_len);
  val_batch_ = validation_rows(c, corpus_->val);
  init_params(table, c.train.seed, params.data());
  if (!c.model.engram_layers.empty())
    engram_ = std::make_unique<InProcessEngramStore<float>>(c.model, c.train.seed);
  engine_ =
      std::make_unique<GradEngine<float>>(cfg.model, table, threads_, c.train.seed, engram_.get());
}

Trainer::~Trainer() = default;

StepStats Trainer::train_step(int64_t step) {
  const Batch batch = train_batch(*train_stream_, step, cfg.train.batch_size);
  LossParts<float> lp =
      engine_->run(params.data(), batch, cfg.train.micro_batch_rows, true, cfg.model.mtp_depth > 0);
  StepStats st;
  st.step = step;
  st.ce = lp.ce, st.mtp = lp.mtp, st.bal = lp.bal, st.loss = lp.total();
  st.tokens = lp.ce_count;
  st.lr = lr_at(cfg.train, step);
  st.grad_norm = global_grad_norm(table, engine_->grad().data());
  if (engram_) {  // the global norm covers the Engram tables too: sqrt(‖dense‖² + ‖tables‖²)
    st.grad_norm =
        std::sqrt(st.grad_norm * st.grad_norm + engram_grad_sumsq(engine_->engram_grad()));
  }
  const double clip = cfg.train.grad_clip;
  const double scale = (clip > 0 && st.grad_norm > clip) ? clip / (st.grad_norm + 1e-6) : 1.0;
  optimizer_.update(params.data(), engine_->grad().data(), st.lr, scale, step);
  if (engram_) {  // SPEC §4: sparse Adam on the touched rows, lr × 5, no weight decay
    EngramAdamStep es;
    es.lr = kEngramLrMultiplier * st.lr;
    es.beta1 = cfg.optimizer.beta1, es.beta2 = cfg.optimizer.beta2, es.eps = cfg.optimizer.eps;
    es.grad_scale = scale, es.step = step;
    engram_->apply(engine_->engram_grad(), es);
  }
  // Auxiliary-loss-free balancing: the bias follows the whole global batch's counts.
  for (int64_t l = 0; l < cfg.model.n_layers; ++l) {
    if (!cfg.model.is_moe_layer(l)) continue;
    const std::string name =
        "model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias";
    moe_bias_update(cfg.model, engine_->counts()[l].data(), params.data() + table.offset(name));
  }
  return st;
}

double Trainer::validate() {
  LossParts<float> lp =
      engine_->run(params.data(), val_batch_, cfg.train.micro_batch_rows, false, false);
  return lp.ce_count > 0 ? double(lp.ce_sum) / double(lp.ce_count) : 0.0;
}

uint64_t Trainer::weights_hash() const {
  uint64_t h = XXH64(params.data(), params.size() * sizeof(float), 0);
  if (engram_) {
    for (size_t t = 0; t < engram_->tables().size(); ++t) {
      const auto& info = engram_->tables()[t];
      h = XXH64(engram_->data(int64_t(t)), size_t(info.rows * info.dim) * sizeof(float), h);
    }
  }
  return h;
}

}  // namespace troupe::model
