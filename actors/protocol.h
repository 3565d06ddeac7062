// The message types of the training roles (train.proto) and small helpers to build and
// read ActorMessages. Types start at control_types_end: below it is the runtime's.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "actors/train.pb.h"
#include "model/engram.h"
#include "runtime/actor_message.h"
#include "train/tree.h"

namespace troupe::actors {

enum TrainType : uint32_t {
  step_begin_type = runtime::control_types_end,
  stats_type,
  grad_slices_type,
  norm_parts_type,
  apply_type,
  weights_type,
  step_done_type,
  ready_type,
  finish_type,
  final_type,
  buddy_state_type,
  recover_type,
  state_transfer_type,
  recovered_type,
  engram_slices_type,
  commit_type,
  checkpoint_written_type,
  reshape_type,
  replica_type,
  fetch_again_type,
  checkpoint_now_type,
  expert_weights_type,
  expert_forward_type,
  expert_outputs_type,
  expert_backward_type,
  expert_grads_type,
  engram_lookup_type,
  engram_rows_type,
  engram_norm_type,
  engram_dump_type,
  engram_tables_type,
  engram_copy_type,
  engram_state_type,
  engram_swap_type,
  engram_swapped_type,
  take_type,
  rollout_ask_type,
  rollout_group_type,
  expert_own_type,
  expert_owned_type,
  expert_leaf_type,
  expert_rows_note_type,
  expert_norm_type,
  train_types_end,
};

// GRPO's rollout traffic (RolloutAsk, RolloutGroup, and the Weights streamed to rollout
// actors) is not fenced by epochs: a group is a pure function of (version, step, prompt), and
// a version's bits do not depend on the attempt of the step that made them. It carries this
// epoch, which no fabric or role drops as stale, so that a view change never loses it.
inline constexpr uint64_t unfenced_epoch = UINT64_MAX;

// The name of a message type (control.proto's or train.proto's) for logs; "unknown" else.
std::string_view type_name(uint32_t type);
// The message type named `name` (as type_name writes it: "Recover", "Heartbeat"), or 0 when
// no type has that name. Fault plans name types this way (chaos/fault_plan.h).
uint32_t type_of_name(std::string_view name);

template <class Proto>
runtime::ActorMessage make_message(const std::string& from, const std::string& to, uint32_t type,
                                   const Proto& body) {
  runtime::ActorMessage m;
  m.from = from, m.to = to, m.type = type;
  m.header = body.SerializeAsString();
  return m;
}

// A payload viewing memory of `owner` (no copy). The protocol keeps the bytes unchanged until
// the send completes; `owner` keeps them alive that long even when the sender exits first (an
// evicted node's worker ends with its GradSlices still in flight).
template <class T>
runtime::Payload view_payload(std::shared_ptr<const void> owner, const T* data, size_t count) {
  return {std::move(owner), std::as_bytes(std::span<const T>(data, count))};
}

// A payload owning a copy (for small vectors built on the spot).
template <class T>
runtime::Payload owned_payload(std::vector<T> values) {
  auto keep = std::make_shared<std::vector<T>>(std::move(values));
  return {keep, std::as_bytes(std::span<const T>(keep->data(), keep->size()))};
}

// Reads payload p as T values; false when its size is not a whole number of T.
template <class T>
bool read_payload(const runtime::Payload& p, std::vector<T>* out) {
  if (p.bytes.size() % sizeof(T) != 0) return false;
  out->resize(p.bytes.size() / sizeof(T));
  if (!p.bytes.empty()) std::memcpy(out->data(), p.bytes.data(), p.bytes.size());
  return true;
}

// Per-layer int64 counts ↔ (layer lengths, one flat payload).
inline void flatten_counts(const std::vector<std::vector<int64_t>>& counts,
                           google::protobuf::RepeatedField<int64_t>* layers,
                           std::vector<int64_t>* flat) {
  for (const auto& l : counts) {
    layers->Add(int64_t(l.size()));
    flat->insert(flat->end(), l.begin(), l.end());
  }
}
// Engram pieces ↔ EngramSlices (train.proto): appends node's gradient to the message, its
// two payloads to payloads; reads node i back, checking every count, size and row id
// against the tables (false when anything does not fit).
void add_engram_piece(const model::EngramGrad<float>& g, const model::TreeNode& node,
                      train::EngramSlices* msg, std::vector<runtime::Payload>* payloads);
bool read_engram_piece(const train::EngramSlices& msg,
                       const std::vector<runtime::Payload>& payloads, int i,
                       const std::vector<model::EngramTableInfo>& tables,
                       model::EngramGrad<float>* out);

// Whether a message's pieces (canonical tree nodes over n_micro_batches) may join the
// `have` ones of a step that has `total` pieces: "" if so, else why not (a node outside
// the batch or empty, one already received, more than the step has). A duplicated message
// is refused rather than summed twice.
std::string check_new_pieces(const std::vector<model::TreeNode>& have,
                             const google::protobuf::RepeatedPtrField<train::Node>& incoming,
                             int64_t total, int64_t n_micro_batches);

bool unflatten_counts(const google::protobuf::RepeatedField<int64_t>& layers,
                      const runtime::Payload& payload, std::vector<std::vector<int64_t>>* out);

}  // namespace troupe::actors
