#include "train/engram_share.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "train/schedule.h"

namespace troupe::model {

namespace {
constexpr double kEngramLrMultiplier = 5.0;  // SPEC §4: tables train at lr × 5
}  // namespace

EngramAdamStep engram_adam_step(const TrainJobConfig& cfg, int64_t step, double clip_scale) {
  EngramAdamStep es;
  es.lr = kEngramLrMultiplier * lr_at(cfg.train, step);
  es.beta1 = cfg.optimizer.beta1, es.beta2 = cfg.optimizer.beta2, es.eps = cfg.optimizer.eps;
  es.grad_scale = clip_scale, es.step = step;
  return es;
}

EngramGrad<float> reduce_engram_pieces(const std::vector<EngramTableInfo>& tables, int64_t n_mb,
                                       const std::vector<TreeNode>& nodes,
                                       const std::vector<const EngramGrad<float>*>& grads) {
  if (nodes.size() != grads.size())
    throw std::invalid_argument("reduce_engram_pieces: one gradient per node");
  for (const EngramGrad<float>* g : grads)
    if (g == nullptr || g->size() != tables.size())
      throw std::invalid_argument(
          "reduce_engram_pieces: a gradient has the wrong number of tables");
  const auto find = [&](int64_t lo, int64_t hi) -> const EngramGrad<float>* {
    for (size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].lo == lo && nodes[i].hi == hi) return grads[i];
    return nullptr;
  };
  const auto merge = [&](EngramGrad<float>& a, const EngramGrad<float>& b) {
    for (size_t t = 0; t < tables.size(); ++t) sparse_rows_add(a[t], b[t], tables[t].dim);
  };
  return combine_in_tree<EngramGrad<float>>(0, n_mb, find, merge, "reduce_engram_pieces");
}

std::vector<bool> engram_tables_of_shard(int64_t tables, int64_t shards, int64_t shard) {
  std::vector<bool> held(size_t(tables), false);
  for (int64_t t = 0; t < tables; ++t) held[size_t(t)] = engram_shard_of_table(t, shards) == shard;
  return held;
}

std::vector<float> MemoryShardTables::read_table(int64_t table, int part) {
  if (!store_.held(table)) throw std::out_of_range("read_table: a table not held here");
  const auto n = size_t(store_.tables()[size_t(table)].rows * store_.tables()[size_t(table)].dim);
  if (part == 0) return {store_.data(table), store_.data(table) + n};
  return part == 1 ? store_.moment_m(table) : store_.moment_v(table);
}

void MemoryShardTables::write_table(int64_t table, int part, const std::vector<float>& data) {
  if (!store_.held(table)) throw std::out_of_range("write_table: a table not held here");
  const auto n = size_t(store_.tables()[size_t(table)].rows * store_.tables()[size_t(table)].dim);
  if (data.size() != n) throw std::invalid_argument("write_table: a table of the wrong size");
  if (part == 0)
    std::copy(data.begin(), data.end(), store_.data(table));
  else
    (part == 1 ? store_.moment_m(table) : store_.moment_v(table)) = data;
}

EngramShare::EngramShare(const TrainJobConfig& cfg, std::vector<bool> held,
                         std::unique_ptr<ShardTables> tables)
    : cfg_(cfg), held_(std::move(held)), tables_(std::move(tables)) {
  if (!tables_) tables_ = std::make_unique<MemoryShardTables>(cfg.model, cfg.train.seed, held_);
}

std::vector<double> EngramShare::reduce(const std::vector<TreeNode>& nodes,
                                        const std::vector<const EngramGrad<float>*>& grads) {
  const auto& info = tables_->tables();
  for (const EngramGrad<float>* g : grads)
    for (size_t t = 0; g && t < g->size() && t < info.size(); ++t)
      if (!held_[t] && !(*g)[t].ids.empty())
        throw std::invalid_argument("rows of Engram table " + info[t].name +
                                    ", which this shard does not hold");
  const int64_t n_mb = cfg_.train.batch_size / cfg_.train.micro_batch_rows;
  reduced_ = reduce_engram_pieces(info, n_mb, nodes, grads);
  std::vector<double> parts(info.size(), 0.0);
  for (size_t t = 0; t < info.size(); ++t) parts[t] = engram_table_sumsq((*reduced_)[t]);
  return parts;
}

void EngramShare::apply(int64_t step, double clip_scale) {
  if (!reduced_) throw std::logic_error("EngramShare::apply before reduce");
  if (step != version_)
    throw std::logic_error("EngramShare::apply of step " + std::to_string(step) + " at version " +
                           std::to_string(version_));
  backup_ = tables_->backup_rows(*reduced_);
  tables_->apply(*reduced_, engram_adam_step(cfg_, step, clip_scale));
  reduced_.reset();
  ++version_;
}

void EngramShare::undo() {
  if (!backup_) throw std::logic_error("EngramShare::undo without a kept update");
  tables_->restore_rows(*backup_);
  backup_.reset();
  --version_;
}

std::vector<int64_t> EngramShare::held_tables() const {
  std::vector<int64_t> out;
  for (size_t t = 0; t < held_.size(); ++t)
    if (held_[t]) out.push_back(int64_t(t));
  return out;
}

void EngramShare::install(int64_t version, const std::vector<std::vector<float>>& values,
                          const std::vector<std::vector<float>>& m,
                          const std::vector<std::vector<float>>& v) {
  const std::vector<int64_t> held = held_tables();
  if (values.size() != held.size() || m.size() != held.size() || v.size() != held.size())
    throw std::invalid_argument("EngramShare::install: " + std::to_string(values.size()) +
                                " tables for " + std::to_string(held.size()) + " held");
  const auto& info = tables_->tables();
  for (size_t i = 0; i < held.size(); ++i) {
    const auto n = size_t(info[size_t(held[i])].rows * info[size_t(held[i])].dim);
    if (values[i].size() != n || m[i].size() != n || v[i].size() != n)
      throw std::invalid_argument("EngramShare::install: table " + info[size_t(held[i])].name +
                                  " of the wrong size");
  }
  for (size_t i = 0; i < held.size(); ++i) {
    tables_->write_table(held[i], 0, values[i]);
    tables_->write_table(held[i], 1, m[i]);
    tables_->write_table(held[i], 2, v[i]);
  }
  version_ = version;
  reduced_.reset();
  backup_.reset();
}

}  // namespace troupe::model
