#include "optim/optim.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace troupe::model {

OptGroup effective_group(OptGroup g, const OptimizerConfig& cfg) {
  return g == OptGroup::Muon && cfg.name != OptimizerKind::muon ? OptGroup::AdamW : g;
}

AdamW::AdamW(const ParamTable& table, const OptimizerConfig& cfg, double weight_decay,
             FlatRange state, bool offload)
    : table_(table),
      cfg_(cfg),
      weight_decay_(weight_decay),
      slots_(table, state,
             [&](const ParamInfo& p) {
               const OptGroup g = effective_group(p.group, cfg);
               return g == OptGroup::AdamW || g == OptGroup::AdamWNoDecay;
             }),
      m_(slots_.floats(), offload),
      v_(slots_.floats(), offload) {}

void AdamW::check_state(FlatRange owned) const {
  for (size_t t = 0; t < table_.all().size(); ++t) {
    const ParamInfo& p = table_.all()[t];
    const OptGroup group = effective_group(p.group, cfg_);
    if (group != OptGroup::Rule && group != OptGroup::Muon && owned.covers(p))
      (void)slots_.at(table_, t);
  }
}

void AdamW::read_state(size_t i, float* out) const {
  const int64_t at = slots_.at(table_, i), n = table_.all()[i].numel;
  m_.read(at, n, out);
  v_.read(at, n, out + n);
}

void AdamW::write_state(size_t i, const float* in) {
  const int64_t at = slots_.at(table_, i), n = table_.all()[i].numel;
  m_.write(at, n, in);
  v_.write(at, n, in + n);
}

std::vector<float> AdamW::state(const StateBuffer& s, size_t i) const {
  if (!slots_.has(i)) return {};
  std::vector<float> out(size_t(table_.all()[i].numel));
  s.read(slots_.at(table_, i), int64_t(out.size()), out.data());
  return out;
}

void AdamW::update(float* params, const float* grads, double lr, double grad_scale, int64_t step,
                   FlatRange owned, int64_t base) {
  const double b1 = cfg_.beta1, b2 = cfg_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(step + 1));
  const double c2 = 1.0 - std::pow(b2, double(step + 1));
  const float fb1 = float(b1), fb2 = float(b2), fscale = float(grad_scale);
  const float step_size = float(lr / c1), inv_c2 = float(1.0 / c2), eps = float(cfg_.eps);
  check_state(owned);  // throws before anything is changed
  for (size_t t = 0; t < table_.all().size(); ++t) {
    const ParamInfo& p = table_.all()[t];
    const OptGroup group = effective_group(p.group, cfg_);
    if (group == OptGroup::Rule || group == OptGroup::Muon || !owned.covers(p)) continue;
    const float decay = group == OptGroup::AdamWNoDecay ? 0.0f : float(lr * weight_decay_);
    float* w = params + (p.offset - base);
    const int64_t at = slots_.at(table_, t);
    float* m = m_.fetch(at, p.numel, m_window_);
    float* v = v_.fetch(at, p.numel, v_window_);
    const float* g = grads + (p.offset - base);
    for (int64_t i = 0; i < p.numel; ++i) {
      const float gi = g[i] * fscale;
      m[i] = fb1 * m[i] + (1.0f - fb1) * gi;
      v[i] = fb2 * v[i] + (1.0f - fb2) * gi * gi;
      const float denom = std::sqrt(v[i] * inv_c2) + eps;
      w[i] -= step_size * m[i] / denom + decay * w[i];
    }
    m_.store(at, p.numel, m), v_.store(at, p.numel, v);
  }
}

Optimizer::Optimizer(const ParamTable& table, const OptimizerConfig& cfg, double weight_decay,
                     int threads, FlatRange state, bool offload)
    : table_(table),
      cfg_(cfg),
      weight_decay_(weight_decay),
      adamw_(table, cfg, weight_decay, state, offload) {
  if (cfg.name == OptimizerKind::muon)
    muon_.emplace(table, MuonSettings{}, threads, state, offload);
}

void Optimizer::update(float* params, const float* grads, double lr, double grad_scale,
                       int64_t step, FlatRange owned, int64_t base) {
  if (base < 0 || owned.lo < base)
    throw std::invalid_argument(
        fmt::format("Optimizer::update: the owned range starts at {}, before the slice passed ({})",
                    owned.lo, base));
  adamw_.check_state(owned);  // both before either changes anything
  if (muon_) muon_->check_state(owned);
  adamw_.update(params, grads, lr, grad_scale, step, owned, base);
  if (muon_) muon_->update(params, grads, lr, grad_scale, weight_decay_, owned, base);
}

int64_t Optimizer::state_floats_of(size_t t) const {
  const ParamInfo& p = table_.all()[t];
  switch (effective_group(p.group, cfg_)) {
    case OptGroup::Rule:
      return 0;
    case OptGroup::Muon:
      return p.numel;
    default:
      return 2 * p.numel;
  }
}

void Optimizer::read_state(size_t t, float* out) const {
  if (muon_ && effective_group(table_.all()[t].group, cfg_) == OptGroup::Muon)
    return muon_->read_state(t, out);
  if (state_floats_of(t) > 0) adamw_.read_state(t, out);
}

void Optimizer::write_state(size_t t, const float* in) {
  if (muon_ && effective_group(table_.all()[t].group, cfg_) == OptGroup::Muon)
    return muon_->write_state(t, in);
  if (state_floats_of(t) > 0) adamw_.write_state(t, in);
}

}  // namespace troupe::model
