#include "train/step_rules.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "train/schedule.h"

namespace troupe::model {

bool validate_after(int64_t eval_every, int64_t step, int64_t steps) {
  return (eval_every > 0 && (step + 1) % eval_every == 0) || step + 1 == steps;
}

std::string check_cover(std::vector<TreeNode> nodes, int64_t n) {
  std::sort(nodes.begin(), nodes.end(),
            [](const TreeNode& a, const TreeNode& b) { return a.lo < b.lo; });
  int64_t at = 0;
  for (const TreeNode& x : nodes) {
    if (x.lo >= x.hi || x.hi > n)
      return fmt::format("a piece [{}, {}) outside [0, {})", x.lo, x.hi, n);
    if (x.lo < at) return fmt::format("micro-batch {} covered twice", x.lo);
    if (x.lo > at) return fmt::format("micro-batch {} not covered", at);
    at = x.hi;
  }
  return at == n ? "" : fmt::format("micro-batch {} not covered", at);
}

StepDecision decide_step(const TrainJobConfig& cfg, const StepReports& in) {
  StepDecision d;
  const LossParts<float> lp = combine_pieces(in.pieces, in.micro_batches, &d.counts);
  for (size_t w = 1; w < in.engram_sumsq.size(); ++w)
    if (std::memcmp(&in.engram_sumsq[w], &in.engram_sumsq[0], sizeof(double)) != 0) {
      d.error = fmt::format(
          "worker {} reduced another Engram gradient than worker 0 "
          "(sum of squares {} vs {}): the replicas diverged",
          w, in.engram_sumsq[w], in.engram_sumsq[0]);
      return d;
    }
  std::vector<double> parts;
  for (const auto& p : in.norm_parts) parts.insert(parts.end(), p.begin(), p.end());
  d.stats = step_stats(cfg.train, in.step, lp,
                       global_norm_with_engram(cfg.model, grad_norm_from_parts(parts),
                                               in.engram_sumsq.empty() ? 0.0 : in.engram_sumsq[0]));
  d.clip_scale = clip_scale(cfg.train.grad_clip, d.stats.grad_norm);
  return d;
}

double validation_loss(const std::vector<Piece<float>>& pieces) {
  int64_t n = 0;
  for (const auto& p : pieces) n = std::max(n, p.node.hi);
  const LossParts<float> lp = combine_pieces(pieces, n, nullptr);
  return lp.ce_count > 0 ? double(lp.ce_sum) / double(lp.ce_count) : 0.0;
}

double idle_fraction(const std::vector<double>& busy_ms, double wall_seconds) {
  if (busy_ms.empty() || !(wall_seconds > 0)) return -1;
  double busy = 0;
  for (double b : busy_ms) busy += b;
  const double idle = 1.0 - busy / (double(busy_ms.size()) * wall_seconds * 1000.0);
  return std::clamp(idle, 0.0, 1.0);
}

}  // namespace troupe::model
