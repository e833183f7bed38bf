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

}  // namespace aligner
