#include "model/model.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/model_impl.h"

namespace troupe::model {

namespace k = troupe::kernels;

LossScale loss_scale_of(const Batch& b, bool with_mtp) {
  LossScale s;
  s.rows = b.rows;
  if (!b.doc.empty() && int64_t(b.doc.size()) != b.rows * b.seq_len)
    throw std::invalid_argument("Batch.doc: " + std::to_string(b.doc.size()) + " ids for " +
                                std::to_string(b.rows * b.seq_len) + " tokens");
  for (int64_t r = 0; r < b.rows; ++r) {
    for (int64_t t = 0; t < b.seq_len; ++t) {
      const int64_t n = r * b.seq_len + t;
      bool valid = b.targets[n] >= 0;
      s.ce_targets += valid;
      // MTP position t−1 predicts the target of position t (SPEC §3.4, §11), inside one
      // document only.
      if (with_mtp && t >= 1 && (b.doc.empty() || b.doc[n - 1] == b.doc[n])) s.mtp_targets += valid;
    }
  }
  return s;
}

template <typename T>
Model<T>::Impl::Impl(const ModelConfig& c, const ParamTable& t, uint64_t seed)
    : cfg(c),
      table(t),
      C(c.d_model),
      S(c.residual == Residual::mhc ? c.hc_mult : 1),
      V(c.vocab_size),
      L(c.n_layers),
      embed(t.offset("model.embed_tokens.weight")),
      final_norm(t.offset("model.norm.weight")),
      head(t.offset("lm_head.weight")),
      blocks(static_cast<size_t>(c.n_layers)),
      recompute(c.recompute),
      acts(reruns_blocks(c.recompute) ? 1 : static_cast<size_t>(c.n_layers)),
      mla_keep(c.recompute == Recompute::block ? static_cast<size_t>(c.n_layers) : 0),
      attn_out(mla_keep.size()),
      counts(static_cast<size_t>(c.n_layers)),
      mtp_on(c.mtp_depth > 0) {
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    BlockLayout& b = blocks[l];
    b.attn.hc = b.ffn.hc = (c.residual == Residual::mhc);
    if (b.attn.hc) {
      b.attn.hc_layout = MhcLayout::from(t, p + "attn_hc.");
      b.ffn.hc_layout = MhcLayout::from(t, p + "mlp_hc.");
    }
    b.attn.norm_w = t.offset(p + "input_layernorm.weight");
    b.ffn.norm_w = t.offset(p + "post_attention_layernorm.weight");
    b.mla = MlaLayout::from(t, p + "self_attn.");
    b.engram =
        std::find(c.engram_layers.begin(), c.engram_layers.end(), l) != c.engram_layers.end();
    if (b.engram) b.engram_layout = EngramLayout::from(t, c, seed, l);
    b.moe = c.is_moe_layer(l);
    if (b.moe)
      b.moe_layout = MoeLayout::from(t, c, p + "mlp.");
    else
      b.dense = SwigluLayout::from(t, p + "mlp.");
  }
  if (mtp_on) {
    mtp.norm_h = t.offset("mtp.norm_h.weight");
    mtp.norm_e = t.offset("mtp.norm_e.weight");
    mtp.proj = t.offset("mtp.proj.weight");
    mtp.ln1 = t.offset("mtp.block.input_layernorm.weight");
    mtp.ln2 = t.offset("mtp.block.post_attention_layernorm.weight");
    mtp.mla = MlaLayout::from(t, "mtp.block.self_attn.");
    mtp.mlp = SwigluLayout::from(t, "mtp.block.mlp.");
  }
}

