// Writes the seed corpora of tests/fuzz/corpus/NAME from our own encoders and writers, so
// that every seed is an input the system really produces (plus a few edge cases written by
// hand in corpus/, kept next to these). Run from the ordinary build:
//   build/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
// It overwrites the files named seed-* and leaves every other file (crash inputs) alone.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "actors/protocol.h"
#include "config/config_parse.h"
#include "runtime/batch_wire.h"
#include "runtime/control.pb.h"
#include "runtime/wire.h"
#include "storage/safetensors.h"
#include "storage/shard_store.h"

namespace fs = std::filesystem;
namespace troupe {
namespace {

fs::path out_root;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = out_root / target;
  fs::create_directories(dir);
  std::ofstream(dir / ("seed-" + name), std::ios::binary) << bytes;
}

std::string u64le(uint64_t v, int n = 8) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
  return s;
}

void wire_seeds() {
  runtime::Envelope e{3, "n1/worker.0", "n2/worker.1", 17, "header-bytes"};
  std::vector<std::byte> a(40), b(7);
  for (size_t n_payloads : {0, 1, 2}) {
    std::vector<std::span<const std::byte>> p;
    if (n_payloads > 0) p.emplace_back(a);
    if (n_payloads > 1) p.emplace_back(b);
    std::string frame;
    if (!runtime::encode_frame(e, p, &frame).ok()) throw std::runtime_error("encode_frame");
    const uint64_t data = n_payloads == 0 ? 0 : n_payloads == 1 ? 40 : 47;
    put("wire", "payloads-" + std::to_string(n_payloads), u64le(data) + frame);
  }
  std::string frame;
  (void)runtime::encode_frame(runtime::Envelope{}, {}, &frame);
  put("wire", "empty-envelope", u64le(0) + frame);
}

void batch_seeds() {
  std::string batch;
  for (int i = 0; i < 3; ++i) {
    runtime::Envelope e{uint64_t(i), "n1/worker.0", "n2/worker.1", uint32_t(40 + i), "h"};
    std::vector<std::byte> payload(size_t(i) * 100);
    std::vector<std::span<const std::byte>> p;
    if (i > 0) p.emplace_back(payload);
    std::string frame;
    if (!runtime::encode_frame(e, p, &frame).ok()) throw std::runtime_error("encode_frame");
    runtime::append_batch_record(
        &batch, {reinterpret_cast<const std::byte*>(frame.data()), frame.size()}, p);
    put("batch", "records-" + std::to_string(i + 1), batch);
  }
}

template <class Proto>
std::string control_input(int index, const Proto& m, const std::vector<std::string>& payloads) {
  std::string s{char(index), char(payloads.size())};
  for (const std::string& p : payloads) s += u64le(p.size(), 2) + p;
  return s + m.SerializeAsString();
}

// Indices are the order of control_fuzz.cc's table.
void control_seeds() {
  control::Hello h;
  h.set_claimed_node("n2"), h.set_nonce(std::string(32, 'x')), h.set_listen_address("::1:7000");
  put("control", "hello", control_input(0, h, {}));
  control::Welcome w;
  w.set_node_id("n1"), w.set_epoch(2), w.set_resume(true);
  control::WelcomeJob job;
  job.set_config_text("[model]\nn_layers = 2\n");
  job.add_config_sets("train.steps=3");
  put("control", "welcome", control_input(4, w, {job.SerializeAsString(), "{\"manifest\":1}"}));
  control::View v;
  v.set_epoch(4);
  auto* n = v.add_nodes();
  n->set_node_id("n1"), n->set_address("127.0.0.1:9");
  v.add_placement()->set_role("worker");
  put("control", "view", control_input(5, v, {}));
  train::Stats st;
  st.set_step(3);
  auto* piece = st.add_pieces();
  piece->mutable_node()->set_lo(0), piece->mutable_node()->set_hi(2);
  google::protobuf::RepeatedField<int64_t> layers;
  std::vector<int64_t> flat;
  actors::flatten_counts({{1, 2}, {3}}, piece->mutable_count_layers(), &flat);
  const std::string counts(reinterpret_cast<const char*>(flat.data()), flat.size() * 8);
  put("control", "stats", control_input(12, st, {counts}));
  train::Apply ap;
  ap.set_step(3), ap.add_count_layers(2), ap.add_count_layers(1);
  put("control", "apply", control_input(15, ap, {counts}));
  train::GradSlices gs;
  gs.set_step(3);
  auto* g0 = gs.add_nodes();
  g0->set_lo(2), g0->set_hi(4);
  put("control", "grad-slices", control_input(13, gs, {std::string(16, '\0')}));
  train::EngramSlices es;
  std::vector<runtime::Payload> pl;
  model::EngramGrad<float> grad = {{{1, 5}, {1, 2, 3, 4}}, {{0}, {5, 6, 7}}};
  actors::add_engram_piece(grad, {4, 6}, &es, &pl);
  put("control", "engram",
      control_input(25, es, {runtime::payload_text(pl[0]), runtime::payload_text(pl[1])}));
  train::ShardList list;
  auto* entry = list.add_shards();
  entry->set_name("param/w"), entry->set_writer("w0"), entry->set_crc32c(9), entry->set_bytes(8);
  put("control", "checkpoint-written",
      control_input(27, train::CheckpointWritten{}, {list.SerializeAsString()}));
}

