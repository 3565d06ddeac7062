// GradEngine (train/trainer.h): a global batch's micro-batches on a thread pool, their
// gradients folded in the canonical tree as they finish (train/tree_stream.h).
#include <algorithm>
#include <stdexcept>
#include <tuple>

#include "train/trainer.h"
#include "train/tree.h"
#include "train/tree_stream.h"

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

void add_counts(std::vector<std::vector<int64_t>>& dst,
                const std::vector<std::vector<int64_t>>& src) {
  if (dst.size() < src.size()) dst.resize(src.size());
  for (size_t l = 0; l < src.size(); ++l) {
    if (dst[l].size() < src[l].size()) dst[l].resize(src[l].size(), 0);
    for (size_t e = 0; e < src[l].size(); ++e) dst[l][e] += src[l][e];
  }
}

namespace {

// The sparse table gradients follow the same canonical tree as the dense ones (DESIGN §5):
// at each node, left += right rowwise (rows on one side copied, on both added left + right).
// Parallel over tables, which cannot change any bit.
template <typename T>
void engram_tree_reduce(std::vector<EngramGrad<T>>& g, int64_t lo, int64_t hi,
                        const EngramStore<T>& store, int threads) {
  const auto& info = store.tables();
  tree_reduce_in_place(g, lo, hi, [&](EngramGrad<T>& into, const EngramGrad<T>& from) {
    parallel_for(int64_t(info.size()), threads,
                 [&](int64_t t, int) { sparse_rows_add(into[t], from[t], info[t].dim); });
  });
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
  if (n_mb == 0) {
    pieces_.assign(1, Piece<T>{});
    pieces_[0].counts.assign(size_t(mcfg_.n_layers), {});
    return {};
  }
  return run_range(params, batch, mb_rows, 0, n_mb, backward, with_mtp).front().parts;
}

template <typename T>
void GradEngine<T>::set_routed_experts(RoutedExperts<T>* routed) {
  for (auto& m : workers_) m->set_routed_experts(routed);
}

template <typename T>
const std::vector<T>& GradEngine<T>::piece_grad(size_t k) const {
  return grads_.at(piece_slot_.at(k));
}

template <typename T>
const EngramGrad<T>& GradEngine<T>::piece_engram_grad(size_t k) const {
  return egrads_.at(piece_eslot_.at(k));
}

// At the start of a run: at least n slots, and without append every slot free again.
template <typename T>
void GradEngine<T>::reserve_slots(int64_t n, bool append) {
  if (!append) free_.clear();
  const size_t had = append ? grads_.size() : 0;
  if (grads_.size() < size_t(n)) grads_.resize(size_t(n));
  for (size_t i = had; i < grads_.size(); ++i) free_.push_back(i);
  // Allocated buffers last: take_slot reuses them before it allocates another.
  std::stable_partition(free_.begin(), free_.end(), [&](size_t i) { return grads_[i].empty(); });
}

// A run's claims: leaves [0, leaves) in order, at most `cap` slots held at once.
template <typename T>
void GradEngine<T>::start_claims(int64_t leaves, int64_t cap) {
  std::lock_guard<std::mutex> lock(free_mu_);
  next_leaf_ = 0, leaves_ = leaves, held_ = 0, slot_cap_ = cap, claims_stopped_ = false;
}

// The next leaf and a free slot for it, once the run holds fewer than slot_cap_; nothing when
// all are claimed or the run stopped. The leaf is claimed with its slot, so every held slot
// belongs to a leaf in flight or to a node of the leaves before the next: when all threads
// wait, the run holds what in-order arrivals leave (at most in_order_held_max < the cap).
template <typename T>
std::optional<std::pair<int64_t, size_t>> GradEngine<T>::claim_leaf() {
  std::unique_lock<std::mutex> lock(free_mu_);
  slot_freed_.wait(lock, [&] { return claims_stopped_ || held_ < slot_cap_; });
  if (claims_stopped_ || next_leaf_ >= leaves_) return std::nullopt;
  if (free_.empty()) throw std::logic_error("GradEngine: no free gradient buffer");
  const size_t slot = free_.back();
  free_.pop_back();
  ++held_;
  return std::make_pair(next_leaf_++, slot);
}

template <typename T>
void GradEngine<T>::stop_claims() {
  {
    std::lock_guard<std::mutex> lock(free_mu_);
    claims_stopped_ = true;
  }
  slot_freed_.notify_all();
}

template <typename T>
void GradEngine<T>::give_slot(size_t slot) {
  {
    std::lock_guard<std::mutex> lock(free_mu_);
    free_.push_back(slot);
    --held_;
  }
  slot_freed_.notify_one();
}

template <typename T>
const std::vector<Piece<T>>& GradEngine<T>::run_range(const T* params, const Batch& batch,
                                                      int64_t mb_rows, int64_t lo, int64_t hi,
                                                      bool backward, bool with_mtp, bool append) {
  if (mb_rows <= 0 || batch.rows % mb_rows != 0)
    throw std::invalid_argument("batch rows must be a multiple of the micro-batch rows");
  const int64_t n_total = batch.rows / mb_rows;
  if (lo < 0 || hi > n_total || lo >= hi)
    throw std::invalid_argument("run_range: micro-batch range outside the batch");
  const int64_t n_mb = hi - lo;
  // This range's micro-batches use sparse table gradients [base, base + n_mb): after the last
  // range's when appending (its pieces' stay valid), from 0 otherwise. A step computes at
  // most n_total micro-batches, so with that many reserved none moves while it is read.
  // Dense gradients take free buffers (earlier pieces' stay taken) and fold in a TreeStream.
  const int64_t base = append ? slots_used_ : 0;
  slots_used_ = base + n_mb;
  if (!append) {
    egrads_.reserve(size_t(n_total));
    pieces_.clear();
    piece_slot_.clear();
    piece_eslot_.clear();
  }
  const LossScale scale = loss_scale_of(batch, with_mtp);
  const int64_t P = table_.total();
  const std::vector<TreeNode> nodes = tree_pieces(n_total, lo, hi);
  std::vector<TreeNode> rel;
  for (const TreeNode& node : nodes) rel.push_back({node.lo - lo, node.hi - lo});
  TreeStream stream(rel);
  if (backward) {
    reserve_slots(n_total, append);
    const int64_t spare = std::max<int64_t>(1, std::min<int64_t>(threads_, n_mb) - 1);
    start_claims(n_mb, stream.in_order_held_max() + spare);  // why: docs/memory.md
  }
  const auto merge = [&](size_t into, size_t from) {
    T* a = grads_[into].data();
    const T* b = grads_[from].data();
    for (int64_t j = 0; j < P; ++j) a[j] += b[j];
    give_slot(from);
  };
  if (egrads_.size() < size_t(slots_used_)) egrads_.resize(size_t(slots_used_));
  for (int64_t i = base; i < slots_used_; ++i)
    egrads_[size_t(i)].assign(engram_ ? engram_->tables().size() : 0, {});
  std::vector<LossParts<T>> parts(static_cast<size_t>(n_mb));
  std::vector<std::vector<std::vector<int64_t>>> counts(static_cast<size_t>(n_mb));
  parallel_for(n_mb, threads_, [&](int64_t item, int w) {
    int64_t i = item;
    T* g = nullptr;
    size_t slot = 0;
    if (backward) {
      const auto claim = claim_leaf();
      if (!claim) return;  // another thread failed: the run ends with its exception
      std::tie(i, slot) = *claim;
    }
    try {
      if (backward) g = (grads_[slot].assign(size_t(P), T(0)), grads_[slot].data());
      const Batch mb = batch.slice((lo + i) * mb_rows, mb_rows);
      workers_[w]->set_micro_batch(lo + i);
      parts[i] = workers_[w]->step(params, g, mb, scale, with_mtp, engram_,
                                   backward && engram_ ? &egrads_[size_t(base + i)] : nullptr,
                                   head_of_ ? head_of_(lo + i) : nullptr);
      counts[i] = workers_[w]->expert_counts();
      if (backward) stream.arrive(i, slot, merge);
    } catch (...) {
      stop_claims();  // threads waiting for a slot this one holds would wait for ever
      throw;
    }
  });
  add_pieces(nodes, lo, base, backward, stream, parts, counts);
  return pieces_;
}

// The pieces of run_range's nodes: each node's gradient slot (folded by the stream), its
// sparse table gradient reduced in tree order, its scalars and counts.
template <typename T>
void GradEngine<T>::add_pieces(const std::vector<TreeNode>& nodes, int64_t lo, int64_t base,
                               bool backward, const TreeStream& stream,
                               const std::vector<LossParts<T>>& parts,
                               const std::vector<std::vector<std::vector<int64_t>>>& counts) {
  const int64_t n_mb = int64_t(parts.size());
  // Scalars follow the same canonical tree as the gradients.
  std::vector<T> ce(n_mb), mtp(n_mb), bal(n_mb), ce_sum(n_mb), head(n_mb);
  for (int64_t i = 0; i < n_mb; ++i) {
    ce[i] = parts[i].ce, mtp[i] = parts[i].mtp, bal[i] = parts[i].bal;
    ce_sum[i] = parts[i].ce_sum, head[i] = parts[i].head;
  }
  // Scalars are indexed from the range start, buffers from its first slot; a node's tree
  // shape depends on its length alone, so reducing either run gives the canonical node's bits.
  for (size_t k = 0; k < nodes.size(); ++k) {
    const TreeNode& node = nodes[k];
    const int64_t a = node.lo - lo, b = node.hi - lo;
    piece_slot_.push_back(backward ? stream.piece_slot(k) : 0);
    if (backward && engram_) engram_tree_reduce(egrads_, base + a, base + b, *engram_, threads_);
    piece_eslot_.push_back(size_t(base + a));
    Piece<T> piece;
    piece.node = node;
    for (int64_t i = a; i < b; ++i) piece.parts.ce_count += parts[i].ce_count;
    piece.parts.ce = tree_sum(ce, a, b), piece.parts.mtp = tree_sum(mtp, a, b);
    piece.parts.head = tree_sum(head, a, b);
    piece.parts.bal = tree_sum(bal, a, b), piece.parts.ce_sum = tree_sum(ce_sum, a, b);
    piece.counts.assign(static_cast<size_t>(mcfg_.n_layers), {});
    for (int64_t i = a; i < b; ++i) add_counts(piece.counts, counts[i]);
    pieces_.push_back(std::move(piece));
  }
}

template class GradEngine<float>;
template class GradEngine<double>;

}  // namespace troupe::model
