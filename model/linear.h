#pragma once
// The Linear layers inside the blocks (SPEC-model.md §6: attention projections and the
// dense, shared and routed SwiGLU experts), with the precision chosen by the model config:
// FP32 kernels::linear_forward/backward, or their emulated FP8 versions (kernels/cpu/fp8.h)
// when cfg.fp8 is on. Other Linears (MoE gate, mHC φ, embedding, head, MTP projection) stay
// FP32 and call kernels:: directly. Same shapes and accumulation as kernels/cpu/gemm.h.
//
// FP8 runs for float only. With T = double (the finite-difference and reference-parity
// tests) and cfg.fp8 on, both functions throw std::invalid_argument: quantisation is
// piecewise constant, so gradient checks of it are meaningless, and the reference has no FP8.
#include <cstdint>

#include "model/config.h"

namespace troupe::model {

// y (R,O) = beta·y + x (R,I) · Wᵀ, W (O,I). beta is 0 (overwrite) or 1 (accumulate).
template <typename T>
void linear_fwd(const ModelConfig& cfg, const T* x, const T* W, T* y, int64_t R, int64_t I,
                int64_t O, T beta = T(0));

// dx (R,I) += dy (R,O) · W;  dW (O,I) += dyᵀ · x. Either may be null.
template <typename T>
void linear_bwd(const ModelConfig& cfg, const T* dy, const T* x, const T* W, T* dx, T* dW,
                int64_t R, int64_t I, int64_t O);

}  // namespace troupe::model
