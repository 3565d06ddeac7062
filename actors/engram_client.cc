#include "actors/engram_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "actors/protocol.h"
#include "train/engram_share.h"

namespace troupe::actors {

using runtime::ActorMessage;
using runtime::Payload;

namespace {

bool answer_of(const ActorMessage& m, uint64_t* request) {
  if (m.type == engram_rows_type) {
    train::EngramRows a;
    if (!a.ParseFromString(m.header)) return false;
    *request = a.request();
    return true;
  }
  if (m.type == engram_tables_type) {
    train::EngramTables a;
    if (!a.ParseFromString(m.header)) return false;
    *request = a.request();
    return true;
  }
  return false;
}

}  // namespace

EngramClient::EngramClient(caf::actor_system& system, caf::actor router, std::string address,
                           const model::ModelConfig& cfg, uint64_t seed, int64_t shards,
                           std::chrono::milliseconds answer_timeout_ms)
    : rpc_(system, std::move(router), std::move(address), answer_of),
      cfg_(cfg),
      seed_(seed),
      shard_count_(shards),
      timeout_(answer_timeout_ms),
      info_(model::engram_tables(cfg)) {
  if (shards < 1) throw std::invalid_argument("EngramClient: at least one shard");
}

void EngramClient::set_shards(std::vector<std::string> addresses) {
  if (int64_t(addresses.size()) != shard_count_)
    throw std::invalid_argument(
        fmt::format("{} Engram shard addresses for {} shards", addresses.size(), shard_count_));
  shards_ = std::move(addresses);
  holders_.assign(shards_.size(), {});
  for (size_t k = 0; k < shards_.size(); ++k) holders_[k].push_back(shards_[k]);
}

void EngramClient::set_copies(const std::vector<std::pair<int64_t, std::string>>& copies) {
  for (const auto& [k, address] : copies) {
    if (k < 0 || size_t(k) >= holders_.size())
      throw std::invalid_argument(
          fmt::format("a copy of Engram shard {} of {}", k, holders_.size()));
    holders_[size_t(k)].push_back(address);
  }
}

void EngramClient::prefetch(const model::Batch& rows, int64_t version, uint64_t epoch) {
  if (int64_t(shards_.size()) != shard_count_)
    throw std::logic_error("EngramClient::prefetch before the shards are known");
  epoch_ = epoch, version_ = version;
  const int64_t N = rows.rows * rows.seq_len;
  ids_.assign(info_.size(), {});
  rows_.assign(info_.size(), {});
  // Tables come in (layer, order, head) order: each layer's J tables are contiguous.
  for (size_t first = 0; first < info_.size();) {
    size_t end = first;
    while (end < info_.size() && info_[end].layer == info_[first].layer) ++end;
    const std::vector<model::EngramTableInfo> layer(info_.begin() + int64_t(first),
                                                    info_.begin() + int64_t(end));
    std::vector<int64_t> ids(layer.size() * size_t(N));
    if (N > 0)
      model::engram_row_ids(cfg_, seed_, info_[first].layer, layer, rows.inputs.data(), rows.rows,
                            rows.seq_len, ids.data(), rows.doc.empty() ? nullptr : rows.doc.data());
    for (size_t j = 0; j < layer.size(); ++j) {
      std::vector<int64_t>& t = ids_[first + j];
      t.assign(ids.begin() + int64_t(j) * N, ids.begin() + int64_t(j + 1) * N);
      std::sort(t.begin(), t.end());
      t.erase(std::unique(t.begin(), t.end()), t.end());
    }
    first = end;
  }
  ++prefetches_;
  request_.assign(size_t(shard_count_), 0);
  arrived_.assign(size_t(shard_count_), 0);
  for (int64_t k = 0; k < shard_count_; ++k) {
    train::EngramLookup l;
    l.set_version(version);
    std::vector<Payload> payloads;
    for (size_t t = 0; t < info_.size(); ++t) {
      if (model::engram_shard_of_table(int64_t(t), shard_count_) != k) continue;
      l.add_tables(int64_t(t));
      payloads.push_back(owned_payload(ids_[t]));
    }
    request_[size_t(k)] = rpc_.expect();
    l.set_request(request_[size_t(k)]);
    ActorMessage m = make_message(rpc_.address(), shards_[size_t(k)], engram_lookup_type, l);
    m.payloads = std::move(payloads);
    rpc_.send(std::move(m), epoch);
  }
}

void EngramClient::receive(int64_t shard) const {
  const std::string& at = shards_[size_t(shard)];
  const auto began = std::chrono::steady_clock::now();
  std::vector<ActorMessage> got = rpc_.await({request_[size_t(shard)]}, {at}, epoch_, timeout_,
                                             fmt::format("EngramLookup of version {}", version_));
  waited_us_ += std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - began)
                    .count();
  train::EngramRows r;
  if (!r.ParseFromString(got[0].header) || r.version() != version_)
    throw std::runtime_error(fmt::format("Engram shard {} answered another version", at));
  size_t i = 0;
  for (size_t t = 0; t < info_.size(); ++t) {
    if (model::engram_shard_of_table(int64_t(t), shard_count_) != shard) continue;
    std::vector<float> rows;
    if (i >= got[0].payloads.size() || !read_payload(got[0].payloads[i++], &rows) ||
        rows.size() != ids_[t].size() * size_t(info_[t].dim))
      throw std::runtime_error(
          fmt::format("Engram shard {} answered rows that do not fit table {}", at, info_[t].name));
    rows_[t] = std::move(rows);
  }
  arrived_[size_t(shard)] = 1;
}

