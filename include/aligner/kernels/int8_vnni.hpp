/** @file int8_vnni.hpp
 *  @brief int8 documents on AVX512-VNNI's `vpdpwssd`, with the same arithmetic as AMX-INT8 (amx.hpp).
 *
 *  The AMX-INT8 path multiplies the documents' int8 components by the query in two int8 terms, q ≈ (a F + b) s / F,
 *  and combines the terms exactly in int32. The combined value a F + b fits in 16 bits (|a F + b| <= 127.5 F <= 32385),
 *  so where there is no AMX the same sum Σ_c (a F + b)_ic d_jc is one pass of vpdpwssd (pairs of int16 products
 *  added into int32 lanes, 32 multiply-adds an instruction, vdpbf16ps's rate) over the documents widened to int16:
 *      S_ij = (float(Σ_c (a F + b)_ic d_jc) * scale_j) * (s_i / F)
 *  bit for bit what AMX-INT8 computes (the sums are exact and bounded below 2^31 by F's choice), so the tests of that
 *  formula hold for both, and explain and search agree whichever of the two runs.
 *  - The query's 16-bit form (query_to_i16_pairs): components 2 c2 and 2 c2 + 1 of row i as two int16 in word
 *    i * ceil(dim / 2) + c2, then one float s_i / F a row; built from query_to_i8_quads' form, once per query.
 *  - Each group of panels (16 KB once widened) is re-laid into int16 pairs of components, 16 tokens a 64-byte row
 *    (relayout_i8_pairs: a vpermb interleaving two component rows and a vpmovsxbw per pair of components), then
 *    swept by 4 x 4 register tiles of vpdpwssd (detail::vnni_tile, shared with residual.hpp's vpdpbusd tiles).
 *  Compile time: AVX512-VNNI, AVX512-VBMI and AVX512-BW with panel width 16 (Zen 4/5, Intel from Ice Lake); it runs
 *  where AMX-INT8 does not (i8_on_vnni). */
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../core/config.hpp"
#include "../core/types.hpp"
#include "amx.hpp"
#include "layout.hpp"
#include "storage.hpp"
#include "tile.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

/// AVX512-VNNI, AVX512-VBMI and AVX512-BW are compiled in (the int8 VNNI kernels: this file's and residual.hpp's).
#if defined(__AVX512VNNI__) && defined(__AVX512VBMI__) && defined(__AVX512BW__)
#define ALIGNER_HAVE_VNNI_VBMI 1
#else
#define ALIGNER_HAVE_VNNI_VBMI 0
#endif

/// The VNNI int8 tiles compiled for 4- and 8-wide panels (a build without AVX-512 flags), run where the CPU has
/// AVX512-VNNI and VBMI (avx512_vnni_vbmi_usable): x86-64 with GCC or Clang. The i8 store's tiles (this file) and
/// the residual codes' (residual.hpp).
#if ALIGNER_HAVE_WIDE
#define ALIGNER_HAVE_WIDE_VNNI 1
#define ALIGNER_TARGET_WIDE_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")))
#else
#define ALIGNER_HAVE_WIDE_VNNI 0
#endif

