#pragma once
// Generation (issue 17, item 3): a KV-cache decoder, the full-forward ("recompute") logits
// it is checked against, the sampler, and the loop that joins them. docs/generate.md.
//
// The sequence is one document: BOS, the prompt's bytes, then the generated tokens, at
// positions 0, 1, … (RoPE and Engram's hashing as in training, which restarts both per
// row). The MTP head is not used.
//
// Decoder: prefill appends the whole prompt in one call (every op over its n positions at
// once), then decoding appends one token per call; each call gives the main head's logits
// of the positions it appended. What it keeps between calls (model/decode_ops.h): per MLA
// layer the latent c_kv (after RMSNorm_kv) and k_pe (after RoPE) of every position — k_nope
// and v are re-expanded from them with W_kv_b at each call (not absorbed into the query);
// per Engram layer and stream the conv inputs of the last (kernel−1)·dilation positions;
// the token history (for the n-gram hashes). mHC, MoE and SwiGLU are per token.
//
// FP8: generation runs the FP32 path. A weights file holds FP32 masters and no [fp8] switch
// (config.h); a config with fp8 on is copied with fp8 off, so Decoder and FullForward compute
// FP32 Linears on the same weights (a test holds it).
//
// Positions: the model was trained on rows of seq_len tokens, so positions ≥ seq_len were
// never seen. check_generate_request refuses a request that would feed one (BOS + prompt +
// max_new − 1 fed-back tokens > seq_len); the Decoder itself holds whatever capacity it is
// given (RoPE is defined at any position), which the benchmark and tests keep ≤ seq_len.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/engram.h"
#include "model/model.h"
#include "model/params.h"

namespace troupe::model {

// The KV-cache decoder. Not thread-safe; one sequence at a time (reset() starts another).
template <typename T>
class Decoder {
 public:
  // capacity: the most positions one sequence may reach. seed: the job seed (Engram hashes).
  // table is read here only (tensor offsets); cfg is copied. Throws std::invalid_argument /
  // std::out_of_range naming a tensor or key that does not fit.
  Decoder(const ModelConfig& cfg, const ParamTable& table, uint64_t seed, int64_t capacity);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Appends tokens at positions len()…len()+n−1 and returns their logits (n,V), valid until
  // the next call. engram: required when the config has Engram layers. Throws, before
  // changing anything, std::length_error beyond capacity and std::invalid_argument for an
  // empty call, a token outside [0, V) or a missing store; an error from below (the store's
  // lookup) leaves the sequence unusable until reset().
  const std::vector<T>& append(const T* params, const EngramStore<T>* engram,
                               std::span<const int32_t> tokens);
  int64_t len() const;
  int64_t capacity() const;
  void reset();  // an empty sequence; the caches keep their storage

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The recompute path: the model's own forward (Model::step) over the whole sequence.
template <typename T>
class FullForward {
 public:
  // table must outlive this object (Model keeps a reference to it).
  FullForward(const ModelConfig& cfg, const ParamTable& table, uint64_t seed);
  // tokens (len) -> the main head's logits (len,V) at every position, valid until next call.
  const std::vector<T>& logits(const T* params, const EngramStore<T>* engram,
                               std::span<const int32_t> tokens);

 private:
  ModelConfig cfg_;  // before model_: Model keeps a reference to it
  Model<T> model_;
};

// Picks the next token from logits. Temperature 0: argmax, ties to the lowest id. Else
// softmax(logits / temperature) (in double) sampled by inverse CDF over ids in ascending order
// with u = CounterRng(seed, purpose_of("generate.sample"), step, prompt).uniform(
// sample·2^32 + position): keyed by (seed, step, prompt, sample, position) as SPEC §7/§8 ask;
// position is the index in the sequence of the token being drawn.
class Sampler {
 public:
  // Throws std::invalid_argument for a negative or non-finite temperature.
  explicit Sampler(double temperature, uint64_t seed = 0, uint64_t step = 0, uint64_t prompt = 0,
                   uint64_t sample = 0);
  template <typename T>
  int32_t pick(const T* logits, int64_t V, int64_t position) const;

 private:
  double temperature_;
  uint64_t seed_, step_, prompt_, sample_;
};

struct GenerateOptions {
  int64_t max_new = 64;     // tokens at most, ≥ 1
  bool stop_at_eos = true;  // false: exactly max_new tokens (benchmarks, tests)
};

// The last position's logits (V) of the sequence so far (context): how the loop asks a path.
template <typename T>
using NextLogits = std::function<const T*(std::span<const int32_t> context)>;

// prompt (with its BOS) -> the generated tokens (EOS included when it stopped there).
// step_logits, when given, receives the logits each token was drawn from.
template <typename T>
std::vector<int32_t> generate(const NextLogits<T>& next, int64_t V, std::span<const int32_t> prompt,
                              const GenerateOptions& opts, const Sampler& sampler,
                              std::vector<std::vector<T>>* step_logits = nullptr);
// The two paths as NextLogits: the decoder (reset first, prefill, then one token per call),
// and the full forward of the whole context at every step.
template <typename T>
NextLogits<T> cached_next(Decoder<T>& dec, const T* params, const EngramStore<T>* engram);
template <typename T>
NextLogits<T> recompute_next(FullForward<T>& full, const T* params, const EngramStore<T>* engram);

// The user's request to `troupe generate`, checked against the model before anything runs.
struct GenerateRequest {
  std::string prompt;  // bytes; the sequence is BOS + these
  int64_t max_new = 64;
  double temperature = 1.0;
};
// The positions a request feeds the model: BOS + prompt + max_new − 1 (the last token drawn
// is never fed back).
int64_t request_positions(const GenerateRequest& r);
// "" when the options are valid on their own (a prompt, max_new ≥ 1, a finite temperature
// ≥ 0), else one line naming the option and what to do.
std::string check_generate_options(const GenerateRequest& r);
// check_generate_options, then whether the request fits the model (a byte-level vocabulary;
// request_positions ≤ seq_len): "" or one line naming what is wrong and what to do.
std::string check_generate_request(const ModelConfig& cfg, const GenerateRequest& r);
// BOS followed by the prompt's bytes.
std::vector<int32_t> prompt_tokens(const std::string& prompt);

}  // namespace troupe::model
