#include "train/eplb.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "train/eplb_detail.h"

namespace troupe::model {

using eplb_detail::LayerPlacement;
using eplb_detail::Shape;

namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

void check_counts(const EplbProblem& p, int64_t experts) {
  const std::pair<const char*, int64_t> counts[] = {
      {"replicas", p.replicas}, {"groups", p.groups}, {"nodes", p.nodes}, {"gpus", p.gpus}};
  for (const auto& [name, v] : counts)
    if (v < 1)
      throw std::invalid_argument(std::string(name) + " must be at least 1, got " + str(v));
  if (experts % p.groups != 0)
    throw std::invalid_argument("groups " + str(p.groups) + " does not divide the " + str(experts) +
                                " experts: a group is E/G consecutive experts");
  if (p.replicas < experts)
    throw std::invalid_argument("replicas " + str(p.replicas) + " is fewer than the " +
                                str(experts) + " experts: every expert needs a slot");
  if (p.replicas % p.gpus != 0)
    throw std::invalid_argument("replicas " + str(p.replicas) + " is not a multiple of gpus " +
                                str(p.gpus) + ": every GPU holds replicas/gpus slots");
  if (p.gpus % p.nodes != 0)
    throw std::invalid_argument("nodes " + str(p.nodes) + " does not divide gpus " + str(p.gpus) +
                                ": every node holds gpus/nodes GPUs");
}

Shape shape_of(const EplbProblem& p) {
  const bool hierarchical = p.groups % p.nodes == 0;
  return Shape{int64_t(p.loads.front().size()), p.replicas, hierarchical ? p.groups : 1,
               hierarchical ? p.nodes : 1, p.gpus};
}

// log2phy (E,X) of one layer, X = `width` (the largest replica count of all layers).
std::vector<std::vector<int64_t>> log2phy_of(const LayerPlacement& l, int64_t width) {
  std::vector<std::vector<int64_t>> out(l.logcnt.size(), std::vector<int64_t>(width, -1));
  for (size_t slot = 0; slot < l.phy2log.size(); ++slot)
    out[l.phy2log[slot]][l.phyrank[slot]] = int64_t(slot);
  return out;
}

}  // namespace

void check_eplb_problem(const EplbProblem& p) {
  if (p.loads.empty()) throw std::invalid_argument("loads has no layers: give one row per layer");
  const size_t experts = p.loads.front().size();
  if (experts == 0) throw std::invalid_argument("loads[0] has no experts");
  for (size_t l = 0; l < p.loads.size(); ++l) {
    if (p.loads[l].size() != experts)
      throw std::invalid_argument("loads[" + std::to_string(l) + "] has " +
                                  std::to_string(p.loads[l].size()) + " experts, loads[0] has " +
                                  std::to_string(experts) + ": every layer needs the same count");
    for (size_t e = 0; e < experts; ++e)
      if (!std::isfinite(p.loads[l][e]) || p.loads[l][e] < 0)
        throw std::invalid_argument("loads[" + std::to_string(l) + "][" + std::to_string(e) +
                                    "] = " + std::to_string(p.loads[l][e]) +
                                    ": a load is a finite token count >= 0");
  }
  check_counts(p, int64_t(experts));
}

EplbPlacement rebalance_experts(const EplbProblem& problem, EplbPolicy policy) {
  check_eplb_problem(problem);
  const Shape s = shape_of(problem);
  std::vector<LayerPlacement> layers;
  for (const std::vector<double>& load : problem.loads) {
    LayerPlacement chosen = eplb_detail::published_layer(load, s);
    if (policy == EplbPolicy::improved) {
      LayerPlacement better = eplb_detail::improved_layer(load, s);
      if (eplb_detail::peak_gpu_load(load, better, s.gpus) <
          eplb_detail::peak_gpu_load(load, chosen, s.gpus))
        chosen = std::move(better);
    }
    layers.push_back(std::move(chosen));
  }
  int64_t width = 1;
  for (const LayerPlacement& l : layers)
    width = std::max(width, *std::max_element(l.logcnt.begin(), l.logcnt.end()));
  EplbPlacement out;
  out.hierarchical = problem.groups % problem.nodes == 0;
  for (LayerPlacement& l : layers) {
    out.log2phy.push_back(log2phy_of(l, width));
    out.phy2log.push_back(std::move(l.phy2log));
    out.logcnt.push_back(std::move(l.logcnt));
  }
  return out;
}

std::vector<double> gpu_loads(const std::vector<double>& load, const std::vector<int64_t>& phy2log,
                              const std::vector<int64_t>& logcnt, int64_t gpus) {
  const int64_t per_gpu = int64_t(phy2log.size()) / gpus;
  std::vector<double> out(gpus, 0.0);
  for (size_t slot = 0; slot < phy2log.size(); ++slot)
    out[int64_t(slot) / per_gpu] += load[phy2log[slot]] / double(logcnt[phy2log[slot]]);
  return out;
}

double layer_balance(const std::vector<double>& load, const std::vector<int64_t>& phy2log,
                     const std::vector<int64_t>& logcnt, int64_t gpus) {
  const std::vector<double> g = gpu_loads(load, phy2log, logcnt, gpus);
  double total = 0;
  for (const double v : load) total += v;
  if (total <= 0) return 1;
  return *std::max_element(g.begin(), g.end()) / (total / double(gpus));
}

