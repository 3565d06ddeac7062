// `troupe dev`: developer tools behind the parity tests (tests/reference/).
//   troupe dev grads --config C [--set k=v] --out DIR [--perturb]
// writes DIR/weights.safetensors (F32), DIR/batch.safetensors (the first training batch)
// and DIR/ours64.safetensors / DIR/ours32.safetensors: loss terms, expert counts and
// every parameter gradient computed by troupe in FP64 and FP32 on the same weights.
// With Engram, weights.safetensors holds the tables and the dumps hold each table's
// gradient as a dense (R, D) tensor `grad.<table name>`: the touched rows' sums, zeros
// elsewhere (so compare.py checks it row by row, untouched rows included).
//   troupe dev flops --config C [--set k=v]
// prints one JSON line: a training token's matmul FLOPs (model/flops.h, what GFLOP/s figures
// count) and mHC's FLOPs (every operation), for make bench's mHC share.
//   troupe dev page
// prints the operators' page that GET / serves (launch/control.h), for tests of the page.
#include <cstdio>
#include <filesystem>

#include "config/config_parse.h"
#include "data/data.h"
#include "data/mixed_batch.h"
#include "launch/commands.h"
#include "launch/control.h"
#include "model/flops.h"
#include "model/rng.h"
#include "storage/weights_io.h"
#include "train/trainer.h"

