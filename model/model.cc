#include "model/model.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/ffn.h"
#include "model/mhc.h"
#include "model/mla.h"

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

namespace {

// One pre-norm sublayer of a block, wrapped by mHC (or a plain residual).
template <typename T>
struct Sublayer {
  bool hc = true;
  MhcLayout hc_layout{};
  MhcCache<T> hc_cache;
  int64_t norm_w = 0;     // offset of the RMSNorm weight
  std::vector<T> u;       // (N,C) sublayer input (before its RMSNorm)
  std::vector<T> normed;  // (N,C)
  std::vector<T> rstd;    // (N)
  std::vector<T> f;       // (N,C) sublayer output F(normed)
};

template <typename T>
struct Block {
  Sublayer<T> attn, ffn;
  MlaLayout mla{};
  MlaCache<T> mla_cache;
  bool moe = false;
  MoeLayout moe_layout{};
  MoeCache<T> moe_cache;
  SwigluLayout dense{};
  SwigluCache<T> dense_cache;
  bool engram = false;  // step 2a: X <- X + Engram_l(X, tokens) before the attention mHC
  EngramLayout engram_layout{};
  EngramCache<T> engram_cache;
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

}  // namespace

template <typename T>
struct Model<T>::Impl {
  const ModelConfig& cfg;
  const ParamTable& table;
  int64_t C, S, V, L;
  int64_t embed, final_norm, head;
  std::vector<Block<T>> blocks;
  bool mtp_on;
  Mtp<T> mtp;

  // Per-call state.
  int64_t R = 0, Tn = 0, N = 0;
  const Batch* mb = nullptr;
  T bal_weight = 0;                          // seq_aux_alpha / global rows
  RoutedExperts<T>* routed = nullptr;        // set_routed_experts
  int64_t micro_batch = 0;                   // set_micro_batch: its logical id, for `routed`
  T last_bal = 0;                            // balance loss of the current call
  std::vector<int32_t> pos;                  // (N) position ids, restarting per document
  const int32_t* doc = nullptr;              // (N) the batch's document ids, or null
  std::vector<std::vector<T>> xs;            // 2L+1 stream tensors (N,S,C)
  std::vector<T> h, hn, hrstd, logits;       // (N,C) (N,C) (N) (N,V)
  std::vector<T> dlogits, dh, dhn, dX, dXn;  // backward buffers
  std::vector<T> dnormed, du, df;

  const EngramStore<T>* engram_store = nullptr;  // per call
  HeadLoss<T>* head_loss_fn = nullptr;           // per call: replaces the CE (or null)

