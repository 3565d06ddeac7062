// `troupe export`: a run's weights as safetensors with SPEC §9 names (PyTorch/HF-loadable).
#include <filesystem>

#include "launch/commands.h"
#include "model/params.h"
#include "storage/weights_io.h"

namespace troupe::launch {

void add_export_command(CLI::App& app) {
  auto run_dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("export", "write a run's weights as safetensors");
  cmd->add_option("--run-dir", *run_dir, "run directory written by troupe train")->required();
  cmd->add_option("--out", *out, "output .safetensors file")->required();
  cmd->callback([run_dir, out] {
    const std::string src = *run_dir + "/weights.safetensors";
    if (!std::filesystem::exists(src))
      throw UsageError("export: " + src + " not found; did `troupe train --run-dir " + *run_dir +
                       "` finish?");
    // Load and validate fully, then write: a corrupt run never yields a half-good export.
    model::LoadedWeights w = model::load_weights(src);
    model::ParamTable table(w.model);
    const model::InProcessEngramStore<float> engram(w.model, std::move(w.engram_tables));
    model::write_safetensors(
        *out, model::weights_to_safetensors(table, w.params.data(), w.model, w.seed, &engram));
    std::printf("exported %zu tensors (%ld parameters) to %s\n", table.all().size(),
                long(table.total()), out->c_str());
  });
}

}  // namespace troupe::launch