namespace troupe::launch {

namespace {

struct DevArgs {
  std::string config, out;
  std::vector<std::string> sets;
  bool perturb = false;
  bool documents = false;  // --documents: document ids from each row's BOS tokens
  int threads = 2;
};

// Document ids of a packed batch: a row's tokens up to its first BOS are document 0, each
// BOS starts the next one (document masking, model/batch.h). Targets need no change: the
// packed stream has no target across a document boundary (an EOS's BOS target is none).
void split_documents(model::Batch& b) {
  b.doc.assign(b.inputs.size(), 0);
  for (int64_t r = 0; r < b.rows; ++r) {
    int32_t id = 0;
    for (int64_t t = 0; t < b.seq_len; ++t) {
      const int64_t n = r * b.seq_len + t;
      if (t > 0 && b.inputs[n] == model::kBos) ++id;
      b.doc[n] = id;
    }
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Moves the parameters that init leaves at trivial values (α = 0.01, b = 0, norms = 1,
// zero balancing bias, zero Engram conv) to generic ones, so parity exercises every path of
// mHC, routing and Engram.
void perturb(const model::ParamTable& table, uint64_t seed, float* params) {
  for (const auto& p : table.all()) {
    model::CounterRng rng(seed, model::purpose_of("parity.perturb." + p.name));
    float* w = params + p.offset;
    for (int64_t i = 0; i < p.numel; ++i) {
      const double z = rng.normal(uint64_t(i));
      const std::string& n = p.name;
      if (n.find(".alpha_") != std::string::npos)
        w[i] = float(1.0 + 0.3 * z);
      else if (n.find("_hc.b_") != std::string::npos)
        w[i] = float(0.5 * z);
      else if (ends_with(n, "e_score_correction_bias"))
        w[i] = float(0.05 * z);
      else if (p.init == model::Init::Ones)
        w[i] = float(1.0 + 0.1 * z);
      else if (ends_with(n, ".engram.conv"))
        w[i] = float(0.3 * z);
    }
  }
}

template <typename T>
void dump_grads(const model::JobConfig& cfg, const model::ParamTable& table,
                const std::vector<float>& params32, const model::InProcessEngramStore<float>& eng32,
                const model::Batch& batch, int threads, const std::string& path) {
  std::vector<T> params(params32.begin(), params32.end());
  std::vector<std::vector<T>> tables;
  for (size_t j = 0; j < eng32.tables().size(); ++j) {
    const auto& info = eng32.tables()[j];
    const float* src = eng32.data(int64_t(j));
    tables.emplace_back(src, src + info.rows * info.dim);
  }
  const model::InProcessEngramStore<T> engram(cfg.model, std::move(tables));
  model::GradEngine<T> engine(cfg.model, table, threads, cfg.train.seed, &engram);
  model::LossParts<T> lp = engine.run(params.data(), batch, model::train_micro_batch_rows(cfg),
                                      true, cfg.model.mtp_depth > 0);
  model::SafetensorsFile f;
  auto scalar = [&](const std::string& name, double v) {
    f.tensors[name] = model::to_tensor_data(std::vector<double>{v}, {1});
  };
  scalar("loss", double(lp.total()));
  scalar("ce", double(lp.ce));
  scalar("mtp_ce", cfg.model.mtp_lambda > 0 ? double(lp.mtp) / cfg.model.mtp_lambda : 0.0);
  scalar("bal", double(lp.bal));
  for (const auto& p : table.all()) {
    if (p.group == model::OptGroup::Rule) continue;
    const T* g = engine.grad().data() + p.offset;
    f.tensors["grad." + p.name] =
        model::to_tensor_data(std::vector<double>(g, g + p.numel), p.shape);
  }
  if (!cfg.model.engram_layers.empty()) {
    for (size_t j = 0; j < engram.tables().size(); ++j) {
      const auto& info = engram.tables()[j];
      const model::SparseRows<T>& g = engine.engram_grad()[j];
      std::vector<double> dense(static_cast<size_t>(info.rows * info.dim), 0.0);
      for (size_t r = 0; r < g.ids.size(); ++r)
        for (int64_t d = 0; d < info.dim; ++d)
          dense[g.ids[r] * info.dim + d] = double(g.values[r * info.dim + d]);
      f.tensors["grad." + info.name] = model::to_tensor_data(dense, {info.rows, info.dim});
    }
  }
  for (size_t l = 0; l < engine.counts().size(); ++l) {
    const auto& c = engine.counts()[l];
    if (c.empty()) continue;
    f.tensors["counts." + std::to_string(l)] =
        model::to_tensor_data(std::vector<double>(c.begin(), c.end()), {int64_t(c.size())});
  }
  model::write_safetensors(path, f);
}

// Step 0's global batch, as the trainer builds it (packed rows, or the mixed-mode plan).
model::Batch first_batch(const model::JobConfig& cfg, const model::Corpus& corpus) {
  if (cfg.data.mode == model::DataMode::mixed) {
    model::MixedPlanConfig pc;
    pc.max_doc_tokens = model::mixed_max_doc_tokens(cfg);
    pc.tokens_per_microbatch = model::mixed_tokens_per_microbatch(cfg);
    pc.micro_batches_per_step = cfg.train.batch_size / cfg.train.micro_batch_rows;
    const model::MixedPlanner planner(&corpus.train, cfg.train.seed, cfg.data.shuffle, pc);
    return model::mixed_batch(planner, corpus.train, 0);
  }
  const model::PackedStream stream(&corpus.train, cfg.train.seed, true, cfg.model.seq_len);
  return model::train_batch(stream, 0, cfg.train.batch_size);
}

void run_grads(const DevArgs& a) {
  model::JobConfig cfg = model::load_config(a.config, a.sets);
  model::ParamTable table(cfg.model);
  std::vector<float> params(static_cast<size_t>(table.total()));
  model::init_params(table, cfg.train.seed, params.data());
  if (a.perturb) perturb(table, cfg.train.seed, params.data());
  const model::InProcessEngramStore<float> engram(cfg.model, cfg.train.seed);
  model::Corpus corpus = model::load_fortunes(cfg.data.corpus_dir, cfg.data.val_modulus);
  model::Batch batch = first_batch(cfg, corpus);
  if (a.documents && batch.doc.empty()) split_documents(batch);
  std::filesystem::create_directories(a.out);
  model::write_safetensors(
      a.out + "/weights.safetensors",
      model::weights_to_safetensors(table, params.data(), cfg.model, cfg.train.seed, &engram));
  model::SafetensorsFile b;
  b.tensors["inputs"] = model::to_tensor_data(batch.inputs, {batch.rows, batch.seq_len});
  b.tensors["targets"] = model::to_tensor_data(batch.targets, {batch.rows, batch.seq_len});
  if (!batch.doc.empty())
    b.tensors["doc"] = model::to_tensor_data(batch.doc, {batch.rows, batch.seq_len});
  model::write_safetensors(a.out + "/batch.safetensors", b);
  dump_grads<double>(cfg, table, params, engram, batch, a.threads, a.out + "/ours64.safetensors");
  dump_grads<float>(cfg, table, params, engram, batch, a.threads, a.out + "/ours32.safetensors");
  std::printf("wrote %s/{weights,batch,ours64,ours32}.safetensors\n", a.out.c_str());
}

void run_flops(const DevArgs& a) {
  const model::JobConfig cfg = model::load_config(a.config, a.sets);
  model::ModelConfig plain = cfg.model;
  plain.residual = model::Residual::plain;
  std::printf(
      "{\"train_flops_per_token\": %.0f, \"plain_flops_per_token\": %.0f, "
      "\"mhc_flops_per_token\": %.0f}\n",
      model::train_flops_per_token(cfg.model), model::train_flops_per_token(plain),
      model::mhc_flops_per_token(cfg.model));
}

}  // namespace

void add_dev_command(CLI::App& app) {
  auto args = std::make_shared<DevArgs>();
  CLI::App* dev = app.add_subcommand("dev", "developer tools (parity dumps)");
  dev->require_subcommand(1);
  CLI::App* grads = dev->add_subcommand("grads", "dump weights, a batch and troupe's gradients");
  grads->add_option("--config", args->config, "job configuration (TOML)")->required();
  grads->add_option("--set", args->sets, "override one key: section.key=value (repeatable)");
  grads->add_option("--out", args->out, "output directory")->required();
  grads->add_flag("--perturb", args->perturb, "move α, b, norms and biases off their init");
  grads->add_flag("--documents", args->documents,
                  "document masking: each BOS of a row starts a document (positions restart)");
  grads->add_option("--threads", args->threads, "compute threads")->check(at_least(1, ""));
  grads->callback([args] { run_grads(*args); });
  CLI::App* flops = dev->add_subcommand("flops", "a training token's FLOPs, mHC's apart (JSON)");
  flops->add_option("--config", args->config, "job configuration (TOML)")->required();
  flops->add_option("--set", args->sets, "override one key: section.key=value (repeatable)");
  flops->callback([args] { run_flops(*args); });
  // What GET / serves, for tests/launch/page_test.py's stand-in endpoint.
  dev->add_subcommand("page", "print the operators' page (launch/page/index.html) as built in")
      ->callback([] {
        const std::string_view page = control_page_html();
        std::fwrite(page.data(), 1, page.size(), stdout);
      });
}

}  // namespace troupe::launch