namespace aligner {

/// The VNNI int8 tiles run over this build's panels: compiled in (panel width 16 with AVX512-VNNI and VBMI in the
/// flags), or at run time over 4- and 8-wide panels (16 / W of them re-laid or decoded into one 16-token panel).
template <class Arch = default_arch>
inline constexpr bool vnni_compiled = (ALIGNER_HAVE_VNNI_VBMI && panel_width<Arch> == 16) ||
                                      (ALIGNER_HAVE_WIDE_VNNI && (panel_width<Arch> == 4 || panel_width<Arch> == 8));

/// True where the VNNI int8 tiles can run now: compiled in (a 16-wide build), or where avx512_vnni_vbmi_usable() for
/// the run-time tiles of 4- and 8-wide panels.
template <class Arch = default_arch>
bool vnni_runs() {
  if constexpr (vnni_compiled<Arch>)
    return panel_width<Arch> == 16 || avx512_vnni_vbmi_usable();
  else
    return false;
}

/// True when int8 documents are scored by the vpdpwssd tiles of this file now: vnni_runs() and AMX-INT8 not running.
template <class Arch = default_arch>
bool i8_on_vnni() {
  return vnni_runs<Arch>() && !i8_on_amx<Arch>();
}

/// Words of a query's 16-bit form: ceil(cols / 2) a row, then one float a row.
inline constexpr std::size_t i16_query_words(std::size_t rows, std::size_t cols) noexcept { return rows * ((cols + 1) / 2 + 1); }

/// The query's 16-bit form from its int8 form `quads` (query_to_i8_quads of the same rows x cols): component c of row
/// i as the int16 a F + b in half c % 2 of word i * ceil(cols / 2) + c / 2 (0 past cols), then row i's s / F.
inline void i8_quads_to_i16_pairs(const std::uint32_t* quads, std::size_t rows, std::size_t cols, std::uint32_t* out) noexcept {
  const std::size_t words = (cols + 3) / 4, pairs = (cols + 1) / 2, padded = bf16_query_rows(rows);
  const std::int32_t factor = i8_query_factor(cols);
  auto byte = [&](std::size_t row, std::size_t c) { return std::int32_t(std::int8_t(std::uint8_t(quads[row * words + c / 4] >> (8 * (c % 4))))); };
  for (std::size_t i = 0; i != rows; ++i) {
    for (std::size_t c2 = 0; c2 != pairs; ++c2) {
      std::uint32_t word = 0;
      for (std::size_t h = 0; h != 2; ++h) {
        const std::size_t c = 2 * c2 + h;
        const std::int32_t v = c < cols ? byte(i, c) * factor + byte(padded + i, c) : 0;
        word |= std::uint32_t(std::uint16_t(std::int16_t(v))) << (16 * h);
      }
      out[i * pairs + c2] = word;
    }
    const float scale = i8_query_scale(quads, rows, cols, i);
    std::memcpy(out + rows * pairs + i, &scale, 4);
  }
}

/// The query's 16-bit form (from the int8 rule of query_to_i8_quads). Writes i16_query_words(rows, cols) words.
inline void query_to_i16_pairs(matrix_view<float> query, std::uint32_t* out) {
  std::vector<std::uint32_t> quads(i8_query_words(query.rows, query.cols));
  query_to_i8_quads(query, quads.data());
  i8_quads_to_i16_pairs(quads.data(), query.rows, query.cols, out);
}

/// `given` (a query's 16-bit form prepared by the caller), or the query converted into `buffer` when it is null.
inline const std::uint32_t* i16_pairs_or_convert(matrix_view<float> query, const std::uint32_t* given, std::vector<std::uint32_t>& buffer) {
  return given_or_converted(given, buffer, i16_query_words(query.rows, query.cols), [&](std::uint32_t* out) { query_to_i16_pairs(query, out); });
}

namespace detail {
/// The VNNI dot product instructions: vpdpbusd (u8 x s8, four products a lane) and vpdpwssd (s16 x s16, two).
enum class vnni_op { dpbusd, dpwssd };
}  // namespace detail

#if ALIGNER_HAVE_VNNI_VBMI
namespace detail {

/// acc + the lane-wise products of x and y by Op, written as the instruction: GCC 12 compiled the intrinsics in a
/// register tile into a register copy per accumulator and step, plus spills, at half the rate.
template <vnni_op Op>
ALIGNER_ALWAYS_INLINE __m512i vnni_dp(__m512i acc, __m512i x, __m512i y) noexcept {
  if constexpr (Op == vnni_op::dpbusd)
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y));
  else
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y));
  return acc;
}

