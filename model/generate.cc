#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/batch.h"
#include "model/decode_ops.h"
#include "model/ffn.h"
#include "model/mhc.h"
#include "model/mla.h"
#include "model/rng.h"

namespace troupe::model {

namespace k = troupe::kernels;

namespace {

// Generation computes FP32 Linears on the FP32 master weights (generate.h).
ModelConfig fp32_config(ModelConfig cfg) {
  cfg.fp8 = false;
  return cfg;
}

// One block's layouts and decode state: the same tensors as model.cc's Block.
template <typename T>
struct DecodeBlock {
  bool hc = true;
  MhcLayout attn_hc{}, ffn_hc{};
  MhcCache<T> attn_hc_cache, ffn_hc_cache;
  int64_t attn_norm = 0, ffn_norm = 0;
  MlaLayout mla{};
  MlaKvCache<T> kv;
  bool moe = false;
  MoeLayout moe_layout{};
  MoeCache<T> moe_cache;
  SwigluLayout dense{};
  SwigluCache<T> dense_cache;
  bool engram = false;
  EngramLayout engram_layout{};
  EngramDecodeState<T> engram_state;
};

template <typename T>
void resize(std::vector<T>& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
}

}  // namespace

template <typename T>
struct Decoder<T>::Impl {
  ModelConfig cfg;
  int64_t C, S, V, capacity;
  int64_t embed, final_norm, head;
  std::vector<DecodeBlock<T>> blocks;
  std::vector<int32_t> tokens;  // the sequence so far
  // Per call, n new positions: streams (n,S,C) x2, sublayer (n,C) / (n), head (n,C) / (n,V).
  std::vector<T> X, Xn, u, normed, rstd, f, h, hn, hrstd, logits;

  Impl(const ModelConfig& c, const ParamTable& t, uint64_t seed, int64_t cap);
  void reset();
  void check_call(std::span<const int32_t> toks) const;
  void embed_forward(const T* P, std::span<const int32_t> toks);
  void stage_forward(const T* P, DecodeBlock<T>& b, int which, int64_t n);
  void head_forward(const T* P, int64_t n);
};

template <typename T>
Decoder<T>::Impl::Impl(const ModelConfig& c, const ParamTable& t, uint64_t seed, int64_t cap)
    : cfg(fp32_config(c)),
      C(c.d_model),
      S(c.residual == Residual::mhc ? c.hc_mult : 1),
      V(c.vocab_size),
      capacity(cap),
      embed(t.offset("model.embed_tokens.weight")),
      final_norm(t.offset("model.norm.weight")),
      head(t.offset("lm_head.weight")),
      blocks(static_cast<size_t>(c.n_layers)) {
  if (cap < 1) throw std::invalid_argument("Decoder: capacity must be at least 1 position");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    DecodeBlock<T>& b = blocks[size_t(l)];
    b.hc = c.residual == Residual::mhc;
    if (b.hc) {
      b.attn_hc = MhcLayout::from(t, p + "attn_hc.");
      b.ffn_hc = MhcLayout::from(t, p + "mlp_hc.");
    }
    b.attn_norm = t.offset(p + "input_layernorm.weight");
    b.ffn_norm = t.offset(p + "post_attention_layernorm.weight");
    b.mla = MlaLayout::from(t, p + "self_attn.");
    b.engram =
        std::find(c.engram_layers.begin(), c.engram_layers.end(), l) != c.engram_layers.end();
    if (b.engram) b.engram_layout = EngramLayout::from(t, cfg, seed, l);
    b.moe = c.is_moe_layer(l);
    if (b.moe)
      b.moe_layout = MoeLayout::from(t, cfg, p + "mlp.");
    else
      b.dense = SwigluLayout::from(t, p + "mlp.");
  }
  reset();
}

template <typename T>
void Decoder<T>::Impl::reset() {
  tokens.clear();
  for (DecodeBlock<T>& b : blocks) {
    b.kv.reset(cfg, capacity);
    if (b.engram) b.engram_state.reset(cfg);
  }
}

