// gemm: correctness against a double-precision loop, and the determinism contract of
// gemm.h — a row (or column) of C gets the same bits whatever else is in the call, and
// whatever other threads do.
#include "kernels/cpu/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "tests/kernels/test_util.h"

namespace troupe::kernels {
namespace {

using test::random_values;

constexpr Trans kBoth[] = {Trans::N, Trans::T};

std::string trans_name(Trans ta, Trans tb) {
  return std::string(ta == Trans::N ? "N" : "T") + (tb == Trans::N ? "N" : "T");
}

// rows × width values in rows of ld ≥ width. The values depend on (rows, width, seed)
// alone, not on ld; the padding holds NaN, so a kernel that reads it shows.
template <typename T>
std::vector<T> padded_values(int64_t rows, int64_t width, int64_t ld, uint64_t seed) {
  std::vector<T> v(size_t(rows * ld), std::numeric_limits<T>::quiet_NaN());
  const std::vector<T> values = random_values<T>(rows * width, seed);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width; ++c) v[r * ld + c] = values[r * width + c];
  return v;
}

// op(A) (M,K) and op(B) (K,N) stored as gemm reads them, with row padding `pad`.
template <typename T>
struct Problem {
  Trans ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  std::vector<T> A, B;

  Problem(Trans ta_, Trans tb_, int64_t M_, int64_t N_, int64_t K_, int64_t pad, uint64_t seed)
      : ta(ta_), tb(tb_), M(M_), N(N_), K(K_) {
    lda = (ta == Trans::N ? K : M) + pad;
    ldb = (tb == Trans::N ? N : K) + pad;
    ldc = N + pad;
    A = padded_values<T>(ta == Trans::N ? M : K, ta == Trans::N ? K : M, lda, seed);
    B = padded_values<T>(tb == Trans::N ? K : N, tb == Trans::N ? N : K, ldb, seed + 1);
  }
  T a(int64_t i, int64_t k) const { return ta == Trans::N ? A[i * lda + k] : A[k * lda + i]; }
  T b(int64_t k, int64_t j) const { return tb == Trans::N ? B[k * ldb + j] : B[j * ldb + k]; }

  // C = beta*C + op(A)·op(B) into C (M rows of ldc).
  void run(T beta, std::vector<T>& C) const {
    gemm<T>(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  }
  // Rows r0..r0+m and columns c0..c0+n only: a smaller call on offset operands.
  void run_sub(int64_t r0, int64_t m, int64_t c0, int64_t n, T beta, T* C) const {
    const T* a0 = A.data() + (ta == Trans::N ? r0 * lda : r0);
    const T* b0 = B.data() + (tb == Trans::N ? c0 : c0 * ldb);
    gemm<T>(ta, tb, m, n, K, a0, lda, b0, ldb, beta, C + r0 * ldc + c0, ldc);
  }
};

// op(A) as M rows of K and op(B)ᵀ as N rows of K, so the reference loops run unit-stride.
template <typename T>
struct Dense {
  std::vector<T> a, bt;
  explicit Dense(const Problem<T>& p) : a(size_t(p.M * p.K)), bt(size_t(p.N * p.K)) {
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t k = 0; k < p.K; ++k) a[i * p.K + k] = p.a(i, k);
    for (int64_t j = 0; j < p.N; ++j)
      for (int64_t k = 0; k < p.K; ++k) bt[j * p.K + k] = p.b(k, j);
  }
};

// s = Σ_k a·b in double, and Σ_k |a·b| for the error bound.
template <typename T>
void reference(const T* a, const T* b, int64_t K, double& s, double& s_abs) {
  s = 0;
  s_abs = 0;
  for (int64_t k = 0; k < K; ++k) {
    const double prod = double(a[k]) * double(b[k]);
    s += prod;
    s_abs += std::fabs(prod);
  }
}

// The chain gemm.cc documents: s = fma(a, b, s) for k ascending, from 0.
template <typename T>
T fma_chain(const T* a, const T* b, int64_t K) {
  T s = 0;
  for (int64_t k = 0; k < K; ++k) s = std::fma(a[k], b[k], s);
  return s;
}

bool same_bits(float x, float y) {
  return std::memcmp(&x, &y, sizeof x) == 0;
}
bool same_bits(double x, double y) {
  return std::memcmp(&x, &y, sizeof x) == 0;
}

struct Dims {
  int64_t M, N, K;
};

// Odd sizes, sizes around the tile (6×16 float, 6×8 double), the K block (256), the M
// block (144 float, 72 double) and the N block (512 float, 256 double), and all three
// blocks at once.
const std::vector<Dims>& correctness_dims() {
  static const std::vector<Dims> dims = {
      {1, 1, 1},      {3, 3, 3},     {1, 17, 33},   {17, 1, 3},      {33, 17, 1},
      {17, 33, 129},  {129, 33, 17}, {6, 16, 256},  {7, 17, 257},    {333, 257, 129},
      {145, 520, 40}, {5, 3, 600},   {73, 260, 40}, {150, 530, 260},
  };
  return dims;
}

// Per element of C: the double reference, its Σ|a·b|, and the FMA chain's bits.
template <typename T>
struct Expected {
  std::vector<double> ref, ref_abs;
  std::vector<T> chain;
  explicit Expected(const Problem<T>& p)
      : ref(size_t(p.M * p.N)), ref_abs(ref.size()), chain(ref.size()) {
    const Dense<T> d(p);
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t j = 0; j < p.N; ++j) {
        const T* a = &d.a[i * p.K];
        const T* b = &d.bt[j * p.K];
        reference(a, b, p.K, ref[i * p.N + j], ref_abs[i * p.N + j]);
        chain[i * p.N + j] = fma_chain(a, b, p.K);
      }
  }
};