/// A register tile of R query rows x V panels of 16 tokens in int32: a[r][v] += Σ_k Op(panel v's word row k,
/// q[r][k] broadcast), k < steps; panel v's row k is the 64 bytes at base + (v * steps + k) * 16 words. The
/// prefetch slice ticks every `tick_every` steps.
template <vnni_op Op, std::size_t R, std::size_t V, bool L2>
ALIGNER_ALWAYS_INLINE void vnni_tile(__m512i (&a)[R][V], const std::uint32_t* base, std::size_t steps, const std::uint32_t* const (&q)[R],
                                     prefetch_slice<L2> slice, std::size_t tick_every) noexcept {
  for (std::size_t k = 0; k != steps; ++k) {
    if (k % tick_every == 0) slice.tick();
    __m512i d[V];
    for (std::size_t v = 0; v != V; ++v) d[v] = _mm512_load_si512(base + (v * steps + k) * 16);
    for (std::size_t r = 0; r != R; ++r) {
      const __m512i qc = _mm512_set1_epi32(int(q[r][k]));
      for (std::size_t v = 0; v != V; ++v) a[r][v] = vnni_dp<Op>(a[r][v], d[v], qc);
    }
  }
  slice.rest();
}

}  // namespace detail
#endif

namespace ref {

/// Scalar specification of relayout_i8_pairs: word c2 * width + l holds components 2 c2 and 2 c2 + 1 of lane l
/// (component c of lane l at bytes[c * width + l]) sign-extended to int16, low half first, 0 past dim.
inline void relayout_i8_pairs(const unsigned char* bytes, std::size_t dim, std::size_t width, std::uint32_t* out) noexcept {
  detail::relayout_i8_scalar<2>(bytes, dim, width, out);
}

}  // namespace ref

#if ALIGNER_HAVE_WIDE_VNNI
namespace detail {

/// acc + the lane-wise products of x and y by Op (vnni_dp), in functions compiled for AVX512-VNNI at run time.
template <vnni_op Op>
ALIGNER_TARGET_WIDE_VNNI __attribute__((always_inline)) inline __m512i wide_vnni_dp(__m512i acc, __m512i x, __m512i y) noexcept {
  if constexpr (Op == vnni_op::dpbusd)
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y));
  else
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y));
  return acc;
}

/// The run-time VNNI tile over 16-token panels (4- and 8-wide panels re-laid or decoded 16 / W at a time): R query
/// rows x Z panels of `steps` rows of 16 words each (panel z's row k at base + (z * steps + k) * 16), acc_rz = bias[r]
/// (null: 0) + Σ_k Op(row k, q[r][k] broadcast) in int32; out row r (its first row_floats of the Z x 16 lanes, row
/// stride row_floats) = float(acc) * lane_scale (16 Z floats; null: none) * row_scale[r], the product in that order.
/// The prefetch slice ticks every `tick_every` steps.
template <vnni_op Op, std::size_t R, std::size_t Z, class Prefetch>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE_VNNI void wide_vnni_tile(const std::uint32_t* base, std::size_t steps, const std::uint32_t* const* q,
                                                              const std::int32_t* bias, const float* lane_scale, const float* row_scale,
                                                              Prefetch pf, std::size_t tick_every, float* out, std::size_t row_floats) noexcept {
  __m512i a[R][Z];
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t z = 0; z != Z; ++z) a[r][z] = _mm512_set1_epi32(bias ? bias[r] : 0);
  for (std::size_t k = 0; k != steps; ++k) {
    if (k % tick_every == 0) pf.tick();
    __m512i d[Z];
    for (std::size_t z = 0; z != Z; ++z) d[z] = _mm512_load_si512(base + (z * steps + k) * 16);
    for (std::size_t r = 0; r != R; ++r) {
      const __m512i qc = _mm512_set1_epi32(int(q[r][k]));
      for (std::size_t z = 0; z != Z; ++z) a[r][z] = wide_vnni_dp<Op>(a[r][z], d[z], qc);
    }
  }
  pf.rest();
  for (std::size_t z = 0; z != Z && z * 16 < row_floats; ++z) {
    const __mmask16 lanes = __mmask16((1u << std::min<std::size_t>(16, row_floats - z * 16)) - 1);
    const __m512 ls = lane_scale ? _mm512_loadu_ps(lane_scale + z * 16) : _mm512_set1_ps(1.f);
    for (std::size_t r = 0; r != R; ++r) {
      __m512 v = _mm512_cvtepi32_ps(a[r][z]);
      if (lane_scale) v = _mm512_mul_ps(v, ls);
      _mm512_mask_storeu_ps(out + r * row_floats + z * 16, lanes, _mm512_mul_ps(v, _mm512_set1_ps(row_scale[r])));
    }
  }
}

