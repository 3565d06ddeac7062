// `troupe export`: a run's weights as safetensors with SPEC §9 names (PyTorch/HF-loadable),
// from a finished run's weights.safetensors or from any complete checkpoint of its journal.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "config/config_parse.h"
#include "launch/commands.h"
#include "launch/run_checkpoint.h"
#include "model/params.h"
#include "storage/checkpoint.h"
#include "storage/journal.h"
#include "storage/shard_store.h"
#include "storage/weights_io.h"

namespace troupe::launch {

namespace {

struct ExportArgs {
  std::string run_dir, out;
  int64_t step = -1;  // -1: the finished run's weights, else the newest good checkpoint
};

// One shard of the checkpoint into out, exactly `floats` long.
void read_shard(storage::CheckpointReader* reader, const std::string& name, int64_t floats,
                std::vector<float>* out) {
  const runtime::Status st = reader->read(name, out);
  if (!st.ok()) throw UsageError("export: " + st.message());
  if (int64_t(out->size()) != floats)
    throw UsageError("export: shard " + name + " holds " + std::to_string(out->size()) +
                     " floats, the model config wants " + std::to_string(floats));
}

// The weights of checkpoint m: the model config and seed from its job, every param/ shard at
// its ParamTable offset, every Engram table's values.
model::LoadedWeights weights_of(const std::string& run_dir, const storage::Manifest& m) {
  model::LoadedWeights w;
  if (!m.job.contains("model") || !m.job["model"].contains("seed"))
    throw UsageError("export: the manifest of step " + std::to_string(m.step) +
                     " has no job.model (or job.model.seed)");
  w.model = model::model_config_from_json(m.job["model"]);
  w.seed = m.job["model"]["seed"].get<uint64_t>();
  const model::ParamTable table(w.model);
  w.params.assign(size_t(table.total()), 0.0f);
  storage::CheckpointReader reader(storage::checkpoint_dir(run_dir, m.step), m.step, m.shards);
  std::vector<float> buf;
  for (const auto& p : table.all()) {
    read_shard(&reader, "param/" + p.name, p.numel, &buf);
    std::copy(buf.begin(), buf.end(), w.params.begin() + p.offset);
  }
  for (const auto& t : model::engram_tables(w.model)) {
    read_shard(&reader, model::engram_state_name(t.name, model::EngramPart::values), t.rows * t.dim,
               &buf);
    w.engram_tables.push_back(buf);
  }
  return w;
}

// The weights to export, and (through source) where they came from.
model::LoadedWeights load_source(const ExportArgs& a, std::string* source) {
  const std::string finished = a.run_dir + "/weights.safetensors";
  if (a.step < 0 && std::filesystem::exists(finished)) {
    *source = finished + " (the finished run)";
    return model::load_weights(finished);
  }
  if (a.step < 0 && !std::filesystem::exists(a.run_dir + "/journal"))
    throw UsageError("export: " + a.run_dir + " has no weights.safetensors (the run has not " +
                     "finished) and no journal, so no checkpoint; is it the --run-dir of a " +
                     "troupe train or troupe launch run?");
  return weights_of(a.run_dir, chosen_checkpoint("export", a.run_dir, a.step, source));
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand("export", "write a run's weights as safetensors");
  cmd->add_option("--run-dir", a->run_dir, "run directory written by troupe train or launch")
      ->required();
  cmd->add_option("--out", a->out, "output .safetensors file")->required();
  cmd->add_option("--step", a->step,
                  "export the complete checkpoint of this step (default: the finished run's "
                  "weights, else the newest good checkpoint)")
      ->check(at_least(0, "a checkpoint's step"));
  cmd->callback([a] {
    if (a->step < 0 && !std::filesystem::exists(a->run_dir))
      throw UsageError("export: " + a->run_dir + " not found; did `troupe train --run-dir " +
                       a->run_dir + "` finish?");
    // Load and validate fully, then write: a corrupt run never yields a half-good export.
    std::string source;
    model::LoadedWeights w = load_source(*a, &source);
    model::ParamTable table(w.model);
    const model::InProcessEngramStore<float> engram(w.model, std::move(w.engram_tables));
    model::write_safetensors(
        a->out, model::weights_to_safetensors(table, w.params.data(), w.model, w.seed, &engram));
    std::printf("exported %zu tensors (%ld parameters) from %s to %s\n", table.all().size(),
                long(table.total()), source.c_str(), a->out.c_str());
  });
}

}  // namespace troupe::launch
