#pragma once
// expf of many floats at once with the bits of the C library's own expf (glibc's, which on a
// CPU with AVX2 and FMA is its __expf_fma), so a vectorised caller keeps the results of a
// scalar std::exp loop bit for bit. The fast path reproduces glibc's algorithm (its table of
// 2^(i/32), its three polynomial terms and the very FMAs its build fuses) four lanes at a
// time; any lane outside glibc's own fast range (|x| >= 88, inf, NaN) and any build or
// machine where the fast path was not proven equal to std::exp takes std::exp instead.
#include <cstdint>

namespace troupe::kernels {

// y[i] = std::exp(x[i]) for i < n, bit for bit; x and y may be the same array.
void expf_exact(const float* x, float* y, int64_t n);

// Whether expf_exact runs its vector path here: built with AVX2 and FMA, and its start-up
// check against std::exp (a few thousand values across the range) found every bit equal.
bool expf_exact_vectorised();

}  // namespace troupe::kernels
