// A Host's teardown: the router calls the fabric from its handlers, so the fabric must
// outlive every call the router is in. A coordinator process once SIGSEGVed in
// Bootstrap::connect on the router's thread while ~Host had already closed the fabric.
#include "runtime/host.h"

#include <gtest/gtest.h>

#include <atomic>
#include <caf/all.hpp>
#include <chrono>
#include <memory>
#include <thread>

namespace troupe::runtime {
namespace {

using std::chrono::milliseconds;

// What the fabric below saw; shared so that the test reads it after the fabric is gone.
struct Seen {
  std::atomic<bool> in_connect{false};
  std::atomic<bool> destroyed{false};
  std::atomic<bool> destroyed_during_a_call{false};
};

// A fabric whose connect() takes a while (a handshake on a loaded box), and which notes
// whether it was destroyed while a call was still running in it.
class SlowConnectFabric : public Fabric {
 public:
  static constexpr milliseconds connect_ms{300};
  explicit SlowConnectFabric(std::shared_ptr<Seen> seen) : seen_(std::move(seen)) {}
  ~SlowConnectFabric() override {
    seen_->destroyed_during_a_call = seen_->in_connect.load();
    seen_->destroyed = true;
  }
  Result<uint16_t> listen(uint16_t) override { return uint16_t(1); }
  Result<PeerId> connect(const std::string&) override {
    seen_->in_connect = true;
    std::this_thread::sleep_for(connect_ms);
    seen_->in_connect = false;
    return Status(Code::peer_down, "a test fabric: no peer");
  }
  void set_node_id(const std::string&) override {}
  Status send(PeerId, const Envelope&, std::span<const std::span<const std::byte>>,
              SendDoneFn) override {
    return Status(Code::peer_down, "a test fabric: no peer");
  }
  void disconnect(PeerId) override {}
  Status flush(milliseconds) override { return Status(); }
  Result<Message> receive(milliseconds) override {
    return Status(Code::timeout, "a test fabric: nothing arrives");
  }
  void set_epoch(uint64_t e) override { epoch_ = e; }
  uint64_t epoch() const override { return epoch_; }
  FabricCounters counters() const override { return {}; }

 private:
  std::shared_ptr<Seen> seen_;
  uint64_t epoch_ = 0;
};

TEST(Host, TheFabricOutlivesTheRoutersCallInto) {
  auto seen = std::make_shared<Seen>();
  HostOptions o;
  o.secret = "0123456789abcdef0123456789abcdef";
  o.fabric_factory = [seen](const FabricHandlers&) -> Result<std::unique_ptr<Fabric>> {
    return std::unique_ptr<Fabric>(new SlowConnectFabric(seen));
  };
  Result<std::unique_ptr<Host>> made = Host::create(o);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  std::unique_ptr<Host> host = std::move(made).value();
  caf::anon_send(host->router(), connect_atom::value, std::string("127.0.0.1:1"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!seen->in_connect && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(1));
  ASSERT_TRUE(seen->in_connect) << "the router never called connect";
  host.reset();  // while the router is inside connect()
  EXPECT_TRUE(seen->destroyed);
  EXPECT_FALSE(seen->destroyed_during_a_call) << "~Host closed the fabric under the router";
}

}  // namespace
}  // namespace troupe::runtime
