// Who sends which optimizer state to whom when a recovery renumbers the workers (DESIGN §4),
// as a pure function of the view before, the survivors and the tensor table: no actor, no
// model. Every survivor computes the same plan from the same Recover, each from its own
// seat (old_me, new_me), so the transfers it sends are the ones the others wait for.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/params.h"

namespace troupe::actors {

struct RecoveryInput {
  int64_t old_workers = 0, old_me = 0;  // the view the recovery starts from, this worker's seat
  int64_t copies = 0;                   // buddies per owner in that view (buddy_count)
  std::vector<int64_t> old_index;       // Recover.old_index: new index → old index
  int64_t new_me = 0;                   // this worker's new index
  std::vector<model::FlatRange> old_owners, new_owners;  // by old / new index
  std::vector<model::ParamInfo> tensors;                 // the table
  std::vector<int64_t> state_floats;                     // by tensor: its optimizer state (0: none)
};

struct RecoveryPlan {
  std::string error;  // non-empty: the recovery cannot go on (a share's state is gone)
  // By old owner: the survivor (old index) that holds its share's state now: itself, or the
  // first surviving of its buddies; -1 when none survived.
  std::vector<int64_t> holder;
  std::vector<int64_t> owner_of;  // by tensor: its old owner (-1: none)
  // Lost predecessors whose shares this worker holds now (from their buddy copies).
  std::vector<int64_t> adopted;
  // By new index: the tensors (with state, table order) this worker sends there; none to
  // itself. Every survivor sends every other one a transfer, empty or not.
  std::vector<std::vector<size_t>> send;
  std::vector<size_t> keep;  // the tensors of its new share that it holds itself
};

RecoveryPlan plan_recovery(const RecoveryInput& in);

}  // namespace troupe::actors
