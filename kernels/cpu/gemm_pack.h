#pragma once
// Internal to kernels/cpu: packing op(A) and op(B) into the microkernel's panel layouts
// (gemm.cc), and the in-register 8×8 transpose (also RMSNorm's row groups, ops.cc).
//
// A panel: kMr rows of op(A) over kc steps of k, k-major (panel[k*kMr + r]).
// B panel: kNr columns of op(B) over kc steps of k, k-major (panel[k*kNr + c]).
// Rows or columns past the matrix edge are zero, so edge tiles run the full microkernel
// and their extra lanes are discarded. Packing moves values only; it never rounds.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_kernel.h"

namespace troupe::kernels::detail {

// In-register transpose: afterwards r[k] holds element k of each of the 8 input rows.
inline void transpose_8x8(__m256 (&r)[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// dst[k*dst_stride + r] = rows[r][k] for r < n_rows, k < kc: a strided transpose. The
// float path moves 8×8 blocks through registers; dst must have room for 8 values per k
// when n_rows < 8 (the spare lanes are overwritten by the next k or left in the slack the
// caller reserves: see pack_slack).
template <typename T, int n_rows>
inline void transpose_rows(const T* const (&rows)[n_rows], int64_t kc, T* dst, int dst_stride) {
  int64_t k = 0;
  if constexpr (std::is_same_v<T, float> && n_rows <= 8) {
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(rows[std::min(i, n_rows - 1)] + k);
      transpose_8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (k + i) * dst_stride, r[i]);
    }
  }
  for (; k < kc; ++k)
    for (int i = 0; i < n_rows; ++i) dst[k * dst_stride + i] = rows[i][k];
}

// Floats a packed buffer needs past its end: an 8-wide store for the last k of a 6-row
// transpose writes 2 lanes beyond.
inline constexpr int64_t pack_slack = 8;

// Rows i0..i0+mc of op(A), columns p0..p0+kc, as ceil(mc/kMr) A panels of kc×kMr.
template <typename T>
void pack_a(Trans ta, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
            T* Ap) {
  for (int64_t ir = 0; ir < mc; ir += kMr) {
    const int rows = int(std::min<int64_t>(kMr, mc - ir));
    T* dst = Ap + ir * kc;
    if (ta == Trans::T && rows == kMr) {
      const T* src = A + p0 * lda + i0 + ir;
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * kMr, src + k * lda, sizeof(T) * kMr);
    } else if (ta == Trans::T) {
      const T* src = A + p0 * lda + i0 + ir;
      for (int64_t k = 0; k < kc; ++k)
        for (int r = 0; r < kMr; ++r) dst[k * kMr + r] = r < rows ? src[k * lda + r] : T(0);
    } else if (rows == kMr) {
      const T* src = A + (i0 + ir) * lda + p0;
      const T* const row[kMr] = {src,           src + lda,     src + 2 * lda,
                                 src + 3 * lda, src + 4 * lda, src + 5 * lda};
      transpose_rows<T, kMr>(row, kc, dst, kMr);
    } else {
      const T* src = A + (i0 + ir) * lda + p0;
      for (int64_t k = 0; k < kc; ++k)
        for (int r = 0; r < kMr; ++r) dst[k * kMr + r] = r < rows ? src[r * lda + k] : T(0);
    }
  }
}

// Columns j0..j0+nc of op(B), rows p0..p0+kc, as ceil(nc/kNr) B panels of kc×kNr.
template <typename T>
void pack_b(Trans tb, const T* B, int64_t ldb, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
            T* Bp) {
  constexpr int nr = kNr<T>;
  constexpr int half = nr / 2;
  for (int64_t jr = 0; jr < nc; jr += nr) {
    const int cols = int(std::min<int64_t>(nr, nc - jr));
    T* dst = Bp + jr * kc;
    if (tb == Trans::N && cols == nr) {
      const T* src = B + p0 * ldb + j0 + jr;
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * nr, src + k * ldb, sizeof(T) * nr);
    } else if (tb == Trans::N) {
      const T* src = B + p0 * ldb + j0 + jr;
      for (int64_t k = 0; k < kc; ++k)
        for (int c = 0; c < nr; ++c) dst[k * nr + c] = c < cols ? src[k * ldb + c] : T(0);
    } else if (cols == nr) {
      // Two half-panels of kNr/2 = 8 (float) columns, each a transpose of 8 rows of B.
      for (int h = 0; h < 2; ++h) {
        const T* src = B + (j0 + jr + h * half) * ldb + p0;
        const T* rows[half];
        for (int c = 0; c < half; ++c) rows[c] = src + c * ldb;
        transpose_rows<T, half>(rows, kc, dst + h * half, nr);
      }
    } else {
      const T* src = B + (j0 + jr) * ldb + p0;
      for (int64_t k = 0; k < kc; ++k)
        for (int c = 0; c < nr; ++c) dst[k * nr + c] = c < cols ? src[c * ldb + k] : T(0);
    }
  }
}

}  // namespace troupe::kernels::detail
