// Every message the runtime and the roles decode (runtime/control.proto, actors/train.proto),
// through the path a received message takes: runtime::Dispatcher decodes the header into the
// type's protobuf message, then the roles' own checks of what decoded (actors/protocol.cc:
// unflatten_counts, check_new_pieces, read_engram_piece) run on it and its payloads. A
// decoded message serializes and decodes again to the same bytes.
// Input: [u8 which message][u8 payload count (mod 5)][per payload: u16le n, n bytes][header].
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "actors/protocol.h"
#include "actors/train.pb.h"
#include "runtime/control.pb.h"
#include "runtime/dispatch.h"
#include "tests/fuzz/fuzz_check.h"

namespace troupe::actors {
namespace {

using runtime::ActorMessage;
using runtime::Verdict;

// Two Engram tables as a worker would hold them (rows prime, dim D).
const std::vector<model::EngramTableInfo>& engram_tables() {
  static const std::vector<model::EngramTableInfo> t = {{"t0", 0, 2, 0, 7, 2},
                                                        {"t1", 0, 3, 0, 11, 3}};
  return t;
}
constexpr int64_t micro_batches = 8;
constexpr int64_t pieces_total = 4;

template <class Proto>
void check_round_trip(const Proto& body) {
  const std::string once = body.SerializeAsString();
  Proto again;
  FUZZ_CHECK(again.ParseFromString(once), "a decoded message decodes again after serializing");
  FUZZ_CHECK(again.SerializeAsString() == once, "and serializes to the same bytes");
}

void check_counts(const google::protobuf::RepeatedField<int64_t>& layers,
                  const runtime::Payload& p) {
  std::vector<std::vector<int64_t>> counts;
  if (!unflatten_counts(layers, p, &counts)) return;
  size_t total = 0;
  for (const auto& l : counts) total += l.size();
  FUZZ_CHECK(total * sizeof(int64_t) == p.bytes.size(), "accepted counts use the payload whole");
}

void check_pieces(const google::protobuf::RepeatedPtrField<train::Node>& nodes) {
  static const std::vector<model::TreeNode> have = {{0, 2}};
  for (const auto& h : {std::vector<model::TreeNode>{}, have}) {
    if (!check_new_pieces(h, nodes, pieces_total, micro_batches).empty()) continue;
    for (const train::Node& n : nodes)
      FUZZ_CHECK(0 <= n.lo() && n.lo() < n.hi() && n.hi() <= micro_batches, "accepted pieces");
  }
}

void check_engram(const train::EngramSlices& es, const std::vector<runtime::Payload>& payloads) {
  check_pieces(es.nodes());
  for (int i = 0; i < es.nodes_size(); ++i) {
    model::EngramGrad<float> g;
    if (!read_engram_piece(es, payloads, i, engram_tables(), &g)) continue;
    for (size_t j = 0; j < g.size(); ++j) {
      const auto& t = g[j];
      FUZZ_CHECK(t.values.size() == t.ids.size() * size_t(engram_tables()[j].dim), "row sizes");
      for (size_t r = 0; r < t.ids.size(); ++r)
        FUZZ_CHECK(t.ids[r] >= 0 && t.ids[r] < engram_tables()[j].rows, "row ids in the table");
    }
  }
}

template <class Proto>
void on(runtime::Dispatcher& d, uint32_t type, std::function<void(const Proto&, ActorMessage&)> f) {
  d.on<Proto>(type, [f](const Proto& body, ActorMessage& m) -> Verdict {
    check_round_trip(body);
    if (f) f(body, m);
    return {};
  });
}

// The shard roles' messages (issues 15, 16): decoded, no check beyond that.
template <class Add, class None>
void add_shard_messages(Add& add, const None& none) {
  add(expert_weights_type, std::type_identity<train::ExpertWeights>{}, none);
  add(expert_forward_type, std::type_identity<train::ExpertForward>{}, none);
  add(expert_outputs_type, std::type_identity<train::ExpertOutputs>{}, none);
  add(expert_backward_type, std::type_identity<train::ExpertBackward>{}, none);
  add(expert_grads_type, std::type_identity<train::ExpertGrads>{}, none);
  add(engram_lookup_type, std::type_identity<train::EngramLookup>{}, none);
  add(engram_rows_type, std::type_identity<train::EngramRows>{}, none);
  add(engram_norm_type, std::type_identity<train::EngramNorm>{}, none);
  add(engram_dump_type, std::type_identity<train::EngramDump>{}, none);
  add(engram_tables_type, std::type_identity<train::EngramTables>{}, none);
  add(engram_copy_type, std::type_identity<train::EngramCopy>{}, none);
  add(engram_state_type, std::type_identity<train::EngramState>{}, none);
  add(engram_swap_type, std::type_identity<train::EngramSwap>{}, none);
  add(engram_swapped_type, std::type_identity<train::EngramSwapped>{}, none);
  add(take_type, std::type_identity<train::Take>{}, none);
  add(expert_own_type, std::type_identity<train::ExpertOwn>{}, none);
  add(expert_owned_type, std::type_identity<train::ExpertOwned>{}, none);
  add(expert_leaf_type, std::type_identity<train::ExpertLeaf>{}, none);
  add(expert_rows_note_type, std::type_identity<train::ExpertRowsNote>{}, none);
  add(expert_norm_type, std::type_identity<train::ExpertNorm>{}, none);
}

// The messages by the number the first input byte picks (its value modulo the count).
const runtime::Dispatcher& dispatcher(std::vector<uint32_t>* types) {
  static std::vector<uint32_t> all;
  static const runtime::Dispatcher d = [] {
    namespace c = troupe::control;
    using runtime::ControlType;
    runtime::Dispatcher d(type_name);
    auto add = [&](uint32_t t, auto tag, auto f) {
      using P = typename decltype(tag)::type;
      on<P>(d, t, std::function<void(const P&, ActorMessage&)>(f));
      all.push_back(t);
    };
    auto none = [](const auto&, ActorMessage&) {};
    add(runtime::hello_type, std::type_identity<c::Hello>{}, none);
    add(runtime::challenge_type, std::type_identity<c::Challenge>{}, none);
    add(runtime::proof_type, std::type_identity<c::Proof>{}, none);
    add(runtime::verdict_type, std::type_identity<c::Verdict>{}, none);
    add(runtime::welcome_type, std::type_identity<c::Welcome>{}, none);
    add(runtime::view_type, std::type_identity<c::View>{}, none);
    add(runtime::heartbeat_type, std::type_identity<c::Heartbeat>{}, none);
    add(runtime::shutdown_type, std::type_identity<c::Shutdown>{}, none);
    add(runtime::join_type, std::type_identity<c::Join>{}, none);
    add(runtime::node_error_type, std::type_identity<c::NodeError>{}, none);
    add(runtime::rejoin_type, std::type_identity<c::Rejoin>{}, none);
    add(step_begin_type, std::type_identity<train::StepBegin>{}, none);
    add(stats_type, std::type_identity<train::Stats>{}, [](const train::Stats& s, ActorMessage& m) {
      for (int i = 0; i < s.pieces_size() && size_t(i) < m.payloads.size(); ++i)
        check_counts(s.pieces(i).count_layers(), m.payloads[size_t(i)]);
    });
    add(grad_slices_type, std::type_identity<train::GradSlices>{},
        [](const train::GradSlices& g, ActorMessage&) { check_pieces(g.nodes()); });
    add(norm_parts_type, std::type_identity<train::NormParts>{}, none);
    add(apply_type, std::type_identity<train::Apply>{}, [](const train::Apply& a, ActorMessage& m) {
      if (m.payloads.size() == 1) check_counts(a.count_layers(), m.payloads[0]);
    });
    add(weights_type, std::type_identity<train::Weights>{}, none);
    add(step_done_type, std::type_identity<train::StepDone>{}, none);
    add(ready_type, std::type_identity<train::Ready>{}, none);
    add(finish_type, std::type_identity<train::Finish>{}, none);
    add(final_type, std::type_identity<train::Final>{}, none);
    add(buddy_state_type, std::type_identity<train::BuddyState>{}, none);
    add(recover_type, std::type_identity<train::Recover>{}, none);
    add(state_transfer_type, std::type_identity<train::StateTransfer>{}, none);
    add(recovered_type, std::type_identity<train::Recovered>{}, none);
    add(engram_slices_type, std::type_identity<train::EngramSlices>{},
        [](const train::EngramSlices& e, ActorMessage& m) { check_engram(e, m.payloads); });
    add(commit_type, std::type_identity<train::Commit>{}, none);
    add(checkpoint_written_type, std::type_identity<train::CheckpointWritten>{},
        [](const train::CheckpointWritten&, ActorMessage& m) {
          train::ShardList list;  // payload 0, as the coordinator reads it
          if (m.payloads.size() == 1 && list.ParseFromString(runtime::payload_text(m.payloads[0])))
            check_round_trip(list);
        });
    add(reshape_type, std::type_identity<train::Reshape>{}, none);
    add(replica_type, std::type_identity<train::Replica>{}, none);
    add(fetch_again_type, std::type_identity<train::FetchAgain>{}, none);
    add(checkpoint_now_type, std::type_identity<train::CheckpointNow>{}, none);
    add_shard_messages(add, none);
    return d;
  }();
  *types = all;
  return d;
}

}  // namespace
}  // namespace troupe::actors

