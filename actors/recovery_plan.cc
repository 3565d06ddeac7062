#include "actors/recovery_plan.h"

#include <fmt/format.h>

namespace troupe::actors {

namespace {

std::string all_lost(int64_t owner, int64_t copies) {
  return fmt::format(
      "worker {} and its buddies (the next {}) are all lost: the optimizer state of its share "
      "is gone; in-memory recovery cannot go on (fault_tolerance.buddy_copies = {})",
      owner, copies == 1 ? std::string("worker") : fmt::format("{} workers", copies), copies);
}

// The tensors with optimizer state inside `range`, in table order.
std::vector<size_t> with_state(const RecoveryInput& in, model::FlatRange range) {
  std::vector<size_t> out;
  for (size_t t = 0; t < in.tensors.size(); ++t)
    if (range.covers(in.tensors[t]) && in.state_floats[t] > 0) out.push_back(t);
  return out;
}

std::string check_input(const RecoveryInput& in) {
  const auto n_old = size_t(in.old_workers);
  if (in.old_workers <= 0 || in.old_me < 0 || in.old_me >= in.old_workers ||
      in.old_owners.size() != n_old || in.state_floats.size() != in.tensors.size())
    return "a recovery from a view this worker does not know";
  if (in.old_index.empty() || in.new_owners.size() != in.old_index.size() || in.new_me < 0 ||
      in.new_me >= int64_t(in.old_index.size()) || in.old_index[size_t(in.new_me)] != in.old_me)
    return "Recover does not name this worker among the survivors";
  std::vector<bool> seen(n_old, false);
  for (int64_t i : in.old_index) {
    if (i < 0 || i >= in.old_workers) return "Recover names an unknown worker";
    if (seen[size_t(i)]) return "Recover names a worker twice";
    seen[size_t(i)] = true;
  }
  return "";
}

}  // namespace

RecoveryPlan plan_recovery(const RecoveryInput& in) {
  RecoveryPlan p;
  if (std::string why = check_input(in); !why.empty()) return p.error = why, p;
  const int64_t n = in.old_workers;
  std::vector<bool> alive(size_t(n), false);
  for (int64_t i : in.old_index) alive[size_t(i)] = true;
  p.holder.assign(size_t(n), -1);
  for (int64_t o = 0; o < n; ++o)
    for (int64_t d = 0; d <= in.copies && p.holder[size_t(o)] < 0; ++d)
      if (alive[size_t((o + d) % n)]) p.holder[size_t(o)] = (o + d) % n;
  p.owner_of.assign(in.tensors.size(), -1);
  for (size_t t = 0; t < in.tensors.size(); ++t)
    for (int64_t o = 0; o < n; ++o)
      if (in.old_owners[size_t(o)].covers(in.tensors[t])) p.owner_of[t] = o;
  for (size_t t = 0; t < in.tensors.size(); ++t) {
    if (in.state_floats[t] == 0) continue;
    const int64_t o = p.owner_of[t];
    if (o < 0) return p.error = fmt::format("tensor {} has no owner", in.tensors[t].name), p;
    if (p.holder[size_t(o)] < 0) return p.error = all_lost(o, in.copies), p;
  }
  for (int64_t d = 1; d <= in.copies; ++d) {
    const int64_t pred = (in.old_me - d + n) % n;
    if (pred != in.old_me && !alive[size_t(pred)] && p.holder[size_t(pred)] == in.old_me)
      p.adopted.push_back(pred);
  }
  p.send.assign(in.new_owners.size(), {});
  for (size_t j = 0; j < in.new_owners.size(); ++j)
    for (size_t t : with_state(in, in.new_owners[j]))
      if (p.holder[size_t(p.owner_of[t])] == in.old_me)
        (int64_t(j) == in.new_me ? p.keep : p.send[j]).push_back(t);
  return p;
}

}  // namespace troupe::actors