/// relayout_i8_pairs for `count` (1 .. 16 / W) consecutive int8 panels of width W = 4 or 8 (`panel_bytes` apart,
/// each W float scales then its component rows) as one 16-token panel (lane P W + l: panel P's lane l; lanes of
/// missing panels 0): per pair of components, one masked load of each panel's two rows (2 W bytes) into a 32-byte
/// register, a vpermb interleaving them lane by lane, a vpmovsxbw and a store. The 16 tokens' scales go to
/// scales[0 .. 16) (0 for missing panels).
template <std::size_t W>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE_VNNI void relayout_i8_pairs_wide(const unsigned char* panel, std::size_t panel_bytes, std::size_t dim,
                                                                      std::size_t count, std::uint32_t* out, float* scales) noexcept {
  static constexpr auto interleave = [] {
    std::array<std::uint8_t, 32> idx{};
    for (std::size_t L = 0; L != 16; ++L) {
      idx[2 * L] = std::uint8_t(L / W * 2 * W + L % W);
      idx[2 * L + 1] = std::uint8_t(L / W * 2 * W + W + L % W);
    }
    return idx;
  }();
  const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(interleave.data()));
  for (std::size_t P = 0; P != 16 / W; ++P)
    if (P < count)
      std::memcpy(scales + P * W, panel + P * panel_bytes, 4 * W);
    else
      std::fill(scales + P * W, scales + (P + 1) * W, 0.f);
  for (std::size_t c2 = 0; c2 < (dim + 1) / 2; ++c2) {
    const std::size_t rows = std::min<std::size_t>(2, dim - 2 * c2);
    const __mmask32 first = __mmask32((std::uint64_t(1) << (rows * W)) - 1);
    __m256i two = _mm256_setzero_si256();
    for (std::size_t P = 0; P != count; ++P) {  // bytes [2 W P, 2 W P + rows W) from panel P's rows 2 c2, 2 c2 + 1
      const unsigned char* src = panel + P * panel_bytes + 4 * W + 2 * c2 * W;
      const auto* from = reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(src) - 2 * W * P);  // only masked-in bytes are read
      two = _mm256_mask_loadu_epi8(two, __mmask32(first << (2 * W * P)), from);
    }
    _mm512_store_si512(out + 16 * c2, _mm512_cvtepi8_epi16(_mm256_permutexvar_epi8(idx, two)));
  }
}

}  // namespace detail
#endif

/// The component bytes of an int8 panel of 16 tokens as int16 pairs (ref::relayout_i8_pairs): per pair of
/// components, one load of their 32 bytes (masked for an odd dim's last), a vpermb interleaving the two rows, a
/// vpmovsxbw and an aligned store. `out` 64-byte aligned. Returns false where not compiled (then nothing is written).
inline bool relayout_i8_pairs(const unsigned char* bytes, std::size_t dim, std::uint32_t* out) noexcept {
#if ALIGNER_HAVE_VNNI_VBMI && defined(__AVX512VL__)
  alignas(32) static constexpr std::uint8_t interleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                              8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i*>(interleave));
  const std::size_t full = dim / 2;
  for (std::size_t c2 = 0; c2 != full; ++c2) {
    const __m256i two = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + 32 * c2));
    _mm512_store_si512(out + 16 * c2, _mm512_cvtepi8_epi16(_mm256_permutexvar_epi8(idx, two)));
  }
  if (dim % 2) {
    const __m256i one = _mm256_maskz_loadu_epi8(0xFFFFu, bytes + 32 * full);
    _mm512_store_si512(out + 16 * full, _mm512_cvtepi8_epi16(_mm256_permutexvar_epi8(idx, one)));
  }
  return true;
