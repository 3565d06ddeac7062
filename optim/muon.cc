#include "optim/muon.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel_for.h"

namespace troupe::model {

namespace {
using kernels::gemm;
using kernels::Trans;

// NS5's quintic (Keller Jordan's Muon): maximises the slope at 0 while keeping every
// singular value in roughly [0.7, 1.2] after five iterations.
constexpr float kNsA = 3.4445f, kNsB = -4.7750f, kNsC = 2.0315f;
// Added to ‖M‖_F so that an all-zero gradient gives O = 0, not NaN.
constexpr double kNsNormEps = 1e-7;
// Moonlight's scale: 0.2·sqrt(max(rows, cols)) matches AdamW's update RMS (≈ 0.2).
constexpr double kMoonlightRms = 0.2;
}  // namespace

void newton_schulz5(const float* m, int64_t rows, int64_t cols, float* out, int ns_steps,
                    std::vector<float>& scratch) {
  // X (r, c) with r <= c, so that A = X Xᵀ is the smaller Gram matrix.
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows, c = tall ? rows : cols;
  scratch.resize(static_cast<size_t>(2 * r * c + 2 * r * r));
  float* X = scratch.data();
  float* Y = X + r * c;
  float* A = Y + r * c;
  float* P = A + r * r;  // A², then bA + cA²

  double sum_sq = 0;  // in index order: the bits depend on m alone
  for (int64_t i = 0; i < rows * cols; ++i) sum_sq += double(m[i]) * double(m[i]);
  const float denom = float(std::sqrt(sum_sq) + kNsNormEps);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      X[tall ? j * rows + i : i * cols + j] = m[i * cols + j] / denom;

  for (int it = 0; it < ns_steps; ++it) {
    gemm<float>(Trans::N, Trans::T, r, r, c, X, c, X, c, 0.0f, A, r);  // A = X Xᵀ
    gemm<float>(Trans::N, Trans::N, r, r, r, A, r, A, r, 0.0f, P, r);  // A²
    for (int64_t i = 0; i < r * r; ++i) P[i] = kNsB * A[i] + kNsC * P[i];
    gemm<float>(Trans::N, Trans::N, r, c, r, P, r, X, c, 0.0f, Y, c);  // (bA + cA²) X
    for (int64_t i = 0; i < r * c; ++i) X[i] = kNsA * X[i] + Y[i];
  }

  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[i * cols + j] = X[tall ? j * rows + i : i * cols + j];
}

Muon::Muon(const ParamTable& table, MuonSettings settings, int threads, FlatRange state,
           bool offload)
    : table_(table),
      settings_(settings),
      threads_(std::max(1, threads)),
      slots_(table, state, [](const ParamInfo& p) { return p.group == OptGroup::Muon; }),
      b_(slots_.floats(), offload),
      dir_(static_cast<size_t>(threads_)),
      ortho_(static_cast<size_t>(threads_)),
      scratch_(static_cast<size_t>(threads_)),
      window_(static_cast<size_t>(threads_)) {
  int64_t numel_max = 0;
  for (size_t t = 0; t < table.all().size(); ++t) {
    const ParamInfo& p = table.all()[t];
    if (p.group != OptGroup::Muon) continue;
    if (p.shape.size() != 2)
      throw std::logic_error(fmt::format("Muon: tensor {} is not 2-D", p.name));
    tensors_.push_back(t);
    numel_max = std::max(numel_max, p.numel);
  }
  for (int w = 0; w < threads_; ++w) {
    dir_[w].resize(static_cast<size_t>(numel_max));
    ortho_[w].resize(static_cast<size_t>(numel_max));
  }
}

void Muon::read_state(size_t t, float* out) const {
  b_.read(slots_.at(table_, t), table_.all()[t].numel, out);
}

void Muon::write_state(size_t t, const float* in) {
  b_.write(slots_.at(table_, t), table_.all()[t].numel, in);
}

void Muon::check_state(FlatRange owned) const {
  for (size_t t : tensors_)
    if (owned.covers(table_.all()[t])) (void)slots_.at(table_, t);
}

void Muon::update(float* params, const float* grads, double lr, double grad_scale,
                  double weight_decay, FlatRange owned, int64_t base) {
  const float scale = float(grad_scale);
  check_state(owned);  // throws here, not inside a worker thread
  kernels::parallel_for(
      static_cast<int64_t>(tensors_.size()), threads_, [&](int64_t i, int worker) {
        const size_t t = tensors_[size_t(i)];
        const ParamInfo& p = table_.all()[t];
        if (owned.covers(p))
          update_tensor(t, p, params + (p.offset - base), grads + (p.offset - base), scale, lr,
                        weight_decay, worker);
      });
}

void Muon::update_tensor(size_t t, const ParamInfo& p, float* w, const float* g, float scale,
                         double lr, double weight_decay, int worker) {
  const int64_t rows = p.shape[0], cols = p.shape[1];
  const float mu = float(settings_.momentum);
  const int64_t at = slots_.at(table_, t);
  float* b = b_.fetch(at, p.numel, window_[worker]);
  float* dir = dir_[worker].data();
  for (int64_t i = 0; i < p.numel; ++i) {
    const float gi = g[i] * scale;
    b[i] = mu * b[i] + gi;    // B ← μB + G
    dir[i] = gi + mu * b[i];  // Nesterov: G + μB
  }
  b_.store(at, p.numel, b);
  float* o = ortho_[worker].data();
  newton_schulz5(dir, rows, cols, o, settings_.ns_steps, scratch_[worker]);
  const float step = float(lr * kMoonlightRms * std::sqrt(double(std::max(rows, cols))));
  const float decay = float(lr * weight_decay);
  for (int64_t i = 0; i < p.numel; ++i) w[i] -= step * o[i] + decay * w[i];
}

}  // namespace troupe::model