double placement_balance(const EplbProblem& problem, const EplbPlacement& placement) {
  double sum = 0;
  for (size_t l = 0; l < problem.loads.size(); ++l)
    sum += layer_balance(problem.loads[l], placement.phy2log[l], placement.logcnt[l], problem.gpus);
  return sum / double(problem.loads.size());
}

double static_balance(const EplbProblem& problem) {
  double sum = 0;
  for (const std::vector<double>& load : problem.loads) {
    const int64_t experts = int64_t(load.size());
    std::vector<double> g(problem.gpus, 0.0);
    double total = 0;
    for (int64_t e = 0; e < experts; ++e)
      g[e * problem.gpus / experts] += load[e], total += load[e];
    sum += total <= 0 ? 1 : *std::max_element(g.begin(), g.end()) / (total / double(problem.gpus));
  }
  return sum / double(problem.loads.size());
}

namespace {

std::string at(size_t l) {
  return "layer " + std::to_string(l) + ": ";
}

// Whether log2phy row of expert e lists exactly its logcnt slots, then -1s.
std::string check_log2phy_row(const std::vector<int64_t>& row, const std::vector<int64_t>& phy2log,
                              int64_t e, int64_t count, std::vector<bool>& seen) {
  for (size_t k = 0; k < row.size(); ++k) {
    const int64_t slot = row[k];
    if (int64_t(k) >= count) {
      if (slot != -1) return "log2phy of expert " + str(e) + " has more than logcnt slots";
      continue;
    }
    if (slot < 0 || slot >= int64_t(phy2log.size()) || phy2log[slot] != e || seen[slot])
      return "log2phy of expert " + str(e) + " lists slot " + str(slot) + " wrongly";
    seen[slot] = true;
  }
  return "";
}

std::string check_layer(const EplbProblem& p, const EplbPlacement& x, size_t l, int64_t width) {
  const int64_t experts = int64_t(p.loads[l].size());
  const std::vector<int64_t>& phy2log = x.phy2log[l];
  if (int64_t(phy2log.size()) != p.replicas || int64_t(x.logcnt[l].size()) != experts ||
      int64_t(x.log2phy[l].size()) != experts)
    return "phy2log, logcnt or log2phy has the wrong length";
  std::vector<int64_t> count(experts, 0);
  for (const int64_t e : phy2log) {
    if (e < 0 || e >= experts) return "phy2log holds " + str(e) + ", not an expert";
    ++count[e];
  }
  std::vector<bool> seen(phy2log.size(), false);
  for (int64_t e = 0; e < experts; ++e) {
    if (count[e] < 1) return "expert " + str(e) + " has no replica";
    if (count[e] != x.logcnt[l][e]) return "logcnt of expert " + str(e) + " is not its slots";
    if (int64_t(x.log2phy[l][e].size()) != width) return "log2phy rows differ in width";
    const std::string bad = check_log2phy_row(x.log2phy[l][e], phy2log, e, count[e], seen);
    if (!bad.empty()) return bad;
  }
  return "";
}

// Hierarchical: every replica of a group's experts on one node, G/N groups per node.
std::string check_node_groups(const EplbProblem& p, const std::vector<int64_t>& phy2log,
                              int64_t experts) {
  const int64_t group_size = experts / p.groups, slots_per_node = p.replicas / p.nodes;
  std::vector<int64_t> node_of_group(p.groups, -1), groups_on_node(p.nodes, 0);
  for (size_t slot = 0; slot < phy2log.size(); ++slot) {
    const int64_t g = phy2log[slot] / group_size, n = int64_t(slot) / slots_per_node;
    if (node_of_group[g] < 0) node_of_group[g] = n, ++groups_on_node[n];
    if (node_of_group[g] != n) return "expert group " + str(g) + " lies on two nodes";
  }
  for (int64_t n = 0; n < p.nodes; ++n)
    if (groups_on_node[n] != p.groups / p.nodes)
      return "node " + str(n) + " holds " + str(groups_on_node[n]) + " groups, not G/N";
  return "";
}

}  // namespace

std::string check_placement(const EplbProblem& p, const EplbPlacement& x) {
  const size_t layers = p.loads.size();
  if (x.phy2log.size() != layers || x.logcnt.size() != layers || x.log2phy.size() != layers)
    return "the placement has " + std::to_string(x.phy2log.size()) + " layers, the loads " +
           std::to_string(layers);
  if (p.replicas % p.gpus != 0) return "replicas is not a multiple of gpus";
  if (x.hierarchical != (p.groups % p.nodes == 0))
    return "hierarchical is set although groups % nodes != 0, or not although it is 0";
  int64_t width = 0;
  for (size_t l = 0; l < layers; ++l)
    for (const int64_t c : x.logcnt[l]) width = std::max(width, c);
  for (size_t l = 0; l < layers; ++l) {
    std::string bad = check_layer(p, x, l, width);
    if (bad.empty() && x.hierarchical)
      bad = check_node_groups(p, x.phy2log[l], int64_t(p.loads[l].size()));
    if (!bad.empty()) return at(l) + bad;
  }
  return "";
}

namespace eplb_detail {

double peak_gpu_load(const std::vector<double>& load, const LayerPlacement& p, int64_t gpus) {
  const std::vector<double> g = gpu_loads(load, p.phy2log, p.logcnt, gpus);
  return *std::max_element(g.begin(), g.end());
}

}  // namespace eplb_detail

}  // namespace troupe::model
