// `troupe engram export|import` (issue 16, docs/engram.md "Table sets"): an Engram table set
// — every table with its sparse-Adam moments — out of a run's checkpoint into one safetensors
// file, and such a file into a run directory's engram/sets/, checked against that run's model
// config first (storage/engram_set.h), so that a set made for other tables never lands there.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "config/config_parse.h"
#include "launch/commands.h"
#include "launch/run_checkpoint.h"
#include "model/engram.h"
#include "storage/checkpoint.h"
#include "storage/engram_set.h"
#include "storage/journal.h"
#include "storage/shard_store.h"

namespace troupe::launch {

namespace {

struct EngramExportArgs {
  std::string run_dir, out, name;
  int64_t step = -1;  // -1: the newest good checkpoint
};

struct EngramImportArgs {
  std::string file, run_dir, name;
  bool force = false;
};

// The set's name: --name, else `fallback` (what it says where the name came from), checked.
std::string checked_name(const std::string& cmd, const std::string& name,
                         const std::string& fallback, const std::string& from) {
  const std::string n = name.empty() ? fallback : name;
  if (const std::string why = storage::engram_set_name_error(n); !why.empty())
    throw UsageError("engram " + cmd + ": " + (name.empty() ? "the name " + from : "--name") +
                     " '" + n + "': " + why + (name.empty() ? "; give one with --name" : ""));
  return n;
}

void require_tables(const std::string& cmd, const std::string& run_dir,
                    const model::ModelConfig& cfg) {
  if (model::engram_tables(cfg).empty())
    throw UsageError("engram " + cmd + ": the run in " + run_dir +
                     " has no Engram tables (its model.engram_layers is [])");
}

// Every table's values, m and v of checkpoint m, in engram_tables order, each exactly the
// size the manifest's model config gives it.
std::vector<model::StateTensor> tables_of(const std::string& run_dir, const storage::Manifest& m,
                                          const model::ModelConfig& cfg) {
  storage::CheckpointReader reader(storage::checkpoint_dir(run_dir, m.step), m.step, m.shards);
  std::vector<model::StateTensor> out;
  for (const model::EngramTableInfo& t : model::engram_tables(cfg)) {
    for (model::EngramPart part : model::kEngramParts) {
      model::StateTensor s{model::engram_state_name(t.name, part), {t.rows, t.dim}, {}};
      const runtime::Status st = reader.read(s.name, &s.data);
      if (!st.ok()) throw UsageError("engram export: " + st.message());
      if (int64_t(s.data.size()) != t.rows * t.dim)
        throw UsageError("engram export: shard " + s.name + " holds " +
                         std::to_string(s.data.size()) + " floats, the model config wants " +
                         std::to_string(t.rows * t.dim));
      out.push_back(std::move(s));
    }
  }
  return out;
}

void export_set(const EngramExportArgs& a) {
  const std::string name =
      checked_name("export", a.name, std::filesystem::path(a.out).stem().string(), "of --out");
  std::string source;
  const storage::Manifest m = chosen_checkpoint("engram export", a.run_dir, a.step, &source);
  if (!m.job.contains("model") || !m.job["model"].contains("seed"))
    throw UsageError("engram export: the manifest of step " + std::to_string(m.step) +
                     " has no job.model (or job.model.seed)");
  const model::ModelConfig cfg = model::model_config_from_json(m.job["model"]);
  const uint64_t seed = m.job["model"]["seed"].get<uint64_t>();
  require_tables("export", a.run_dir, cfg);
  // Read every shard (CRC-checked) before writing: a bad checkpoint never yields a set.
  const storage::EngramSet set{name, m.step, tables_of(a.run_dir, m, cfg)};
  storage::write_engram_set(a.out, set, cfg, seed);
  std::printf("exported table set %s (step %ld, %zu tables, hash %016lx) from %s to %s\n",
              name.c_str(), long(set.step), set.tensors.size() / 3,
              static_cast<unsigned long>(storage::engram_set_hash(set.tensors)), source.c_str(),
              a.out.c_str());
}

// The run's model config and seed, from the config.json that troupe train and launch write
// into the run directory (model_config_to_json: the [model] keys plus "seed").
model::ModelConfig run_model(const std::string& run_dir, uint64_t* seed) {
  const std::string path = run_dir + "/config.json";
  if (!std::filesystem::exists(path))
    throw UsageError("engram import: " + path + " not found; is " + run_dir +
                     " the --run-dir of a troupe train or troupe launch run?");
  std::ifstream in(path);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("seed") || !j["seed"].is_number_unsigned())
    throw UsageError("engram import: " + path + " is not a run's config (a JSON object of " +
                     "the model keys with \"seed\")");
  *seed = j["seed"].get<uint64_t>();
  try {
    return model::model_config_from_json(j);
  } catch (const std::exception& e) {
    throw UsageError("engram import: " + path + ": " + e.what());
  }
}

void import_set(const EngramImportArgs& a) {
  uint64_t seed = 0;
  const model::ModelConfig cfg = run_model(a.run_dir, &seed);
  require_tables("import", a.run_dir, cfg);
  storage::EngramSet set;
  try {
    set = storage::read_engram_set(a.file, cfg, seed);
  } catch (const std::runtime_error& e) {
    throw UsageError("engram import: " + std::string(e.what()));
  }
  set.name = checked_name("import", a.name, set.name, "in " + a.file);
  const std::string dest = storage::engram_set_path(a.run_dir, set.name);
  if (std::filesystem::exists(dest) && !a.force)
    throw UsageError("engram import: " + a.run_dir + " already has a table set " + set.name + " (" +
                     dest + "); --force replaces it, --name imports under another name");
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(dest).parent_path(), ec);
  if (ec)
    throw UsageError("engram import: cannot create " +
                     std::filesystem::path(dest).parent_path().string() + ": " + ec.message());
  storage::write_engram_set(dest, set, cfg, seed);
  std::printf("imported table set %s (step %ld, %zu tables, hash %016lx) from %s into %s\n",
              set.name.c_str(), long(set.step), set.tensors.size() / 3,
              static_cast<unsigned long>(storage::engram_set_hash(set.tensors)), a.file.c_str(),
              dest.c_str());
}

}  // namespace

void add_engram_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "engram", "move Engram table sets between run directories; swap a running job's");
  cmd->require_subcommand(1);

  auto e = std::make_shared<EngramExportArgs>();
  CLI::App* ex = cmd->add_subcommand(
      "export", "write a checkpoint's Engram tables and their moments as one table set file");
  ex->add_option("--run-dir", e->run_dir, "run directory written by troupe train or launch")
      ->required();
  ex->add_option("--out", e->out, "output .safetensors file")->required();
  ex->add_option("--step", e->step,
                 "export the complete checkpoint of this step (default: the newest good one)")
      ->check(at_least(0, "a checkpoint's step"));
  ex->add_option("--name", e->name, "the set's name (default: the file name of --out)");
  ex->callback([e] { export_set(*e); });

  auto i = std::make_shared<EngramImportArgs>();
  CLI::App* im = cmd->add_subcommand(
      "import",
      "check a table set file against a run's model config and keep it in the run "
      "directory (engram/sets/NAME.safetensors)");
  im->add_option("file", i->file, "table set file (from troupe engram export)")->required();
  im->add_option("--run-dir", i->run_dir, "run directory written by troupe train or launch")
      ->required();
  im->add_option("--name", i->name, "the name to keep it under (default: the set's own)");
  im->add_flag("--force", i->force, "replace a set of that name in the run directory");
  im->callback([i] { import_set(*i); });
  add_engram_control_commands(*cmd);
}

}  // namespace troupe::launch
