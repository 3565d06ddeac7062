#pragma once
// Engram conditional memory (SPEC-model.md §4, §11): hashed n-gram lookups into tables that
// live outside the dense parameter buffer, a context-aware gate per mHC stream, and a
// depthwise causal convolution. Shape letters as in kernels/README.md; J = tables of one
// layer (orders·K), D = engram_head_dim, M = d_mem = J·D.
//
// Hashing conventions (normative; tests/reference/README.md restates them):
//   P(x)     bytes 'A'..'Z' -> 'a'..'z'; bytes {9,10,11,12,13,32} -> 32; every other id
//            (other bytes, BOS 256, EOS 257) unchanged.
//   m_k      2·(splitmix64(seed + 10007·l + k) mod 2^31) + 1, uint64 wrapping, with
//            splitmix64(x): x += 0x9E3779B97F4A7C15; x = (x ^ x>>30)·0xBF58476D1CE4E5B9;
//            x = (x ^ x>>27)·0x94D049BB133111EB; return x ^ x>>31 (model/rng.h).
//            l is the 0-based block index, k the offset (0 = current token); shared by orders.
//   mix_n    XOR over k = 0..n−1 of P(x_{t−k})·m_k (uint64), with P(x_{t−k}) = 256 (BOS) for
//            t−k before the document start. Without document ids a row is the document for
//            Engram as it is for attention and RoPE (positions restart per row), in
//            pretraining and in eval; with them (Batch.doc, mixed-length mode) the document
//            starts where its run of ids starts, and the conv reads zero before it too.
//   row      mix_n mod R_{l,n,j}.
//   sizes    distinct primes: the first prime ≥ engram_table_rows goes to the first table,
//            each later (layer, order, head) — in that order — takes the next prime.
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace troupe::model {

// ------------------------------------------------------------------------------- tables

// Residual streams the module sees: hc_mult under mHC, 1 under the plain residual.
inline int64_t engram_streams(const ModelConfig& c) {
  return c.residual == Residual::mhc ? c.hc_mult : 1;
}

struct EngramTableInfo {
  std::string name;  // model.layers.{l}.engram.tables.{order}.{j}
  int64_t layer = 0, order = 0, head = 0;
  int64_t rows = 0;  // R, a prime
  int64_t dim = 0;   // D
};

// Every Engram table of the config in (layer, order, head) order, with its prime size.
std::vector<EngramTableInfo> engram_tables(const ModelConfig& cfg);
// Σ rows·dim over the tables: the parameters outside the dense buffer.
int64_t engram_table_params(const ModelConfig& cfg);

// out (D) <- row `row` of a fresh table: entries row·D … row·D + D − 1 of the rule below
// (InProcessEngramStore's), made on demand.
template <typename T>
void engram_initial_row(const EngramTableInfo& table, uint64_t seed, int64_t row, T* out);

int64_t next_prime_at_least(int64_t n);
uint64_t engram_compress(int32_t id);                                 // P(x)
uint64_t engram_multiplier(uint64_t seed, int64_t layer, int64_t k);  // m_k

// ids (J, R·T) <- the row each table of layer `layer` reads at every position of the
// micro-batch tokens (R, T). Tables in layer order: orders outer, heads inner. doc (R, T):
// Batch.doc's document ids or null (model/batch.h).
void engram_row_ids(const ModelConfig& cfg, uint64_t seed, int64_t layer,
                    const std::vector<EngramTableInfo>& layer_tables, const int32_t* tokens,
                    int64_t R, int64_t T, int64_t* ids, const int32_t* doc = nullptr);

// A sparse gradient of one table: ascending unique row ids and their rows (ids.size(), D).
template <typename T>
struct SparseRows {
  std::vector<int64_t> ids;
  std::vector<T> values;
};
// One SparseRows per table of engram_tables(cfg), in that order.
template <typename T>
using EngramGrad = std::vector<SparseRows<T>>;

// a <- a + b rowwise: rows on one side are copied, rows on both sides added as a + b (left
// + right). The reduction step of the canonical tree (DESIGN §5).
template <typename T>
void sparse_rows_add(SparseRows<T>& a, const SparseRows<T>& b, int64_t dim);
// Σ g² over one table's rows in ascending row order, in double (one sequential sum).
template <typename T>
double engram_table_sumsq(const SparseRows<T>& rows);
// Σ g² over every row of every table: engram_table_sumsq of each, added in table order.
template <typename T>
double engram_grad_sumsq(const EngramGrad<T>& g);

// Adam hyper-parameters of one sparse update (SPEC §4/§5: lr already × 5, no decay).
struct EngramAdamStep {
  double lr = 0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_scale = 1;  // global-norm clipping factor
  int64_t step = 0;       // the global 0-based step: bias correction uses step + 1
};

// One sparse Adam update of one row: w, m, v (D each) from its gradient g, with the step's
// constants (EngramAdamRow::of). Every store updates its rows through it: the same bits.
template <typename T>
struct EngramAdamRow {
  T b1, b2, scale, step_size, inv_c2, eps;
  static EngramAdamRow of(const EngramAdamStep& s);
  void operator()(const T* g, T* w, T* m, T* v, int64_t D) const;
};

// Where the tables live. This process's in-memory store below; a later issue puts them in
// shard actors with RocksDB as the cold tier behind the same two calls.
template <typename T>
class EngramStore {
 public:
  virtual ~EngramStore() = default;
  virtual const std::vector<EngramTableInfo>& tables() const = 0;
  // out (n, D) <- rows ids[0..n) of table `table`. Safe to call concurrently; must not be
  // called concurrently with apply(). Throws std::out_of_range for a bad table or id.
  virtual void lookup(int64_t table, const int64_t* ids, int64_t n, T* out) const = 0;
  // One Adam step on exactly the rows present in grad (one SparseRows per table); rows
  // absent keep their values and their moments. Called once per optimizer step.
  virtual void apply(const EngramGrad<T>& grad, const EngramAdamStep& s) = 0;
};

// The rows an update is about to change, with their values and Adam moments (per table), so
// that the update can be undone (recovery returns to the version before a step).
template <typename T>
struct EngramRowsBackup {
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<T>> values, m, v;  // (ids, D) each
};

// Tables in host memory with Adam moments for every row (touched rows only are updated:
// "lazy" Adam — an untouched row's moments do not decay).
template <typename T>
class InProcessEngramStore final : public EngramStore<T> {
 public:
  // Fresh tables: entry i of a table is 0.02·normal(i) of CounterRng(seed, purpose_of(name)),
  // the same rule as the dense Normal parameters (params.cc).
  InProcessEngramStore(const ModelConfig& cfg, uint64_t seed);
  // Only the tables t with held[t] (an engram_shard's share, actors/engram_shard.cc), made as
  // above; the others hold nothing, and lookup or apply of a row of one throws
  // std::out_of_range naming it.
  InProcessEngramStore(const ModelConfig& cfg, uint64_t seed, const std::vector<bool>& held);
  // Tables given (one (R·D) vector per table, in engram_tables(cfg) order; e.g. loaded).
  InProcessEngramStore(const ModelConfig& cfg, std::vector<std::vector<T>> values);

  const std::vector<EngramTableInfo>& tables() const override { return info_; }
  bool held(int64_t table) const { return !values_.at(size_t(table)).empty(); }
  void lookup(int64_t table, const int64_t* ids, int64_t n, T* out) const override;
  void apply(const EngramGrad<T>& grad, const EngramAdamStep& s) override;
  // The rows of `grad` as they are now; restore_rows puts them back (values and moments).
  EngramRowsBackup<T> backup_rows(const EngramGrad<T>& grad) const;
  void restore_rows(const EngramRowsBackup<T>& b);

  // A table's Adam moments (checkpoints write and load them with the values).
  std::vector<T>& moment_m(int64_t table) { return m_.at(size_t(table)); }
  std::vector<T>& moment_v(int64_t table) { return v_.at(size_t(table)); }
  const std::vector<T>& moment_m(int64_t table) const { return m_.at(size_t(table)); }
  const std::vector<T>& moment_v(int64_t table) const { return v_.at(size_t(table)); }
  T* data(int64_t table) { return values_.at(size_t(table)).data(); }
  const T* data(int64_t table) const { return values_.at(size_t(table)).data(); }

 private:
  std::vector<EngramTableInfo> info_;
  std::vector<std::vector<T>> values_, m_, v_;
};

// ------------------------------------------------------------------------------ module

// Offsets of one Engram layer's dense parameters and its slice of the tables.
struct EngramLayout {
  int64_t layer = 0;
  int64_t first_table = 0;                           // index into engram_tables(cfg)
  std::vector<EngramTableInfo> tables;               // this layer's J tables
  std::vector<int64_t> w_k, norm_q, norm_k, norm_c;  // one per stream
  int64_t w_v = 0, conv = 0;
  uint64_t seed = 0;  // the job seed: the hash multipliers depend on it
  static EngramLayout from(const ParamTable& t, const ModelConfig& cfg, uint64_t seed,
                           int64_t layer);
};

template <typename T>
struct EngramCache {
  int64_t R = 0, Tn = 0, N = 0;
  std::vector<int64_t> ids;    // (J, N)
  std::vector<int32_t> first;  // (N) offset in its row of the token's document start
  std::vector<T> e, v;         // (N, M), (N, C)
  // Per stream m, each (S, N, C) or (S, N): contiguous stream copies and activations.
  std::vector<T> x, qn, rq, k, kn, rk, s, alpha, vt, cn, rc, conv;
};

// X (N,S,C) -> Xout (N,S,C) = X + Y; tokens (R,T) give the rows, read through `store`;
// doc (R,T) the document ids or null (model/batch.h).
template <typename T>
void engram_forward(const ModelConfig& cfg, const EngramLayout& L, const T* params,
                    const EngramStore<T>& store, const int32_t* tokens, int64_t R, int64_t T_,
                    const T* X, T* Xout, EngramCache<T>& cache, const int32_t* doc = nullptr);
// The module's depthwise causal conv over the time axis of z (R,T,C): channel c uses row c of
// w (C,Kc), y_t = Σ_i w[c·Kc+i]·z_{t−(Kc−1−i)·dil}, zero before the row start (before
// first[t], the offset of t's document start in its row, when first (R,T) is given); y (R,T,C)
// overwritten. engram_forward runs it per stream; decoding runs it over kept history rows.
template <typename T>
void engram_conv_forward(const T* w, const T* z, T* y, int64_t R, int64_t T_, int64_t C, int64_t Kc,
                         int64_t dil, const int32_t* first = nullptr);
// dXout (N,S,C) -> dX (N,S,C) += (the residual path and the gate's read of X); dense
// gradients += into grads; table gradients of this layer's tables are written (replaced)
// into tgrad[first_table + j], rows summed in position order.
template <typename T>
void engram_backward(const ModelConfig& cfg, const EngramLayout& L, const T* params, T* grads,
                     const T* dXout, T* dX, EngramGrad<T>& tgrad, EngramCache<T>& cache);

}  // namespace troupe::model