void config_seeds(const fs::path& source) {
  for (const char* f :
       {"configs/tiny.toml", "configs/small.toml", "tests/configs/tiny_test.toml"}) {
    std::ifstream in(source / f);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    put("config", fs::path(f).stem().string(), text);
  }
  const model::JobConfig defaults = model::config_from_sets({});
  put("config", "defaults-written", model::config_to_toml(defaults));
  put("config", "with-sets",
      "[model]\nn_layers = 2\n" + std::string(1, '\0') + "train.steps=5\noptimizer.name=adamw");
  put("config", "model-json", model::model_config_to_json(defaults.model, 7).dump());
}

void safetensors_seeds() {
  model::SafetensorsFile f;
  f.tensors["a.weight"] = model::to_tensor_data(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  f.tensors["b"] = model::to_tensor_data(std::vector<int64_t>{7}, {});
  f.tensors["c"] = model::to_tensor_data(std::vector<double>{}, {0, 4});
  f.tensors["d"] = model::to_tensor_data(std::vector<int32_t>{1, -1}, {2});
  f.metadata["troupe_config"] = "{\"n_layers\": 2}";
  const std::vector<uint8_t> bytes = model::serialize_safetensors(f);
  put("safetensors", "four-dtypes", std::string(bytes.begin(), bytes.end()));
  const std::vector<uint8_t> empty = model::serialize_safetensors({});
  put("safetensors", "empty", std::string(empty.begin(), empty.end()));
}

void shard_seeds() {
  const fs::path dir = fs::temp_directory_path() / "troupe-fuzz-seeds";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<float> w = {1, 2, 3, 4, 5, 6}, m = {0.5f};
  const std::vector<storage::ShardData> shards = {{"param/w", {2, 3}, w.data(), w.size()},
                                                  {"optim/m", {1}, m.data(), m.size()},
                                                  {"param/empty", {0}, nullptr, 0}};
  const auto written = storage::write_shards((dir / "w0").string(), "w0", 7, shards);
  if (!written.ok()) throw std::runtime_error(written.status().message());
  std::ifstream in(dir / "w0", std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  put("shard", "three-shards", std::string(1, '\0') + file);
  put("shard", "three-shards-fix-crc", std::string(1, '\1') + file);
  fs::remove_all(dir);
}

void http_seeds() {
  const std::string auth = "Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n";
  auto post = [&](const std::string& path, const std::string& body) {
    return "POST " + path + " HTTP/1.1\r\nHost: x\r\n" + auth +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  };
  put("http", "get-status",
      std::string(1, '\0') + "GET /status HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n");
  put("http", "get-page", std::string(1, '\0') + "GET /?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  put("http", "no-token", std::string(1, '\0') + "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  put("http", "scale", std::string(1, '\0') + post("/scale", "{\"nodes\": 3}"));
  put("http", "drain", std::string(1, '\0') + post("/drain", "{\"node\": \"n2\"}"));
  put("http", "pause", std::string(1, '\0') + post("/pause", ""));
  put("http", "chunked",
      std::string(1, '\0') + "POST /checkpoint HTTP/1.1\r\nHost: x\r\n" + auth +
          "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
  put("http", "body-scale", std::string{'\1', '\0'} + "{\"nodes\": 2}");
  put("http", "body-drain", std::string{'\1', '\1'} + "{\"node\": \"n1\"}");
  put("http", "body-pause", std::string{'\1', '\2'} + "{}");
}

}  // namespace
}  // namespace troupe

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CORPUS_ROOT SOURCE_DIR (e.g. tests/fuzz/corpus .)\n", argv[0]);
    return 2;
  }
  troupe::out_root = argv[1];
  troupe::wire_seeds();
  troupe::batch_seeds();
  troupe::control_seeds();
  troupe::config_seeds(argv[2]);
  troupe::safetensors_seeds();
  troupe::shard_seeds();
  troupe::http_seeds();
  std::printf("seeds written under %s\n", argv[1]);
  return 0;
}
