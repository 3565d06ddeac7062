// `troupe eval`: mean next-token cross-entropy of the main head on a text file.
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/data.h"
#include "launch/commands.h"
#include "model/params.h"
#include "storage/weights_io.h"
#include "train/trainer.h"

namespace troupe::launch {

namespace {
constexpr int64_t kEvalChunkRows = 64;  // rows per forward pass: bounds activation memory

void run_eval(const std::string& weights, const std::string& text_path, int threads) {
  std::ifstream in(text_path, std::ios::binary);
  if (!in) throw UsageError("eval: cannot read text file '" + text_path + "'");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  model::LoadedWeights w = model::load_weights(weights);
  model::ParamTable table(w.model);
  const model::Batch all = model::eval_rows_from_text(bytes, w.model.seq_len);
  std::unique_ptr<model::InProcessEngramStore<float>> engram;
  if (!w.model.engram_layers.empty())
    engram =
        std::make_unique<model::InProcessEngramStore<float>>(w.model, std::move(w.engram_tables));
  model::GradEngine<float> engine(w.model, table, threads, w.seed, engram.get());
  double ce_sum = 0;  // chunk sums are added in chunk order: a fixed order
  int64_t count = 0;
  for (int64_t r = 0; r < all.rows; r += kEvalChunkRows) {
    const model::Batch chunk = all.slice(r, std::min(kEvalChunkRows, all.rows - r));
    model::LossParts<float> lp = engine.run(w.params.data(), chunk, 1, false, false);
    ce_sum += lp.ce_sum;
    count += lp.ce_count;
  }
  nlohmann::json j = {{"loss", count > 0 ? ce_sum / double(count) : 0.0}, {"tokens", count}};
  std::printf("%s\n", j.dump().c_str());
}
}  // namespace

void add_eval_command(CLI::App& app) {
  auto weights = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto threads = std::make_shared<int>(0);
  CLI::App* cmd = app.add_subcommand("eval", "mean next-token loss of weights on a text file");
  cmd->add_option("--weights", *weights, "weights .safetensors (troupe export)")->required();
  cmd->add_option("--text", *text, "text file, read as one document")->required();
  cmd->add_option("--threads", *threads, "compute threads (0 = all cores)")
      ->check(at_least(0, "0: all cores"));
  cmd->callback([=] {
    int t = *threads > 0 ? *threads : std::max(1u, std::thread::hardware_concurrency());
    run_eval(*weights, *text, t);
  });
}

}  // namespace troupe::launch
