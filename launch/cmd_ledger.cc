// `troupe ledger DIR [--check]`: the run directory's journal, record by record, or the data
// ledger's check (launch/ledger.h): every micro-batch up to the last committed step
// consumed exactly once across every kill, resume and rollback.
#include <cstdio>
#include <optional>

#include "launch/commands.h"
#include "launch/ledger.h"
#include "storage/journal.h"

namespace troupe::launch {

namespace {

// M, the micro-batches of a step: train.batch_size / train.micro_batch_rows of meta/job.
int64_t micro_batches_of(const storage::Journal& j, const std::string& run_dir) {
  const std::optional<std::string> meta = j.meta("job");
  if (!meta)
    throw UsageError("ledger: " + run_dir + "/journal has no meta/job (the job's config); " +
                     "was it written by troupe train or troupe launch?");
  const nlohmann::json job = nlohmann::json::parse(*meta, nullptr, false);
  const nlohmann::json* train = job.is_object() && job.contains("train") ? &job["train"] : nullptr;
  const bool have = train && train->is_object() && train->value("batch_size", 0) > 0 &&
                    train->value("micro_batch_rows", 0) > 0;
  if (!have)
    throw UsageError(
        "ledger: meta/job of " + run_dir +
        "/journal lacks train.batch_size or train.micro_batch_rows: " + meta->substr(0, 200));
  return (*train)["batch_size"].get<int64_t>() / (*train)["micro_batch_rows"].get<int64_t>();
}

void run_ledger(const std::string& run_dir, bool check) {
  auto opened = storage::Journal::open(run_dir, /*read_only=*/true);
  if (!opened.ok()) throw UsageError("ledger: " + opened.status().message());
  const storage::Journal& journal = *opened.value();
  const std::vector<nlohmann::json> records = journal.records();
  if (!check) {
    for (const auto& r : records) std::printf("%s\n", ledger_line(r).c_str());
    return;
  }
  const LedgerReport report = check_ledger(records, micro_batches_of(journal, run_dir));
  for (const auto& p : report.problems) std::printf("%s\n", p.c_str());
  if (report.problems_left_off > 0)
    std::printf("... and %ld more\n", long(report.problems_left_off));
  if (!report.ok()) throw RunFailed(report.summary());
  std::printf("%s\n", report.summary().c_str());
}

}  // namespace

void add_ledger_command(CLI::App& app) {
  auto run_dir = std::make_shared<std::string>();
  auto check = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "ledger", "print a run's journal, or check that every micro-batch was consumed once");
  cmd->add_option("dir", *run_dir, "run directory (holds journal/)")->required();
  cmd->add_flag("--check", *check,
                "verify the data ledger: exit 1 listing missing or repeated micro-batches");
  cmd->callback([run_dir, check] { run_ledger(*run_dir, *check); });
}

}  // namespace troupe::launch