// Checks gemm (beta 0 on a NaN-filled C, then beta 1 and 0.5 on random C) against the
// double reference, against the documented FMA chain bit for bit, and that the ldc padding
// is untouched.
template <typename T>
void check_problem(const Problem<T>& p, const Expected<T>& e) {
  const T sentinel = T(12345);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const double eps = std::numeric_limits<T>::epsilon();
  const std::vector<double>& ref = e.ref;
  const std::vector<double>& ref_abs = e.ref_abs;
  const std::vector<T>& chain = e.chain;
  const std::vector<T> C0 = random_values<T>(p.M * p.ldc, 99);
  for (T beta : {T(0), T(1), T(0.5)}) {  // 0 and 1 in practice; 0.5 for the formula
    std::vector<T> C(size_t(p.M * p.ldc), sentinel);
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t j = 0; j < p.N; ++j) C[i * p.ldc + j] = beta == T(0) ? nan : C0[i * p.ldc + j];
    p.run(beta, C);
    int64_t bad = 0;
    for (int64_t i = 0; i < p.M && bad < 5; ++i) {
      for (int64_t j = 0; j < p.ldc && bad < 5; ++j) {
        const T got = C[i * p.ldc + j];
        if (j >= p.N) {
          bad += !same_bits(got, sentinel);
          EXPECT_TRUE(same_bits(got, sentinel)) << "ldc padding written at " << i << "," << j;
          continue;
        }
        const T c0 = beta == T(0) ? T(0) : C0[i * p.ldc + j];
        const double want = double(beta) * double(c0) + ref[i * p.N + j];
        const double tol = double(p.K + 2) * eps * (ref_abs[i * p.N + j] + std::fabs(c0)) + 1e-30;
        const T want_bits = beta == T(0) ? chain[i * p.N + j] : beta * c0 + chain[i * p.N + j];
        const bool ok = std::fabs(double(got) - want) <= tol && same_bits(got, want_bits);
        bad += !ok;
        EXPECT_TRUE(ok) << "C[" << i << "," << j << "] = " << got << ", want " << want << " ± "
                        << tol << ", chain " << want_bits << " (beta " << beta << ")";
      }
    }
  }
}