#else
  (void)bytes, (void)dim, (void)out;
  return false;
#endif
}

/// The tile engine interface (tile_engine's) over int8 panels by vpdpwssd: each group of panels (16 KB once
/// widened) is re-laid into `scratch` (relayout_i8_pairs) and swept by 4 x 4 tiles against the query's 16-bit form;
/// each tile becomes floats with the tokens' and the query rows' scales (file comment). Preconditions (unchecked):
/// i8_on_vnni's compile-time part; query_i16 holds query_to_i16_pairs of `query`; scratch holds scratch_words(dim)
/// words, 64-byte aligned; the rest as tile_engine.
template <class Arch>
struct vnni_i8_engine : tile_engine_base<vnni_i8_engine<Arch>, Arch, 4> {
  using base = tile_engine_base<vnni_i8_engine<Arch>, Arch, 4>;
  using typename base::batch;
  using base::width;
  using base::block_panels;
  using traits = storage_traits<storage::i8>;
  /// Panel width 16: 4 x 4 tiles. 4- and 8-wide panels (at run time): 16 / W of them are re-laid into one 16-token
  /// panel, and a tile is 8 query rows x 4 panels, Z = W / 4 zmm accumulators a row (8 or 16 in all; 16-row tiles
  /// were 3-8% slower at 32 query rows and computed up to 15 rows past a short query: bench/RESULTS.md).
  static constexpr bool wide = width != 16;
  static constexpr std::size_t zmm_per_row = (width * 4 + 15) / 16;
  static constexpr std::size_t block_rows = wide ? 8 : 4;
  static constexpr std::size_t span_bytes = std::size_t(256) << 10;

  const unsigned char* panels;
  std::size_t dim, doc_rows, panel_total, pairs;
  matrix_view<float> query;
  const std::uint32_t* query_i16;
  std::uint32_t* scratch;
  std::size_t group_panels;
  prefetch_hint next;
  mutable std::size_t group_first = 0;  ///< first panel of the re-laid group

  /// Words of one re-laid panel.
  static std::size_t relaid_words(std::size_t dim) noexcept { return (dim + 1) / 2 * width; }
  /// Panels re-laid at once: whole tiles' worth of panels filling 16 KB (at least one tile's).
  static std::size_t group_of(std::size_t dim) noexcept { return panels_per_group(relaid_words(dim), block_panels); }
  /// The re-laid group, and where panels are re-laid 16 tokens at a time, their tokens' scales after it.
  static std::size_t scratch_words(std::size_t dim) noexcept { return group_of(dim) * (relaid_words(dim) + (wide ? width : 0)); }

  vnni_i8_engine(const void* panels_, std::size_t doc_rows_, matrix_view<float> query_, const std::uint32_t* query_i16_,
                 std::uint32_t* scratch_, prefetch_hint next_ = {}) noexcept
      : panels(static_cast<const unsigned char*>(panels_)), dim(query_.cols), doc_rows(doc_rows_), panel_total(panel_count<Arch>(doc_rows_)),
        pairs((query_.cols + 1) / 2), query(query_), query_i16(query_i16_), scratch(scratch_), group_panels(group_of(query_.cols)), next(next_) {}

  std::size_t panel_bytes() const noexcept { return traits::panel_words(dim, width) * 4; }

