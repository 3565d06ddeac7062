#pragma once
// The canonical tree reduction (train/tree.h) folded as its leaves arrive, in any order and
// from any thread: a node is merged as soon as both its halves are there, so a step holds
// about threads + log2(micro-batches) gradient buffers instead of one per micro-batch. The
// pairs merged, and their order within each node (left += right), are tree_fold's: the
// same bits.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "train/tree.h"

namespace troupe::model {

class TreeStream {
 public:
  // pieces: canonical nodes (tree_pieces), with ids relative to the first leaf: each is
  // folded on its own, into the slot of its leftmost leaf's value.
  explicit TreeStream(const std::vector<TreeNode>& pieces) {
    for (const TreeNode& p : pieces) {
      if (p.hi <= p.lo) throw std::invalid_argument("TreeStream: an empty piece");
      if (leaf_.size() < size_t(p.hi)) leaf_.resize(size_t(p.hi), -1);
      root_.push_back(add(p.lo, p.hi, -1));
    }
    slot_.assign(nodes_.size(), kAbsent);
  }

  // Leaf i's value is in buffer `slot`. Folds upwards while the other half of a node is
  // there: merge(into, from) adds buffer `from` into buffer `into` (the left half's), and
  // `from` is free once it returns. merge runs without the lock: two leaves arriving at once
  // merge different nodes in parallel.
  void arrive(int64_t i, size_t slot, const std::function<void(size_t, size_t)>& merge) {
    int node = leaf_.at(size_t(i));
    std::unique_lock<std::mutex> lock(mu_);
    if (node < 0 || slot_[size_t(node)] != kAbsent)
      throw std::logic_error("TreeStream: leaf " + std::to_string(i) +
                             " arrived twice or is "
                             "in no piece");
    slot_[size_t(node)] = int64_t(slot);
    for (;;) {
      const int parent = nodes_[size_t(node)].parent;
      if (parent < 0) return;
      const Node& p = nodes_[size_t(parent)];
      const int64_t into = slot_[size_t(p.left)], from = slot_[size_t(p.right)];
      if (into < 0 || from < 0) return;  // the other half is still coming: its arrival merges
      slot_[size_t(p.left)] = slot_[size_t(p.right)] = kMerged;
      lock.unlock();
      merge(size_t(into), size_t(from));
      lock.lock();
      slot_[size_t(parent)] = into;
      node = parent;
    }
  }

  // The most nodes done and not yet merged while leaves arrive in id order, counted before
  // each leaf starts: the buffers held when every thread waits for one (GradEngine's cap).
  int64_t in_order_held_max() const {
    std::vector<char> done(nodes_.size(), 0);
    int64_t held = 0, most = 0;
    for (const int leaf : leaf_) {
      if (leaf < 0) continue;
      most = std::max(most, held);
      int node = leaf;
      done[size_t(node)] = 1, ++held;
      for (int parent = nodes_[size_t(node)].parent; parent >= 0;
           node = parent, parent = nodes_[size_t(node)].parent) {
        const Node& p = nodes_[size_t(parent)];
        if (!done[size_t(p.left)] || !done[size_t(p.right)]) break;
        done[size_t(parent)] = 1, --held;  // two halves become their parent
      }
    }
    return most;
  }

  // The buffer holding piece k's fold once all its leaves arrived.
  size_t piece_slot(size_t k) const {
    const int64_t s = slot_.at(size_t(root_.at(k)));
    if (s < 0) throw std::logic_error("TreeStream: piece " + std::to_string(k) + " is not done");
    return size_t(s);
  }

 private:
  static constexpr int64_t kAbsent = -1, kMerged = -2;
  struct Node {
    int parent = -1, left = -1, right = -1;
  };
  std::vector<Node> nodes_;
  std::vector<int> leaf_;  // leaf id -> its node
  std::vector<int> root_;  // piece -> its node
  std::vector<int64_t> slot_;
  std::mutex mu_;

  int add(int64_t lo, int64_t hi, int parent) {
    const int id = int(nodes_.size());
    nodes_.push_back({parent, -1, -1});
    if (hi - lo == 1) {
      leaf_[size_t(lo)] = id;
      return id;
    }
    const int64_t mid = tree_split(lo, hi);
    const int left = add(lo, mid, id);
    const int right = add(mid, hi, id);
    nodes_[size_t(id)].left = left, nodes_[size_t(id)].right = right;
    return id;
  }
};

}  // namespace troupe::model