template <typename T>
void check_all_dims() {
  for (const Dims& d : correctness_dims()) {
    for (Trans ta : kBoth) {
      for (Trans tb : kBoth) {
        const uint64_t seed = uint64_t(d.M * 7 + d.N + d.K);
        const Expected<T> expected(Problem<T>(ta, tb, d.M, d.N, d.K, 0, seed));
        for (int64_t pad : {0, 3}) {  // the same values, with and without row padding
          SCOPED_TRACE(trans_name(ta, tb) + " " + std::to_string(d.M) + "x" + std::to_string(d.N) +
                       "x" + std::to_string(d.K) + " pad " + std::to_string(pad));
          check_problem(Problem<T>(ta, tb, d.M, d.N, d.K, pad, seed), expected);
        }
      }
    }
  }
}

TEST(Gemm, FloatMatchesDoubleReferenceAndFmaChain) {
  check_all_dims<float>();
}
TEST(Gemm, DoubleMatchesReferenceAndFmaChain) {
  check_all_dims<double>();
}

TEST(Gemm, EmptyShapes) {
  std::vector<float> A(4, 1.0f), B(4, 1.0f), C{1.0f, 2.0f, 3.0f, 4.0f};
  gemm<float>(Trans::N, Trans::N, 0, 2, 2, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
  gemm<float>(Trans::N, Trans::N, 2, 0, 2, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}));
  // K == 0: s = 0, so C = beta*C.
  gemm<float>(Trans::N, Trans::N, 2, 2, 0, A.data(), 2, B.data(), 2, 1.0f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}));
  C[0] = std::numeric_limits<float>::quiet_NaN();
  gemm<float>(Trans::N, Trans::N, 2, 2, 0, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f}));
}

// Row and column windows: (start, count) with start + count ≤ the dimension.
struct Window {
  int64_t start, count;
};

// The determinism contract: every row window and column window of C, computed as its own
// call, has exactly the bits of the full call.
template <typename T>
void check_batch_invariance(const Problem<T>& p, const std::vector<Window>& rows,
                            const std::vector<Window>& cols, T beta) {
  const std::vector<T> C0 = random_values<T>(p.M * p.ldc, 5);
  std::vector<T> full = C0;
  p.run(beta, full);
  auto check = [&](Window r, Window c) {
    std::vector<T> part = C0;
    p.run_sub(r.start, r.count, c.start, c.count, beta, part.data());
    for (int64_t i = r.start; i < r.start + r.count; ++i) {
      const int64_t off = i * p.ldc + c.start;
      ASSERT_EQ(std::memcmp(&part[off], &full[off], size_t(c.count) * sizeof(T)), 0)
          << "row " << i << " differs: rows " << r.start << "+" << r.count << ", cols " << c.start
          << "+" << c.count;
    }
  };
  for (Window r : rows) check(r, {0, p.N});
  for (Window c : cols) check({0, p.M}, c);
}

TEST(GemmDeterminism, SubsetsOfRowsAndColumnsGiveIdenticalBits) {
  for (Trans ta : kBoth) {
    for (Trans tb : kBoth) {
      SCOPED_TRACE(trans_name(ta, tb));
      Problem<float> p(ta, tb, 333, 257, 129, 1, 11);
      check_batch_invariance<float>(p, {{5, 33}, {0, 1}, {332, 1}, {100, 1}, {140, 10}, {1, 331}},
                                    {{5, 33}, {0, 1}, {256, 1}, {17, 16}, {3, 250}}, 0.0f);
      check_batch_invariance<float>(p, {{5, 33}, {7, 1}}, {{9, 100}}, 1.0f);
      Problem<float> big(ta, tb, 4096, 64, 512, 0, 12);
      check_batch_invariance<float>(big, {{5, 33}, {0, 1}, {4095, 1}, {1000, 1000}},
                                    {{0, 1}, {5, 33}, {63, 1}}, 0.0f);
      Problem<double> pd(ta, tb, 333, 257, 129, 0, 13);
      check_batch_invariance<double>(pd, {{5, 33}, {0, 1}}, {{5, 33}, {256, 1}}, 0.0);
    }
  }
}