template <typename T>
void Model<T>::Impl::bind_sizes(const Batch& b) {
  mb = &b;
  R = b.rows;
  Tn = b.seq_len;
  N = R * Tn;
  resize(pos, N);
  doc = nullptr;
  if (!b.doc.empty()) {
    if (int64_t(b.doc.size()) != N)
      throw std::invalid_argument("Batch.doc: " + std::to_string(b.doc.size()) + " ids for " +
                                  std::to_string(N) + " tokens");
    doc = b.doc.data();
  }
  // Position = offset from the document start (the row start without doc ids).
  doc_first_positions(doc, R, Tn, pos.data());
  for (int64_t n = 0; n < N; ++n) pos[n] = static_cast<int32_t>(n % Tn) - pos[n];
  // Under "block" and "full" a block's backward re-runs its forward, which writes X_2l+1
  // again: the odd streams share xs[1] (stream()); the even ones are the kept block inputs.
  xs.resize(static_cast<size_t>(2 * L + 1));
  const bool shared_odd = reruns_blocks(recompute);
  for (size_t i = 0; i < xs.size(); ++i)
    resize(xs[i], shared_odd && i % 2 == 1 && i > 1 ? 0 : N * S * C);
  for (auto& a : acts) {
    for (SublayerActs<T>* s : {&a.attn, &a.ffn}) {
      resize(s->u, N * C);
      resize(s->normed, N * C);
      resize(s->rstd, N);
      resize(s->f, N * C);
    }
  }
  for (int64_t l = 0; l < L; ++l)
    if (blocks[l].engram) resize(act(l).x_engram, N * S * C);
  acts_of = mla_of = -1;
  resize(h, N * C);
  resize(hn, N * C);
  resize(hrstd, N);
  resize(logits, N * V);
}

// F of sublayer `which` (0 attention, 1 FFN) of block l: in (N,C) -> out (N,C).
template <typename T>
void Model<T>::Impl::sublayer_f_forward(const T* P, int64_t l, int which, const T* in, T* out,
                                        T& bal) {
  const BlockLayout& b = blocks[l];
  BlockActs<T>& a = act(l);
  if (which == 0) {
    if (recompute == Recompute::block && redoing) {  // kept: the output of the first forward
      std::copy(attn_out[l].begin(), attn_out[l].end(), out);
      return;
    }
    mla_forward(cfg, b.mla, P, in, R, Tn, pos.data(), doc, out, mla_cache(l));
    mla_of = l;
    if (recompute == Recompute::block) attn_out[l].assign(out, out + N * C);
  } else if (b.moe) {
    // The balance loss is a mean over the global batch's rows: weight α / rows.
    bal += moe_forward(cfg, b.moe_layout, P, in, R, Tn, bal_weight, out, a.moe, routed, l,
                       micro_batch);
  } else {
    swiglu_forward(cfg, b.dense, P, in, N, C, out, a.dense);
  }
}

template <typename T>
void Model<T>::Impl::sublayer_f_backward(const T* P, T* G, int64_t l, int which, const T* dout,
                                         T* din) {
  const BlockLayout& b = blocks[l];
  BlockActs<T>& a = act(l);
  if (which == 0) {
    if (recompute == Recompute::attention && mla_of != l) {  // its internals again: same bits
      mla_forward(cfg, b.mla, P, a.attn.normed.data(), R, Tn, pos.data(), doc, a.attn.f.data(),
                  mla_redo);
      mla_of = l;
    }
    // "block": every block's kept internals share one backward scratch.
    if (recompute == Recompute::block) std::swap(mla_keep[l].scratch, mla_scratch);
    mla_backward(cfg, b.mla, P, G, dout, din, mla_cache(l));
    if (recompute == Recompute::block) std::swap(mla_keep[l].scratch, mla_scratch);
  } else if (b.moe) {
    moe_backward(cfg, b.moe_layout, P, G, dout, din, a.moe);
  } else {
    swiglu_backward(cfg, b.dense, P, G, dout, din, a.dense);
  }
}

// X_out = mHC(X_in, F ∘ RMSNorm) for sublayer `which` of block l (SPEC §3 step 2b/2c).
template <typename T>
void Model<T>::Impl::stage_forward(const T* P, int64_t l, int which) {
  const BlockLayout& b = blocks[l];
  const SublayerLayout& y = which == 0 ? b.attn : b.ffn;
  BlockActs<T>& a = act(l);
  SublayerActs<T>& s = which == 0 ? a.attn : a.ffn;
  const T* X = (which == 0 && b.engram) ? a.x_engram.data() : stream(2 * l + which);
  T* Xout = stream(2 * l + which + 1);
  if (y.hc)
    mhc_pre_forward(cfg, y.hc_layout, P, X, N, s.u.data(), s.hc);
  else
    std::copy(X, X + N * C, s.u.begin());
  k::rmsnorm_forward(s.u.data(), P + y.norm_w, T(cfg.rms_norm_eps), s.normed.data(), s.rstd.data(),
                     N, C);
  T bal = 0;
  sublayer_f_forward(P, l, which, s.normed.data(), s.f.data(), bal);
  last_bal += bal;
  if (y.hc) {
    mhc_post_forward(cfg, y.hc_layout, P, X, s.f.data(), Xout, s.hc);
  } else {
    for (int64_t i = 0; i < N * C; ++i) Xout[i] = X[i] + s.f[i];
  }
}