  Impl(const ModelConfig& c, const ParamTable& t, uint64_t seed);
  void bind_sizes(const Batch& b);
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
      mtp_on(c.mtp_depth > 0) {
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Block<T>& b = blocks[l];
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
  xs.resize(static_cast<size_t>(2 * L + 1));
  for (auto& x : xs) resize(x, N * S * C);
  for (auto& blk : blocks) {
    for (Sublayer<T>* s : {&blk.attn, &blk.ffn}) {
      resize(s->u, N * C);
      resize(s->normed, N * C);
      resize(s->rstd, N);
      resize(s->f, N * C);
    }
    if (blk.engram) resize(blk.x_engram, N * S * C);
  }
  resize(h, N * C);
  resize(hn, N * C);
  resize(hrstd, N);
  resize(logits, N * V);
}

// F of sublayer `which` (0 attention, 1 FFN) of block l: in (N,C) -> out (N,C).
template <typename T>
void Model<T>::Impl::sublayer_f_forward(const T* P, int64_t l, int which, const T* in, T* out,
                                        T& bal) {
  Block<T>& b = blocks[l];
  if (which == 0) {
    mla_forward(cfg, b.mla, P, in, R, Tn, pos.data(), doc, out, b.mla_cache);
  } else if (b.moe) {
    // The balance loss is a mean over the global batch's rows: weight α / rows.
    bal += moe_forward(cfg, b.moe_layout, P, in, R, Tn, bal_weight, out, b.moe_cache, routed, l,
                       micro_batch);
  } else {
    swiglu_forward(cfg, b.dense, P, in, N, C, out, b.dense_cache);
  }
}

template <typename T>
void Model<T>::Impl::sublayer_f_backward(const T* P, T* G, int64_t l, int which, const T* dout,
                                         T* din) {
  Block<T>& b = blocks[l];
  if (which == 0)
    mla_backward(cfg, b.mla, P, G, dout, din, b.mla_cache);
  else if (b.moe)
    moe_backward(cfg, b.moe_layout, P, G, dout, din, b.moe_cache);
  else
    swiglu_backward(cfg, b.dense, P, G, dout, din, b.dense_cache);
}

// X_out = mHC(X_in, F ∘ RMSNorm) for sublayer `which` of block l (SPEC §3 step 2b/2c).
template <typename T>
void Model<T>::Impl::stage_forward(const T* P, int64_t l, int which) {
  Block<T>& b = blocks[l];
  Sublayer<T>& s = which == 0 ? b.attn : b.ffn;
  const T* X = (which == 0 && b.engram) ? b.x_engram.data() : xs[2 * l + which].data();
  T* Xout = xs[2 * l + which + 1].data();
  if (s.hc)
    mhc_pre_forward(cfg, s.hc_layout, P, X, N, s.u.data(), s.hc_cache);
  else
    std::copy(X, X + N * C, s.u.begin());
  k::rmsnorm_forward(s.u.data(), P + s.norm_w, T(cfg.rms_norm_eps), s.normed.data(), s.rstd.data(),
                     N, C);
  T bal = 0;
  sublayer_f_forward(P, l, which, s.normed.data(), s.f.data(), bal);
  last_bal += bal;
  if (s.hc) {
    mhc_post_forward(cfg, s.hc_layout, P, X, s.f.data(), Xout, s.hc_cache);
  } else {
    for (int64_t i = 0; i < N * C; ++i) Xout[i] = X[i] + s.f[i];
  }
}

// dXout (N,S,C) -> dXin (N,S,C) overwritten; parameter gradients accumulate into G.
template <typename T>
void Model<T>::Impl::stage_backward(const T* P, T* G, int64_t l, int which, const T* dXout,
                                    T* dXin) {
  Block<T>& b = blocks[l];
  Sublayer<T>& s = which == 0 ? b.attn : b.ffn;
  std::fill(dXin, dXin + N * S * C, T(0));
  resize(df, N * C);
  if (s.hc) {
    mhc_post_backward(cfg, s.hc_layout, P, G, dXout, dXin, df.data(), s.hc_cache);
  } else {
    std::copy(dXout, dXout + N * C, dXin);
    std::copy(dXout, dXout + N * C, df.begin());
  }
  zero(dnormed, N * C);
  sublayer_f_backward(P, G, l, which, df.data(), dnormed.data());
  zero(du, N * C);
  k::rmsnorm_backward(dnormed.data(), s.u.data(), P + s.norm_w, s.rstd.data(), du.data(),
                      G + s.norm_w, N, C);
  if (s.hc) {
    mhc_pre_backward(cfg, s.hc_layout, P, G, du.data(), dXin, s.hc_cache);
  } else {
    for (int64_t i = 0; i < N * C; ++i) dXin[i] += du[i];
  }
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
    Block<T>& blk = blocks[l];
    if (blk.engram)
      engram_forward(cfg, blk.engram_layout, P, *engram_store, b.inputs.data(), R, Tn,
                     xs[2 * l].data(), blk.x_engram.data(), blk.engram_cache, doc);
    stage_forward(P, l, 0);
    stage_forward(P, l, 1);
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

// MTP depth 1 (SPEC §3.4): position t of each row sees h_t and embed[tok_{t+1}] and
// predicts the target of position t+1; a plain pre-norm block over T−1 positions. With
// document ids, MTP position t keeps t's document id and position, and has no target when
// t+1 is in another document (nothing attends to it then: it is its document's last).
template <typename T>
void Model<T>::Impl::mtp_forward(const T* P, const LossScale& sc, bool need_grad,
                                 LossParts<T>& out) {
  const Batch& b = *mb;
  const int64_t Tm = Tn - 1, M = R * Tm;
  const T eps = T(cfg.rms_norm_eps);
  Mtp<T>& m = mtp;
  resize(m.pos, M), resize(m.tok, M), resize(m.tgt, M), resize(m.doc, doc ? M : 0);
  for (auto* v : {&m.hsel, &m.esel, &m.a, &m.b, &m.hp, &m.n1, &m.att, &m.x1, &m.n2, &m.x2, &m.z})
    resize(*v, M * C);
  for (auto* v : {&m.ra, &m.rb, &m.r1, &m.r2, &m.rz}) resize(*v, M);
  resize(m.cat, M * 2 * C);
  resize(m.logits, M * V);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t t = 0; t < Tm; ++t) {
      const int64_t i = r * Tm + t, src = r * Tn + t;
      m.pos[i] = pos[src];
      m.tok[i] = b.inputs[src + 1];
      m.tgt[i] = b.targets[src + 1];
      if (doc) {
        m.doc[i] = doc[src];
        if (doc[src + 1] != doc[src]) m.tgt[i] = kNoTarget;
      }
      std::copy(h.data() + src * C, h.data() + (src + 1) * C, m.hsel.data() + i * C);
      const T* e = P + embed + int64_t(m.tok[i]) * C;
      std::copy(e, e + C, m.esel.data() + i * C);
    }
  }
  k::rmsnorm_forward(m.hsel.data(), P + m.norm_h, eps, m.a.data(), m.ra.data(), M, C);
  k::rmsnorm_forward(m.esel.data(), P + m.norm_e, eps, m.b.data(), m.rb.data(), M, C);
  for (int64_t i = 0; i < M; ++i) {
    std::copy(m.a.data() + i * C, m.a.data() + (i + 1) * C, m.cat.data() + i * 2 * C);
    std::copy(m.b.data() + i * C, m.b.data() + (i + 1) * C, m.cat.data() + i * 2 * C + C);
  }
  k::linear_forward(m.cat.data(), P + m.proj, m.hp.data(), M, 2 * C, C);
  k::rmsnorm_forward(m.hp.data(), P + m.ln1, eps, m.n1.data(), m.r1.data(), M, C);
  mla_forward(cfg, m.mla, P, m.n1.data(), R, Tm, m.pos.data(), doc ? m.doc.data() : nullptr,
              m.att.data(), m.mla_cache);
  for (int64_t i = 0; i < M * C; ++i) m.x1[i] = m.hp[i] + m.att[i];
  k::rmsnorm_forward(m.x1.data(), P + m.ln2, eps, m.n2.data(), m.r2.data(), M, C);
  swiglu_forward(cfg, m.mlp, P, m.n2.data(), M, C, m.x2.data(), m.mlp_cache);
  for (int64_t i = 0; i < M * C; ++i) m.x2[i] += m.x1[i];
  k::rmsnorm_forward(m.x2.data(), P + final_norm, eps, m.z.data(), m.rz.data(), M, C);
  k::linear_forward(m.z.data(), P + head, m.logits.data(), M, C, V);
  T w = sc.mtp_targets > 0 ? T(cfg.mtp_lambda) / T(sc.mtp_targets) : T(0);
  if (need_grad) zero(m.dlogits, M * V);
  T ce = k::cross_entropy(m.logits.data(), m.tgt.data(), M, V, w,
                          need_grad ? m.dlogits.data() : nullptr);
  out.mtp = ce * w;
}

// Backward of mtp_forward: accumulates into dh (N,C) and the parameter gradients.
template <typename T>
void Model<T>::Impl::mtp_backward(const T* P, T* G) {
  Mtp<T>& m = mtp;
  const int64_t Tm = Tn - 1, M = R * Tm;
  zero(m.dz, M * C), zero(m.dx2, M * C), zero(m.dn, M * C);
  k::linear_backward(m.dlogits.data(), m.z.data(), P + head, m.dz.data(), G + head, M, C, V);
  k::rmsnorm_backward(m.dz.data(), m.x2.data(), P + final_norm, m.rz.data(), m.dx2.data(),
                      G + final_norm, M, C);
  // x2 = x1 + SwiGLU(n2): dx1 = dx2 + back through the FFN.
  m.dx1 = m.dx2;
  swiglu_backward(cfg, m.mlp, P, G, m.dx2.data(), m.dn.data(), m.mlp_cache);
  k::rmsnorm_backward(m.dn.data(), m.x1.data(), P + m.ln2, m.r2.data(), m.dx1.data(), G + m.ln2, M,
                      C);
  // x1 = hp + MLA(n1).
  m.dhp = m.dx1;
  zero(m.dn, M * C);
  mla_backward(cfg, m.mla, P, G, m.dx1.data(), m.dn.data(), m.mla_cache);
  k::rmsnorm_backward(m.dn.data(), m.hp.data(), P + m.ln1, m.r1.data(), m.dhp.data(), G + m.ln1, M,
                      C);
  zero(m.dcat, M * 2 * C), resize(m.da, M * C), resize(m.db, M * C), zero(m.dsel, M * C);
  k::linear_backward(m.dhp.data(), m.cat.data(), P + m.proj, m.dcat.data(), G + m.proj, M, 2 * C,
                     C);
  const T* dcat = m.dcat.data();
  for (int64_t i = 0; i < M; ++i) {
    std::copy(dcat + i * 2 * C, dcat + i * 2 * C + C, m.da.data() + i * C);
    std::copy(dcat + i * 2 * C + C, dcat + (i + 1) * 2 * C, m.db.data() + i * C);
  }
  k::rmsnorm_backward(m.da.data(), m.hsel.data(), P + m.norm_h, m.ra.data(), m.dsel.data(),
                      G + m.norm_h, M, C);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t t = 0; t < Tm; ++t)
      for (int64_t c = 0; c < C; ++c) dh[(r * Tn + t) * C + c] += m.dsel[(r * Tm + t) * C + c];
  zero(m.dsel, M * C);
  k::rmsnorm_backward(m.db.data(), m.esel.data(), P + m.norm_e, m.rb.data(), m.dsel.data(),
                      G + m.norm_e, M, C);
  for (int64_t i = 0; i < M; ++i) {
    T* ge = G + embed + int64_t(m.tok[i]) * C;
    for (int64_t c = 0; c < C; ++c) ge[c] += m.dsel[i * C + c];
  }
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
    stage_backward(P, G, l, 1, dX.data(), dXn.data());
    stage_backward(P, G, l, 0, dXn.data(), dX.data());
    if (blocks[l].engram) {  // dX holds d(X after Engram); take it back to the block input
      std::copy(dX.begin(), dX.end(), dXn.begin());
      std::fill(dX.begin(), dX.end(), T(0));
      engram_backward(cfg, blocks[l].engram_layout, P, G, dXn.data(), dX.data(), *egrad,
                      blocks[l].engram_cache);
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
  counts_.assign(static_cast<size_t>(m.L), {});
  for (int64_t l = 0; l < m.L; ++l)
    if (m.blocks[l].moe) counts_[l] = m.blocks[l].moe_cache.counts;
  if (grads) m.backward(params, grads, with_mtp, engram_grad);
  return out;
}

template class Model<float>;
template class Model<double>;

}  // namespace troupe::model
