#pragma once
// Model<T>'s insides, shared by its translation units (model.cc: the blocks; model_mtp.cc:
// the MTP module; model_memory.cc: the bytes held for backward). Not an interface.
#include <cstdint>
#include <vector>

#include "model/engram.h"
#include "model/ffn.h"
#include "model/mhc.h"
#include "model/mla.h"
#include "model/model.h"

namespace troupe::model {

namespace model_detail {

// One pre-norm sublayer of a block, wrapped by mHC (or a plain residual): where its
// parameters are.
struct SublayerLayout {
  bool hc = true;
  MhcLayout hc_layout{};
  int64_t norm_w = 0;  // offset of the RMSNorm weight
};

// A sublayer's activations, kept from its forward for its backward.
template <typename T>
struct SublayerActs {
  MhcCache<T> hc;
  std::vector<T> u;       // (N,C) sublayer input (before its RMSNorm)
  std::vector<T> normed;  // (N,C)
  std::vector<T> rstd;    // (N)
  std::vector<T> f;       // (N,C) sublayer output F(normed)
};

struct BlockLayout {
  SublayerLayout attn, ffn;
  MlaLayout mla{};
  bool moe = false;
  MoeLayout moe_layout{};
  SwigluLayout dense{};
  bool engram = false;  // step 2a: X <- X + Engram_l(X, tokens) before the attention mHC
  EngramLayout engram_layout{};
};

// A block's activations. Under memory.recompute = "block" or "full" one set serves every
// block: a block's backward first re-runs its forward into it (Impl::redo_block).
template <typename T>
struct BlockActs {
  SublayerActs<T> attn, ffn;
  MlaCache<T> mla;
  MoeCache<T> moe;
  SwigluCache<T> dense;
  EngramCache<T> engram;
  std::vector<T> x_engram;  // (N,S,C) the streams after Engram: the attention stage's input
};

// The MTP module's activations (SPEC §3.4), over M = R·(T−1) positions.
template <typename T>
struct Mtp {
  int64_t norm_h = 0, norm_e = 0, proj = 0, ln1 = 0, ln2 = 0;
  MlaLayout mla{};
  MlaCache<T> mla_cache;
  SwigluLayout mlp{};
  SwigluCache<T> mlp_cache;
  std::vector<int32_t> pos, tok, tgt, doc;         // (M)
  std::vector<T> hsel, esel, a, b, ra, rb, cat;    // (M,C) x4, (M) x2, (M,2C)
  std::vector<T> hp, n1, r1, att, x1, n2, r2, x2;  // (M,C) / (M)
  std::vector<T> z, rz, logits;                    // (M,C), (M), (M,V)
  // Backward buffers, reused across calls: (M,V), (M,C) x8, (M,2C).
  std::vector<T> dlogits, dz, dx2, dx1, dn, dhp, da, db, dsel, dcat;
};

template <typename T>
void resize(std::vector<T>& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
}

template <typename T>
void zero(std::vector<T>& v, int64_t n) {
  v.assign(static_cast<size_t>(n), T(0));
}

// Whether a block's backward re-runs its forward: then the blocks share one set of
// activations, and the odd stream tensors one buffer.
inline bool reruns_blocks(Recompute r) {
  return r == Recompute::block || r == Recompute::full;
}

}  // namespace model_detail

using namespace model_detail;

template <typename T>
struct Model<T>::Impl {
  const ModelConfig& cfg;
  const ParamTable& table;
  int64_t C, S, V, L;
  int64_t embed, final_norm, head;
  std::vector<BlockLayout> blocks;
  Recompute recompute;
  // The activations: one set per block, or one for all under recompute = "block".
  std::vector<BlockActs<T>> acts;
  int64_t acts_of = -1;  // recompute "block", "full": the block whose activations acts[0] holds
  bool redoing = false;  // in redo_block
  // recompute = "block": each block's attention internals and output, kept (mla_keep[l],
  // attn_out[l]), and the one backward scratch they share.
  std::vector<MlaCache<T>> mla_keep;
  std::vector<std::vector<T>> attn_out;
  MlaBackwardScratch<T> mla_scratch;
  // recompute = "attention": the MLA internals of block mla_of, the one set every block's
  // forward writes and its backward recomputes (sublayer_f_backward).
  MlaCache<T> mla_redo;
  int64_t mla_of = -1;
  std::vector<std::vector<int64_t>> counts;  // (L) tokens per expert of the last forward
  bool mtp_on;
  Mtp<T> mtp;

  // Per-call state.
  int64_t R = 0, Tn = 0, N = 0;
  const Batch* mb = nullptr;
  T bal_weight = 0;                    // seq_aux_alpha / global rows
  RoutedExperts<T>* routed = nullptr;  // set_routed_experts
  int64_t micro_batch = 0;             // set_micro_batch: its logical id, for `routed`
  T last_bal = 0;                      // balance loss of the current call
  std::vector<int32_t> pos;            // (N) position ids, restarting per document
  const int32_t* doc = nullptr;        // (N) the batch's document ids, or null
  std::vector<std::vector<T>> xs;      // 2L+1 stream tensors (N,S,C)
  // Stream tensor i: xs[i], but the odd ones share xs[1] under "block" and "full".
  T* stream(int64_t i) { return xs[size_t(reruns_blocks(recompute) && i % 2 == 1 ? 1 : i)].data(); }
  std::vector<T> h, hn, hrstd, logits;       // (N,C) (N,C) (N) (N,V)
  std::vector<T> dlogits, dh, dhn, dX, dXn;  // backward buffers
  std::vector<T> dnormed, du, df;

  const EngramStore<T>* engram_store = nullptr;  // per call
  HeadLoss<T>* head_loss_fn = nullptr;           // per call: replaces the CE (or null)

  Impl(const ModelConfig& c, const ParamTable& t, uint64_t seed);
  void bind_sizes(const Batch& b);
  bool shared_acts() const { return reruns_blocks(recompute); }
  BlockActs<T>& act(int64_t l) { return acts[shared_acts() ? 0 : l]; }
  MlaCache<T>& mla_cache(int64_t l) {
    if (recompute == Recompute::attention) return mla_redo;
    return recompute == Recompute::block ? mla_keep[l] : act(l).mla;
  }
  void block_forward(const T* P, int64_t l);
  void redo_block(const T* P, int64_t l);
  void stage_forward(const T* P, int64_t l, int which);
  void stage_backward(const T* P, T* G, int64_t l, int which, const T* dXout, T* dXin);
  void sublayer_f_forward(const T* P, int64_t l, int which, const T* in, T* out, T& bal);
  void sublayer_f_backward(const T* P, T* G, int64_t l, int which, const T* dout, T* din);
  LossParts<T> forward(const T* P, const LossScale& s, bool with_mtp, bool need_grad);
  void head_loss(LossParts<T>& out, bool need_grad);
  void mtp_forward(const T* P, const LossScale& s, bool need_grad, LossParts<T>& out);
  void mtp_backward(const T* P, T* G);
  void backward(const T* P, T* G, bool with_mtp, EngramGrad<T>* egrad);
};

}  // namespace troupe::model