// dXout (N,S,C) -> dXin (N,S,C) overwritten; parameter gradients accumulate into G.
template <typename T>
void Model<T>::Impl::stage_backward(const T* P, T* G, int64_t l, int which, const T* dXout,
                                    T* dXin) {
  const BlockLayout& b = blocks[l];
  const SublayerLayout& y = which == 0 ? b.attn : b.ffn;
  SublayerActs<T>& s = which == 0 ? act(l).attn : act(l).ffn;
  resize(df, N * C);
  if (y.hc) {  // dXin: written, not accumulated (the bits of += onto zeros)
    mhc_post_backward(cfg, y.hc_layout, P, G, dXout, dXin, df.data(), s.hc, false);
  } else {
    std::copy(dXout, dXout + N * C, dXin);
    std::copy(dXout, dXout + N * C, df.begin());
  }
  zero(dnormed, N * C);
  sublayer_f_backward(P, G, l, which, df.data(), dnormed.data());
  zero(du, N * C);
  k::rmsnorm_backward(dnormed.data(), s.u.data(), P + y.norm_w, s.rstd.data(), du.data(),
                      G + y.norm_w, N, C);
  if (y.hc) {
    mhc_pre_backward(cfg, y.hc_layout, P, G, du.data(), dXin, s.hc);
  } else {
    for (int64_t i = 0; i < N * C; ++i) dXin[i] += du[i];
  }
}

// Block l: X_{2l} -> X_{2l+2} (Engram first where the block has it), its activations into
// act(l).
template <typename T>
void Model<T>::Impl::block_forward(const T* P, int64_t l) {
  const BlockLayout& b = blocks[l];
  if (b.engram)
    engram_forward(cfg, b.engram_layout, P, *engram_store, mb->inputs.data(), R, Tn,
                   xs[2 * l].data(), act(l).x_engram.data(), act(l).engram, doc);
  stage_forward(P, l, 0);
  stage_forward(P, l, 1);
  acts_of = l;
}

// recompute = "block": block l's activations again, from its input streams X_{2l}, which
// the forward kept. The same calls on the same inputs give the same bits (the streams it
// writes, X_{2l+1} and X_{2l+2}, included); the balance loss is not counted twice.
template <typename T>
void Model<T>::Impl::redo_block(const T* P, int64_t l) {
  if (acts_of == l) return;
  const T bal = last_bal;
  redoing = true;
  block_forward(P, l);
  redoing = false;
  last_bal = bal;
}

template <typename T>
LossParts<T> Model<T>::Impl::forward(const T* P, const LossScale& sc, bool with_mtp,
                                     bool need_grad) {
  const Batch& b = *mb;
  bal_weight = sc.rows > 0 ? T(cfg.seq_aux_alpha) / T(sc.rows) : T(0);
  last_bal = 0;
  // h0 = embed[tokens], copied into every stream.
  T* X0 = xs[0].data();
  for (int64_t n = 0; n < N; ++n) {
    const T* e = P + embed + int64_t(b.inputs[n]) * C;
    for (int64_t s = 0; s < S; ++s) std::copy(e, e + C, X0 + (n * S + s) * C);
  }
  for (int64_t l = 0; l < L; ++l) {
    block_forward(P, l);
    counts[l] = blocks[l].moe ? act(l).moe.counts : std::vector<int64_t>{};
  }
  // h = Σ_streams X_L; logits = head · RMSNorm_final(h).
  const T* XL = xs[2 * L].data();
  for (int64_t n = 0; n < N; ++n) {
    T* hr = h.data() + n * C;
    std::copy(XL + n * S * C, XL + n * S * C + C, hr);
    for (int64_t s = 1; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) hr[c] += XL[(n * S + s) * C + c];
  }
  k::rmsnorm_forward(h.data(), P + final_norm, T(cfg.rms_norm_eps), hn.data(), hrstd.data(), N, C);
  k::linear_forward(hn.data(), P + head, logits.data(), N, C, V);
  LossParts<T> out;
  if (head_loss_fn) {
    head_loss(out, need_grad);
    return out;
  }
  T inv = sc.ce_targets > 0 ? T(1) / T(sc.ce_targets) : T(0);
  if (need_grad) zero(dlogits, N * V);
  out.ce_sum = k::cross_entropy(logits.data(), b.targets.data(), N, V, inv,
                                need_grad ? dlogits.data() : nullptr);
  for (int64_t n = 0; n < N; ++n) out.ce_count += b.targets[n] >= 0;
  out.ce = out.ce_sum * inv;
  out.bal = last_bal;
  if (with_mtp && mtp_on && Tn >= 2) mtp_forward(P, sc, need_grad, out);
  return out;
}

