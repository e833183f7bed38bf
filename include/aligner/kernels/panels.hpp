/** @file panels.hpp
 *  @brief The packed "panel" layout of document tokens that the scoring kernels read.
 *
 *  A sequence of `rows` token vectors of dimension `dim` is cut into panels of W = batch<float, Arch>::size
 *  consecutive tokens. Panel p stores its tokens transposed: element (token p*W + l, component c) sits at
 *  `panel_base + p * dim * W + c * W + l`, so one aligned load gives component c of W tokens and a broadcast
 *  query component times that load is W entries of a row of S. Lanes past the last token are zero.
 *  Packing costs O(rows * dim), against O(query_rows * rows * dim) for the scoring that reads it. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <string_view>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#include "../core/types.hpp"

namespace aligner {

/// A std::vector whose storage is 64-byte aligned (one cache line, one AVX-512 register).
template <class T>
using aligned_vector = std::vector<T, xsimd::aligned_allocator<T, 64>>;

/// Panel width (tokens per panel) of an architecture.
template <class Arch = default_arch>
inline constexpr std::size_t panel_width = xsimd::batch<float, Arch>::size;

/// Number of panels for `rows` tokens.
template <class Arch = default_arch>
constexpr std::size_t panel_count(std::size_t rows) noexcept {
  return (rows + panel_width<Arch> - 1) / panel_width<Arch>;
}

/// Floats needed to pack `rows` tokens of dimension `dim`.
template <class Arch = default_arch>
constexpr std::size_t packed_size(std::size_t rows, std::size_t dim) noexcept {
  return panel_count<Arch>(rows) * dim * panel_width<Arch>;
}

/// Packs `tokens` into panels at `out` (packed_size(tokens.rows, tokens.cols) floats, 64-byte aligned).
template <class Arch = default_arch>
void pack_panels(matrix_view<float> tokens, float* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::size_t dim = tokens.cols, panels = panel_count<Arch>(tokens.rows);
  std::memset(out, 0, panels * dim * width * sizeof(float));
  for (std::size_t j = 0; j != tokens.rows; ++j) {
    const float* src = tokens.row(j);
    float* dst = out + (j / width) * dim * width + (j % width);
    for (std::size_t c = 0; c != dim; ++c) dst[c * width] = src[c];
  }
}

/// Reads token j, component c back from a packed sequence.
template <class Arch = default_arch>
inline float packed_at(const float* panels, std::size_t dim, std::size_t j, std::size_t c) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  return panels[(j / width) * dim * width + c * width + (j % width)];
}

/// Storage precision of packed document tokens (scoring always accumulates in float32):
/// - f32: as given;
/// - bf16: bfloat16 (round to nearest even), 2 bytes per component;
/// - f16: IEEE binary16 (round to nearest even), 2 bytes per component; values must lie within +-65504;
/// - i8: int8 per component with one float scale per token (symmetric, scale = max |x| / 127, round to nearest
///   even), 1 byte per component + 4 per token.
enum class storage { f32, bf16, f16, i8 };

inline const char* to_string(storage s) noexcept {
  switch (s) {
    case storage::f32: return "f32";
    case storage::bf16: return "bf16";
    case storage::f16: return "f16";
    case storage::i8: return "i8";
  }
  return "?";
}

/// Parses "f32", "bf16", "f16" or "i8"; false for anything else.
inline bool parse_storage(std::string_view text, storage& out) noexcept {
  for (storage s : {storage::f32, storage::bf16, storage::f16, storage::i8})
    if (text == to_string(s)) {
      out = s;
      return true;
    }
  return false;
}

/// float -> bfloat16 bits, round to nearest even (inputs are finite).
inline std::uint16_t to_bf16(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::uint16_t(u >> 16);
}

inline float from_bf16(std::uint16_t h) noexcept {
  const std::uint32_t u = std::uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

/// bfloat16 panels: component pairs (2c, 2c+1) of a token share one 32-bit word (low half = component 2c), so
/// panel p holds ceil(dim / 2) rows of W words: word (pair c2, lane l) at `p * pairs * W + c2 * W + l`. An odd
/// dim pads the last high half with 0. Sizes below count 32-bit words.
template <class Arch = default_arch>
constexpr std::size_t packed_size_bf16(std::size_t rows, std::size_t dim) noexcept {
  return panel_count<Arch>(rows) * ((dim + 1) / 2) * panel_width<Arch>;
}

template <class Arch = default_arch>
void pack_panels_bf16(matrix_view<float> tokens, std::uint32_t* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::size_t dim = tokens.cols, pairs = (dim + 1) / 2;
  std::memset(out, 0, packed_size_bf16<Arch>(tokens.rows, dim) * sizeof(std::uint32_t));
  for (std::size_t j = 0; j != tokens.rows; ++j) {
    const float* src = tokens.row(j);
    std::uint32_t* dst = out + (j / width) * pairs * width + (j % width);
    for (std::size_t c2 = 0; c2 != pairs; ++c2) {
      const std::uint32_t lo = to_bf16(src[2 * c2]), hi = 2 * c2 + 1 < dim ? to_bf16(src[2 * c2 + 1]) : 0u;
      dst[c2 * width] = lo | (hi << 16);
    }
  }
}

template <class Arch = default_arch>
inline float packed_at_bf16(const std::uint32_t* panels, std::size_t dim, std::size_t j, std::size_t c) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::uint32_t word = panels[(j / width) * ((dim + 1) / 2) * width + (c / 2) * width + (j % width)];
  return from_bf16(std::uint16_t(c % 2 ? word >> 16 : word & 0xffffu));
}

/// float -> IEEE binary16 bits, round to nearest even; overflow gives infinity (callers reject it first).
/// Magnitudes below the smallest normal half become subnormal halves (rounded by a float addition that aligns
/// them to the half subnormal grid), normal ones are rounded on the mantissa bits.
inline std::uint16_t to_f16(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  std::uint32_t h;
  if (u >= 0x47800000u) {  // >= 65536 (or Inf/NaN): Inf, NaN stays NaN
    h = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // below 2^-14: subnormal half or zero
    float f;
    std::memcpy(&f, &u, 4);
    f += 0.5f;  // 2^-1 has ulp 2^-24, the half subnormal step: the addition rounds to nearest even
    std::uint32_t v;
    std::memcpy(&v, &f, 4);
    h = v - 0x3f000000u;
  } else {
    const std::uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000fffu + odd;  // rebias the exponent (-112 << 23) and round half to even
    h = u >> 13;             // a carry into the exponent (up to 0x7c00, Inf) is the correct rounding
  }
  return std::uint16_t(h | sign);
}

/// IEEE binary16 bits -> float (exact).
inline float from_f16(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, em = h & 0x7fffu;
  std::uint32_t u;
  if (em >= 0x7c00u) {
    u = 0x7f800000u | ((em & 0x3ffu) << 13);
  } else {
    // Normal and subnormal alike: shift into float position and scale by 2^112 (exact).
    const std::uint32_t shifted = em << 13;
    float f;
    std::memcpy(&f, &shifted, 4);
    f *= 5.192296858534828e33f;  // 2^112
    std::memcpy(&u, &f, 4);
  }
  u |= sign;
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

/// True when every value of `tokens` is representable in float16 without overflow (|x| < 65520).
inline bool fits_f16(matrix_view<float> tokens, std::size_t& row, std::size_t& col) noexcept {
  for (std::size_t j = 0; j != tokens.rows; ++j)
    for (std::size_t c = 0; c != tokens.cols; ++c)
      if (!(std::fabs(tokens.row(j)[c]) < 65520.f)) {
        row = j, col = c;
        return false;
      }
  return true;
}

/// 32-bit words per packed panel of `dim` components for a storage, with panel width `width`:
/// - f32: dim * W floats, component c of lane l at c * W + l;
/// - bf16: ceil(dim / 2) * W words, each holding components (2c, 2c + 1) of one token (low half first);
/// - f16: dim * W halves (W / 2 words per component row), half (c, l) at c * W + l;
/// - i8: W float scales, then dim * W bytes, byte (c, l) at 4 * W + c * W + l.
constexpr std::size_t panel_words(storage st, std::size_t dim, std::size_t width) noexcept {
  switch (st) {
    case storage::f32: return dim * width;
    case storage::bf16: return (dim + 1) / 2 * width;
    case storage::f16: return dim * width / 2;
    case storage::i8: return width + dim * width / 4;
  }
  return 0;
}

/// 32-bit words to pack `rows` tokens of dimension `dim` in storage `st` (this build's panel width).
template <class Arch = default_arch>
constexpr std::size_t packed_words(storage st, std::size_t rows, std::size_t dim) noexcept {
  return panel_count<Arch>(rows) * panel_words(st, dim, panel_width<Arch>);
}

template <class Arch = default_arch>
void pack_panels_f16(matrix_view<float> tokens, std::uint32_t* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::size_t dim = tokens.cols, words = panel_words(storage::f16, dim, width);
  std::memset(out, 0, packed_words<Arch>(storage::f16, tokens.rows, dim) * 4);
  auto* halves = reinterpret_cast<std::uint16_t*>(out);  // uint16_t views of the words' bytes (char-like copies)
  for (std::size_t j = 0; j != tokens.rows; ++j) {
    const float* src = tokens.row(j);
    for (std::size_t c = 0; c != dim; ++c) {
      const std::uint16_t h = to_f16(src[c]);
      std::memcpy(halves + (j / width) * words * 2 + c * width + j % width, &h, 2);
    }
  }
}

/// Per-token int8 quantisation: scale = max |x| / 127 (0 for an all-zero token), q = round_even(x / scale).
template <class Arch = default_arch>
void pack_panels_i8(matrix_view<float> tokens, std::uint32_t* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::size_t dim = tokens.cols, words = panel_words(storage::i8, dim, width);
  std::memset(out, 0, packed_words<Arch>(storage::i8, tokens.rows, dim) * 4);
  for (std::size_t j = 0; j != tokens.rows; ++j) {
    const float* src = tokens.row(j);
    std::uint32_t* panel = out + (j / width) * words;
    double amax = 0.0;
    for (std::size_t c = 0; c != dim; ++c) amax = std::max(amax, std::fabs(double(src[c])));
    const float scale = float(amax / 127.0);
    std::memcpy(panel + j % width, &scale, 4);
    auto* bytes = reinterpret_cast<unsigned char*>(panel + width);
    for (std::size_t c = 0; c != dim; ++c) {
      const double q = scale > 0.f ? std::nearbyint(double(src[c]) / double(scale)) : 0.0;
      const auto v = std::int8_t(std::clamp(q, -127.0, 127.0));
      std::memcpy(bytes + c * width + j % width, &v, 1);
    }
  }
}

/// Packs `tokens` in storage `st` at `out` (packed_words(st, ...) words, 64-byte aligned).
template <class Arch = default_arch>
void pack_panels_as(storage st, matrix_view<float> tokens, void* out) noexcept {
  switch (st) {
    case storage::f32: pack_panels<Arch>(tokens, static_cast<float*>(out)); break;
    case storage::bf16: pack_panels_bf16<Arch>(tokens, static_cast<std::uint32_t*>(out)); break;
    case storage::f16: pack_panels_f16<Arch>(tokens, static_cast<std::uint32_t*>(out)); break;
    case storage::i8: pack_panels_i8<Arch>(tokens, static_cast<std::uint32_t*>(out)); break;
  }
}

/// Component c of token j of a packed sequence in storage `st` with panel width `width`, as the kernels see it
/// (bf16/f16 widened exactly; i8 as q * scale in float). `bytes` need not be aligned (e.g. a file's bytes).
inline float packed_value(storage st, const void* bytes, std::size_t width, std::size_t dim, std::size_t j,
                          std::size_t c) noexcept {
  const auto* b = static_cast<const unsigned char*>(bytes) + (j / width) * panel_words(st, dim, width) * 4;
  const std::size_t l = j % width;
  switch (st) {
    case storage::f32: {
      float x;
      std::memcpy(&x, b + (c * width + l) * 4, 4);
      return x;
    }
    case storage::bf16: {
      std::uint32_t word;
      std::memcpy(&word, b + ((c / 2) * width + l) * 4, 4);
      return from_bf16(std::uint16_t(c % 2 ? word >> 16 : word & 0xffffu));
    }
    case storage::f16: {
      std::uint16_t h;
      std::memcpy(&h, b + (c * width + l) * 2, 2);
      return from_f16(h);
    }
    case storage::i8: {
      float scale;
      std::memcpy(&scale, b + l * 4, 4);
      std::int8_t q;
      std::memcpy(&q, b + width * 4 + c * width + l, 1);
      return float(q) * scale;
    }
  }
  return 0.f;
}

}  // namespace aligner
