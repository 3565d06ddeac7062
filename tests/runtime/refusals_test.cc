// Refusals as events (runtime/refusals.h): the first refusal from a source for a cause in a
// window goes out at once, the rest as one summary naming how many; sources and causes are
// kept apart; a stranger varying its address cannot grow the throttle past its bound.
#include "runtime/refusals.h"

#include <gtest/gtest.h>

#include <string>

namespace troupe::runtime {
namespace {

using clock = RefusalThrottle::clock;
using std::chrono::milliseconds;

ConnectionRefusal from(const std::string& address, const std::string& cause = "malformed") {
  return {address, "", 0, cause, "not a handshake hello"};
}

TEST(Refusals, TheFirstGoesOutTheRestAsOneSummary) {
  RefusalThrottle t(milliseconds(1000));
  const clock::time_point t0{};
  ASSERT_EQ(t.note(from("10.0.0.1:4000"), t0).size(), 1u);
  EXPECT_FALSE(t.next_flush().has_value()) << "nothing held yet";
  for (int i = 0; i < 12; ++i)
    EXPECT_TRUE(t.note(from("10.0.0.1:" + std::to_string(4001 + i)), t0 + milliseconds(i)).empty())
        << "a second connection from the same host within the window is held";
  ASSERT_TRUE(t.next_flush().has_value());
  EXPECT_EQ(*t.next_flush(), t0 + milliseconds(1000));
  EXPECT_TRUE(t.flush(t0 + milliseconds(999)).empty()) << "the window is still open";
  const auto summaries = t.flush(t0 + milliseconds(1000));
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_EQ(summaries[0].more, 12u);
  EXPECT_EQ(summaries[0].window_ms, 1000);
  EXPECT_EQ(summaries[0].peer_address, "10.0.0.1:4012") << "the last one is the example";
  EXPECT_EQ(refusal_text(summaries[0]),
            "12 more refused from 10.0.0.1 in the last second (malformed: not a handshake hello)");
  EXPECT_FALSE(t.next_flush().has_value());
  EXPECT_EQ(t.note(from("10.0.0.1:5000"), t0 + milliseconds(1500)).size(), 1u)
      << "a new window: reported at once";
}

TEST(Refusals, ASummaryNotYetFlushedGoesOutBeforeTheNextWindowsFirst) {
  RefusalThrottle t(milliseconds(100));
  const clock::time_point t0{};
  t.note(from("10.0.0.1:1"), t0);
  t.note(from("10.0.0.1:2"), t0 + milliseconds(50));
  const auto out = t.note(from("10.0.0.1:3"), t0 + milliseconds(150));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].more, 1u);
  EXPECT_EQ(refusal_text(out[0]).find("1 more refused from 10.0.0.1 in the last 100 ms"), 0u)
      << refusal_text(out[0]);
  EXPECT_EQ(out[1].more, 0u);
  EXPECT_EQ(out[1].peer_address, "10.0.0.1:3");
}

TEST(Refusals, SourcesAndCausesAreKeptApart) {
  RefusalThrottle t(milliseconds(1000));
  const clock::time_point t0{};
  EXPECT_EQ(t.note(from("10.0.0.1:1"), t0).size(), 1u);
  EXPECT_EQ(t.note(from("10.0.0.2:1"), t0).size(), 1u) << "another host";
  EXPECT_EQ(t.note(from("10.0.0.1:2", "timed_out"), t0).size(), 1u) << "another cause";
  ConnectionRefusal evicted{"127.0.0.1:7000", "n2", 0, "evicted", "evicted at epoch 5", 5};
  EXPECT_EQ(t.note(evicted, t0).size(), 1u);
  evicted.node = "n3";
  EXPECT_EQ(t.note(evicted, t0).size(), 1u) << "a node is its own source, whatever its host";
}

TEST(Refusals, AStrangerVaryingItsAddressSharesOneSlotPastTheBound) {
  RefusalThrottle t(milliseconds(1000));
  const clock::time_point t0{};
  size_t reported = 0;
  for (size_t i = 0; i < refusal_sources_max + 50; ++i)
    reported += t.note(from("[fd00::" + std::to_string(i) + "]:80"), t0).size();
  EXPECT_EQ(reported, refusal_sources_max + 1) << "the bound, and one for 'other sources'";
  const auto summaries = t.flush(t0 + milliseconds(1000));
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_EQ(summaries[0].more, 49u);
  EXPECT_NE(refusal_text(summaries[0]).find("49 more refused from other sources"),
            std::string::npos)
      << refusal_text(summaries[0]);
}

TEST(Refusals, TheTextNamesWhoAndWhy) {
  EXPECT_EQ(refusal_text(from("127.0.0.1:5555")),
            "refused a connection from 127.0.0.1:5555: not a handshake hello");
  const ConnectionRefusal e{
      "127.0.0.1:7000", "n2", 0, "evicted", "evicted at epoch 5: the view dropped n2 as lost", 5};
  EXPECT_EQ(refusal_text(e),
            "refused a message from n2 at 127.0.0.1:7000: evicted at epoch 5: the view dropped "
            "n2 as lost");
  EXPECT_EQ(refusal_source(from("[::1]:80")), "::1");
  EXPECT_EQ(refusal_source(from("")), "an unknown peer");
  for (std::string_view c : refusal_causes) EXPECT_FALSE(c.empty());
}

}  // namespace
}  // namespace troupe::runtime