template <typename T>
void Decoder<T>::Impl::check_call(std::span<const int32_t> toks) const {
  if (toks.empty()) throw std::invalid_argument("Decoder::append: no tokens to append");
  const int64_t len = static_cast<int64_t>(tokens.size()), n = static_cast<int64_t>(toks.size());
  if (len + n > capacity)
    throw std::length_error("Decoder::append: " + std::to_string(len) + " + " + std::to_string(n) +
                            " positions exceed the capacity of " + std::to_string(capacity));
  for (int32_t t : toks)
    if (t < 0 || t >= V)
      throw std::invalid_argument("Decoder::append: token " + std::to_string(t) +
                                  " is outside [0, " + std::to_string(V) + ")");
}

// X (n,S,C) = embed[token] in every stream.
template <typename T>
void Decoder<T>::Impl::embed_forward(const T* P, std::span<const int32_t> toks) {
  const int64_t n = static_cast<int64_t>(toks.size());
  resize(X, n * S * C);
  resize(Xn, n * S * C);
  for (int64_t i = 0; i < n; ++i) {
    const T* e = P + embed + int64_t(toks[size_t(i)]) * C;
    for (int64_t s = 0; s < S; ++s) std::copy(e, e + C, X.data() + (i * S + s) * C);
  }
}

// X <- mHC(X, F ∘ RMSNorm) for sublayer `which` (0 attention, 1 FFN) of block b, n tokens.
template <typename T>
void Decoder<T>::Impl::stage_forward(const T* P, DecodeBlock<T>& b, int which, int64_t n) {
  const bool attn = which == 0;
  const MhcLayout& hl = attn ? b.attn_hc : b.ffn_hc;
  MhcCache<T>& hcache = attn ? b.attn_hc_cache : b.ffn_hc_cache;
  resize(u, n * C), resize(normed, n * C), resize(rstd, n), resize(f, n * C);
  if (b.hc)
    mhc_pre_forward(cfg, hl, P, X.data(), n, u.data(), hcache);
  else
    std::copy(X.begin(), X.begin() + n * C, u.begin());
  k::rmsnorm_forward(u.data(), P + (attn ? b.attn_norm : b.ffn_norm), T(cfg.rms_norm_eps),
                     normed.data(), rstd.data(), n, C);
  if (attn)
    mla_append_forward(cfg, b.mla, P, normed.data(), n, f.data(), b.kv);
  else if (b.moe)
    moe_forward(cfg, b.moe_layout, P, normed.data(), int64_t(1), n, T(0), f.data(), b.moe_cache);
  else
    swiglu_forward(cfg, b.dense, P, normed.data(), n, C, f.data(), b.dense_cache);
  if (b.hc) {
    mhc_post_forward(cfg, hl, P, X.data(), f.data(), Xn.data(), hcache);
  } else {
    for (int64_t i = 0; i < n * C; ++i) Xn[size_t(i)] = X[size_t(i)] + f[size_t(i)];
  }
  std::swap(X, Xn);
}

// logits (n,V) = head · RMSNorm_final(Σ_streams X).
template <typename T>
void Decoder<T>::Impl::head_forward(const T* P, int64_t n) {
  resize(h, n * C), resize(hn, n * C), resize(hrstd, n), resize(logits, n * V);
  for (int64_t i = 0; i < n; ++i) {
    T* hr = h.data() + i * C;
    std::copy(X.data() + i * S * C, X.data() + i * S * C + C, hr);
    for (int64_t s = 1; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) hr[c] += X[size_t((i * S + s) * C + c)];
  }
  k::rmsnorm_forward(h.data(), P + final_norm, T(cfg.rms_norm_eps), hn.data(), hrstd.data(), n, C);
  k::linear_forward(hn.data(), P + head, logits.data(), n, C, V);
}

template <typename T>
Decoder<T>::Decoder(const ModelConfig& cfg, const ParamTable& table, uint64_t seed,
                    int64_t capacity)
    : impl_(std::make_unique<Impl>(cfg, table, seed, capacity)) {}

template <typename T>
Decoder<T>::~Decoder() = default;

template <typename T>
int64_t Decoder<T>::len() const {
  return static_cast<int64_t>(impl_->tokens.size());
}

