// A new expert placement moved as little as it can: the same balance, with as many slots as
// possible keeping the expert they hold now (issue 15: a rebalance migrates only what it must).
//
// A shard's load is the sum of its slots' loads, whatever their order, so two placements
// that give each shard the same multiset of experts balance alike; and shards of one node
// group are interchangeable (an expert group kept inside a node group stays inside it). So
// the pass, per MoE layer, gives each new shard's experts to the old shard of its node group
// that holds most of them (greedily, the largest overlap first, ties to the lower index),
// then puts every expert a shard keeps back into the slot that holds it now. The result's
// per-shard multisets are a permutation of `next`'s within node groups: imbalance unchanged.
#pragma once

#include <cstdint>

#include "train/eplb.h"

namespace troupe::model {

// `next` reordered as above against `now` (both MoE layers × slots, `shards` shards of
// consecutive slots, `node_groups` groups of consecutive shards). logcnt is unchanged,
// log2phy is rebuilt. Throws std::invalid_argument when the shapes do not agree.
EplbPlacement keep_in_place(const EplbPlacement& next, const EplbPlacement& now, int64_t shards,
                            int64_t node_groups);

// Slots whose expert differs between two placements of the same shape.
int64_t moved_slots(const EplbPlacement& a, const EplbPlacement& b);

}  // namespace troupe::model