// Thread-local packing buffers must carry no state between calls or threads: two threads
// running different shapes at once get the bits of one thread running them in turn.
TEST(GemmDeterminism, ConcurrentThreadsGiveIdenticalBits) {
  const std::vector<Dims> dims = {{333, 257, 129}, {7, 600, 300}, {64, 64, 64}, {1, 5, 700}};
  std::vector<Problem<float>> problems;
  std::vector<std::vector<float>> expected;
  for (size_t n = 0; n < dims.size(); ++n) {
    const Trans ta = n % 2 ? Trans::T : Trans::N, tb = n % 3 ? Trans::T : Trans::N;
    problems.emplace_back(ta, tb, dims[n].M, dims[n].N, dims[n].K, 0, 20 + n);
    std::vector<float> C(size_t(dims[n].M * dims[n].N));
    problems.back().run(0.0f, C);
    expected.push_back(std::move(C));
  }
  constexpr int rounds = 3;
  auto worker = [&](size_t first, int* mismatches) {
    for (int r = 0; r < rounds; ++r) {
      for (size_t n = 0; n < problems.size(); ++n) {
        const size_t idx = (first + n) % problems.size();  // the threads' orders differ
        std::vector<float> C(expected[idx].size(), std::numeric_limits<float>::quiet_NaN());
        problems[idx].run(0.0f, C);
        *mismatches += std::memcmp(C.data(), expected[idx].data(), C.size() * sizeof(float)) != 0;
      }
    }
  };
  int mismatches[2] = {0, 0};
  std::thread t0(worker, 0, &mismatches[0]), t1(worker, 1, &mismatches[1]);
  t0.join();
  t1.join();
  EXPECT_EQ(mismatches[0], 0);
  EXPECT_EQ(mismatches[1], 0);
}

TEST(Gemm, LinearHelpersMatchGemm) {
  // linear_forward / linear_backward are thin wrappers; check shapes and accumulation.
  const int64_t R = 5, I = 7, O = 3;
  auto x = random_values<double>(R * I, 1), W = random_values<double>(O * I, 2);
  auto dy = random_values<double>(R * O, 3);
  std::vector<double> y(R * O), dx(R * I, 0.5), dW(O * I, -0.25);
  linear_forward<double>(x.data(), W.data(), y.data(), R, I, O);
  linear_backward<double>(dy.data(), x.data(), W.data(), dx.data(), dW.data(), R, I, O);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < O; ++o) {
      double s = 0;
      for (int64_t i = 0; i < I; ++i) s += x[r * I + i] * W[o * I + i];
      EXPECT_NEAR(y[r * O + o], s, 1e-14);
    }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < I; ++i) {
      double s = 0.5;
      for (int64_t o = 0; o < O; ++o) s += dy[r * O + o] * W[o * I + i];
      EXPECT_NEAR(dx[r * I + i], s, 1e-14);
    }
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      double s = -0.25;
      for (int64_t r = 0; r < R; ++r) s += dy[r * O + o] * x[r * I + i];
      EXPECT_NEAR(dW[o * I + i], s, 1e-14);
    }
}

// gemm_thin_k: the bits of one gemm call per term (beta 0 for the first unless beta = 1,
// then 1), for whole register tiles and the ragged edges in rows and columns.
template <typename T>
void check_thin_k(int64_t M, int64_t N, bool beta) {
  const int64_t Ks[3] = {4, 16, 3}, lda = 30, ldb = N + 3, ldc = N + 1;
  const std::vector<T> A = random_values<T>(M * lda, 41);
  std::vector<std::vector<T>> B;
  std::vector<ThinTerm<T>> terms;
  int64_t col = 0;
  for (int t = 0; t < 3; ++t) {
    B.push_back(random_values<T>(Ks[t] * ldb, 50 + t));
    terms.push_back({A.data() + col, B.back().data(), Ks[t]});
    col += Ks[t];
  }
  const std::vector<T> C0 = random_values<T>(M * ldc, 60);
  std::vector<T> want = C0, got = C0;
  for (int t = 0; t < 3; ++t)
    gemm<T>(Trans::N, Trans::N, M, N, Ks[t], terms[t].A, lda, terms[t].B, ldb,
            (t > 0 || beta) ? T(1) : T(0), want.data(), ldc);
  gemm_thin_k<T>(M, N, terms.data(), 3, lda, ldb, beta ? T(1) : T(0), got.data(), ldc);
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(T)))
      << "M " << M << " N " << N << " beta " << beta;
}