template <typename T>
int64_t Decoder<T>::capacity() const {
  return impl_->capacity;
}

template <typename T>
void Decoder<T>::reset() {
  impl_->reset();
}

template <typename T>
const std::vector<T>& Decoder<T>::append(const T* params, const EngramStore<T>* engram,
                                         std::span<const int32_t> toks) {
  Impl& m = *impl_;
  m.check_call(toks);
  if (!m.cfg.engram_layers.empty() && !engram)
    throw std::invalid_argument("Decoder::append: Engram layers need an EngramStore");
  const int64_t n = static_cast<int64_t>(toks.size());
  m.tokens.insert(m.tokens.end(), toks.begin(), toks.end());
  m.embed_forward(params, toks);
  for (DecodeBlock<T>& b : m.blocks) {
    if (b.engram) {
      engram_append_forward(m.cfg, b.engram_layout, params, *engram, m.tokens, n, m.X.data(),
                            m.Xn.data(), b.engram_state);
      std::swap(m.X, m.Xn);
    }
    m.stage_forward(params, b, 0, n);
    m.stage_forward(params, b, 1, n);
  }
  m.head_forward(params, n);
  return m.logits;
}

template <typename T>
FullForward<T>::FullForward(const ModelConfig& cfg, const ParamTable& table, uint64_t seed)
    : cfg_(fp32_config(cfg)), model_(cfg_, table, seed) {}

template <typename T>
const std::vector<T>& FullForward<T>::logits(const T* params, const EngramStore<T>* engram,
                                             std::span<const int32_t> tokens) {
  Batch b;
  b.rows = 1;
  b.seq_len = static_cast<int64_t>(tokens.size());
  b.inputs.assign(tokens.begin(), tokens.end());
  b.targets.assign(tokens.size(), kNoTarget);  // logits only: no loss terms
  model_.step(params, nullptr, b, LossScale{}, false, engram);
  return model_.logits();
}

Sampler::Sampler(double temperature, uint64_t seed, uint64_t step, uint64_t prompt, uint64_t sample)
    : temperature_(temperature), seed_(seed), step_(step), prompt_(prompt), sample_(sample) {
  if (!(temperature >= 0) || !std::isfinite(temperature))
    throw std::invalid_argument("Sampler: temperature must be a finite number >= 0, got " +
                                std::to_string(temperature));
  if (sample >= (uint64_t(1) << 32))
    throw std::invalid_argument("Sampler: sample index must be below 2^32");
}

template <typename T>
int32_t Sampler::pick(const T* logits, int64_t V, int64_t position) const {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (logits[i] > logits[best]) best = i;  // strict: ties stay with the lower id
  if (temperature_ == 0) return static_cast<int32_t>(best);
  if (position < 0 || position >= (int64_t(1) << 32))
    throw std::invalid_argument("Sampler::pick: position must be in [0, 2^32)");
  std::vector<double> w(static_cast<size_t>(V));
  double total = 0;
  for (int64_t i = 0; i < V; ++i) {
    w[size_t(i)] = std::exp((double(logits[i]) - double(logits[best])) / temperature_);
    total += w[size_t(i)];
  }
  const CounterRng rng(seed_, purpose_of("generate.sample"), step_, prompt_);
  const double target = rng.uniform((sample_ << 32) + uint64_t(position)) * total;
  double cum = 0;
  int64_t last = best;
  for (int64_t i = 0; i < V; ++i) {
    cum += w[size_t(i)];
    if (w[size_t(i)] > 0) last = i;
    if (target < cum) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);  // target ≥ the rounded total: the last id with weight
}

template <typename T>
std::vector<int32_t> generate(const NextLogits<T>& next, int64_t V, std::span<const int32_t> prompt,
                              const GenerateOptions& opts, const Sampler& sampler,
                              std::vector<std::vector<T>>* step_logits) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt needs at least BOS");
  std::vector<int32_t> context(prompt.begin(), prompt.end()), out;
  for (int64_t i = 0; i < opts.max_new; ++i) {
    const T* lg = next(context);
    if (step_logits) step_logits->emplace_back(lg, lg + V);
    const int32_t tok = sampler.pick(lg, V, static_cast<int64_t>(context.size()));
    out.push_back(tok);
    if (opts.stop_at_eos && tok == kEos) break;
    context.push_back(tok);
  }
  return out;
}

