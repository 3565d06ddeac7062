#include "train/trainer.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <stdexcept>
#include <thread>

#include "data/mixed_batch.h"
#include "model/ffn.h"
#include "train/engram_share.h"
#include "train/grpo_step.h"
#include "train/tree.h"

namespace troupe::model {

namespace {
// The first val_rows_max rows of the unshuffled validation stream (0 = every row that ends
// inside one pass over the validation documents), in whole micro-batches.
Batch validation_rows(const TrainJobConfig& c, const std::vector<std::string>& docs) {
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

Trainer::Trainer(const TrainJobConfig& c, const EngramStore<float>* engram_elsewhere)
    : cfg(c),
      table(c.model),
      params(static_cast<size_t>(table.total())),
      threads_(resolve_threads(c.train.threads)),
      optimizer_(std::in_place, table, c.optimizer, c.train.weight_decay, threads_, FlatRange{},
                 c.memory.offload_optimizer) {
  corpus_ = std::make_unique<Corpus>(load_corpus(c.data, c.train.seed));
  train_stream_ = std::make_unique<PackedStream>(&corpus_->train, c.train.seed, c.data.shuffle,
                                                 c.model.seq_len);
  if (c.data.mode == DataMode::mixed) {
    MixedPlanConfig pc;
    pc.max_doc_tokens = mixed_max_doc_tokens(c);
    pc.tokens_per_microbatch = mixed_tokens_per_microbatch(c);
    pc.micro_batches_per_step = c.train.batch_size / c.train.micro_batch_rows;
    planner_ = std::make_unique<MixedPlanner>(&corpus_->train, c.train.seed, c.data.shuffle, pc);
  }
  val_batch_ = validation_rows(c, corpus_->val);
  init_params(table, c.train.seed, params.data());
  if (!c.model.engram_layers.empty() && !engram_elsewhere)
    engram_ = std::make_unique<InProcessEngramStore<float>>(c.model, c.train.seed);
  engine_ = std::make_unique<GradEngine<float>>(cfg.model, table, threads_, c.train.seed,
                                                engram_ ? engram_.get() : engram_elsewhere);
}

Trainer::~Trainer() = default;

StepStats step_stats(const TrainConfig& t, int64_t step, const LossParts<float>& lp,
                     double grad_norm) {
  StepStats st;
  st.step = step;
  st.ce = lp.ce, st.mtp = lp.mtp, st.bal = lp.bal, st.loss = lp.total();
  st.tokens = lp.ce_count;
  st.lr = lr_at(t, step);
  st.grad_norm = grad_norm;
  return st;
}

Batch Trainer::step_batch(int64_t step) const {
  if (planner_) return mixed_batch(*planner_, corpus_->train, step);
  return train_batch(*train_stream_, step, cfg.train.batch_size);
}

double Trainer::padding_waste(int64_t step) const {
  if (!planner_) return 0.0;
  if (waste_cache_.first != step) waste_cache_ = {step, planner_->step(step).padding_waste()};
  return waste_cache_.second;
}

StepStats Trainer::train_step(int64_t step) {
  LossParts<float> lp =
      grpo_ ? compute_grpo_range(step, {0, micro_batches()}, false).front().parts
            : engine_->run(params.data(), step_batch(step), train_micro_batch_rows(cfg), true,
                           cfg.model.mtp_depth > 0);
  StepStats st =
      step_stats(cfg.train, step, lp,
                 global_norm_with_engram(cfg.model, global_grad_norm(table, engine_->grad().data()),
                                         engram_ ? engram_grad_sumsq(engine_->engram_grad()) : 0));
  if (planner_) st.padding_waste = padding_waste(step);
  const double scale = clip_scale(cfg.train.grad_clip, st.grad_norm);
  optimizer_stepped_ = true;
  optimizer_->update(params.data(), engine_->grad().data(), st.lr, scale, step);
  if (engram_) engram_adam(engine_->engram_grad(), step, scale);
  apply_bias_rule(engine_->counts(), FlatRange{});
  return st;
}

// Auxiliary-loss-free balancing: the bias follows the whole global batch's counts.
void Trainer::apply_bias_rule(const std::vector<std::vector<int64_t>>& counts, FlatRange owned) {
  for (int64_t l = 0; l < cfg.model.n_layers; ++l) {
    if (!cfg.model.is_moe_layer(l)) continue;
    const ParamInfo& bias =
        table.at("model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias");
    if (!owned.covers(bias)) continue;
    if (counts.at(size_t(l)).size() != size_t(cfg.model.n_routed_experts))
      throw std::invalid_argument("expert counts of layer " + std::to_string(l) +
                                  " do not match n_routed_experts");
    moe_bias_update(cfg.model, counts[size_t(l)].data(), params.data() + bias.offset);
  }
}

void Trainer::engram_adam(const EngramGrad<float>& grad, int64_t step, double scale) {
  engram_->apply(grad, engram_adam_step(cfg, step, scale));
}

void Trainer::keep_optimizer_state(FlatRange owned) {
  if (optimizer_stepped_)
    throw std::logic_error("keep_optimizer_state after a step would drop the optimizer's state");
  optimizer_.emplace(table, cfg.optimizer, cfg.train.weight_decay, threads_, owned,
                     cfg.memory.offload_optimizer);
}

void Trainer::save_version() {
  engram_backup_.reset();
  saved_params_ = params;
  saved_optimizer_.reset();
  saved_optimizer_.emplace(*optimizer_);
}

void Trainer::restore_version() {
  if (!saved_optimizer_) throw std::logic_error("restore_version: no saved version");
  params = saved_params_;
  if (engram_backup_) engram_->restore_rows(*engram_backup_);
  engram_backup_.reset();
  optimizer_.reset();
  optimizer_.emplace(*saved_optimizer_);
}

void Trainer::reshard_optimizer(FlatRange owned,
                                const std::function<const float*(size_t)>& state_of) {
  Optimizer next(table, cfg.optimizer, cfg.train.weight_decay, threads_, owned,
                 cfg.memory.offload_optimizer);
  for (size_t t = 0; t < table.all().size(); ++t) {
    if (!owned.covers(table.all()[t]) || next.state_floats_of(t) == 0) continue;
    const float* in = state_of(t);
    if (in == nullptr)
      throw std::logic_error("reshard_optimizer: no state for " + table.all()[t].name);
    next.write_state(t, in);
  }
  optimizer_.reset();
  optimizer_.emplace(std::move(next));
  saved_optimizer_.reset();  // a saved version belongs to the old share
  optimizer_stepped_ = true;
}

void Trainer::before_compute(const Batch& batch, TreeNode range, int64_t mb) const {
  if (!before_compute_) return;
  before_compute_(batch.slice(range.lo * mb, (range.hi - range.lo) * mb));
}

void Trainer::set_grpo_step(std::shared_ptr<const GrpoStep> g) {
  if (!g || g->batch.rows != micro_batches() * g->mb_rows ||
      g->tokens.size() != size_t(micro_batches()))
    throw std::invalid_argument("set_grpo_step: a GRPO step of other micro-batches than the job's");
  grpo_ = std::move(g);
  heads_.clear();
  heads_.resize(grpo_->tokens.size());
}

const GrpoHead<float>& Trainer::grpo_head(size_t m) const {
  if (m >= heads_.size() || !heads_[m])
    throw std::logic_error("grpo_head: micro-batch " + std::to_string(m) + " was not computed");
  return *heads_[m];
}

const std::vector<Piece<float>>& Trainer::compute_grpo_range(int64_t step, TreeNode range,
                                                             bool append) {
  const GrpoStep& g = *grpo_;
  if (g.step != step)
    throw std::logic_error("GRPO step " + std::to_string(step) +
                           " computed with the rollouts of step " + std::to_string(g.step));
  for (int64_t m = range.lo; m < range.hi; ++m)
    heads_[size_t(m)] =
        std::make_unique<GrpoHead<float>>(g.loss, g.position[size_t(m)], g.tokens[size_t(m)]);
  before_compute(g.batch, range, g.mb_rows);
  engine_->set_head_losses(
      [this](int64_t m) -> HeadLoss<float>* { return heads_[size_t(m)].get(); });
  struct Unset {
    GradEngine<float>* e;
    ~Unset() { e->set_head_losses(nullptr); }
  } unset{engine_.get()};
  return engine_->run_range(params.data(), g.batch, g.mb_rows, range.lo, range.hi, true, false,
                            append);
}

const std::vector<Piece<float>>& Trainer::compute_range(int64_t step, TreeNode range, bool append) {
  if (grpo_) return compute_grpo_range(step, range, append);
  if (!batch_cache_ || batch_cache_->first != step) batch_cache_.emplace(step, step_batch(step));
  const Batch& batch = batch_cache_->second;
  const int64_t mb = train_micro_batch_rows(cfg);
  before_compute(batch, range, mb);
  return engine_->run_range(params.data(), batch, mb, range.lo, range.hi, true,
                            cfg.model.mtp_depth > 0, append);
}

const std::vector<Piece<float>>& Trainer::validate_range(TreeNode range) {
  before_compute(val_batch_, range, cfg.train.micro_batch_rows);
  return engine_->run_range(params.data(), val_batch_, cfg.train.micro_batch_rows, range.lo,
                            range.hi, false, false);
}

namespace {
// dst[0, len) = the tree-order sum of node [lo, hi) built from the given nodes' slices.
void combine_node(int64_t lo, int64_t hi, const std::vector<TreeNode>& nodes,
                  const std::vector<const float*>& slices, int64_t len, float* dst,
                  std::vector<std::vector<float>>& tmp, size_t depth) {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].lo == lo && nodes[i].hi == hi) {
      std::copy(slices[i], slices[i] + len, dst);
      return;
    }
  if (hi - lo <= 1)
    throw std::invalid_argument("reduce: no piece covers micro-batch " + std::to_string(lo));
  const int64_t mid = tree_split(lo, hi);
  if (tmp.size() <= depth) tmp.resize(depth + 1);
  tmp[depth].resize(static_cast<size_t>(len));
  combine_node(lo, mid, nodes, slices, len, dst, tmp, depth + 1);
  float* right = tmp[depth].data();
  combine_node(mid, hi, nodes, slices, len, right, tmp, depth + 1);
  for (int64_t i = 0; i < len; ++i) dst[i] += right[i];
}

LossParts<float> combine_parts(const std::vector<Piece<float>>& pieces, int64_t n) {
  const auto find = [&](int64_t lo, int64_t hi) -> const LossParts<float>* {
    for (const auto& p : pieces)
      if (p.node.lo == lo && p.node.hi == hi) return &p.parts;
    return nullptr;
  };
  const auto merge = [](LossParts<float>& a, const LossParts<float>& b) {
    a.ce = a.ce + b.ce, a.mtp = a.mtp + b.mtp, a.bal = a.bal + b.bal;
    a.ce_sum = a.ce_sum + b.ce_sum, a.ce_count = a.ce_count + b.ce_count;
    a.head = a.head + b.head;
  };
  return combine_in_tree<LossParts<float>>(0, n, find, merge, "combine");
}
}  // namespace

LossParts<float> combine_pieces(const std::vector<Piece<float>>& pieces, int64_t n,
                                std::vector<std::vector<int64_t>>* counts) {
  if (n <= 0) return {};
  const LossParts<float> out = combine_parts(pieces, n);
  if (counts) {
    counts->clear();
    for (const auto& p : pieces) add_counts(*counts, p.counts);
  }
  return out;
}

std::vector<double> Trainer::reduce_owned(FlatRange owned, const std::vector<TreeNode>& nodes,
                                          const std::vector<const float*>& slices) {
  if (nodes.size() != slices.size())
    throw std::invalid_argument("reduce_owned: one slice per node");
  if (owned.lo < 0 || owned.hi > table.total() || owned.lo > owned.hi)
    throw std::invalid_argument("reduce_owned: owned range outside the parameters");
  const int64_t len = owned.hi - owned.lo;
  if (nodes.size() == 1 && owned.lo == 0 && owned.hi == table.total()) {
    if (nodes[0].lo != 0 || nodes[0].hi != micro_batches())
      throw std::invalid_argument("reduce_owned: one piece must cover the whole step");
    owned_grad_view_ = slices[0];
    return grad_norm_parts(table, owned_grad_view_, owned);
  }
  owned_grad_view_ = nullptr;
  owned_grad_.resize(static_cast<size_t>(len));  // the owned slice alone, from owned.lo
  combine_node(0, micro_batches(), nodes, slices, len, owned_grad_.data(), combine_tmp_, 0);
  return grad_norm_parts(table, owned_grad_.data(), owned, owned.lo);
}

void Trainer::apply_owned(FlatRange owned, int64_t step, double scale,
                          const std::vector<std::vector<int64_t>>& counts) {
  const float* grads = owned_grad_view_ ? owned_grad_view_ : owned_grad_.data();
  const int64_t base = owned_grad_view_ ? 0 : owned.lo;  // reduce_owned kept the slice alone
  optimizer_stepped_ = true;
  optimizer_->update(params.data() + base, grads, lr_at(cfg.train, step), scale, step, owned, base);
  apply_bias_rule(counts, owned);
}

double Trainer::reduce_engram(const std::vector<TreeNode>& nodes,
                              const std::vector<const EngramGrad<float>*>& grads) {
  if (!engram_) throw std::logic_error("reduce_engram: the model has no Engram layer");
  engram_grad_ = reduce_engram_pieces(engram_->tables(), micro_batches(), nodes, grads);
  return engram_grad_sumsq(engram_grad_);
}

void Trainer::apply_engram(int64_t step, double scale) {
  if (!engram_) throw std::logic_error("apply_engram: the model has no Engram layer");
  engram_backup_ = engram_->backup_rows(engram_grad_);
  engram_adam(engram_grad_, step, scale);
}

std::vector<std::string> Trainer::state_names(FlatRange owned, bool engram) const {
  std::vector<std::string> names;
  for (size_t t = 0; t < table.all().size(); ++t) {
    const ParamInfo& p = table.all()[t];
    if (!owned.covers(p)) continue;
    names.push_back("param/" + p.name);
    if (optimizer_->state_floats_of(t) > 0) names.push_back("optim/" + p.name);
  }
  if (engram && engram_)
    for (const auto& info : engram_->tables())
      for (EngramPart part : kEngramParts) names.push_back(engram_state_name(info.name, part));
  return names;
}

std::vector<StateTensor> Trainer::snapshot_state(FlatRange owned, bool engram) const {
  std::vector<StateTensor> out;
  snapshot_state_into(owned, engram, &out);
  return out;
}

namespace {
// A snapshot's buffers by tensor name, kept for the next one: a tensor still in the share
// is copied into the memory of its last copy; the buffers of tensors the share lost are
// freed. (By position, a buffer would keep the largest tensor that ever sat there: the heap
// ratcheted up with each view change.)
using SpareBuffers = std::map<std::string, std::vector<float>, std::less<>>;

StateTensor& next_entry(std::vector<StateTensor>* out, SpareBuffers* spare, std::string name,
                        std::vector<int64_t> shape, size_t floats) {
  StateTensor& t = out->emplace_back();
  if (auto it = spare->find(name); it != spare->end() && it->second.size() == floats)
    t.data = std::move(it->second);
  else
    t.data.resize(floats);
  t.name = std::move(name);
  t.shape = std::move(shape);
  return t;
}

// A snapshot's copies, cut into pieces of at most kSnapshotPieceFloats so that the training
// threads share them evenly (a memcpy of 1 MiB is ~100 us: the pieces' overhead is nothing).
constexpr size_t kSnapshotPieceFloats = size_t(1) << 18;
void add_copy(std::vector<std::function<void()>>* copies, const float* from, float* to, size_t n) {
  for (size_t i = 0; i < n; i += kSnapshotPieceFloats) {
    const size_t k = std::min(kSnapshotPieceFloats, n - i);
    copies->push_back([from, to, i, k] { std::copy(from + i, from + i + k, to + i); });
  }
}
}  // namespace

void Trainer::snapshot_state_into(FlatRange owned, bool engram,
                                  std::vector<StateTensor>* out) const {
  // Every entry sized first, then the copies run on the training threads: a snapshot holds
  // training between two steps, when they idle (issue 12's stall).
  std::vector<std::function<void()>> copies;
  SpareBuffers spare;
  for (StateTensor& t : *out) spare.emplace(std::move(t.name), std::move(t.data));
  out->clear();
  out->reserve(spare.size());
  for (size_t t = 0; t < table.all().size(); ++t) {
    const ParamInfo& p = table.all()[t];
    if (!owned.covers(p)) continue;
    StateTensor& pt = next_entry(out, &spare, "param/" + p.name, p.shape, size_t(p.numel));
    add_copy(&copies, params.data() + p.offset, pt.data.data(), size_t(p.numel));
    const int64_t n = optimizer_->state_floats_of(t);
    if (n == 0) continue;
    float* o = next_entry(out, &spare, "optim/" + p.name, {n}, size_t(n)).data.data();
    copies.push_back([this, t, o] { optimizer_->read_state(t, o); });
  }
  if (engram && engram_) {
    for (size_t t = 0; t < engram_->tables().size(); ++t) {
      const EngramTableInfo& info = engram_->tables()[t];
      const size_t n = size_t(info.rows * info.dim);
      const std::vector<int64_t> shape = {info.rows, info.dim};
      const float* parts[] = {engram_->data(int64_t(t)), engram_->moment_m(int64_t(t)).data(),
                              engram_->moment_v(int64_t(t)).data()};
      for (size_t k = 0; k < 3; ++k)
        add_copy(&copies, parts[k],
                 next_entry(out, &spare, engram_state_name(info.name, kEngramParts[k]), shape, n)
                     .data.data(),
                 n);
    }
  }
  spare.clear();  // the tensors the share lost: freed before the copies run
  parallel_for(int64_t(copies.size()), threads_, [&](int64_t i, int) { copies[size_t(i)](); });
}

namespace {
// read(name, out), then a check that it holds `floats` floats.
void read_sized(const std::function<void(const std::string&, std::vector<float>*)>& read,
                const std::string& name, size_t floats, std::vector<float>* out) {
  read(name, out);
  if (out->size() != floats)
    throw std::runtime_error("checkpoint shard " + name + " holds " + std::to_string(out->size()) +
                             " floats, the model needs " + std::to_string(floats));
}
}  // namespace

void Trainer::load_state(FlatRange owned,
                         const std::function<void(const std::string&, std::vector<float>*)>& read) {
  std::vector<float> buf;
  for (const ParamInfo& p : table.all()) {
    read_sized(read, "param/" + p.name, size_t(p.numel), &buf);
    std::copy(buf.begin(), buf.end(), params.begin() + p.offset);
  }
  std::map<size_t, std::vector<float>> state;
  for (size_t t = 0; t < table.all().size(); ++t) {
    const int64_t n = optimizer_->state_floats_of(t);
    if (!owned.covers(table.all()[t]) || n == 0) continue;
    read_sized(read, "optim/" + table.all()[t].name, size_t(n), &state[t]);
  }
  reshard_optimizer(owned, [&](size_t t) -> const float* {
    auto it = state.find(t);
    return it == state.end() ? nullptr : it->second.data();
  });
  if (engram_) load_engram_state(read);
  saved_params_.clear();
  saved_optimizer_.reset();
}

void Trainer::load_engram_state(
    const std::function<void(const std::string&, std::vector<float>*)>& read) {
  if (!engram_) throw std::logic_error("load_engram_state: this trainer holds no Engram table");
  // Every table read before one is changed: a bad one leaves the tables as they were.
  std::vector<std::vector<float>> got;
  for (const EngramTableInfo& info : engram_->tables())
    for (EngramPart part : kEngramParts)
      read_sized(read, engram_state_name(info.name, part), size_t(info.rows * info.dim),
                 &got.emplace_back());
  for (size_t t = 0; t < engram_->tables().size(); ++t) {
    std::copy(got[3 * t].begin(), got[3 * t].end(), engram_->data(int64_t(t)));
    engram_->moment_m(int64_t(t)) = std::move(got[3 * t + 1]);
    engram_->moment_v(int64_t(t)) = std::move(got[3 * t + 2]);
  }
  engram_backup_.reset();
}

double Trainer::validate() {
  LossParts<float> lp =
      engine_->run(params.data(), val_batch_, cfg.train.micro_batch_rows, false, false);
  return lp.ce_count > 0 ? double(lp.ce_sum) / double(lp.ce_count) : 0.0;
}

uint64_t weights_hash_of(const std::vector<float>& params,
                         const std::vector<std::vector<float>>& tables) {
  uint64_t h = XXH64(params.data(), params.size() * sizeof(float), 0);
  for (const std::vector<float>& t : tables) h = XXH64(t.data(), t.size() * sizeof(float), h);
  return h;
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
