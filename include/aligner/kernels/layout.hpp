/** @file layout.hpp
 *  @brief The packed "panel" layout of document tokens that the scoring kernels read.
 *
 *  A sequence of `rows` token vectors of dimension `dim` is cut into panels of W = batch<float, Arch>::size
 *  consecutive tokens. A panel stores its tokens transposed, component-major: one aligned load gives component c of
 *  W tokens, and a broadcast query component times that load is W entries of a row of S. How a component is encoded
 *  (float32, bfloat16 pairs, float16, int8 + scale) is the storage's business (storage.hpp); a panel of storage St
 *  takes storage_traits<St>::panel_words(dim, W) 32-bit words. Lanes past the last token are zero.
 *  Packing costs O(rows * dim), against O(query_rows * rows * dim) for the scoring that reads it. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#include "../core/types.hpp"
#include "storage.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// A std::vector whose storage is 64-byte aligned (one cache line, one AVX-512 register).
template <class T>
using aligned_vector = std::vector<T, xsimd::aligned_allocator<T, 64>>;

/// `given` (a form of the query prepared by the caller), or, when it is null, `words` words that convert(out)
/// writes into `buffer` (a vector of 32-bit words; aligned_vector where the form is read with aligned loads).
template <class Buffer, class Convert>
const std::uint32_t* given_or_converted(const std::uint32_t* given, Buffer& buffer, std::size_t words, Convert&& convert) {
  if (given != nullptr) return given;
  buffer.resize(words);
  convert(buffer.data());
  return buffer.data();
}

/// Panel width (tokens per panel) of an architecture.
template <class Arch = default_arch>
inline constexpr std::size_t panel_width = xsimd::batch<float, Arch>::size;

/// Number of panels for `rows` tokens.
template <class Arch = default_arch>
constexpr std::size_t panel_count(std::size_t rows) noexcept {
  return (rows + panel_width<Arch> - 1) / panel_width<Arch>;
}

/// 32-bit words of one panel of `dim` components in storage `st` with panel width `width`.
inline std::size_t panel_words(storage st, std::size_t dim, std::size_t width) noexcept {
  return visit_storage(st, [&]<storage S>(std::integral_constant<storage, S>) { return storage_traits<S>::panel_words(dim, width); });
}

/// 32-bit words to pack `rows` tokens of dimension `dim` in storage `st` (this build's panel width).
template <class Arch = default_arch>
std::size_t packed_words(storage st, std::size_t rows, std::size_t dim) noexcept {
  return panel_count<Arch>(rows) * panel_words(st, dim, panel_width<Arch>);
}

/// Writes token `t` (counted from the first token of the panels at `out`) into its panel, whose words must be zero
/// where the token goes. Appending tokens one by one to zeroed panels builds the same bytes as pack_panels.
template <class Arch = default_arch>
void pack_token(storage st, const float* token, std::size_t dim, std::size_t t, std::uint32_t* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  visit_storage(st, [&]<storage S>(std::integral_constant<storage, S>) {
    using traits = storage_traits<S>;
    traits::encode(token, dim, width, t % width, out + (t / width) * traits::panel_words(dim, width));
  });
}

/// Packs `tokens` in storage `st` at `out` (packed_words(st, rows, dim) words, 64-byte aligned for the kernels).
template <class Arch = default_arch>
void pack_panels(storage st, matrix_view<float> tokens, std::uint32_t* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::size_t dim = tokens.cols;
  if (tokens.rows == 0) return;  // (out may be null then)
  std::memset(out, 0, packed_words<Arch>(st, tokens.rows, dim) * 4);
  visit_storage(st, [&]<storage S>(std::integral_constant<storage, S>) {
    using traits = storage_traits<S>;
    const std::size_t words = traits::panel_words(dim, width);
    for (std::size_t j = 0; j != tokens.rows; ++j) traits::encode(tokens.row(j), dim, width, j % width, out + (j / width) * words);
  });
}

/// Component c of token j of a packed sequence in storage `st` with panel width `width`, as the kernels see it
/// (bf16/f16 widened exactly; i8 as q * scale in float). `bytes` need not be aligned (e.g. a file's bytes).
inline float packed_value(storage st, const void* bytes, std::size_t width, std::size_t dim, std::size_t j,
                          std::size_t c) noexcept {
  return visit_storage(st, [&]<storage S>(std::integral_constant<storage, S>) {
    using traits = storage_traits<S>;
    const auto* panel = static_cast<const unsigned char*>(bytes) + (j / width) * traits::panel_words(dim, width) * 4;
    return traits::decode(panel, width, dim, j % width, c);
  });
}

/// Many packed sequences in one storage, as the scorer reads them (token_store::view() makes one): sequence s has
/// `offsets[s + 1] - offsets[s]` tokens whose panels start `panel_offsets[s]` words into `words`, and optional
/// per-token salience (one value per token of the set, or empty). Non-owning.
class residual_codec;

struct packed_sequences {
  storage precision = storage::f32;
  std::size_t dim = 0;
  const std::uint32_t* words = nullptr;
  std::span<const std::int64_t> panel_offsets{}, offsets{};
  std::span<const float> salience{};
  const residual_codec* codec = nullptr;  ///< the codebook of storage::residual (residual.hpp)
  std::size_t residual_panel_words = 0;   ///< its words per panel (storage::residual)

  std::size_t size() const noexcept { return panel_offsets.size(); }
  std::size_t length(std::size_t s) const noexcept { return std::size_t(offsets[s + 1] - offsets[s]); }
  const std::uint32_t* panels(std::size_t s) const noexcept { return words + panel_offsets[s]; }
  const float* salience_of(std::size_t s) const noexcept {
    return salience.empty() ? nullptr : salience.data() + offsets[s];
  }
  std::size_t bytes_of(std::size_t s) const noexcept {
    if (precision == storage::residual) return panel_count(length(s)) * residual_panel_words * 4;
    return packed_words(precision, length(s), dim) * 4;
  }
};

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
