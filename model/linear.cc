#include "model/linear.h"

#include <stdexcept>
#include <type_traits>

#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm.h"

namespace troupe::model {

namespace {

[[noreturn]] void refuse_fp8_double() {
  throw std::invalid_argument(
      "fp8.enabled: FP8 is emulated in float only; the double-precision model (gradient "
      "and reference-parity checks) needs fp8.enabled = false");
}

}  // namespace

template <typename T>
void linear_fwd(const ModelConfig& cfg, const T* x, const T* W, T* y, int64_t R, int64_t I,
                int64_t O, T beta) {
  if (!cfg.fp8) return kernels::linear_forward<T>(x, W, y, R, I, O, beta);
  if constexpr (std::is_same_v<T, float>)
    kernels::fp8_linear_forward(x, W, y, R, I, O, beta);
  else
    refuse_fp8_double();
}

template <typename T>
void linear_bwd(const ModelConfig& cfg, const T* dy, const T* x, const T* W, T* dx, T* dW,
                int64_t R, int64_t I, int64_t O) {
  if (!cfg.fp8) return kernels::linear_backward<T>(dy, x, W, dx, dW, R, I, O);
  if constexpr (std::is_same_v<T, float>)
    kernels::fp8_linear_backward(dy, x, W, dx, dW, R, I, O);
  else
    refuse_fp8_double();
}

#define TROUPE_LINEAR_INSTANTIATE(T)                                                             \
  template void linear_fwd<T>(const ModelConfig&, const T*, const T*, T*, int64_t, int64_t,      \
                              int64_t, T);                                                       \
  template void linear_bwd<T>(const ModelConfig&, const T*, const T*, const T*, T*, T*, int64_t, \
                              int64_t, int64_t);

TROUPE_LINEAR_INSTANTIATE(float)
TROUPE_LINEAR_INSTANTIATE(double)

}  // namespace troupe::model
