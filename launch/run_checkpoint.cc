#include "launch/run_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "launch/commands.h"
#include "storage/journal.h"

namespace troupe::launch {

namespace {

std::string steps_list(const std::vector<int64_t>& steps) {
  std::string s;
  for (int64_t x : steps) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s.empty() ? "none" : s;
}

std::unique_ptr<storage::Journal> open_journal(const std::string& cmd, const std::string& run_dir) {
  const char* which = " is it the --run-dir of a troupe train or troupe launch run?";
  if (!std::filesystem::exists(run_dir))
    throw UsageError(cmd + ": " + run_dir + " not found;" + which);
  if (!std::filesystem::exists(run_dir + "/journal"))
    throw UsageError(cmd + ": " + run_dir + " has no journal, so no checkpoint;" + which);
  auto j = storage::Journal::open(run_dir, /*read_only=*/true);
  if (!j.ok()) throw UsageError(cmd + ": " + j.status().message());
  return std::move(j.value());
}

}  // namespace

storage::Manifest chosen_checkpoint(const std::string& cmd, const std::string& run_dir,
                                    int64_t step, std::string* source) {
  const std::unique_ptr<storage::Journal> journal = open_journal(cmd, run_dir);
  if (step >= 0) {
    const std::vector<int64_t> steps = journal->manifest_steps();
    if (std::find(steps.begin(), steps.end(), step) == steps.end())
      throw UsageError(cmd + ": no complete checkpoint of step " + std::to_string(step) + " in " +
                       run_dir + "; complete checkpoints: " + steps_list(steps));
    auto m = journal->manifest(step);
    if (!m.ok()) throw UsageError(cmd + ": " + m.status().message());
    *source = "the checkpoint of step " + std::to_string(step);
    return m.value();
  }
  auto m = storage::newest_good_checkpoint(run_dir, *journal, [](const std::string& w) {
    std::fprintf(stderr, "[checkpoint] %s\n", w.c_str());
  });
  if (!m.ok())
    throw UsageError(cmd + ": " + run_dir + " has no good checkpoint: " + m.status().message());
  *source = "the checkpoint of step " + std::to_string(m.value().step) + " (the newest good one)";
  return m.value();
}

}  // namespace troupe::launch
