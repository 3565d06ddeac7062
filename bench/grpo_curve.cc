// GRPO's reward curve in one process (issue 17 item 4; train/grpo.h), not run in CI: a short
// supervised run on the arithmetic corpus (data.source = "arithmetic"), then GRPO steps from
// those weights, printing the mean reward of every step and, at the end, the mean of the
// first and last 20 steps next to each other (the anchor is the start: the same weights
// before any GRPO step).
//
//   build/bench/grpo_curve [SFT_STEPS=150] [GRPO_STEPS=200] [--set section.key=value]...
//
// Sizes: tests/configs/tiny_test.toml's model (C=32, L=2, T=32) with data.source =
// "arithmetic"; --set overrides any key (the same for both phases, except train.steps,
// train.lr and train.warmup_steps, which the GRPO phase sets for itself below).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/config_parse.h"
#include "train/grpo.h"

namespace {

using namespace troupe::model;

std::vector<std::string> base_sets() {
  return {"model.n_layers=2",
          "model.seq_len=32",
          "model.d_model=32",
          "model.dense_inter=64",
          "model.moe_inter=16",
          "model.q_lora_rank=16",
          "model.kv_lora_rank=16",
          "model.qk_nope_head_dim=8",
          "model.qk_rope_head_dim=8",
          "model.v_head_dim=8",
          "model.engram_layers=[]",
          "data.source=arithmetic",
          "train.batch_size=8",
          "train.micro_batch_rows=2",
          "train.eval_every=0",
          "train.warmup_steps=10",
          "train.lr=3e-3"};
}

double mean_of(const std::vector<double>& v, size_t lo, size_t hi) {
  double s = 0;
  for (size_t i = lo; i < hi; ++i) s += v[i];
  return hi > lo ? s / double(hi - lo) : 0.0;
}

int run(int64_t sft_steps, int64_t grpo_steps, const std::vector<std::string>& user_sets) {
  std::vector<std::string> sets = base_sets();
  sets.insert(sets.end(), user_sets.begin(), user_sets.end());
  sets.push_back("train.steps=" + std::to_string(std::max<int64_t>(1, sft_steps)));
  Trainer sft(config_from_sets(sets));
  for (int64_t s = 0; s < sft_steps; ++s) {
    const StepStats st = sft.train_step(s);
    if (s % 25 == 0 || s + 1 == sft_steps)
      std::printf("sft  step %4lld  loss %.4f\n", (long long)s, st.loss);
  }
  std::printf("sft  validation loss %.4f nats/byte\n", sft.validate());
  // The GRPO phase: a fresh optimizer and its own schedule on the supervised weights.
  sets.push_back("train.steps=" + std::to_string(std::max<int64_t>(1, grpo_steps)));
  sets.push_back("train.lr=3e-4");
  sets.push_back("train.warmup_steps=0");
  Trainer policy(config_from_sets(sets));
  policy.params = sft.params;
  GrpoConfig g;
  g.prompts_per_step = 8;
  GrpoRunner grpo(policy, g);
  std::vector<double> rewards;
  for (int64_t s = 0; s < grpo_steps; ++s) {
    const GrpoStepStats st = grpo.step(s);
    rewards.push_back(st.mean_reward);
    std::printf("grpo step %4lld  reward %.3f  loss %+.4f  kl %.2e  clipped %.3f  |g| %.3f\n",
                (long long)s, st.mean_reward, st.loss, st.kl, st.clipped_fraction, st.grad_norm);
  }
  const size_t n = rewards.size(), w = std::min<size_t>(20, n);
  std::printf(
      "grpo: %lld prompts x %lld samples per step; mean reward, first %zu steps %.3f "
      "(anchor) -> last %zu steps %.3f\n",
      (long long)g.prompts_per_step, (long long)g.group_size, w, mean_of(rewards, 0, w), w,
      mean_of(rewards, n - w, n));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> counts = {150, 200};
  std::vector<std::string> sets;
  size_t next = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--set" && i + 1 < argc) {
      sets.push_back(argv[++i]);
    } else if (next < counts.size() && !a.empty() && a.find_first_not_of("0123456789") == a.npos) {
      counts[next++] = std::stoll(a);
    } else {
      std::fprintf(stderr,
                   "grpo_curve: unexpected argument '%s'\nusage: grpo_curve [SFT_STEPS] "
                   "[GRPO_STEPS] [--set section.key=value]...\n",
                   a.c_str());
      return 2;
    }
  }
  try {
    return run(counts[0], counts[1], sets);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grpo_curve: %s\n", e.what());
    return 1;
  }
}
