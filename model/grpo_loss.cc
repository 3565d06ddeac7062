#include "model/grpo_loss.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace troupe::model {

namespace {

template <typename T>
void check_inputs(int64_t N, int64_t V, const GrpoTokens<T>& in) {
  auto need = [N](const char* what, size_t got) {
    if (int64_t(got) != N)
      throw std::invalid_argument(std::string("grpo loss: ") + what + " has " +
                                  std::to_string(got) + " entries for " + std::to_string(N) +
                                  " tokens");
  };
  need("token", in.token.size());
  need("completion", in.completion.size());
  need("logp_old", in.logp_old.size());
  need("logp_ref", in.logp_ref.size());
  if (in.completions <= 0 || int64_t(in.advantage.size()) != in.completions)
    throw std::invalid_argument("grpo loss: " + std::to_string(in.advantage.size()) +
                                " advantages for " + std::to_string(in.completions) +
                                " completions (need one per completion, at least one)");
  for (int64_t t = 0; t < N; ++t) {
    if (in.token[t] < 0 || in.token[t] >= V)
      throw std::invalid_argument("grpo loss: token " + std::to_string(in.token[t]) + " at " +
                                  std::to_string(t) + " is outside [0, " + std::to_string(V) + ")");
    if (in.completion[t] < 0 || in.completion[t] >= in.completions)
      throw std::invalid_argument("grpo loss: completion id " + std::to_string(in.completion[t]) +
                                  " at " + std::to_string(t) + " is outside [0, " +
                                  std::to_string(in.completions) + ")");
  }
}

// ρ_t and whether the clipped branch is the minimum (then s_t is constant in lp_t: its
// derivative is 0). Inside [1−ε, 1+ε] both branches are equal and either derivative is ρA.
template <typename T>
struct Surrogate {
  T value;
  T dvalue;  // d s / d lp
  bool clipped;
};

template <typename T>
Surrogate<T> surrogate(T rho, T A, T eps) {
  const T unclipped = rho * A;
  const T clipped = std::clamp(rho, T(1) - eps, T(1) + eps) * A;
  if (clipped < unclipped) return {clipped, T(0), true};
  return {unclipped, unclipped, false};
}

}  // namespace

template <typename T>
void token_logprobs(const T* logits, const int32_t* token, int64_t N, int64_t V, T* out) {
  for (int64_t n = 0; n < N; ++n) {
    const T* l = logits + n * V;
    T m = l[0];
    for (int64_t v = 1; v < V; ++v) m = l[v] > m ? l[v] : m;
    T s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(l[v] - m);
    out[n] = l[token[n]] - m - std::log(s);
  }
}

template <typename T>
T grpo_loss_forward(const GrpoLossConfig& cfg, const T* logits, int64_t N, int64_t V,
                    const GrpoTokens<T>& in, GrpoCache<T>& cache) {
  check_inputs(N, V, in);
  // weight_t = 1 / (G · n_g): the mean over a completion's tokens, then over completions.
  std::vector<int64_t> n_g(size_t(in.completions), 0);
  for (int64_t t = 0; t < N; ++t) ++n_g[size_t(in.completion[t])];
  cache.weight.resize(size_t(N));
  for (int64_t t = 0; t < N; ++t)
    cache.weight[t] = T(1) / (T(in.completions) * T(n_g[size_t(in.completion[t])]));
  // prob (N,V) = softmax(logits); lp_t = log prob_t[tok_t].
  cache.prob.resize(size_t(N * V));
  cache.logp.resize(size_t(N));
  for (int64_t t = 0; t < N; ++t) {
    const T* l = logits + t * V;
    T* p = cache.prob.data() + t * V;
    T m = l[0];
    for (int64_t v = 1; v < V; ++v) m = l[v] > m ? l[v] : m;
    T s = 0;
    for (int64_t v = 0; v < V; ++v) s += (p[v] = std::exp(l[v] - m));
    const T inv = T(1) / s;
    for (int64_t v = 0; v < V; ++v) p[v] *= inv;
    cache.logp[t] = l[in.token[t]] - m - std::log(s);
  }
  const T eps = T(cfg.clip_eps), beta = T(cfg.kl_beta);
  T objective = 0, kl_mean = 0;
  int64_t clipped = 0;
  for (int64_t t = 0; t < N; ++t) {
    const T lp = cache.logp[t];
    const Surrogate<T> s =
        surrogate(std::exp(lp - in.logp_old[t]), in.advantage[size_t(in.completion[t])], eps);
    const T log_q = in.logp_ref[t] - lp;
    const T kl = std::exp(log_q) - log_q - T(1);
    objective += cache.weight[t] * (s.value - beta * kl);
    kl_mean += cache.weight[t] * kl;
    clipped += s.clipped;
  }
  cache.clipped_fraction = N > 0 ? T(clipped) / T(N) : T(0);
  cache.kl_mean = kl_mean;
  return -objective;
}

