// The MTP module of Model<T> (SPEC §3.4): forward and backward.
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/model_impl.h"

namespace troupe::model {

namespace k = troupe::kernels;

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

template void Model<float>::Impl::mtp_forward(const float*, const LossScale&, bool,
                                              LossParts<float>&);
template void Model<double>::Impl::mtp_forward(const double*, const LossScale&, bool,
                                               LossParts<double>&);
template void Model<float>::Impl::mtp_backward(const float*, float*);
template void Model<double>::Impl::mtp_backward(const double*, double*);

}  // namespace troupe::model
