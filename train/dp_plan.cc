#include "train/dp_plan.h"

#include <algorithm>
#include <stdexcept>

namespace troupe::model {

std::vector<TreeNode> plan_ranges(int64_t n_mb, int64_t workers) {
  if (workers <= 0 || n_mb < 0) throw std::invalid_argument("plan_ranges: workers must be >= 1");
  std::vector<TreeNode> out;
  int64_t lo = 0;
  for (int64_t w = 0; w < workers; ++w) {
    const int64_t size = n_mb / workers + (w < n_mb % workers ? 1 : 0);
    out.push_back({lo, lo + size});
    lo += size;
  }
  return out;
}

std::vector<TreeNode> plan_pull_pieces(int64_t n_mb, int64_t workers, int64_t per_worker) {
  if (workers <= 0 || per_worker <= 0 || n_mb < 0)
    throw std::invalid_argument("plan_pull_pieces: workers and per_worker must be >= 1");
  int64_t g = 1;
  while ((n_mb + 2 * g - 1) / (2 * g) >= per_worker * workers) g *= 2;
  std::vector<TreeNode> out;
  for (int64_t lo = 0; lo < n_mb; lo += g)
    for (const TreeNode& p : tree_pieces(n_mb, lo, std::min(n_mb, lo + g))) out.push_back(p);
  return out;
}

std::vector<TreeNode> pull_order(std::vector<TreeNode> pieces) {
  std::stable_sort(pieces.begin(), pieces.end(), [](const TreeNode& a, const TreeNode& b) {
    if (a.hi - a.lo != b.hi - b.lo) return a.hi - a.lo > b.hi - b.lo;
    return a.lo < b.lo;
  });
  return pieces;
}

std::vector<FlatRange> plan_owners(const ParamTable& table, int64_t workers) {
  if (workers <= 0) throw std::invalid_argument("plan_owners: workers must be >= 1");
  const int64_t total = table.total();
  std::vector<FlatRange> out;
  int64_t lo = 0;
  size_t t = 0;
  const auto& all = table.all();
  for (int64_t w = 0; w < workers; ++w) {
    // Worker w's share ends at ⌈total·(w+1)/workers⌉; the run ends at the first tensor end
    // at or past it (the last worker takes the rest).
    const int64_t target = (total * (w + 1) + workers - 1) / workers;
    int64_t hi = lo;
    while (t < all.size() && (w + 1 == workers || hi < target)) {
      hi = all[t].offset + all[t].numel;
      ++t;
    }
    out.push_back({lo, hi});
    lo = hi;
  }
  return out;
}

}  // namespace troupe::model
