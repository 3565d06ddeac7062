#include "actors/shard_rpc.h"

#include <fmt/format.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>

#include "actors/protocol.h"
#include "runtime/step_hook.h"

namespace troupe::actors {

using runtime::ActorMessage;

struct ShardRpc::Inbox {
  RequestOf request_of = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  std::set<uint64_t> waiting;                // asked, not answered: any other is dropped
  std::map<uint64_t, ActorMessage> answers;  // by request id, until taken
  std::atomic<uint64_t> next_request{1};
};

namespace {

// How often a wait for the shards looks whether a view change made its step moot.
constexpr std::chrono::milliseconds epoch_poll_ms{20};

// The client's mailbox: hands each awaited answer to the thread waiting for it.
caf::behavior inbox(caf::event_based_actor*, std::shared_ptr<ShardRpc::Inbox> in) {
  return {[in](ActorMessage& m) {
    uint64_t request = 0;
    if (!in->request_of(m, &request)) return;
    std::lock_guard<std::mutex> lock(in->mu);
    if (in->waiting.erase(request) == 0) return;
    in->answers.emplace(request, std::move(m));
    in->cv.notify_all();
  }};
}

}  // namespace

ShardRpc::ShardRpc(caf::actor_system& system, caf::actor router, std::string address,
                   RequestOf request_of)
    : router_(std::move(router)), address_(std::move(address)), inbox_(std::make_shared<Inbox>()) {
  inbox_->request_of = request_of;
  inbox_actor_ = system.spawn(inbox, inbox_);
  const std::string name = address_.substr(address_.find('/') + 1);
  caf::anon_send(router_, runtime::register_atom::value, name, inbox_actor_);
}

ShardRpc::~ShardRpc() {
  caf::anon_send_exit(inbox_actor_, caf::exit_reason::user_shutdown);
}

uint64_t ShardRpc::expect() {
  std::lock_guard<std::mutex> lock(inbox_->mu);
  const uint64_t request = inbox_->next_request++;
  inbox_->waiting.insert(request);
  return request;
}

void ShardRpc::send(ActorMessage m, uint64_t epoch) {
  m.from = address_;
  m.epoch = epoch;
  caf::anon_send(router_, std::move(m));
}

std::vector<ActorMessage> ShardRpc::await(const std::vector<uint64_t>& requests,
                                          const std::vector<std::string>& shards, uint64_t epoch,
                                          std::chrono::milliseconds timeout,
                                          const std::string& what) {
  std::unique_lock<std::mutex> lock(inbox_->mu);
  const auto answered = [&] {
    for (uint64_t r : requests)
      if (!inbox_->answers.count(r)) return false;
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool moot = false;
  while (!answered() && std::chrono::steady_clock::now() < deadline) {
    if ((moot = runtime::node_epoch() > epoch)) break;
    inbox_->cv.wait_for(lock, epoch_poll_ms);  // a view change wakes nobody: look again soon
  }
  if (!answered()) {
    std::string missing;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (!inbox_->answers.count(requests[i]))
        missing += (missing.empty() ? "" : ", ") + shards.at(i);
      inbox_->waiting.erase(requests[i]);
      inbox_->answers.erase(requests[i]);
    }
    if (moot)
      throw StepAborted(fmt::format("epoch {} began while {} waited for shards {}",
                                    runtime::node_epoch(), what, missing));
    throw std::runtime_error(
        fmt::format("shards {} did not answer {} within {} ms", missing, what, timeout.count()));
  }
  std::vector<ActorMessage> out;
  for (uint64_t r : requests) {
    auto it = inbox_->answers.find(r);
    out.push_back(std::move(it->second));
    inbox_->answers.erase(it);
  }
  return out;
}

}  // namespace troupe::actors