void EngramClient::lookup(int64_t table, const int64_t* ids, int64_t n, float* out) const {
  if (table < 0 || size_t(table) >= info_.size() || ids_.size() != info_.size())
    throw std::out_of_range(fmt::format("Engram table {} was not prefetched", table));
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t k = model::engram_shard_of_table(table, shard_count_);
    if (!arrived_.at(size_t(k))) receive(k);
  }
  const std::vector<int64_t>& have = ids_[size_t(table)];
  const int64_t D = info_[size_t(table)].dim;
  for (int64_t i = 0; i < n; ++i) {
    const auto it = std::lower_bound(have.begin(), have.end(), ids[i]);
    if (it == have.end() || *it != ids[i])
      throw std::out_of_range(fmt::format("row {} of Engram table {} was not prefetched", ids[i],
                                          info_[size_t(table)].name));
    const float* row = rows_[size_t(table)].data() + (it - have.begin()) * D;
    std::memcpy(out + i * D, row, sizeof(float) * size_t(D));
  }
}

void EngramClient::apply(const model::EngramGrad<float>&, const model::EngramAdamStep&) {
  throw std::logic_error("EngramClient::apply: the engram_shard actors update their tables");
}

std::vector<std::vector<float>> EngramClient::fetch_tables(int64_t version, uint64_t epoch,
                                                           bool moments) {
  const size_t parts = moments ? 3 : 1;
  std::vector<uint64_t> requests;
  for (int64_t k = 0; k < shard_count_; ++k) {
    train::EngramDump d;
    d.set_version(version), d.set_moments(moments);
    requests.push_back(rpc_.expect());
    d.set_request(requests.back());
    rpc_.send(make_message(rpc_.address(), shards_.at(size_t(k)), engram_dump_type, d), epoch);
  }
  std::vector<ActorMessage> got = rpc_.await(requests, shards_, epoch, timeout_,
                                             fmt::format("EngramDump of version {}", version));
  std::vector<std::vector<float>> out(info_.size() * parts);
  for (size_t k = 0; k < got.size(); ++k) {
    train::EngramTables t;
    if (!t.ParseFromString(got[k].header) || t.version() != version ||
        size_t(t.tables_size()) * parts != got[k].payloads.size())
      throw std::runtime_error(fmt::format("Engram shard {} answered the dump amiss", shards_[k]));
    for (int i = 0; i < t.tables_size(); ++i) {
      const int64_t table = t.tables(i);
      const bool own = table >= 0 && size_t(table) < info_.size() &&
                       model::engram_shard_of_table(table, shard_count_) == int64_t(k);
      for (size_t p = 0; p < parts; ++p) {
        std::vector<float>& into = out[size_t(own ? table : 0) * parts + p];
        if (!own || !read_payload(got[k].payloads[size_t(i) * parts + p], &into) ||
            int64_t(into.size()) != info_[size_t(table)].rows * info_[size_t(table)].dim)
          throw std::runtime_error(fmt::format(
              "Engram shard {} sent a table that is not its own or of the wrong size", shards_[k]));
      }
    }
  }
  for (size_t t = 0; t < out.size(); ++t)
    if (out[t].empty())
      throw std::runtime_error(fmt::format("no Engram shard sent table {}", info_[t / parts].name));
  return out;
}

}  // namespace troupe::actors
