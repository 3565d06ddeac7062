#pragma once
// The two ops of the network that look across positions, in their incremental form for
// generation (model/generate.h): MLA against a cache of its latents, and Engram against the
// token history and its conv's recent inputs. Every other op (mHC, RMSNorm, MoE, SwiGLU,
// the head) is per token and runs as it is with N = the new tokens.
//
// Shape letters as in mla.h and engram.h; here n = new tokens of one call, P = positions
// cached before it (the sequence is one row: positions 0, 1, …, one document).
//
//   mla_append_forward:    u (n,C) at positions P…P+n−1 -> out (n,C). Caches per position
//                          c_kv (KL, after RMSNorm_kv) and k_pe (DR, after RoPE) — MLA's
//                          latent, not the expanded keys and values. Each call re-expands
//                          [k_nope | v] = c_kv · W_kv_bᵀ for the P+n cached positions (the
//                          same gemm as mla_forward; no absorption of W_kv_b into the query),
//                          then attends query P+i to keys 0…P+i.
//   engram_append_forward: X (n,S,C) -> Xout (n,S,C) = X + Y. Row ids of the new positions
//                          from the last max(order)−1 tokens of history and the new tokens
//                          (BOS before position 0, as in training); the conv reads the last
//                          (Kc−1)·dil positions' conv inputs, kept per stream.
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/engram.h"
#include "model/mla.h"

namespace troupe::model {

// One MLA layer's cache: capacity positions of latents, the first `len` filled.
template <typename T>
struct MlaKvCache {
  int64_t len = 0;       // positions filled
  int64_t capacity = 0;  // positions it can hold
  std::vector<T> c_kv;   // (capacity,KL) after RMSNorm_kv
  std::vector<T> k_pe;   // (capacity,DR) after RoPE
  // Scratch of one call (contents mean nothing between calls).
  std::vector<T> q_a, q_rstd, c_q, q, kv_a, kv_rstd, kv, kh, probs, attn;
  std::vector<int32_t> pos;
  void reset(const ModelConfig& cfg, int64_t capacity_positions);
};

// u (n,C) -> out (n,C) overwritten; u's rows are positions cache.len … cache.len+n−1, which
// the call appends to the cache. Throws std::length_error when they do not fit.
template <typename T>
void mla_append_forward(const ModelConfig& cfg, const MlaLayout& L, const T* params, const T* u,
                        int64_t n, T* out, MlaKvCache<T>& cache);

// One Engram layer's decode state: the conv's recent inputs per stream.
template <typename T>
struct EngramDecodeState {
  int64_t history = 0;       // positions of conv input kept: (Kc−1)·dil
  std::vector<T> conv_in;    // (S,history,C) RMSNorm_c(ṽ) of the last positions, oldest first;
                             // zeros stand for positions before 0 (the conv's zero padding)
  std::vector<int64_t> ids;  // scratch: (J, window) row ids
  std::vector<T> e, rows, v, x, qn, rq, k, kn, rk, vt, cn, rc, z, conv;  // scratch
  void reset(const ModelConfig& cfg);
};

// X (n,S,C) -> Xout (n,S,C); tokens (len) is the whole sequence so far, the new positions
// being its last n. Rows come from `store`.
template <typename T>
void engram_append_forward(const ModelConfig& cfg, const EngramLayout& L, const T* params,
                           const EngramStore<T>& store, const std::vector<int32_t>& tokens,
                           int64_t n, const T* X, T* Xout, EngramDecodeState<T>& state);

}  // namespace troupe::model
