#include "train/expert_owner.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "train/expert_slots.h"

namespace troupe::model {

std::string to_string(ExpertId id) {
  return fmt::format("expert {} of MoE layer {}", id.expert, id.moe_layer);
}

ExpertOwner::ExpertOwner(const TrainJobConfig& cfg)
    : cfg_(cfg),
      table_(cfg.model),
      part_(cfg.model.moe_inter * cfg.model.d_model),
      layouts_(moe_layouts(cfg.model, table_)) {
  // Every expert's three tensors are of one group and shape: expert 0 of the first MoE
  // layer's state size is every expert's.
  state_floats_ = weight_floats();
  if (layouts_.empty() || layouts_[0].experts.empty()) return;
  const SwigluLayout& L = layouts_[0].experts[0];
  const FlatRange range{L.gate, L.gate + 3 * part_};
  const Optimizer probe(table_, cfg_.optimizer, cfg_.train.weight_decay, 1, range);
  for (size_t t = 0; t < table_.all().size(); ++t)
    if (range.covers(table_.all()[t])) state_floats_ += probe.state_floats_of(t);
}

ExpertOwner::Owned& ExpertOwner::make(ExpertId id) {
  const int64_t layers = moe_layer_count(cfg_.model);
  if (id.moe_layer < 0 || id.moe_layer >= layers || id.expert < 0 ||
      id.expert >= cfg_.model.n_routed_experts)
    throw std::invalid_argument(fmt::format("{}: the model has {} MoE layers of {} experts",
                                            to_string(id), layers, cfg_.model.n_routed_experts));
  if (owns(id)) throw std::invalid_argument(to_string(id) + " is owned here already");
  if (micro_batches_ > 0)
    throw std::logic_error(to_string(id) + ": owned in the middle of step " +
                           std::to_string(step_) + " (experts move between steps)");
  const SwigluLayout& L = layouts_[size_t(id.moe_layer)].experts[size_t(id.expert)];
  if (L.up != L.gate + part_ || L.down != L.up + part_)
    throw std::logic_error(to_string(id) + ": gate, up and down do not lie together in the table");
  Owned& o = experts_[id];
  o.range = {L.gate, L.gate + 3 * part_};
  o.opt.emplace(table_, cfg_.optimizer, cfg_.train.weight_decay, 1, o.range);
  return o;
}

void ExpertOwner::own(ExpertId id, std::span<const float> w) {
  if (int64_t(w.size()) != weight_floats())
    throw std::invalid_argument(fmt::format("{}: {} weights, not 3·moe_inter·d_model = {}",
                                            to_string(id), w.size(), weight_floats()));
  Owned& o = make(id);
  o.weights.assign(w.begin(), w.end());
}

std::vector<size_t> ExpertOwner::tensors_of(const Owned& o) const {
  std::vector<size_t> out;
  for (size_t t = 0; t < table_.all().size(); ++t)
    if (o.range.covers(table_.all()[t])) out.push_back(t);
  return out;
}

void ExpertOwner::own_state(ExpertId id, std::span<const float> run) {
  if (int64_t(run.size()) != state_floats())
    throw std::invalid_argument(fmt::format("{}: a state run of {} floats, not {}", to_string(id),
                                            run.size(), state_floats()));
  Owned& o = make(id);
  o.weights.assign(run.begin(), run.begin() + weight_floats());
  const float* at = run.data() + weight_floats();
  for (const size_t t : tensors_of(o)) {
    o.opt->write_state(t, at);
    at += o.opt->state_floats_of(t);
  }
}

std::vector<float> ExpertOwner::state_run(ExpertId id) const {
  const Owned& o = at(id);
  auto run = std::vector<float>(size_t(state_floats()));
  std::copy(o.weights.begin(), o.weights.end(), run.begin());
  float* to = run.data() + weight_floats();
  for (const size_t t : tensors_of(o)) {
    o.opt->read_state(t, to);
    to += o.opt->state_floats_of(t);
  }
  return run;
}

void ExpertOwner::release(ExpertId id) {
  if (micro_batches_ > 0)
    throw std::logic_error(to_string(id) + ": released in the middle of step " +
                           std::to_string(step_) + " (experts move between steps)");
  if (experts_.erase(id) == 0) throw std::invalid_argument(to_string(id) + " is not owned here");
}

std::vector<ExpertId> ExpertOwner::owned() const {
  std::vector<ExpertId> out;
  for (const auto& [id, o] : experts_) out.push_back(id);
  return out;
}

const ExpertOwner::Owned& ExpertOwner::at(ExpertId id) const {
  const auto it = experts_.find(id);
  if (it == experts_.end()) throw std::invalid_argument(to_string(id) + " is not owned here");
  return it->second;
}

std::span<const float> ExpertOwner::weights(ExpertId id) const {
  return at(id).weights;
}

void ExpertOwner::begin_step(int64_t step, int64_t micro_batches) {
  if (micro_batches < 1)
    throw std::invalid_argument(fmt::format("step {}: {} micro-batches", step, micro_batches));
  step_ = step, micro_batches_ = micro_batches;
  noted_.assign(size_t(micro_batches), 0);
  const std::vector<TreeNode> whole = tree_pieces(micro_batches, 0, micro_batches);
  for (auto& [id, o] : experts_) {
    o.tree = std::make_unique<TreeStream>(whole);
    o.buffers.assign(size_t(micro_batches), {});
    o.arrived.assign(size_t(micro_batches), 0);
  }
}

void ExpertOwner::abandon_step() {
  micro_batches_ = 0;
  noted_.clear();
  for (auto& [id, o] : experts_) o.tree.reset(), o.buffers.clear(), o.arrived.clear();
}

void ExpertOwner::arrive(Owned& o, int64_t mb, std::vector<float> g) {
  o.arrived[size_t(mb)] = 1;
  o.buffers[size_t(mb)] = std::move(g);
  o.tree->arrive(mb, size_t(mb), [&o](size_t into, size_t from) {
    std::vector<float>& a = o.buffers[into];
    const std::vector<float>& b = o.buffers[from];
    for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    o.buffers[from] = {};  // merged: its memory goes
  });
}

std::string ExpertOwner::note_rows(int64_t mb, std::span<const ExpertId> routed) {
  if (mb < 0 || mb >= micro_batches_)
    return fmt::format("micro-batch {} is outside step {}'s {}", mb, step_, micro_batches_);
  if (noted_[size_t(mb)]) return fmt::format("micro-batch {}'s rows were noted already", mb);
  std::set<ExpertId> with_rows;
  for (const ExpertId id : routed) {
    if (!owns(id)) return fmt::format("micro-batch {}: {} is not owned here", mb, to_string(id));
    if (!with_rows.insert(id).second)
      return fmt::format("micro-batch {}: {} named twice", mb, to_string(id));
  }
  for (const auto& [id, o] : experts_)
    if (!with_rows.count(id) && o.arrived[size_t(mb)])
      return fmt::format(
          "micro-batch {}: a gradient of {} came, but the micro-batch routed it "
          "no row",
          mb, to_string(id));
  noted_[size_t(mb)] = 1;
  for (auto& [id, o] : experts_)
    if (!with_rows.count(id)) arrive(o, mb, std::vector<float>(size_t(weight_floats()), 0.f));
  return "";
}

std::string ExpertOwner::add_grad(int64_t mb, ExpertId id, std::vector<float> g) {
  if (mb < 0 || mb >= micro_batches_)
    return fmt::format("micro-batch {} is outside step {}'s {}", mb, step_, micro_batches_);
  const auto it = experts_.find(id);
  if (it == experts_.end()) return to_string(id) + " is not owned here";
  if (int64_t(g.size()) != weight_floats())
    return fmt::format("{}: a gradient of {} floats, not {}", to_string(id), g.size(),
                       weight_floats());
  if (it->second.arrived[size_t(mb)])
    return fmt::format("micro-batch {}: {}'s gradient came twice, or its note said no row", mb,
                       to_string(id));
  arrive(it->second, mb, std::move(g));
  return "";
}

bool ExpertOwner::complete() const {
  return micro_batches_ > 0 && missing().empty();
}

std::string ExpertOwner::missing() const {
  if (micro_batches_ == 0) return "no step begun";
  for (int64_t mb = 0; mb < micro_batches_; ++mb)
    if (!noted_[size_t(mb)]) return fmt::format("micro-batch {}'s note of its rows", mb);
  for (const auto& [id, o] : experts_)
    for (int64_t mb = 0; mb < micro_batches_; ++mb)
      if (!o.arrived[size_t(mb)]) return fmt::format("micro-batch {}'s {}", mb, to_string(id));
  return "";
}

const std::vector<float>& ExpertOwner::reduced(const Owned& o) const {
  if (!complete())
    throw std::logic_error(fmt::format("step {} is not reduced: waiting for {}", step_, missing()));
  return o.buffers[o.tree->piece_slot(0)];
}

std::vector<NormRun> ExpertOwner::norm_runs() const {
  std::vector<NormRun> runs;
  for (const auto& [id, o] : experts_)
    runs.push_back({o.range.lo, grad_norm_parts(table_, reduced(o).data(), o.range, o.range.lo)});
  return runs;
}

void ExpertOwner::apply(double lr, double grad_scale) {
  for (auto& [id, o] : experts_) {
    const std::vector<float>& g = reduced(o);
    o.opt->update(o.weights.data(), g.data(), lr, grad_scale, step_, o.range, o.range.lo);
  }
  abandon_step();  // the step is done: its leaves go
}

}  // namespace troupe::model
