#pragma once
// The x86 instruction-set extensions a translation unit was compiled for (the build uses
// -march=native), checked against the CPU that runs it. A binary built on an AVX-512
// machine dies of SIGILL on one without; `troupe` checks first and says what to do.
#include <cstddef>
#include <cstdint>

namespace troupe::kernels {

// One bit per extension, in the order of isa_names().
enum IsaBit : uint32_t {
  isa_sse4_2 = 1u << 0,
  isa_avx = 1u << 1,
  isa_avx2 = 1u << 2,
  isa_fma = 1u << 3,
  isa_f16c = 1u << 4,
  isa_bmi2 = 1u << 5,
  isa_avx512f = 1u << 6,
  isa_avx512bw = 1u << 7,
  isa_avx512cd = 1u << 8,
  isa_avx512dq = 1u << 9,
  isa_avx512vl = 1u << 10,
  isa_avx512vnni = 1u << 11,
  isa_avx512bf16 = 1u << 12,
  isa_avx512ifma = 1u << 13,
  isa_avx512vbmi = 1u << 14,
  isa_avx512vbmi2 = 1u << 15,
  isa_avx512bitalg = 1u << 16,
  isa_avx512vpopcntdq = 1u << 17,
};
inline constexpr int isa_count = 18;

// The extensions the *including* translation unit is compiled for: call it from code built
// with the project's flags (launch/main.cc).
constexpr uint32_t isa_compiled_here() {
  uint32_t m = 0;
#ifdef __SSE4_2__
  m |= isa_sse4_2;
#endif
#ifdef __AVX__
  m |= isa_avx;
#endif
#ifdef __AVX2__
  m |= isa_avx2;
#endif
#ifdef __FMA__
  m |= isa_fma;
#endif
#ifdef __F16C__
  m |= isa_f16c;
#endif
#ifdef __BMI2__
  m |= isa_bmi2;
#endif
#ifdef __AVX512F__
  m |= isa_avx512f;
#endif
#ifdef __AVX512BW__
  m |= isa_avx512bw;
#endif
#ifdef __AVX512CD__
  m |= isa_avx512cd;
#endif
#ifdef __AVX512DQ__
  m |= isa_avx512dq;
#endif
#ifdef __AVX512VL__
  m |= isa_avx512vl;
#endif
#ifdef __AVX512VNNI__
  m |= isa_avx512vnni;
#endif
#ifdef __AVX512BF16__
  m |= isa_avx512bf16;
#endif
#ifdef __AVX512IFMA__
  m |= isa_avx512ifma;
#endif
#ifdef __AVX512VBMI__
  m |= isa_avx512vbmi;
#endif
#ifdef __AVX512VBMI2__
  m |= isa_avx512vbmi2;
#endif
#ifdef __AVX512BITALG__
  m |= isa_avx512bitalg;
#endif
#ifdef __AVX512VPOPCNTDQ__
  m |= isa_avx512vpopcntdq;
#endif
  return m;
}

// The extensions this CPU has (CPUID), as the same bits.
uint32_t isa_of_this_cpu();
// Writes into out (size bytes, NUL-terminated) the names of the extensions in `compiled`
// that `cpu` lacks, space-separated; returns how many. Compiled for the baseline x86-64, so
// it runs on any CPU.
int isa_missing(uint32_t compiled, uint32_t cpu, char* out, size_t size);

}  // namespace troupe::kernels