template <typename T>
void grpo_loss_backward(const GrpoLossConfig& cfg, int64_t N, int64_t V, const GrpoTokens<T>& in,
                        const GrpoCache<T>& cache, T dloss, T* dlogits) {
  const T eps = T(cfg.clip_eps), beta = T(cfg.kl_beta);
  for (int64_t t = 0; t < N; ++t) {
    // loss = −Σ_t weight_t (s_t − β KL_t);  dKL/dlp = 1 − q  (q = π_ref/π_θ, dq/dlp = −q).
    const T lp = cache.logp[t];
    const Surrogate<T> s =
        surrogate(std::exp(lp - in.logp_old[t]), in.advantage[size_t(in.completion[t])], eps);
    const T q = std::exp(in.logp_ref[t] - lp);
    const T dlp = -dloss * cache.weight[t] * (s.dvalue - beta * (T(1) - q));
    // lp = logits[tok] − logsumexp(logits):  d lp / d logits = onehot(tok) − prob.
    const T* p = cache.prob.data() + t * V;
    T* g = dlogits + t * V;
    for (int64_t v = 0; v < V; ++v) g[v] -= dlp * p[v];
    g[in.token[t]] += dlp;
  }
}

std::vector<double> group_advantages(const std::vector<double>& rewards) {
  if (rewards.empty()) throw std::invalid_argument("group_advantages: an empty group");
  const double G = double(rewards.size());
  double mean = 0;
  for (double r : rewards) mean += r;
  mean /= G;
  double var = 0;
  for (double r : rewards) var += (r - mean) * (r - mean);
  const double sd = std::sqrt(var / G);  // population std (see the header)
  std::vector<double> A;
  A.reserve(rewards.size());
  for (double r : rewards) A.push_back((r - mean) / (sd + 1e-4));
  return A;
}

template <typename T>
GrpoHead<T>::GrpoHead(const GrpoLossConfig& cfg, std::vector<int64_t> position,
                      GrpoTokens<T> tokens)
    : cfg_(cfg), position_(std::move(position)), tokens_(std::move(tokens)) {
  if (position_.size() != tokens_.token.size())
    throw std::invalid_argument("GrpoHead: " + std::to_string(position_.size()) +
                                " positions for " + std::to_string(tokens_.token.size()) +
                                " tokens");
}

template <typename T>
T GrpoHead<T>::apply(const T* logits, int64_t rows, int64_t V, T* dlogits) {
  const int64_t N = int64_t(position_.size());
  gathered_.resize(size_t(N * V));
  for (int64_t t = 0; t < N; ++t) {
    const int64_t r = position_[size_t(t)];
    if (r < 0 || r >= rows)
      throw std::invalid_argument("GrpoHead: position " + std::to_string(r) +
                                  " is outside the micro-batch's " + std::to_string(rows) +
                                  " positions");
    std::copy(logits + r * V, logits + (r + 1) * V, gathered_.begin() + t * V);
  }
  const T loss = grpo_loss_forward(cfg_, gathered_.data(), N, V, tokens_, cache_);
  if (!dlogits) return loss;
  dgathered_.assign(size_t(N * V), T(0));
  grpo_loss_backward(cfg_, N, V, tokens_, cache_, T(1), dgathered_.data());
  for (int64_t t = 0; t < N; ++t) {  // a position appears once per token it predicts
    T* g = dlogits + position_[size_t(t)] * V;
    for (int64_t v = 0; v < V; ++v) g[v] += dgathered_[size_t(t * V + v)];
  }
  return loss;
}

#define TROUPE_GRPO_INSTANTIATE(T)                                                       \
  template void token_logprobs<T>(const T*, const int32_t*, int64_t, int64_t, T*);       \
  template T grpo_loss_forward<T>(const GrpoLossConfig&, const T*, int64_t, int64_t,     \
                                  const GrpoTokens<T>&, GrpoCache<T>&);                  \
  template void grpo_loss_backward<T>(const GrpoLossConfig&, int64_t, int64_t,           \
                                      const GrpoTokens<T>&, const GrpoCache<T>&, T, T*); \
  template class GrpoHead<T>;

TROUPE_GRPO_INSTANTIATE(float)
TROUPE_GRPO_INSTANTIATE(double)

}  // namespace troupe::model
