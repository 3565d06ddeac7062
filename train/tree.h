#pragma once
// The canonical tree reduction of DESIGN §5: every sum across micro-batches follows it.
#include <algorithm>
#include <cstdint>
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

// Σ parts[lo..hi) in canonical tree order, for scalars.
template <typename T>
T tree_sum(const std::vector<T>& parts, int64_t lo, int64_t hi) {
  if (hi - lo == 1) return parts[lo];
  const int64_t mid = tree_split(lo, hi);
  return tree_sum(parts, lo, mid) + tree_sum(parts, mid, hi);
}

// In-place canonical tree reduction of buffers bufs[0..n) (each `len` floats) into
// bufs[0]; elementwise, parallel over element ranges (which cannot change any bit).
template <typename T>
void tree_reduce(std::vector<std::vector<T>>& bufs, int64_t lo, int64_t hi, int64_t len,
                 int threads) {
  if (hi - lo <= 1) return;
  const int64_t mid = tree_split(lo, hi);
  tree_reduce(bufs, lo, mid, len, threads);
  tree_reduce(bufs, mid, hi, len, threads);
  T* a = bufs[lo].data();
  const T* b = bufs[mid].data();
  const int64_t chunk = 1 << 16;
  parallel_for((len + chunk - 1) / chunk, threads, [&](int64_t c, int) {
    const int64_t e = std::min(len, (c + 1) * chunk);
    for (int64_t i = c * chunk; i < e; ++i) a[i] += b[i];
  });
}

}  // namespace troupe::model