template <typename T>
NextLogits<T> cached_next(Decoder<T>& dec, const T* params, const EngramStore<T>* engram) {
  dec.reset();
  return [&dec, params, engram](std::span<const int32_t> ctx) -> const T* {
    const int64_t len = dec.len(), n = static_cast<int64_t>(ctx.size()) - len;
    if (n <= 0) throw std::logic_error("cached_next: the context did not grow since the last call");
    const std::vector<T>& lg = dec.append(params, engram, ctx.subspan(size_t(len)));
    return lg.data() + (n - 1) * (static_cast<int64_t>(lg.size()) / n);
  };
}

template <typename T>
NextLogits<T> recompute_next(FullForward<T>& full, const T* params, const EngramStore<T>* engram) {
  return [&full, params, engram](std::span<const int32_t> ctx) -> const T* {
    const std::vector<T>& lg = full.logits(params, engram, ctx);
    return lg.data() + lg.size() - lg.size() / ctx.size();
  };
}

int64_t request_positions(const GenerateRequest& r) {
  return 1 + static_cast<int64_t>(r.prompt.size()) + r.max_new - 1;
}

std::string check_generate_options(const GenerateRequest& r) {
  if (r.prompt.empty()) return "--prompt is empty: give at least one byte to complete";
  if (r.max_new < 1)
    return "--max-new must be at least 1 (tokens to generate), got " + std::to_string(r.max_new);
  if (!(r.temperature >= 0) || !std::isfinite(r.temperature))
    return "--temperature must be a finite number >= 0 (0: greedy), got " +
           std::to_string(r.temperature);
  return "";
}

std::string check_generate_request(const ModelConfig& cfg, const GenerateRequest& r) {
  const int64_t bytes = static_cast<int64_t>(r.prompt.size()), T_ = cfg.seq_len;
  if (std::string bad = check_generate_options(r); !bad.empty()) return bad;
  if (cfg.vocab_size < kEos + 1)
    return "the weights' config has vocab_size " + std::to_string(cfg.vocab_size) +
           ": generation needs the 258 byte-level tokens (bytes, BOS, EOS); use weights of a "
           "byte-level troupe model";
  if (request_positions(r) <= T_) return "";
  if (bytes >= T_)
    return "--prompt has " + std::to_string(bytes) + " bytes; with BOS the model (seq_len " +
           std::to_string(T_) + ") holds at most " + std::to_string(T_ - 1) +
           " prompt bytes and one new token: shorten the prompt";
  return "--prompt (" + std::to_string(bytes) + " bytes) with --max-new " +
         std::to_string(r.max_new) + " needs " + std::to_string(request_positions(r)) +
         " positions, more than the model's seq_len " + std::to_string(T_) +
         " (positions it was trained on): use --max-new " + std::to_string(T_ - bytes) +
         " or less, or a shorter prompt";
}

std::vector<int32_t> prompt_tokens(const std::string& prompt) {
  std::vector<int32_t> t{kBos};
  for (unsigned char c : prompt) t.push_back(static_cast<int32_t>(c));
  return t;
}

#define TROUPE_GENERATE_INSTANTIATE(T)                                                        \
  template class Decoder<T>;                                                                  \
  template class FullForward<T>;                                                              \
  template int32_t Sampler::pick<T>(const T*, int64_t, int64_t) const;                        \
  template std::vector<int32_t> generate<T>(const NextLogits<T>&, int64_t,                    \
                                            std::span<const int32_t>, const GenerateOptions&, \
                                            const Sampler&, std::vector<std::vector<T>>*);    \
  template NextLogits<T> cached_next<T>(Decoder<T>&, const T*, const EngramStore<T>*);        \
  template NextLogits<T> recompute_next<T>(FullForward<T>&, const T*, const EngramStore<T>*);
TROUPE_GENERATE_INSTANTIATE(float)
TROUPE_GENERATE_INSTANTIATE(double)
#undef TROUPE_GENERATE_INSTANTIATE

}  // namespace troupe::model
