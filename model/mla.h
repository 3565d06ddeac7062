#pragma once
// Multi-head latent attention, DeepSeek-V3 form (SPEC-model.md §3.2; layouts §11):
// forward and hand-written backward side by side in mla.cc.
//
// Shape letters (kernels/README.md): R rows, T positions per row, N = R·T tokens, C model
// width, H heads. Per-op widths: QL q_lora_rank, KL kv_lora_rank, DN qk_nope_head_dim,
// DR qk_rope_head_dim, DQ = DN + DR, DV v_head_dim.
//
//   c_q  (N,QL)        = RMSNorm_q(u · W_q_aᵀ)
//   q    (N,H·DQ)      = c_q · W_q_bᵀ, head-major [q_nope | q_pe], RoPE on q_pe
//   kv_a (N,KL+DR)     = u · W_kv_aᵀ = [c_kv | k_pe]; c_kv ← RMSNorm_kv(c_kv); RoPE on k_pe
//   kv   (N,H·(DN+DV)) = c_kv · W_kv_bᵀ, head-major [k_nope | v]
//   per (row, head):  P = softmax(mask(q·[k_nope | k_pe]ᵀ / sqrt(DQ))),  o = P v
//   out  (N,C)         = [o_1 … o_H] · W_oᵀ
//
// Deterministic and single-threaded: every projection goes through kernels::gemm (whose
// bits do not depend on M) and the attention core runs per (row, head) in a fixed order,
// so a row gets the same bits whether it is computed alone or with others.
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace troupe::model {

// The widths of one MLA block, from the config (letters as above; DKV = DN + DV).
struct MlaDims {
  int64_t C, H, QL, KL, DN, DR, DQ, DV, DKV;
  explicit MlaDims(const ModelConfig& c)
      : C(c.d_model),
        H(c.n_heads),
        QL(c.q_lora_rank),
        KL(c.kv_lora_rank),
        DN(c.qk_nope_head_dim),
        DR(c.qk_rope_head_dim),
        DQ(c.qk_nope_head_dim + c.qk_rope_head_dim),
        DV(c.v_head_dim),
        DKV(c.qk_nope_head_dim + c.v_head_dim) {}
};

// Offsets of one MLA block's tensors in the flat parameter buffer (the gradient buffer
// has the same layout).
struct MlaLayout {
  int64_t q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b, o;
  // prefix like "model.layers.0.self_attn." or "mtp.block.self_attn."; the names are those
  // of params.cc. Throws std::out_of_range naming a missing tensor, std::invalid_argument
  // when the shapes do not fit together.
  static MlaLayout from(const ParamTable& table, const std::string& prefix);
};

// Scratch buffers of mla_backward. Owned by the cache so that repeated calls reuse their
// storage; their contents mean nothing between calls.
template <typename T>
struct MlaBackwardScratch {
  std::vector<T> d_attn;  // (N,H·DV)
  std::vector<T> dq;      // (N,H·DQ)
  std::vector<T> dkv;     // (N,H·(DN+DV))
  std::vector<T> dk_pe;   // (N,DR), summed over heads
  std::vector<T> dc_q;    // (N,QL)
  std::vector<T> dq_a;    // (N,QL)
  std::vector<T> dc_kv;   // (N,KL)
  std::vector<T> dkv_a;   // (N,KL+DR)
  std::vector<T> kh;      // (T,DQ) one head's keys [k_nope | k_pe]
  std::vector<T> dkh;     // (T,DQ) their gradient
  std::vector<T> dp;      // (T,T) one head's probability gradients
  std::vector<T> ds;      // (T,T) one head's score gradients (scaled), 0 where masked
};

// What mla_backward needs from one mla_forward call. Buffers are resized on each forward
// call, so a cache reused at the same sizes does not reallocate.
template <typename T>
struct MlaCache {
  int64_t R = 0, Tlen = 0;                // the call's rows and positions per row
  std::vector<T> u;                       // (N,C) the input
  std::vector<int32_t> pos;               // (N) RoPE positions
  std::vector<int32_t> key_first;         // (N) first position of its row a query may attend to
  std::vector<T> q_a;                     // (N,QL) u · W_q_aᵀ, before the norm
  std::vector<T> q_rstd;                  // (N)
  std::vector<T> c_q;                     // (N,QL)
  std::vector<T> q;                       // (N,H·DQ) after RoPE
  std::vector<T> kv_a;                    // (N,KL+DR) u · W_kv_aᵀ, before norm and RoPE
  std::vector<T> kv_rstd;                 // (N)
  std::vector<T> c_kv;                    // (N,KL) after the norm
  std::vector<T> k_pe;                    // (N,DR) after RoPE
  std::vector<T> kv;                      // (N,H·(DN+DV))
  std::vector<T> probs;                   // (R,H,T,T) attention probabilities, exactly 0 if masked
  std::vector<T> attn;                    // (N,H·DV) [o_1 … o_H], the o_proj input
  std::vector<T> kh;                      // (T,DQ) forward scratch: one head's keys [k_nope | k_pe]
  mutable MlaBackwardScratch<T> scratch;  // backward scratch (not state)
};

// u (R*Tlen,C) -> out (R*Tlen,C), overwritten. Rows are independent sequences of Tlen
// positions; pos (R*Tlen) are RoPE position ids; attention from query t to key t' in the
// same row is allowed iff t' <= t and (doc == nullptr or doc[t'] == doc[t]), doc (R*Tlen).
// params: the flat parameter buffer, L its offsets. cache is overwritten for the backward.
template <typename T>
void mla_forward(const ModelConfig& cfg, const MlaLayout& L, const T* params, const T* u, int64_t R,
                 int64_t Tlen, const int32_t* pos, const int32_t* doc, T* out, MlaCache<T>& cache);

// dout (R*Tlen,C) -> du (R*Tlen,C) += ..., grads (flat buffer, layout L) += ...
// cache: from the mla_forward call with the same cfg, L and params.
template <typename T>
void mla_backward(const ModelConfig& cfg, const MlaLayout& L, const T* params, T* grads,
                  const T* dout, T* du, const MlaCache<T>& cache);

}  // namespace troupe::model
