/** @file panels.hpp
 *  @brief The packed "panel" layout of document tokens that the scoring kernels read.
 *
 *  A sequence of `rows` token vectors of dimension `dim` is cut into panels of W = batch<float, Arch>::size
 *  consecutive tokens. Panel p stores its tokens transposed: element (token p*W + l, component c) sits at
 *  `panel_base + p * dim * W + c * W + l`, so one aligned load gives component c of W tokens and a broadcast
 *  query component times that load is W entries of a row of S. Lanes past the last token are zero.
 *  Packing costs O(rows * dim), against O(query_rows * rows * dim) for the scoring that reads it. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
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

/// Storage precision of packed document tokens.
enum class storage { f32, bf16 };

inline const char* to_string(storage s) noexcept { return s == storage::f32 ? "f32" : "bf16"; }

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

}  // namespace aligner
