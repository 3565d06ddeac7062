#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace troupe::model {

namespace {
// Chunk of the canonical norm sum: fixed, so partial sums never depend on threads.
constexpr int64_t kNormChunkElems = 4096;
}  // namespace

double lr_at(const TrainConfig& t, int64_t step) {
  if (t.warmup_steps > 0 && step < t.warmup_steps)
    return t.lr * double(step + 1) / double(t.warmup_steps);
  const int64_t decay_steps = std::max<int64_t>(1, t.steps - t.warmup_steps);
  double progress = std::min(1.0, double(step - t.warmup_steps) / double(decay_steps));
  const double lo = t.lr * t.min_lr_ratio;
  return lo + (t.lr - lo) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::vector<double> grad_norm_parts(const ParamTable& table, const float* grads, FlatRange owned,
                                    int64_t base) {
  std::vector<double> parts;
  for (const ParamInfo& p : table.all()) {
    if (p.group == OptGroup::Rule || !owned.covers(p)) continue;
    for (int64_t lo = 0; lo < p.numel; lo += kNormChunkElems) {
      const int64_t hi = std::min(p.numel, lo + kNormChunkElems);
      double part = 0;
      for (int64_t i = lo; i < hi; ++i) {
        double g = grads[p.offset - base + i];
        part += g * g;
      }
      parts.push_back(part);
    }
  }
  return parts;
}

double grad_norm_from_parts(const std::vector<double>& parts) {
  double total = 0;
  for (double part : parts) total += part;
  return std::sqrt(total);
}

double grad_norm_from_runs(std::vector<NormRun> runs) {
  std::sort(runs.begin(), runs.end(),
            [](const NormRun& a, const NormRun& b) { return a.offset < b.offset; });
  std::vector<double> parts;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i > 0 && runs[i].offset == runs[i - 1].offset)
      throw std::invalid_argument("grad_norm_from_runs: two runs start at offset " +
                                  std::to_string(runs[i].offset));
    parts.insert(parts.end(), runs[i].parts.begin(), runs[i].parts.end());
  }
  return grad_norm_from_parts(parts);
}

double global_grad_norm(const ParamTable& table, const float* grads) {
  return grad_norm_from_parts(grad_norm_parts(table, grads, FlatRange{}));
}

double global_norm_with_engram(const ModelConfig& cfg, double dense_norm, double engram_sumsq) {
  if (cfg.engram_layers.empty()) return dense_norm;
  return std::sqrt(dense_norm * dense_norm + engram_sumsq);
}

double clip_scale(double grad_clip, double grad_norm) {
  return (grad_clip > 0 && grad_norm > grad_clip) ? grad_clip / (grad_norm + 1e-6) : 1.0;
}

}  // namespace troupe::model
