#pragma once
// The canonical tree reduction of DESIGN §5: every sum across micro-batches follows it.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/parallel_for.h"

namespace troupe::model {

using kernels::parallel_for;

// The split point of the canonical binary tree over ids [lo, hi): the largest power of
// two strictly below (hi − lo), so every left subtree is an aligned power of two.
inline int64_t tree_split(int64_t lo, int64_t hi) {
  int64_t span = 1;
  while (span * 2 < hi - lo) span *= 2;
  return lo + span;
}

// A node of the canonical tree: the micro-batch ids [lo, hi).
struct TreeNode {
  int64_t lo = 0, hi = 0;
  bool operator==(const TreeNode&) const = default;
};

// The maximal nodes of the canonical tree over [0, n) that lie inside [lo, hi), in id order:
// what a worker holding micro-batches [lo, hi) sends (DESIGN §5). Any contiguous partition
// of [0, n) yields pieces that combine, in tree order, into the bits of the whole tree.
inline void tree_pieces_into(int64_t node_lo, int64_t node_hi, int64_t lo, int64_t hi,
                             std::vector<TreeNode>& out) {
  if (node_hi <= lo || hi <= node_lo) return;
  if (lo <= node_lo && node_hi <= hi) {
    out.push_back({node_lo, node_hi});
    return;
  }
  const int64_t mid = tree_split(node_lo, node_hi);
  tree_pieces_into(node_lo, mid, lo, hi, out);
  tree_pieces_into(mid, node_hi, lo, hi, out);
}
inline std::vector<TreeNode> tree_pieces(int64_t n, int64_t lo, int64_t hi) {
  std::vector<TreeNode> out;
  if (n > 0) tree_pieces_into(0, n, lo, hi, out);
  return out;
}

// The one canonical tree reduction (DESIGN §5): node [lo, hi) is `at(lo, hi)` when that
// returns a value (a leaf, or a piece reduced elsewhere), else merge(left, right) of its two
// halves, left first. Every sum across micro-batches is this fold; only the values differ.
template <class R, class At, class Merge>
R tree_fold(int64_t lo, int64_t hi, const At& at, const Merge& merge) {
  if (std::optional<R> here = at(lo, hi)) return std::move(*here);
  const int64_t mid = tree_split(lo, hi);
  R left = tree_fold<R>(lo, mid, at, merge);
  merge(left, tree_fold<R>(mid, hi, at, merge));
  return left;
}

// Node [lo, hi) combined from pieces reduced elsewhere: find(lo, hi) gives the piece of
// exactly that node (or null), else merge(left, right) of its two halves (tree_fold). `what`
// names the caller in the error for a micro-batch no piece covers (std::invalid_argument).
template <class R, class Find, class Merge>
R combine_in_tree(int64_t lo, int64_t hi, const Find& find, const Merge& merge, const char* what) {
  const auto at = [&](int64_t a, int64_t b) -> std::optional<R> {
    if (const R* r = find(a, b)) return *r;
    if (b - a <= 1)
      throw std::invalid_argument(std::string(what) + ": no piece covers micro-batch " +
                                  std::to_string(a));
    return std::nullopt;
  };
  return tree_fold<R>(lo, hi, at, merge);
}

// Σ parts[lo..hi) in canonical tree order, for scalars.
template <typename T>
T tree_sum(const std::vector<T>& parts, int64_t lo, int64_t hi) {
  const auto leaf = [&](int64_t a, int64_t b) -> std::optional<T> {
    if (b - a == 1) return parts[a];
    return std::nullopt;
  };
  return tree_fold<T>(lo, hi, leaf, [](T& left, const T& right) { left = left + right; });
}

// In place: items[lo] becomes the canonical tree reduction of items[lo, hi), merged pairwise
// by add(into, from) (items[lo, hi) are left as scratch). An empty or single range: nothing.
template <class Item, class Add>
void tree_reduce_in_place(std::vector<Item>& items, int64_t lo, int64_t hi, const Add& add) {
  if (hi - lo <= 1) return;
  const auto leaf = [](int64_t a, int64_t b) -> std::optional<int64_t> {
    if (b - a == 1) return a;
    return std::nullopt;
  };
  tree_fold<int64_t>(lo, hi, leaf, [&](int64_t& left, int64_t right) {
    add(items[size_t(left)], items[size_t(right)]);
  });
}

// Dense buffers bufs[lo..hi) (each `len` values) reduced into bufs[lo]; elementwise, parallel
// over element ranges (which cannot change any bit).
template <typename T>
void tree_reduce(std::vector<std::vector<T>>& bufs, int64_t lo, int64_t hi, int64_t len,
                 int threads) {
  tree_reduce_in_place(bufs, lo, hi, [&](std::vector<T>& into, const std::vector<T>& from) {
    T* a = into.data();
    const T* b = from.data();
    const int64_t chunk = 1 << 16;
    parallel_for((len + chunk - 1) / chunk, threads, [&](int64_t c, int) {
      const int64_t e = std::min(len, (c + 1) * chunk);
      for (int64_t i = c * chunk; i < e; ++i) a[i] += b[i];
    });
  });
}

}  // namespace troupe::model
