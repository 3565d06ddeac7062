// The memory accountant of Model<T>: the bytes its workspace holds for the backward.
#include <numeric>

#include "model/model_impl.h"

namespace troupe::model {

namespace {

template <typename... V>
int64_t bytes(const V&... v) {
  return (int64_t(v.capacity() * sizeof(typename V::value_type)) + ... + 0);
}

template <typename T>
int64_t bytes_of(const MhcCache<T>& c) {
  return bytes(c.rstd, c.xrows, c.phi_t, c.proj, c.h_pre, c.h_post, c.h_res_, c.sk_exp, c.sk_mat,
               c.sk_sum, c.dproj, c.dxhat, c.dphi);
}

template <typename T>
int64_t bytes_of(const SwigluCache<T>& c) {
  return bytes(c.x, c.a, c.b, c.sig, c.h, c.da, c.db);
}

template <typename T>
int64_t bytes_of(const MlaBackwardScratch<T>& d) {
  return bytes(d.d_attn, d.dq, d.dkv, d.dk_pe, d.dc_q, d.dq_a, d.dc_kv, d.dkv_a, d.kh, d.dkh, d.dp,
               d.ds);
}

template <typename T>
int64_t bytes_of(const MlaCache<T>& c) {
  return bytes(c.u, c.pos, c.key_first, c.q_a, c.q_rstd, c.c_q, c.q, c.kv_a, c.kv_rstd, c.c_kv,
               c.k_pe, c.kv, c.probs, c.attn, c.kh) +
         bytes_of(c.scratch);
}

template <typename T>
int64_t bytes_of(const MoeCache<T>& c) {
  return bytes(c.x, c.s, c.top, c.weight, c.slot, c.expert_begin, c.token_of, c.xs, c.ys, c.f,
               c.counts, c.dys, c.dxs, c.dweight, c.ds) +
         bytes_of(c.shared) + bytes_of(c.experts);
}

template <typename T>
int64_t bytes_of(const EngramCache<T>& c) {
  return bytes(c.ids, c.first, c.e, c.v, c.x, c.qn, c.rq, c.k, c.kn, c.rk, c.s, c.alpha, c.vt, c.cn,
               c.rc, c.conv);
}

template <typename T>
int64_t bytes_of(const SublayerActs<T>& s) {
  return bytes_of(s.hc) + bytes(s.u, s.normed, s.rstd, s.f);
}

template <typename T>
int64_t bytes_of(const BlockActs<T>& a) {
  return bytes_of(a.attn) + bytes_of(a.ffn) + bytes_of(a.mla) + bytes_of(a.moe) +
         bytes_of(a.dense) + bytes_of(a.engram) + bytes(a.x_engram);
}

template <typename T>
int64_t bytes_of(const Mtp<T>& m) {
  return bytes_of(m.mla_cache) + bytes_of(m.mlp_cache) +
         bytes(m.pos, m.tok, m.tgt, m.doc, m.hsel, m.esel, m.a, m.b, m.ra, m.rb, m.cat) +
         bytes(m.hp, m.n1, m.r1, m.att, m.x1, m.n2, m.r2, m.x2, m.z, m.rz, m.logits) +
         bytes(m.dlogits, m.dz, m.dx2, m.dx1, m.dn, m.dhp, m.da, m.db, m.dsel, m.dcat);
}

}  // namespace

int64_t HeldBytes::total() const {
  return std::accumulate(block.begin(), block.end(), shared + streams + rest);
}

template <typename T>
HeldBytes Model<T>::held_bytes() const {
  const Impl& m = *impl_;
  HeldBytes out;
  out.block.assign(size_t(m.L), 0);
  if (m.shared_acts())
    out.shared = bytes_of(m.acts[0]);
  else
    for (int64_t l = 0; l < m.L; ++l) out.block[l] = bytes_of(m.acts[l]);
  for (size_t l = 0; l < m.mla_keep.size(); ++l)
    out.block[l] += bytes_of(m.mla_keep[l]) + bytes(m.attn_out[l]);
  out.shared += bytes_of(m.mla_redo) + bytes_of(m.mla_scratch);
  for (const std::vector<T>& x : m.xs) out.streams += bytes(x);
  out.rest = bytes(m.pos, m.h, m.hn, m.hrstd, m.logits, m.dlogits, m.dh, m.dhn, m.dX, m.dXn) +
             bytes(m.dnormed, m.du, m.df) + bytes_of(m.mtp);
  return out;
}

template HeldBytes Model<float>::held_bytes() const;
template HeldBytes Model<double>::held_bytes() const;

}  // namespace troupe::model
