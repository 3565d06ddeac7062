#include "actors/protocol.h"

#include <algorithm>

#include "runtime/dispatch.h"

namespace troupe::actors {

std::string_view type_name(uint32_t type) {
  static constexpr std::string_view train[] = {"StepBegin",
                                               "Stats",
                                               "GradSlices",
                                               "NormParts",
                                               "Apply",
                                               "Weights",
                                               "StepDone",
                                               "Ready",
                                               "Finish",
                                               "Final",
                                               "BuddyState",
                                               "Recover",
                                               "StateTransfer",
                                               "Recovered",
                                               "EngramSlices",
                                               "Commit",
                                               "CheckpointWritten",
                                               "Reshape",
                                               "Replica",
                                               "FetchAgain",
                                               "CheckpointNow",
                                               "ExpertWeights",
                                               "ExpertForward",
                                               "ExpertOutputs",
                                               "ExpertBackward",
                                               "ExpertGrads",
                                               "EngramLookup",
                                               "EngramRows",
                                               "EngramNorm",
                                               "EngramDump",
                                               "EngramTables",
                                               "EngramCopy",
                                               "EngramState",
                                               "EngramSwap",
                                               "EngramSwapped",
                                               "Take",
                                               "RolloutAsk",
                                               "RolloutGroup",
                                               "ExpertOwn",
                                               "ExpertOwned",
                                               "ExpertLeaf",
                                               "ExpertRowsNote",
                                               "ExpertNorm"};
  static_assert(std::size(train) == train_types_end - step_begin_type);
  if (type >= step_begin_type && type < train_types_end) return train[type - step_begin_type];
  return runtime::control_type_name(type);
}

uint32_t type_of_name(std::string_view name) {
  if (name == "unknown") return 0;  // type_name's word for the gaps
  for (uint32_t t = 1; t < train_types_end; ++t)
    if (type_name(t) == name) return t;
  return 0;
}

bool unflatten_counts(const google::protobuf::RepeatedField<int64_t>& layers,
                      const runtime::Payload& payload, std::vector<std::vector<int64_t>>* out) {
  std::vector<int64_t> flat;
  if (!read_payload(payload, &flat)) return false;
  size_t at = 0;
  out->assign(size_t(layers.size()), {});
  for (int l = 0; l < layers.size(); ++l) {
    if (layers[l] < 0 || size_t(layers[l]) > flat.size() - at) return false;
    (*out)[size_t(l)].assign(flat.begin() + int64_t(at), flat.begin() + int64_t(at) + layers[l]);
    at += size_t(layers[l]);
  }
  return at == flat.size();
}

std::string check_new_pieces(const std::vector<model::TreeNode>& have,
                             const google::protobuf::RepeatedPtrField<train::Node>& incoming,
                             int64_t total, int64_t n_micro_batches) {
  for (int i = 0; i < incoming.size(); ++i) {
    const model::TreeNode n{incoming[i].lo(), incoming[i].hi()};
    if (n.lo < 0 || n.lo >= n.hi || n.hi > n_micro_batches) return "a piece outside the batch";
    const auto same = [&](const model::TreeNode& o) { return o == n; };
    if (std::any_of(have.begin(), have.end(), same) ||
        std::any_of(incoming.begin(), incoming.begin() + i,
                    [&](const train::Node& o) { return o.lo() == n.lo && o.hi() == n.hi; }))
      return "a piece received twice";
  }
  if (int64_t(have.size()) + incoming.size() > total) return "more pieces than the step has";
  return "";
}

void add_engram_piece(const model::EngramGrad<float>& g, const model::TreeNode& node,
                      train::EngramSlices* msg, std::vector<runtime::Payload>* payloads) {
  train::Node* n = msg->add_nodes();
  n->set_lo(node.lo), n->set_hi(node.hi);
  std::vector<int64_t> ids;
  std::vector<float> values;
  for (const model::SparseRows<float>& t : g) {
    msg->add_table_rows(int64_t(t.ids.size()));
    ids.insert(ids.end(), t.ids.begin(), t.ids.end());
    values.insert(values.end(), t.values.begin(), t.values.end());
  }
  payloads->push_back(owned_payload(std::move(ids)));
  payloads->push_back(owned_payload(std::move(values)));
}

bool read_engram_piece(const train::EngramSlices& msg,
                       const std::vector<runtime::Payload>& payloads, int i,
                       const std::vector<model::EngramTableInfo>& tables,
                       model::EngramGrad<float>* out) {
  const size_t J = tables.size();
  if (i < 0 || i >= msg.nodes_size() ||
      size_t(msg.table_rows_size()) != J * size_t(msg.nodes_size()) ||
      payloads.size() != 2 * size_t(msg.nodes_size()))
    return false;
  std::vector<int64_t> ids;
  std::vector<float> values;
  if (!read_payload(payloads[2 * size_t(i)], &ids) ||
      !read_payload(payloads[2 * size_t(i) + 1], &values))
    return false;
  out->assign(J, {});
  size_t at_id = 0, at_value = 0;
  for (size_t j = 0; j < J; ++j) {
    const int64_t rows = msg.table_rows(int(size_t(i) * J + j)), D = tables[j].dim;
    if (rows < 0 || size_t(rows) > ids.size() - at_id ||
        size_t(rows * D) > values.size() - at_value)
      return false;
    model::SparseRows<float>& t = (*out)[j];
    t.ids.assign(ids.begin() + int64_t(at_id), ids.begin() + int64_t(at_id) + rows);
    t.values.assign(values.begin() + int64_t(at_value),
                    values.begin() + int64_t(at_value) + rows * D);
    for (size_t r = 0; r < t.ids.size(); ++r)  // ascending, unique, inside the table
      if (t.ids[r] < 0 || t.ids[r] >= tables[j].rows || (r > 0 && t.ids[r] <= t.ids[r - 1]))
        return false;
    at_id += size_t(rows), at_value += size_t(rows * D);
  }
  return at_id == ids.size() && at_value == values.size();
}

}  // namespace troupe::actors
