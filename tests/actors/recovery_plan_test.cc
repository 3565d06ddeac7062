// plan_recovery (actors/recovery_plan.h) alone: for every survivor's seat, the plans agree —
// each tensor with state of each new share comes from exactly one survivor (kept or sent),
// and it is the one holding that share's state (its owner, or the first surviving buddy).
#include "actors/recovery_plan.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>

namespace troupe::actors {
namespace {

// Tensors of 10 floats each, the odd ones without optimizer state; owners by contiguous runs.
struct Table {
  std::vector<model::ParamInfo> tensors;
  std::vector<int64_t> state;
};

Table table(int64_t n) {
  Table t;
  for (int64_t i = 0; i < n; ++i) {
    model::ParamInfo p;
    p.name = fmt::format("t{}", i), p.offset = 10 * i, p.numel = 10;
    t.tensors.push_back(p);
    t.state.push_back(i % 2 == 0 ? 20 : 0);
  }
  return t;
}

std::vector<model::FlatRange> owners(int64_t tensors, int64_t workers) {
  std::vector<model::FlatRange> out;
  for (int64_t w = 0; w < workers; ++w)
    out.push_back({10 * (tensors * w / workers), 10 * (tensors * (w + 1) / workers)});
  return out;
}

RecoveryInput input(const Table& t, int64_t old_n, std::vector<int64_t> old_index, int64_t copies,
                    int64_t new_me) {
  RecoveryInput in;
  in.old_workers = old_n;
  in.old_me = old_index[size_t(new_me)];
  in.copies = copies;
  in.old_index = std::move(old_index);
  in.new_me = new_me;
  in.old_owners = owners(int64_t(t.tensors.size()), old_n);
  in.new_owners = owners(int64_t(t.tensors.size()), int64_t(in.old_index.size()));
  in.tensors = t.tensors;
  in.state_floats = t.state;
  return in;
}

// Every survivor's plan: (new owner, tensor) → how many survivors provide it.
std::map<std::pair<int64_t, size_t>, int> provided(const Table& t, int64_t old_n,
                                                   const std::vector<int64_t>& old_index,
                                                   int64_t copies) {
  std::map<std::pair<int64_t, size_t>, int> got;
  for (size_t me = 0; me < old_index.size(); ++me) {
    const RecoveryPlan p = plan_recovery(input(t, old_n, old_index, copies, int64_t(me)));
    EXPECT_EQ(p.error, "");
    EXPECT_TRUE(p.send[me].empty());  // nothing to itself
    for (size_t t2 : p.keep) ++got[{int64_t(me), t2}];
    for (size_t j = 0; j < p.send.size(); ++j)
      for (size_t t2 : p.send[j]) ++got[{int64_t(j), t2}];
  }
  return got;
}

void expect_each_once(const Table& t, int64_t old_n, const std::vector<int64_t>& old_index,
                      int64_t copies) {
  const auto got = provided(t, old_n, old_index, copies);
  const auto news = owners(int64_t(t.tensors.size()), int64_t(old_index.size()));
  size_t want = 0;
  for (size_t j = 0; j < news.size(); ++j)
    for (size_t i = 0; i < t.tensors.size(); ++i)
      if (t.state[i] > 0 && news[j].covers(t.tensors[i])) {
        ++want;
        auto it = got.find({int64_t(j), i});
        EXPECT_TRUE(it != got.end() && it->second == 1) << "tensor " << i << " to " << j;
      }
  EXPECT_EQ(got.size(), want);
}

TEST(PlanRecovery, OneLostEveryTensorOnce) {
  const Table t = table(12);
  expect_each_once(t, 3, {0, 2}, 1);     // the middle one lost
  expect_each_once(t, 3, {1, 2}, 1);     // the first
  expect_each_once(t, 4, {0, 1, 2}, 1);  // the last: its buddy is worker 0
  expect_each_once(t, 5, {0, 3, 4}, 2);  // two neighbours, two copies
  expect_each_once(t, 3, {0, 1, 2}, 1);  // nobody lost (a restart of nothing): moves nothing
}

TEST(PlanRecovery, TheBuddyAdoptsItsLostPredecessor) {
  const Table t = table(12);
  const RecoveryPlan p = plan_recovery(input(t, 3, {0, 2}, 1, 1));  // old worker 2, now 1
  EXPECT_EQ(p.holder, (std::vector<int64_t>{0, 2, 2}));
  EXPECT_EQ(p.adopted, (std::vector<int64_t>{1}));
  const RecoveryPlan q = plan_recovery(input(t, 3, {0, 2}, 1, 0));
  EXPECT_TRUE(q.adopted.empty());
}

TEST(PlanRecovery, AnOwnerAndAllItsBuddiesLostIsAnError) {
  const Table t = table(12);
  const RecoveryPlan p = plan_recovery(input(t, 4, {2, 3}, 1, 0));  // 0 and its buddy 1 lost
  EXPECT_NE(p.error.find("worker 0 and its buddies (the next worker) are all lost"),
            std::string::npos)
      << p.error;
  EXPECT_EQ(plan_recovery(input(t, 5, {0, 3, 4}, 2, 0)).error, "");  // survived with two copies
}

TEST(PlanRecovery, ARecoverThatDoesNotFitIsAnError) {
  const Table t = table(6);
  RecoveryInput in = input(t, 3, {0, 2}, 1, 0);
  in.old_index = {0, 0};
  EXPECT_NE(plan_recovery(in).error, "");
  in = input(t, 3, {0, 2}, 1, 0);
  in.old_index = {0, 7};
  EXPECT_EQ(plan_recovery(in).error, "Recover names an unknown worker");
  in = input(t, 3, {0, 2}, 1, 0);
  in.new_me = 5;
  EXPECT_NE(plan_recovery(in).error, "");
}

}  // namespace
}  // namespace troupe::actors
