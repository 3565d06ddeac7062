#pragma once
// The placement of a data-parallel step (DESIGN §5), as pure functions of the job and the
// number of workers: which logical micro-batches each worker computes, and which tensors
// each worker owns (updates with the optimizer and sends to the others, ZeRO-1 style).
// Placement never changes results: Trainer's data-parallel calls give the same bits for
// any placement. It only balances work.
#include <cstdint>
#include <vector>

#include "model/params.h"
#include "train/tree.h"

namespace troupe::model {

// Contiguous ranges of [0, n_mb), one per worker, sizes differing by at most one (the
// first n_mb % workers get one more). A worker beyond n_mb gets an empty range.
std::vector<TreeNode> plan_ranges(int64_t n_mb, int64_t workers);

// schedule = "pull" (docs/schedule.md): the pieces a train step is cut into, in id order.
// Blocks of g micro-batches, g the largest power of two that leaves at least
// per_worker · workers blocks (1 when there are fewer micro-batches), each block cut into
// the canonical tree's maximal nodes inside it (a block is one node but maybe the last).
// Any worker may compute any piece: the pieces partition [0, n_mb) into tree nodes.
std::vector<TreeNode> plan_pull_pieces(int64_t n_mb, int64_t workers, int64_t per_worker);

// The order pieces are handed out in: the most micro-batches first (a pulled step ends with
// the small pieces, so no worker starts a long one last), ties by id.
std::vector<TreeNode> pull_order(std::vector<TreeNode> pieces);

// Contiguous runs of whole tensors in table order, one per worker, covering the table:
// each run ends at the first tensor boundary at or past its share of the floats. A worker
// may own nothing when tensors are few and large.
std::vector<FlatRange> plan_owners(const ParamTable& table, int64_t workers);

}  // namespace troupe::model