TEST(Gemm, ThinKMatchesGemmPerTermBitwise) {
  for (int64_t M : {1, 4, 7, 9, 16})
    for (int64_t N : {16, 20, 37, 48, 64, 512})  // 20, 37: a ragged second or lone vector
      for (bool beta : {false, true}) {
        check_thin_k<float>(M, N, beta);
        check_thin_k<double>(M, N, beta);
      }
}

// gemm_rows_nn: the bits of gemm(Trans::N, Trans::N, …) for row counts below, at and past one
// 8-row tile and columns ragged against its 24-column passes; K up to two of gemm's K blocks.
template <typename T>
void check_rows_nn(int64_t M, int64_t N, int64_t K, bool beta) {
  const int64_t lda = K + 2, ldb = N + 3, ldc = N + 1;
  const std::vector<T> A = random_values<T>(M * lda, 81), B = random_values<T>(K * ldb, 82);
  const std::vector<T> C0 = random_values<T>(M * ldc, 83);
  std::vector<T> want = C0, got = C0;
  const T b = beta ? T(1) : T(0);
  gemm<T>(Trans::N, Trans::N, M, N, K, A.data(), lda, B.data(), ldb, b, want.data(), ldc);
  gemm_rows_nn<T>(M, N, K, A.data(), lda, B.data(), ldb, b, got.data(), ldc);
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(T)))
      << "M " << M << " N " << N << " K " << K << " beta " << beta;
}

TEST(Gemm, RowsNnMatchesGemmBitwise) {
  for (int64_t M : {1, 3, 8, 11})
    for (int64_t N : {5, 16, 20, 24, 40, 512})
      for (int64_t K : {1, 9, 512})
        for (bool beta : {false, true}) {
          check_rows_nn<float>(M, N, K, beta);
          check_rows_nn<double>(M, N, K, beta);
        }
}

// gemm_rows_tn_continue fed K in uneven pieces from C = 0, then added to a matrix: the bits of
// gemm(Trans::T, Trans::N, …) with beta = 1.
template <typename T>
void check_rows_tn(int64_t M, int64_t N) {
  const int64_t K = 37, lda = M + 2, ldb = N + 3, ldc = N + 1;
  const std::vector<T> A = random_values<T>(K * lda, 91), B = random_values<T>(K * ldb, 92);
  const std::vector<T> C0 = random_values<T>(M * ldc, 93);
  std::vector<T> want = C0, got = C0, carry(M * ldc, T(0));
  gemm<T>(Trans::T, Trans::N, M, N, K, A.data(), lda, B.data(), ldb, T(1), want.data(), ldc);
  for (int64_t k0 = 0, piece = 1; k0 < K; k0 += piece, piece += 3) {
    const int64_t n = std::min(piece, K - k0);
    gemm_rows_tn_continue<T>(M, N, n, A.data() + k0 * lda, lda, B.data() + k0 * ldb, ldb,
                             carry.data(), ldc);
  }
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) got[i * ldc + j] += carry[i * ldc + j];
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(T)))
      << "M " << M << " N " << N;
}

TEST(Gemm, RowsTnContinueMatchesGemmBitwise) {
  for (int64_t M : {1, 5, 8, 24, 30})
    for (int64_t N : {7, 16, 32, 45, 512}) {
      check_rows_tn<float>(M, N);
      check_rows_tn<double>(M, N);
    }
}

}  // namespace
}  // namespace troupe::kernels
