// GET /history's store (launch/control_history.h): the newest steps and events, oldest
// first, within its counts and bytes, whatever the sizes of the events that wrap its ring;
// and it allocates nothing that stays once it is built (the soak's flat coordinator).
#include "launch/control_history.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <random>
#include <string>

namespace troupe::launch {
namespace {

using nlohmann::json;

json event(int64_t i, size_t text_bytes) {
  return {{"t_s", double(i)}, {"kind", "view"}, {"i", i}, {"text", std::string(text_bytes, 'x')}};
}

TEST(ControlHistory, KeepsTheNewestStepsOldestFirst) {
  ControlHistory h(3, 4, 4096);
  for (int64_t s = 0; s < 5; ++s) {
    const double val = 2.5;
    h.add_step({s, 1.0 + double(s), 100, double(s), val, s == 4});
  }
  const json j = h.to_json();
  ASSERT_EQ(j["steps"].size(), 3u);
  EXPECT_EQ(j["steps"][0]["step"], 2);
  EXPECT_EQ(j["steps"][2]["step"], 4);
  EXPECT_EQ(j["steps"][2]["loss"], 5.0);
  EXPECT_FALSE(j["steps"][1].contains("val_loss"));
  EXPECT_EQ(j["steps"][2]["val_loss"], 2.5);
}

// Events of random sizes through a small ring: what comes back is always a suffix of what
// went in, each event whole, within both limits, and as many as fit.
TEST(ControlHistory, EventsWrapTheirRingAndStayWholeAndInOrder) {
  const size_t events_max = 20, bytes_max = 2000;
  ControlHistory h(1, events_max, bytes_max);
  std::mt19937 rng(7);
  std::vector<json> sent;
  for (int64_t i = 0; i < 500; ++i) {
    sent.push_back(event(i, size_t(rng() % 150)));
    h.add_event(sent.back());
    const json got = h.to_json()["events"];
    ASSERT_GE(got.size(), 1u);
    ASSERT_LE(got.size(), events_max);
    size_t bytes = 0;
    for (size_t k = 0; k < got.size(); ++k) {
      ASSERT_EQ(got[k], sent[sent.size() - got.size() + k]) << "after event " << i;
      bytes += got[k].dump().size();
    }
    ASSERT_LE(bytes, bytes_max);
    // As many as fit: one more (the next older) would not have, by count or by bytes when
    // laid out end to end with the tail of one lap left unused (at most one line's worth).
    if (got.size() < sent.size() && got.size() < events_max) {
      EXPECT_GT(bytes + sent[sent.size() - got.size() - 1].dump().size(), bytes_max / 2);
    }
  }
}

TEST(ControlHistory, AnEventTooLongIsKeptAsItsKindAndLength) {
  ControlHistory h(1, 10, 1000);
  h.add_event(event(1, 400));
  const json got = h.to_json()["events"];
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["kind"], "view");
  EXPECT_NE(got[0]["text"].get<std::string>().find("too long"), std::string::npos) << got[0];
}

// The store's memory is taken when it is built: a long job adds nothing to the heap.
TEST(ControlHistory, TakesNoMoreMemoryAsTheJobGoesOn) {
  ControlHistory h(2000, 500, 160 * 1024);
  const auto add = [&](int64_t i) {
    h.add_step({i, 1, 1, 1, 0, false});
    h.add_event(event(i, size_t(i % 300)));
  };
  // A first lap of every event size, so that malloc's per-thread caches of freed blocks
  // (counted as in use) hold what they will hold; then 19,000 more steps and events.
  for (int64_t i = 0; i < 1000; ++i) add(i);
  const size_t before = mallinfo2().uordblks;
  for (int64_t i = 1000; i < 20000; ++i) add(i);
  const size_t after = mallinfo2().uordblks;
  EXPECT_LE(after, before + 1024) << "heap in use grew from " << before << " to " << after;
  EXPECT_EQ(h.steps(), 2000u);
  EXPECT_GT(h.events(), 400u);
}

}  // namespace
}  // namespace troupe::launch