// A HeadLoss in place of the main head's cross-entropy (Model::step's head).
template <typename T>
void Model<T>::Impl::head_loss(LossParts<T>& out, bool need_grad) {
  if (need_grad) zero(dlogits, N * V);
  out.head = head_loss_fn->apply(logits.data(), N, V, need_grad ? dlogits.data() : nullptr);
  out.bal = last_bal;
}

template <typename T>
void Model<T>::Impl::backward(const T* P, T* G, bool with_mtp, EngramGrad<T>* egrad) {
  zero(dh, N * C);
  if (with_mtp && mtp_on && Tn >= 2) mtp_backward(P, G);
  zero(dhn, N * C);
  k::linear_backward(dlogits.data(), hn.data(), P + head, dhn.data(), G + head, N, C, V);
  k::rmsnorm_backward(dhn.data(), h.data(), P + final_norm, hrstd.data(), dh.data(), G + final_norm,
                      N, C);
  // h = Σ_streams X_L: every stream receives dh.
  resize(dX, N * S * C);
  resize(dXn, N * S * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < S; ++s)
      std::copy(dh.data() + n * C, dh.data() + (n + 1) * C, dX.data() + (n * S + s) * C);
  for (int64_t l = L - 1; l >= 0; --l) {
    if (shared_acts()) redo_block(P, l);
    stage_backward(P, G, l, 1, dX.data(), dXn.data());
    stage_backward(P, G, l, 0, dXn.data(), dX.data());
    if (blocks[l].engram) {  // dX holds d(X after Engram); take it back to the block input
      std::copy(dX.begin(), dX.end(), dXn.begin());
      std::fill(dX.begin(), dX.end(), T(0));
      engram_backward(cfg, blocks[l].engram_layout, P, G, dXn.data(), dX.data(), *egrad,
                      act(l).engram);
    }
  }
  // X0 = [h0; …; h0] with h0 = embed[tokens].
  const Batch& b = *mb;
  for (int64_t n = 0; n < N; ++n) {
    T* ge = G + embed + int64_t(b.inputs[n]) * C;
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) ge[c] += dX[(n * S + s) * C + c];
  }
}

template <typename T>
Model<T>::Model(const ModelConfig& cfg, const ParamTable& table, uint64_t seed)
    : impl_(std::make_unique<Impl>(cfg, table, seed)) {}

template <typename T>
Model<T>::~Model() = default;

template <typename T>
void Model<T>::set_routed_experts(RoutedExperts<T>* routed) {
  impl_->routed = routed;
}

template <typename T>
void Model<T>::set_micro_batch(int64_t mb) {
  impl_->micro_batch = mb;
}

template <typename T>
const std::vector<std::vector<int64_t>>& Model<T>::expert_counts() const {
  return impl_->counts;
}

template <typename T>
const std::vector<T>& Model<T>::logits() const {
  return impl_->logits;
}

template <typename T>
LossParts<T> Model<T>::step(const T* params, T* grads, const Batch& mb, const LossScale& scale,
                            bool with_mtp, const EngramStore<T>* engram, EngramGrad<T>* engram_grad,
                            HeadLoss<T>* head) {
  Impl& m = *impl_;
  if (head && with_mtp)
    throw std::invalid_argument("Model::step: a head loss replaces CE; with_mtp must be false");
  if (!m.cfg.engram_layers.empty()) {
    if (!engram) throw std::invalid_argument("Model::step: Engram layers need an EngramStore");
    if (grads && !engram_grad)
      throw std::invalid_argument("Model::step: Engram layers need an EngramGrad output");
  }
  if (engram_grad) {
    engram_grad->resize(engram ? engram->tables().size() : 0);
    for (auto& g : *engram_grad) g.ids.clear(), g.values.clear();
  }
  m.engram_store = engram;
  m.head_loss_fn = head;
  m.bind_sizes(mb);
  LossParts<T> out = m.forward(params, scale, with_mtp, grads != nullptr);
  if (grads) m.backward(params, grads, with_mtp, engram_grad);
  return out;
}

template class Model<float>;
template class Model<double>;

}  // namespace troupe::model
