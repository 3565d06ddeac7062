#pragma once
// FP8 (SPEC-model.md §6): OCP FP8 conversion, tile-scaled quantisation (the DeepSeek-V3
// recipe) and the emulated FP8 Linear layer. Row-major; dimension letters: kernels/README.md.
//
// Conversion (fp8_encode) is exactly OCP FP8 with the "satfinite" overflow rule that
// training uses (the hardware's cvt.rn.satfinite):
//  - round to nearest, ties to even, on the exact binary value of the float (one rounding);
//  - a finite value beyond the largest finite code, and ±inf, saturate to ±max (E4M3 448,
//    E5M2 57344). So E5M2's infinity codes are decoded but never produced;
//  - NaN (either sign) -> 0x7F, a NaN in both formats (E4M3 S.1111.111, E5M2 S.11111.11);
//  - ±0 keep their sign (-0.0 -> 0x80); floats below half the smallest subnormal -> ±0.
//
// Scaled quantisation: a tile of values v gets one FP32 scale s = amax/max_code_value
// (448 for E4M3), computed as an IEEE division, and codes q = encode(v / s); it dequantises
// to decode(q) · s. A tile whose scale comes out 0 — all zeros, or amax below
// 448·2⁻¹⁵⁰ — gets s = 1 instead (its codes are then ±0 or the few subnormals that
// survive), so dividing by s is always defined. NaN inputs stay NaN element by element.
#include <cstdint>

namespace troupe::kernels {

enum class Fp8Format { E4M3, E5M2 };

inline constexpr int64_t fp8_tile_len = 128;           // SPEC §6: 1×128 tiles, 128×128 blocks
inline constexpr float fp8_e4m3_max_value = 448.0f;    // 1.75 · 2^8, code 0x7E
inline constexpr float fp8_e5m2_max_value = 57344.0f;  // 1.75 · 2^15, code 0x7B
constexpr float fp8_max_value(Fp8Format f) {
  return f == Fp8Format::E4M3 ? fp8_e4m3_max_value : fp8_e5m2_max_value;
}

uint8_t fp8_encode(float x, Fp8Format f);
float fp8_decode(uint8_t code, Fp8Format f);

// How a (rows, cols) matrix is cut into tiles, each with its own scale.
//  - RowTiles: 1×128 tiles along a row (activations and output gradients whose reduction
//    dimension is the column one, as in Fprop and Dgrad). Scale of (r, cb) at
//    [r·ceil(cols/128) + cb].
//  - ColTiles: 128×1 tiles down a column (the Wgrad operands, reduced over the row =
//    token dimension). Scale of (rb, c) at [rb·cols + c].
//  - Blocks: 128×128 blocks (weights). Scale of (rb, cb) at [rb·ceil(cols/128) + cb].
// A last, shorter tile at the edge of the matrix has its own amax like any other.
enum class Fp8Tiling { RowTiles, ColTiles, Blocks };

int64_t fp8_scale_count(int64_t rows, int64_t cols, Fp8Tiling tiling);

// x (rows,cols) -> q (rows,cols) codes, scale (fp8_scale_count floats, layout above).
void fp8_quantize(const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling, Fp8Format f,
                  uint8_t* q, float* scale);
// q, scale -> x (rows,cols): x = decode(q) · scale of its tile.
void fp8_dequantize(const uint8_t* q, const float* scale, int64_t rows, int64_t cols,
                    Fp8Tiling tiling, Fp8Format f, float* x);
// x -> out = dequantize(quantize(x)), the same bits, without materialising the codes.
// out may equal x.
void fp8_quantize_dequantize(const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling,
                             Fp8Format f, float* out);

// The emulated FP8 Linear (SPEC §6 "CPU: emulated exactly"): every GEMM operand goes through
// E4M3 quantisation with its V3 tiling and back to FP32, then kernels::gemm multiplies.
// Per row of x or dy the tiles lie inside the row (Fprop, Dgrad), so those outputs keep
// gemm's row independence: a row's bits do not depend on the other rows. Wgrad's tiles run
// along the tokens, so dW depends on which rows share the call (the micro-batch, the unit
// of determinism, fixes that).

// Fprop: y (R,O) = beta·y + Q(x) (R,I) · Q(W)ᵀ, x in 1×128 tiles along I, W (O,I) in blocks.
void fp8_linear_forward(const float* x, const float* W, float* y, int64_t R, int64_t I, int64_t O,
                        float beta = 0.0f);

// Dgrad: dx (R,I) += Q(dy) (R,O) · Q(W), dy in 1×128 tiles along O, W in blocks.
// Wgrad: dW (O,I) += Q(dy)ᵀ · Q(x), dy (R,O) and x (R,I) in 128×1 tiles along R.
// Either of dx, dW may be null.
void fp8_linear_backward(const float* dy, const float* x, const float* W, float* dx, float* dW,
                         int64_t R, int64_t I, int64_t O);

}  // namespace troupe::kernels