  /// acc[r][v] = S tile of rows i0 + r and panel p0 + v (a panel of the current group).
  template <std::size_t R, std::size_t V>
  ALIGNER_NOINLINE void tile(std::size_t i0, std::size_t p0, batch (&out)[R][V]) const noexcept {
#if ALIGNER_HAVE_VNNI_VBMI
    if constexpr (width == 16) {
      __m512i a[R][V];
      const std::uint32_t* q[R];
      for (std::size_t r = 0; r != R; ++r) {
        q[r] = query_i16 + (i0 + r) * pairs;
        for (std::size_t v = 0; v != V; ++v) a[r][v] = _mm512_setzero_si512();
      }
      pf.with_slice([&](auto slice) {
        detail::vnni_tile<detail::vnni_op::dpwssd, R, V>(a, scratch + (p0 - group_first) * pairs * width, pairs, q, slice, 1);
      });
      for (std::size_t v = 0; v != V; ++v) {
        const __m512 scale = _mm512_loadu_ps(reinterpret_cast<const float*>(panels + (p0 + v) * panel_bytes()));
        for (std::size_t r = 0; r != R; ++r) {
          float qs;
          std::memcpy(&qs, query_i16 + query.rows * pairs + i0 + r, 4);
          out[r][v] = batch(_mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[r][v]), scale), _mm512_set1_ps(qs)));
        }
      }
      return;
    }
#endif
#if ALIGNER_HAVE_WIDE_VNNI
    if constexpr (wide) {
      static_assert(R == block_rows, "the run-time VNNI tiles are block_rows query rows");
      const std::uint32_t* q[R];
      float qs[R];
      for (std::size_t r = 0; r != R; ++r) {
        const std::size_t i = std::min(i0 + r, query.rows - 1);  // rows past the query: any valid row, ignored
        q[r] = query_i16 + i * pairs;
        std::memcpy(&qs[r], query_i16 + query.rows * pairs + i, 4);
      }
      const std::size_t at = p0 - group_first;  // a multiple of 4: whole 16-token panels
      const float* lane_scale = reinterpret_cast<const float*>(scratch + group_panels * relaid_words(dim)) + at * width;
      pf.with_slice([&](auto slice) {
        detail::wide_vnni_tile<detail::vnni_op::dpwssd, R, zmm_per_row>(scratch + at * pairs * width, pairs, q, nullptr, lane_scale, qs, slice, 1,
                                                                        reinterpret_cast<float*>(&out[0][0]), V * width);
      });
      return;
    }
#endif
    (void)i0, (void)p0;
    base::zero(out);
  }

  /// Re-lays each group of panels, then visits its tiles (panel indices are the document's); the next group, or the
  /// caller's next document, is prefetched meanwhile.
  template <class Visit>
  void sweep(Visit&& visit) const {
    const std::size_t pb = panel_bytes(), words = relaid_words(dim);
    for (std::size_t g0 = 0; g0 < panel_total; g0 += group_panels) {
      const std::size_t g1 = std::min(panel_total, g0 + group_panels);
      group_first = g0;
      const prefetch_hint hint = g1 < panel_total ? prefetch_hint{panels + g1 * pb, (g1 - g0) * pb} : next;
      if constexpr (wide) {
#if ALIGNER_HAVE_WIDE_VNNI
        constexpr std::size_t per = 16 / width;
        float* scales = reinterpret_cast<float*>(scratch + group_panels * words);
        for (std::size_t p = g0; p < g1; p += per)
          detail::relayout_i8_pairs_wide<width>(panels + p * pb, pb, dim, std::min(per, g1 - p), scratch + (p - g0) * words, scales + (p - g0) * width);
#endif
      } else {
        for (std::size_t p = g0; p != g1; ++p) relayout_i8_pairs(panels + p * pb + traits::header_words(width) * 4, dim, scratch + (p - g0) * words);
      }
      sweep_tiles<block_rows, block_panels, !wide>(scratch, g1 - g0, words * 4, span_bytes, query.rows, hint, pf,
                                                   [&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
                                                     visit.template operator()<R>(i0, g0 + p0, here);
                                                   });
    }
  }

 private:
  tile_prefetch pf;
};

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
