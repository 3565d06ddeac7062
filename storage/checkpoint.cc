#include "storage/checkpoint.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <stdexcept>

#include "config/config_parse.h"

namespace troupe::storage {

using json = nlohmann::json;
using runtime::Code;
using runtime::Result;
using runtime::Status;

namespace {

std::string optimizer_name(model::OptimizerKind k) {
  for (const auto& [kind, name] : model::kOptimizerNames)
    if (kind == k) return std::string(name);
  throw std::logic_error("optimizer kind missing from kOptimizerNames");
}

std::string joined(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string leaf_mismatch(const std::string& path, const std::string& stored,
                          const std::string& now) {
  return (path.empty() ? std::string("job identity") : path) +
         ": the run directory's checkpoints were written with " + stored + ", this config has " +
         now;
}

// The first difference in key order, walking objects; anything else compares as a leaf.
std::string first_difference(const std::string& path, const json& stored, const json& now) {
  if (!stored.is_object() || !now.is_object())
    return stored == now ? "" : leaf_mismatch(path, stored.dump(), now.dump());
  std::vector<std::string> keys;
  for (const auto& [k, v] : stored.items()) keys.push_back(k);
  for (const auto& [k, v] : now.items())
    if (!stored.contains(k)) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  for (const std::string& k : keys) {
    std::string p = joined(path, k);
    if (!stored.contains(k)) return leaf_mismatch(p, "no such key", now[k].dump());
    if (!now.contains(k)) return leaf_mismatch(p, stored[k].dump(), "no such key");
    if (std::string d = first_difference(p, stored[k], now[k]); !d.empty()) return d;
  }
  return "";
}

}  // namespace

json job_identity(const model::TrainJobConfig& cfg) {
  const model::TrainConfig& t = cfg.train;
  const model::OptimizerConfig& o = cfg.optimizer;
  // Not steps (a job may be extended), eval_every, threads: none changes a step's bits.
  json train = {{"batch_size", t.batch_size},
                {"micro_batch_rows", t.micro_batch_rows},
                {"lr", t.lr},
                {"warmup_steps", t.warmup_steps},
                {"min_lr_ratio", t.min_lr_ratio},
                {"weight_decay", t.weight_decay},
                {"grad_clip", t.grad_clip},
                {"seed", t.seed}};
  // Not val_rows_max: it changes what validation reports, never what training computes.
  json data = {{"corpus_dir", cfg.data.corpus_dir},
               {"val_modulus", cfg.data.val_modulus},
               {"shuffle", cfg.data.shuffle}};
  // Mixed mode's plan decides the rows (packed identities stay as they were before it).
  if (cfg.data.mode == model::DataMode::mixed) {
    data["mode"] = "mixed";
    data["max_doc_tokens"] = model::mixed_max_doc_tokens(cfg);
    train["tokens_per_microbatch"] = model::mixed_tokens_per_microbatch(cfg);
  }
  if (cfg.data.source == model::DataSource::arithmetic) {  // fortunes' identity as before
    data["source"] = "arithmetic";
    data["arith_max_operand"] = cfg.data.arith_max_operand;
    data["arith_ops"] = cfg.data.arith_ops;
    data["arith_documents"] = cfg.data.arith_documents;
  }
  json optimizer = {
      {"name", optimizer_name(o.name)}, {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps}};
  // Not [checkpoint]: how often the state is saved changes no step's bits.
  return {{"model", model::model_config_to_json(cfg.model, t.seed)},
          {"data", std::move(data)},
          {"train", std::move(train)},
          {"optimizer", std::move(optimizer)},
          {"fp8", {{"enabled", cfg.fp8.enabled}}}};
}

std::string identity_hash(const json& identity) {
  std::string text = identity.dump();
  return fmt::format("{:016x}", XXH64(text.data(), text.size(), 0));
}

std::string identity_mismatch(const json& stored, const json& now) {
  return first_difference("", stored, now);
}

std::vector<ShardData> shard_views(const std::vector<model::StateTensor>& snap) {
  std::vector<ShardData> views;
  views.reserve(snap.size());
  for (const model::StateTensor& t : snap)
    views.push_back(ShardData{t.name, t.shape, t.data.data(), t.data.size()});
  return views;
}

Result<Manifest> newest_good_checkpoint(const std::string& run_dir, const Journal& j,
                                        const std::function<void(const std::string&)>& warn) {
  return newest_good_checkpoint(
      run_dir, j.manifest_steps(), [&j](int64_t step) { return j.manifest(step); }, warn);
}

Result<Manifest> newest_good_checkpoint(
    const std::string& run_dir, const std::vector<int64_t>& steps,
    const std::function<runtime::Result<Manifest>(int64_t)>& manifest,
    const std::function<void(const std::string&)>& warn) {
  if (steps.empty())
    return Status(Code::io_error, "no complete checkpoint in " + run_dir + "/journal");
  std::string last_error;
  int64_t last_step = 0;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    Result<Manifest> m = manifest(*it);
    Status s = m.status();
    if (s.ok()) {
      CheckpointReader reader(checkpoint_dir(run_dir, *it), *it, m.value().shards);
      s = reader.verify_all();
    }
    if (s.ok()) return m;
    last_error = s.message();
    last_step = *it;
    bool older = std::next(it) != steps.rend();
    warn(fmt::format("checkpoint of step {} is unusable: {}; {}", *it, last_error,
                     older ? "falling back to the one before" : "there is none before it"));
  }
  return Status(
      Code::io_error,
      fmt::format("none of the {} checkpoints in {} verifies; the last error (step {}): {}",
                  steps.size(), run_dir, last_step, last_error));
}

void remove_incomplete_checkpoints(const std::string& run_dir,
                                   const std::vector<int64_t>& complete) {
  if (complete.empty()) return;
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(run_dir + "/checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("step-")) continue;
    const int64_t step = std::strtoll(name.c_str() + 5, nullptr, 10);
    if (step < complete.back() && !std::binary_search(complete.begin(), complete.end(), step))
      stale.push_back(e.path());
  }
  for (const fs::path& p : stale) fs::remove_all(p, ec);
}

}  // namespace troupe::storage
