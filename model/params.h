#pragma once
// The parameter table: one row per tensor (SPEC §9 name, shape, offset into the one
// contiguous buffer, initialisation, optimizer group). Parameters, gradients and
// optimizer state are each one span of floats laid out by this table.
#include <climits>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/config.h"

namespace troupe::model {

enum class Init { Normal, Zeros, Ones, Constant, Values };
// How a tensor is updated. AdamW: decoupled weight decay applies. AdamWNoDecay: norms,
// mHC α/b. Muon: block matrices (Muon under optimizer.name = "muon", else AdamW).
// Rule: the balancing bias,
// updated by SPEC §3.3's sign rule only, never by a gradient.
enum class OptGroup { AdamW, AdamWNoDecay, Muon, Rule };

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t numel = 0;
  Init init = Init::Normal;
  double init_value = 0.0;          // std for Normal, value for Constant
  std::vector<double> init_values;  // Values: one per element
  OptGroup group = OptGroup::AdamW;
};

// A span of the flat parameter buffer, [lo, hi) in floats: the tensors a data-parallel
// owner updates (DESIGN §5). The default covers everything.
struct FlatRange {
  int64_t lo = 0, hi = INT64_MAX;
  bool covers(const ParamInfo& p) const { return lo <= p.offset && p.offset + p.numel <= hi; }
};

class ParamTable {
 public:
  explicit ParamTable(const ModelConfig& cfg);
  const std::vector<ParamInfo>& all() const { return params_; }
  int64_t total() const { return total_; }
  bool has(std::string_view name) const;
  const ParamInfo& at(std::string_view name) const;  // throws std::out_of_range naming it
  int64_t offset(std::string_view name) const { return at(name).offset; }

 private:
  // `values` (one per element), when given, is the tensor's initial value instead of `init`.
  void add(std::string name, std::vector<int64_t> shape, Init init, double value, OptGroup g,
           std::vector<double> values = {});
  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
};

// Optimizer state is kept only for the tensors that need it and lie inside the state range
// (the default: all): a data-parallel owner keeps the state of its own share alone
// (ZeRO-1), laid out compactly in table order.
class StateSlots {
 public:
  // One slot per tensor of `table` for which `wanted` holds and that `range` covers.
  template <class Wanted>
  StateSlots(const ParamTable& table, FlatRange range, Wanted wanted) {
    for (const ParamInfo& p : table.all()) {
      const bool has = wanted(p) && range.covers(p);
      offset_.push_back(has ? floats_ : -1);
      if (has) floats_ += p.numel;
    }
  }
  // The state offset of table tensor i; throws std::logic_error naming it when it has none.
  int64_t at(const ParamTable& table, size_t i) const;
  bool has(size_t i) const { return offset_[i] >= 0; }
  int64_t floats() const { return floats_; }

 private:
  std::vector<int64_t> offset_;
  int64_t floats_ = 0;
};

// Fills params (total floats) from the counter RNG: each tensor from its own key
// (purpose = FNV-1a of its name), so the weights depend on (config, seed) alone.
template <typename T>
void init_params(const ParamTable& table, uint64_t seed, T* params);

const char* opt_group_name(OptGroup g);

}  // namespace troupe::model
