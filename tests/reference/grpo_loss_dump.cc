// Writes one GRPO-loss case for grpo_loss_parity.py: the inputs (drawn from the counter RNG)
// and troupe's FP32 loss and dlogits (model/grpo_loss.h), as JSON on stdout. Tokens of 6
// completions (advantages of both signs) with ratios ρ on both sides of the clip range and
// inside it, so both branches of the min are checked.
//
//   grpo_loss_dump SEED > case.json
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "model/grpo_loss.h"
#include "model/rng.h"

namespace {

using troupe::model::CounterRng;

void print_floats(const char* name, const std::vector<float>& v, bool last = false) {
  std::printf("\"%s\": [", name);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%.9g", i ? ", " : "", double(v[i]));
  std::printf("]%s\n", last ? "" : ",");
}

void print_ints(const char* name, const std::vector<int32_t>& v) {
  std::printf("\"%s\": [", name);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%d", i ? ", " : "", v[i]);
  std::printf("],\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: grpo_loss_dump SEED\n");
    return 2;
  }
  const uint64_t seed = std::strtoull(argv[1], nullptr, 10);
  constexpr int64_t V = 258, G = 6;
  const int64_t lens[G] = {5, 3, 9, 1, 6, 4};
  const float rhos[] = {1.45f, 0.6f, 1.0f, 1.12f, 0.9f, 0.7f, 1.3f};  // clipped and not
  CounterRng rng(seed, troupe::model::purpose_of("grpo_loss_dump"));
  troupe::model::GrpoTokens<float> in;
  in.completions = G;
  for (int64_t g = 0; g < G; ++g) {
    in.advantage.push_back(float(1.2 * rng.normal(uint64_t(9000 + g))));
    for (int64_t i = 0; i < lens[g]; ++i) in.completion.push_back(int32_t(g));
  }
  const int64_t N = int64_t(in.completion.size());
  std::vector<float> logits(static_cast<size_t>(N * V));
  for (int64_t i = 0; i < N * V; ++i) logits[size_t(i)] = float(2.0 * rng.normal(uint64_t(i)));
  for (int64_t t = 0; t < N; ++t) in.token.push_back(int32_t(rng.bits(uint64_t(7000 + t)) % V));
  std::vector<float> lp(static_cast<size_t>(N));
  troupe::model::token_logprobs(logits.data(), in.token.data(), N, V, lp.data());
  for (int64_t t = 0; t < N; ++t) {
    in.logp_old.push_back(lp[size_t(t)] - std::log(rhos[t % 7]));
    in.logp_ref.push_back(lp[size_t(t)] + float(0.5 * rng.normal(uint64_t(8000 + t))));
  }
  troupe::model::GrpoCache<float> cache;
  const troupe::model::GrpoLossConfig cfg;
  const float loss = troupe::model::grpo_loss_forward(cfg, logits.data(), N, V, in, cache);
  std::vector<float> dlogits(logits.size(), 0.f);
  troupe::model::grpo_loss_backward(cfg, N, V, in, cache, 1.f, dlogits.data());
  std::printf("{\"V\": %lld, \"G\": %lld, \"clip_eps\": %.17g, \"kl_beta\": %.17g,\n", (long long)V,
              (long long)G, cfg.clip_eps, cfg.kl_beta);
  std::printf("\"loss\": %.9g, \"clipped_fraction\": %.9g,\n", double(loss),
              double(cache.clipped_fraction));
  print_ints("token", in.token);
  print_ints("completion", in.completion);
  print_floats("advantage", in.advantage);
  print_floats("logp_old", in.logp_old);
  print_floats("logp_ref", in.logp_ref);
  print_floats("logits", logits);
  std::printf("\"dlogits\": [");
  for (size_t i = 0; i < dlogits.size(); ++i)
    std::printf("%s%.9g", i ? ", " : "", double(dlogits[i]));
  std::printf("]}\n");
  return 0;
}
