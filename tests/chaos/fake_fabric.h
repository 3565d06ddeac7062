// A Fabric that records what is sent through it and completes sends when the test says:
// the inner fabric under chaos::FaultyFabric in its tests.
#pragma once

#include <chrono>
#include <mutex>
#include <vector>

#include "runtime/fabric.h"

namespace troupe::chaos::testing {

struct SentMessage {
  runtime::PeerId peer = 0;
  runtime::Envelope envelope;
  std::vector<std::span<const std::byte>> spans;  // as handed over (pointers compared)
  std::vector<std::vector<std::byte>> bytes;      // their contents at the send
  runtime::SendDoneFn done;
  std::chrono::steady_clock::time_point at;
};

class FakeFabric final : public runtime::Fabric {
 public:
  // Shared with the test, which keeps looking after the decorator took ownership.
  struct Log {
    std::mutex mutex;
    std::vector<SentMessage> sent;
    runtime::Status refuse;  // not ok: every send is refused with it
    std::string node_id;
    size_t size() {
      std::lock_guard lock(mutex);
      return sent.size();
    }
    // Runs the `done` of send i (once) with `st`.
    void complete(size_t i, runtime::Status st = {}) {
      runtime::SendDoneFn done;
      {
        std::lock_guard lock(mutex);
        done = std::move(sent.at(i).done);
        sent.at(i).done = nullptr;
      }
      if (done) done(st);
    }
  };

  explicit FakeFabric(std::shared_ptr<Log> log) : log_(std::move(log)) {}

  runtime::Result<uint16_t> listen(uint16_t) override { return uint16_t(1); }
  runtime::Result<runtime::PeerId> connect(const std::string&) override {
    return runtime::PeerId(1);
  }
  void set_node_id(const std::string& id) override {
    std::lock_guard lock(log_->mutex);
    log_->node_id = id;
  }
  runtime::Status send(runtime::PeerId peer, const runtime::Envelope& e,
                       std::span<const std::span<const std::byte>> payloads,
                       runtime::SendDoneFn done) override {
    std::lock_guard lock(log_->mutex);
    if (!log_->refuse.ok()) return log_->refuse;
    SentMessage m{peer,
                  e,
                  {payloads.begin(), payloads.end()},
                  {},
                  std::move(done),
                  std::chrono::steady_clock::now()};
    for (const auto& p : payloads) m.bytes.emplace_back(p.begin(), p.end());
    log_->sent.push_back(std::move(m));
    return {};
  }
  void disconnect(runtime::PeerId) override {}
  runtime::Status flush(std::chrono::milliseconds) override { return {}; }
  runtime::Result<runtime::Message> receive(std::chrono::milliseconds) override {
    return runtime::Status(runtime::Code::timeout, "fake");
  }
  void set_epoch(uint64_t e) override { epoch_ = e; }
  uint64_t epoch() const override { return epoch_; }
  runtime::FabricCounters counters() const override { return {}; }

 private:
  std::shared_ptr<Log> log_;
  uint64_t epoch_ = 0;
};

}  // namespace troupe::chaos::testing