// libprotobuf logs an ERROR line for each string field (train.proto's names) with invalid
// UTF-8 and refuses the message: a refusal the checks above see; the lines would only slow
// the fuzzer down.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace troupe;
  if (size < 2) return 0;
  std::vector<uint32_t> types;
  const runtime::Dispatcher& d = actors::dispatcher(&types);
  runtime::ActorMessage m;
  m.from = "n1/worker.0", m.to = "n0/coordinator";
  m.type = types[data[0] % types.size()];
  const size_t n_payloads = data[1] % 5;
  size_t at = 2;
  for (size_t i = 0; i < n_payloads && at + 2 <= size; ++i) {
    const size_t n = std::min<size_t>(size_t(data[at]) | size_t(data[at + 1]) << 8, size - at - 2);
    m.payloads.push_back(
        runtime::text_payload(std::string(reinterpret_cast<const char*>(data) + at + 2, n)));
    at += 2 + n;
  }
  m.header.assign(reinterpret_cast<const char*>(data) + std::min(at, size),
                  size - std::min(at, size));
  FUZZ_CHECK(d.takes(m.type), "every type picked is in the table");
  const runtime::Verdict v = d.dispatch(m);
  FUZZ_CHECK(!v || v->reason == runtime::Drop::undecodable, "only undecodable headers drop");
  return 0;
}
