// make bench-sched (issue 17), its planner part: the padding waste of mixed-length packing
// (data/mixed_plan.h: whole documents, best-fit decreasing into micro-batches of a token
// budget) next to fixed-length padding (each document alone in a row of max_doc_tokens), on
// the fortunes training documents, over the first STEPS steps of the plan, for a few T_max
// (max_doc_tokens; the budget twice it), with the share of the corpus's tokens each T_max
// cuts off (SPEC §1 truncates documents at T_max).
// The second half of bench-sched (pulling against the static split with a slow worker) is
// bench/run_bench_sched.sh, which runs this first.
//
//   bench_sched [STEPS] [CORPUS_DIR]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "data/mixed_plan.h"

int main(int argc, char** argv) {
  using namespace troupe::model;
  const int64_t steps = argc > 1 ? std::atol(argv[1]) : 200;
  const std::string dir = argc > 2 ? argv[2] : "/usr/share/games/fortunes";
  if (steps <= 0) {
    std::fprintf(stderr, "bench_sched: STEPS must be > 0, got %s\n", argv[1]);
    return 2;
  }
  Corpus corpus;
  try {
    corpus = load_fortunes(dir, 20);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sched: %s\n", e.what());
    return 2;
  }
  std::printf(
      "bench-sched: %zu training documents, %ld steps of 2048 tokens (tiny's 16 rows "
      "of 128)\n",
      corpus.train.size(), long(steps));
  std::printf("%-22s %-14s %12s %12s %8s %10s\n", "T_max, budget", "micro-batches", "mixed waste",
              "fixed waste", "ratio", "cut by T_max");
  for (const int64_t t_max : {128, 256, 512, 1024}) {
    MixedPlanConfig c;
    c.max_doc_tokens = t_max;
    c.tokens_per_microbatch = 2 * t_max;
    c.micro_batches_per_step = std::max<int64_t>(1, 2048 / c.tokens_per_microbatch);
    const MixedPlanner p(&corpus.train, 1234, true, c);
    int64_t tokens = 0, room = 0;
    for (int64_t s = 0; s < steps; ++s) {
      const StepPlan plan = p.step(s);
      tokens += plan.tokens();
      room += int64_t(plan.micro_batches.size()) * plan.budget;
    }
    int64_t cut = 0, all = 0;  // what truncation at T_max takes from the documents
    for (const std::string& d : corpus.train) {
      all += int64_t(d.size()) + 2;
      cut += std::max<int64_t>(0, int64_t(d.size()) + 2 - t_max);
    }
    const double mixed = 1.0 - double(tokens) / double(room);
    const double fixed = p.fixed_length_waste(steps);
    std::printf("%6ld, %-14ld %-14ld %11.2f%% %11.2f%% %8.3f %9.1f%%%s\n", long(t_max),
                long(c.tokens_per_microbatch), long(c.micro_batches_per_step), 100 * mixed,
                100 * fixed, fixed > 0 ? mixed / fixed : 0.0, 100.0 * double(cut) / double(all),
                t_max == MixedPlanConfig{}.max_doc_tokens ? "  <- default (issue 17: <= 5%)" : "");
  }
  return 0;
}
