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
#if defined(__SSE2__)
#include <immintrin.h>
#endif

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

namespace detail {

/// Transposes the W x `cols` block of floats whose rows start at `rows[i]` (W = 16, 8 or 4, unaligned; cols <= W)
/// into `out`: out[c * W + i] = rows[i][c] for c < cols, one store of W floats per component (unaligned stores:
/// as fast on the kernels' 64-byte aligned panels, and safe on any other). Returns false
/// where this build has no register transpose for W and cols (cols < W: AVX-512 only, with masked loads); the caller
/// then packs the block one value at a time.
template <std::size_t W>
ALIGNER_ALWAYS_INLINE bool transpose_block(const float* const* rows, std::size_t cols, float* out) noexcept {
#if defined(__AVX512F__)
  if constexpr (W == 16) {
    __m512 r[16], t[16];
    const __mmask16 mask = __mmask16((1u << cols) - 1u);  // (cols <= 16: 1 << 16 fits in unsigned)
    for (int i = 0; i != 16; ++i) r[i] = _mm512_maskz_loadu_ps(mask, rows[i]);
    for (int i = 0; i != 16; i += 2) {  // pairs of rows interleaved within each 128-bit lane
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i != 16; i += 4) {  // then pairs of pairs: 4 rows' component c in lane quarter c / 4
      r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
      r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
      r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
      r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int h = 0; h != 16; h += 8)  // 128-bit quarters: rows 0-7 and 8-15 each gathered into halves
      for (int i = 0; i != 4; ++i) {
        t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
        t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
      }
    for (std::size_t i = 0; i != 8; ++i) {
      if (i < cols) _mm512_storeu_ps(out + i * 16, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
      if (i + 8 < cols) _mm512_storeu_ps(out + (i + 8) * 16, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd));
    }
    return true;
  }
#endif
#if defined(__AVX__)
  if constexpr (W == 8) {
    if (cols != 8) return false;
    __m256 r[8], t[8];
    for (int i = 0; i != 8; ++i) r[i] = _mm256_loadu_ps(rows[i]);
    for (int i = 0; i != 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i != 8; i += 4) {
      r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i != 4; ++i) {
      _mm256_storeu_ps(out + i * 8, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
      _mm256_storeu_ps(out + (i + 4) * 8, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
    return true;
  }
#endif
#if defined(__SSE2__)
  if constexpr (W == 4) {
    if (cols != 4) return false;
    __m128 r0 = _mm_loadu_ps(rows[0]), r1 = _mm_loadu_ps(rows[1]), r2 = _mm_loadu_ps(rows[2]), r3 = _mm_loadu_ps(rows[3]);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(out, r0);
    _mm_storeu_ps(out + 4, r1);
    _mm_storeu_ps(out + 8, r2);
    _mm_storeu_ps(out + 12, r3);
    return true;
  }
#endif
  (void)rows;
  (void)cols;
  (void)out;
  return false;
}

/// pack_panels for float32: whole panels of W tokens go through register transposes of W x W blocks (a last block
/// of fewer than W components too on AVX-512, else one value at a time, as a last panel of fewer than W tokens);
/// only that last panel is zeroed first. The same bytes as encoding token by token.
template <class Arch>
void pack_f32_panels(matrix_view<float> tokens, std::uint32_t* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::size_t dim = tokens.cols, full = tokens.rows / width, words = dim * width;
  const float* rows[width];
  for (std::size_t p = 0; p != full; ++p) {
    float* panel = reinterpret_cast<float*>(out + p * words);
    for (std::size_t l = 0; l != width; ++l) rows[l] = tokens.row(p * width + l);
    std::size_t c = 0;
    for (; c != dim; c += std::min(width, dim - c)) {
      if (!transpose_block<width>(rows, std::min(width, dim - c), panel + c * width)) break;
      for (auto& r : rows) r += width;
    }
    for (std::size_t l = 0; l != width; ++l)
      for (std::size_t k = c; k != dim; ++k) panel[k * width + l] = tokens.row(p * width + l)[k];
  }
  if (const std::size_t left = tokens.rows - full * width; left != 0) {  // token by token into the zeroed last panel
    std::memset(out + full * words, 0, words * 4);
    for (std::size_t l = 0; l != left; ++l)
      storage_traits<storage::f32>::encode(tokens.row(full * width + l), dim, width, l, out + full * words);
  }
}

}  // namespace detail

/// Packs `tokens` in storage `st` at `out` (packed_words(st, rows, dim) words, 64-byte aligned for the kernels).
template <class Arch = default_arch>
void pack_panels(storage st, matrix_view<float> tokens, std::uint32_t* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::size_t dim = tokens.cols;
  if (tokens.rows == 0) return;  // (out may be null then)
  if (st == storage::f32) return detail::pack_f32_panels<Arch>(tokens, out);
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
