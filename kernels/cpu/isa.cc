// Built for the baseline x86-64 (kernels/CMakeLists.txt): it must run on the CPU that lacks
// what the rest of the binary uses. Plain arrays and snprintf: no inlined library code that
// -march=native would have vectorised.
#include "kernels/cpu/isa.h"

#include <cstdio>

namespace troupe::kernels {

namespace {
const char* const isa_names[isa_count] = {
    "sse4.2",     "avx",        "avx2",       "fma",         "f16c",         "bmi2",
    "avx512f",    "avx512bw",   "avx512cd",   "avx512dq",    "avx512vl",     "avx512vnni",
    "avx512bf16", "avx512ifma", "avx512vbmi", "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq",
};
}  // namespace

uint32_t isa_of_this_cpu() {
  __builtin_cpu_init();
  // __builtin_cpu_supports takes string literals only: one line per extension.
  const bool has[isa_count] = {
      bool(__builtin_cpu_supports("sse4.2")),       bool(__builtin_cpu_supports("avx")),
      bool(__builtin_cpu_supports("avx2")),         bool(__builtin_cpu_supports("fma")),
      bool(__builtin_cpu_supports("f16c")),         bool(__builtin_cpu_supports("bmi2")),
      bool(__builtin_cpu_supports("avx512f")),      bool(__builtin_cpu_supports("avx512bw")),
      bool(__builtin_cpu_supports("avx512cd")),     bool(__builtin_cpu_supports("avx512dq")),
      bool(__builtin_cpu_supports("avx512vl")),     bool(__builtin_cpu_supports("avx512vnni")),
      bool(__builtin_cpu_supports("avx512bf16")),   bool(__builtin_cpu_supports("avx512ifma")),
      bool(__builtin_cpu_supports("avx512vbmi")),   bool(__builtin_cpu_supports("avx512vbmi2")),
      bool(__builtin_cpu_supports("avx512bitalg")), bool(__builtin_cpu_supports("avx512vpopcntdq")),
  };
  uint32_t m = 0;
  for (int i = 0; i < isa_count; ++i)
    if (has[i]) m |= 1u << i;
  return m;
}

int isa_missing(uint32_t compiled, uint32_t cpu, char* out, size_t size) {
  int n = 0;
  size_t at = 0;
  if (size > 0) out[0] = '\0';
  for (int i = 0; i < isa_count; ++i) {
    if (!(compiled & (1u << i)) || (cpu & (1u << i))) continue;
    ++n;
    if (at < size) {
      const int w = std::snprintf(out + at, size - at, "%s%s", n > 1 ? " " : "", isa_names[i]);
      if (w > 0) at += size_t(w);
    }
  }
  return n;
}

}  // namespace troupe::kernels
