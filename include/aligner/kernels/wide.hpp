/** @file wide.hpp
 *  @brief AVX-512 register tiles over 4- and 8-wide panels, chosen at run time: a portable build (no -march: SSE2,
 *  panel width 4; -march=x86-64-v3: AVX2, width 8) on a CPU with AVX-512 scores with 512-bit FMAs anyway; and AVX2
 *  tiles of 4-wide panels, so that a build without -march scores with 256-bit FMAs on a CPU with AVX2 only.
 *
 *  A build's panel width W follows its compiler flags (layout.hpp), and its vector kernels use registers of W
 *  floats. On a CPU with AVX-512 the same panels are read 64 bytes at a time here, in functions compiled for
 *  AVX-512 by `__attribute__((target(...)))` (no compiler flag needed; they run only where avx512_usable(),
 *  core/cpu.hpp, says the CPU and the OS have AVX-512 F/BW/VL/DQ):
 *  - One 64-byte load of a W-wide panel holds G = 16 / W consecutive component rows: components G j .. G j + G - 1
 *    of its W tokens (f32; f16 and i8 load 32 and 16 bytes and widen them; bf16 holds G pair rows, 2 G components).
 *  - The query is expanded once into the matching 64-byte rows (query_to_wide): row i, step j holds q_i,Gj+g in
 *    lanes g W .. g W + W - 1 (bf16: the query's bf16 pair words, query_to_wide_bf16), so one FMA (vdpbf16ps) per
 *    (query row, panel) advances G components (2 G for bf16) of W tokens, with no shuffle on the FMA ports.
 *  - A tile is 4 query rows x 4 panels (16 zmm accumulators). Its G groups of
 *    lanes are added at the end and the result handed over as W-wide float batches, so every fold of the build
 *    (aligned_rows.hpp, token_scan.hpp) runs unchanged.
 *  Arithmetic: each lane group sums every G-th component, in float32 with fused multiply-adds, and the groups are
 *  added at the end (the build's own tiles sum the components in order): the results differ from them by float
 *  rounding only. bf16 panels run here only where the CPU has AVX512-BF16 (vdpbf16ps, the query rounded to bf16 as
 *  the AVX512-BF16 build and AMX do); elsewhere they stay on the build's tiles. A dimension that is not a multiple
 *  of G components (pairs) ends with a masked load of its last rows, so nothing past a panel is read.
 *  Memory: the expanded forms take G x W = 16 floats per G components, i.e. 4x (W = 4) or 8x (W = 8) the query's
 *  floats, plus half that for the bf16 form; a prepared_query keeps them (128 KB + 64 KB for 32 x 128 at W = 8).
 *  `ALIGNER_NO_AVX512=1` or set_avx512_enabled(false) keeps this engine off (tests compare both).
 *
 *  AVX2 at W = 4: a portable build (SSE2, no FMA: a multiply and an add a component) on a CPU with AVX2, FMA and
 *  F16C but no usable AVX-512 (AMD before Zen 4, Intel's client cores) scores f32, f16, i8 and bf16 panels with the AVX2
 *  tiles below instead (wide_avx2_tile_rows: 4 query rows x 2 panels, 8 ymm accumulators). They read the same
 *  expanded query 32 bytes at a time, so a prepared query serves both engines. bf16 panels are widened in registers
 *  and read the same float query (wherever AVX512-BF16 does not run; the query is not rounded). `ALIGNER_NO_AVX2=1`
 *  or set_avx2_enabled(false) keeps them off. */
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../core/config.hpp"
#include "../core/cpu.hpp"
#include "../core/types.hpp"
#include "layout.hpp"
#include "storage.hpp"

#if ALIGNER_X86_64_ASM && !defined(ALIGNER_DISABLE_WIDE)
#include <immintrin.h>
/// The run-time AVX-512 tiles of 4- and 8-wide panels are compiled (x86-64 with GCC or Clang; define ALIGNER_DISABLE_WIDE
/// to leave them out).
#define ALIGNER_HAVE_WIDE 1
#define ALIGNER_TARGET_WIDE __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define ALIGNER_TARGET_WIDE_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx512bf16")))
#define ALIGNER_TARGET_WIDE_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define ALIGNER_HAVE_WIDE 0
#endif

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// True when panels of storage `st` are scored by this file's run-time tiles now: the build's panel width is 4 or 8,
/// the tiles are compiled, and avx512_usable() (for bf16, avx512_bf16_usable(): the query rounded to bf16); or, for
/// f32, f16 and i8 panels 4 wide, avx2_usable() (the AVX2 tiles). bf16 on the AVX2 tiles is wide_avx2_runs(bf16) only.
template <class Arch = default_arch>
bool wide_runs(storage st) {
  if constexpr (ALIGNER_HAVE_WIDE && (panel_width<Arch> == 8 || panel_width<Arch> == 4)) {
    if (st == storage::residual) return false;
    if (st == storage::bf16) return avx512_bf16_usable();
    return avx512_usable() || (panel_width<Arch> == 4 && avx2_usable());
  } else {
    (void)st;
    return false;
  }
}

/// True when panels of storage st are scored by this file's AVX2 tiles of 4-wide panels now: f32, f16 and i8 where
/// avx2_usable() and not avx512_usable(); bf16 where avx2_usable() and not avx512_bf16_usable() (widened in registers,
/// the query kept in float: wide_runs(storage::bf16) stays false, as the query is not rounded).
template <class Arch = default_arch>
bool wide_avx2_runs(storage st) {
  if constexpr (ALIGNER_HAVE_WIDE && panel_width<Arch> == 4) {
    if (st == storage::residual) return false;
    if (st == storage::bf16) return !avx512_bf16_usable() && avx2_usable();
    return !avx512_usable() && avx2_usable();
  } else {
    (void)st;
    return false;
  }
}

/// Component rows (f32, f16, i8) or pair rows (bf16) one 64-byte step of a `width`-wide panel holds: 16 / width.
inline constexpr std::size_t wide_group(std::size_t width) noexcept { return 16 / width; }

/// 32-bit words of a query's expanded float form (query_to_wide): 16 a step, ceil(cols / G) steps a row.
inline constexpr std::size_t wide_query_words(std::size_t rows, std::size_t cols, std::size_t width = panel_width<>) noexcept {
  const std::size_t g = wide_group(width);
  return rows * ((cols + g - 1) / g) * 16;
}

/// 32-bit words of a query's expanded bf16 form (query_to_wide_bf16): 16 a step, ceil(ceil(cols / 2) / G) steps a row.
inline constexpr std::size_t wide_bf16_query_words(std::size_t rows, std::size_t cols, std::size_t width = panel_width<>) noexcept {
  const std::size_t g = wide_group(width);
  return rows * (((cols + 1) / 2 + g - 1) / g) * 16;
}

/// The query as the AVX-512 tiles of `width`-wide panels (4 or 8) read it against f32, f16 and i8 panels: row i,
/// step j is 16 floats (as their bits), lane l holding q_i,c with c = G j + l / width (0 past cols). Writes
/// wide_query_words(rows, cols, width) words; `out` must be 64-byte aligned for the tiles.
inline void query_to_wide(matrix_view<float> query, std::uint32_t* out, std::size_t width = panel_width<>) noexcept {
  const std::size_t g = wide_group(width), steps = (query.cols + g - 1) / g;
  for (std::size_t i = 0; i != query.rows; ++i)
    for (std::size_t j = 0; j != steps; ++j)
      for (std::size_t l = 0; l != 16; ++l) {
        const std::size_t c = g * j + l / width;
        out[(i * steps + j) * 16 + l] = c < query.cols ? std::bit_cast<std::uint32_t>(query.row(i)[c]) : 0u;
      }
}

/// The query as the vdpbf16ps tiles of `width`-wide bf16 panels read it: row i, step j is 16 words, lane l holding
/// the query's bf16 pair word p = G j + l / width (query_to_bf16_pairs: components 2p, 2p + 1; 0 past the last
/// pair). Writes wide_bf16_query_words(rows, cols, width) words.
inline void query_to_wide_bf16(matrix_view<float> query, std::uint32_t* out, std::size_t width = panel_width<>) noexcept {
  const std::size_t g = wide_group(width), pairs = (query.cols + 1) / 2, steps = (pairs + g - 1) / g;
  auto pair_word = [&](std::size_t i, std::size_t c2) -> std::uint32_t {
    if (c2 >= pairs) return 0u;
    const std::uint32_t lo = to_bf16(query.row(i)[2 * c2]);
    const std::uint32_t hi = 2 * c2 + 1 < query.cols ? to_bf16(query.row(i)[2 * c2 + 1]) : 0u;
    return lo | (hi << 16);
  };
  for (std::size_t i = 0; i != query.rows; ++i)
    for (std::size_t j = 0; j != steps; ++j)
      for (std::size_t l = 0; l != 16; ++l) out[(i * steps + j) * 16 + l] = pair_word(i, g * j + l / width);
}

/// The expanded query for storage `st` where wide_runs(st) or wide_avx2_runs(st): `given` (prepared by the caller:
/// query_forms::wide_for(st)) or the query converted into `buffer`; null where the tiles do not run (the build's own
/// tiles need no expanded form). bf16 on the AVX2 tiles reads the float form (query_to_wide).
template <class Arch = default_arch, class Buffer>
const std::uint32_t* wide_query_or_convert(storage st, matrix_view<float> query, const std::uint32_t* given, Buffer& buffer) {
  if (!wide_runs<Arch>(st) && !wide_avx2_runs<Arch>(st)) return nullptr;
  constexpr std::size_t width = panel_width<Arch>;
  if (st == storage::bf16 && wide_runs<Arch>(st))
    return given_or_converted(given, buffer, wide_bf16_query_words(query.rows, query.cols, width),
                              [&](std::uint32_t* out) { query_to_wide_bf16(query, out, width); });
  return given_or_converted(given, buffer, wide_query_words(query.rows, query.cols, width),
                            [&](std::uint32_t* out) { query_to_wide(query, out, width); });
}

#if ALIGNER_HAVE_WIDE
namespace detail {

/// Step j of a panel's component rows at `rows` (past any header), widened to float: the 16 elements from 16 j on
/// (G component rows of W lanes); `tail`: only the lanes of `mask`, the others 0 and not read.
template <storage St>
ALIGNER_TARGET_WIDE __attribute__((always_inline)) inline __m512 wide_load(const unsigned char* rows, std::size_t j, bool tail,
                                                                           __mmask16 mask) noexcept {
  if constexpr (St == storage::f32) {
    const float* p = reinterpret_cast<const float*>(rows) + j * 16;
    return tail ? _mm512_maskz_loadu_ps(mask, p) : _mm512_loadu_ps(p);
  } else if constexpr (St == storage::f16) {
    const auto* p = reinterpret_cast<const std::uint16_t*>(rows) + j * 16;
    return _mm512_cvtph_ps(tail ? _mm256_maskz_loadu_epi16(mask, p) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    static_assert(St == storage::i8, "row storages: f32, f16, i8");
    const unsigned char* p = rows + j * 16;
    const __m128i b = tail ? _mm_maskz_loadu_epi8(mask, p) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
  }
}

/// The G groups of W lanes of an accumulator added (the W-wide row of S), times `scale` (W floats; null: none),
/// stored to out.
template <std::size_t W>
ALIGNER_TARGET_WIDE __attribute__((always_inline)) inline void wide_fold_store(__m512 a, const float* scale, float* out) noexcept {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  if constexpr (W == 8) {
    _mm256_storeu_ps(out, scale ? _mm256_mul_ps(h, _mm256_loadu_ps(scale)) : h);
  } else {
    static_assert(W == 4, "panel widths 4 and 8");
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storeu_ps(out, scale ? _mm_mul_ps(q, _mm_loadu_ps(scale)) : q);
  }
}

/// One step j of a tile over row storage St: its G component rows of V panels times R rows of the expanded query.
/// (A function of its own, not a lambda: a lambda does not inherit its caller's target.)
template <storage St, std::size_t R, std::size_t V>
ALIGNER_TARGET_WIDE __attribute__((always_inline)) inline void wide_step_rows(__m512 (&acc)[R][V], const unsigned char* rows,
                                                                              std::size_t panel_bytes, const std::uint32_t* q,
                                                                              std::size_t q_row, std::size_t j, bool tail,
                                                                              __mmask16 mask) noexcept {
  __m512 d[V];
  for (std::size_t v = 0; v != V; ++v) d[v] = wide_load<St>(rows + v * panel_bytes, j, tail, mask);
  for (std::size_t r = 0; r != R; ++r) {
    const __m512 qj = _mm512_load_ps(reinterpret_cast<const float*>(q + r * q_row + j * 16));
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_fmadd_ps(qj, d[v], acc[r][v]);
  }
}

/// A tile of R query rows x V panels of W lanes of storage St (f32, f16, i8) into out[(r * V + v) * W + l]. `base`:
/// panel p0; `panel_bytes` apart; `q`: the expanded query's row i0 (query_to_wide), `q_row` words a row.
template <storage St, std::size_t W, std::size_t R, std::size_t V, class Prefetch>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE void wide_tile_rows(const unsigned char* base, std::size_t panel_bytes, std::size_t dim,
                                                         const std::uint32_t* q, std::size_t q_row, Prefetch pf,
                                                         float* out) noexcept {
  using traits = storage_traits<St>;
  constexpr std::size_t G = 16 / W;
  const unsigned char* rows = base + traits::header_words(W) * 4;
  const std::size_t steps = dim / G, rest = dim % G;
  __m512 acc[R][V];
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::size_t j = 0; j != steps; ++j) {
    pf.tick();
    wide_step_rows<St, R, V>(acc, rows, panel_bytes, q, q_row, j, false, __mmask16(0xffff));
  }
  if (rest) wide_step_rows<St, R, V>(acc, rows, panel_bytes, q, q_row, steps, true, __mmask16((1u << (W * rest)) - 1));
  pf.rest();
  for (std::size_t v = 0; v != V; ++v) {
    const float* scale = traits::scaled ? reinterpret_cast<const float*>(base + v * panel_bytes) : nullptr;
    for (std::size_t r = 0; r != R; ++r) wide_fold_store<W>(acc[r][v], scale, out + (r * V + v) * W);
  }
}

/// One step j of a bf16 tile: its G pair rows of V panels times R rows of the expanded query.
template <std::size_t R, std::size_t V>
ALIGNER_TARGET_WIDE_BF16 __attribute__((always_inline)) inline void wide_step_bf16(__m512 (&acc)[R][V], const std::uint32_t* base,
                                                                                   std::size_t panel_words, const std::uint32_t* q,
                                                                                   std::size_t q_row, std::size_t j, bool tail,
                                                                                   __mmask16 mask) noexcept {
  __m512i d[V];
  for (std::size_t v = 0; v != V; ++v) {
    const std::uint32_t* p = base + v * panel_words + j * 16;
    d[v] = tail ? _mm512_maskz_loadu_epi32(mask, p) : _mm512_loadu_si512(p);
  }
  for (std::size_t r = 0; r != R; ++r) {
    const __m512i qj = _mm512_load_si512(q + r * q_row + j * 16);
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)qj, (__m512bh)d[v]);
  }
}

/// The same for bf16 panels with vdpbf16ps: `base` the words of panel p0, `panel_words` apart, `pairs` pair rows a
/// panel; `q` the row i0 of query_to_wide_bf16's form.
template <std::size_t W, std::size_t R, std::size_t V, class Prefetch>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE_BF16 void wide_tile_bf16(const std::uint32_t* base, std::size_t panel_words, std::size_t pairs,
                                                              const std::uint32_t* q, std::size_t q_row, Prefetch pf,
                                                              float* out) noexcept {
  constexpr std::size_t G = 16 / W;
  const std::size_t steps = pairs / G, rest = pairs % G;
  __m512 acc[R][V];
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::size_t j = 0; j != steps; ++j) {
    pf.tick();
    wide_step_bf16<R, V>(acc, base, panel_words, q, q_row, j, false, __mmask16(0xffff));
  }
  if (rest) wide_step_bf16<R, V>(acc, base, panel_words, q, q_row, steps, true, __mmask16((1u << (W * rest)) - 1));
  pf.rest();
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t v = 0; v != V; ++v) wide_fold_store<W>(acc[r][v], nullptr, out + (r * V + v) * W);
}

/// The AVX2 tiles of 4-wide f32, f16, i8 and bf16 panels (a portable build on a CPU with AVX2 but no usable AVX-512). They
/// read the AVX-512 tiles' expanded query (query_to_wide at W = 4): its 64-byte step j holds components 4j .. 4j + 3
/// of the query, each in 4 lanes, as the panel's step j holds them for its 4 tokens; one 32-byte half h = 2j + k of
/// both is components 2h and 2h + 1. So a half-step is one ymm load of a panel (f16 and i8 widened), and an FMA with
/// the query's half h as its memory operand advances two components of 4 tokens. Lanes 0-3 of an accumulator sum the
/// even components, lanes 4-7 the odd ones; the halves are added at the end (then the i8 scale). An odd dimension
/// ends with a half of one component whose other half is 0 in the query and not read from the panel.

/// Half-step h of a 4-wide panel's component rows at `rows`, widened to float; `single`: only its first component
/// row (4 values; the upper 4 lanes 0).
template <storage St>
ALIGNER_TARGET_WIDE_AVX2 __attribute__((always_inline)) inline __m256 wide_avx2_load(const unsigned char* rows, std::size_t h,
                                                                                     bool single) noexcept {
  if constexpr (St == storage::f32) {
    const float* p = reinterpret_cast<const float*>(rows) + h * 8;
    return single ? _mm256_set_m128(_mm_setzero_ps(), _mm_loadu_ps(p)) : _mm256_loadu_ps(p);
  } else if constexpr (St == storage::f16) {
    const auto* p = reinterpret_cast<const std::uint16_t*>(rows) + h * 8;
    return _mm256_cvtph_ps(single ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    static_assert(St == storage::i8, "row storages: f32, f16, i8");
    const unsigned char* p = rows + h * 8;
    __m128i b;
    if (single) {
      std::int32_t four;
      std::memcpy(&four, p, 4);
      b = _mm_cvtsi32_si128(four);
    } else {
      b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    }
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  }
}

/// a0 += q[0..8) * d0, a1 += q[0..8) * d1 (six_row_tile_wide's odd last component row).
ALIGNER_TARGET_WIDE_AVX2 __attribute__((always_inline)) inline void wide_avx2_fma2(const float* q, __m256 d0, __m256 d1, __m256& a0,
                                                                                   __m256& a1) noexcept {
  const __m256 qh = _mm256_loadu_ps(q);
  a0 = _mm256_fmadd_ps(qh, d0, a0);
  a1 = _mm256_fmadd_ps(qh, d1, a1);
}

/// Pair row h of a 4-wide bf16 panel (4 words: components 2h, 2h + 1 of 4 tokens) widened to float: lanes 0-3
/// component 2h, lanes 4-7 component 2h + 1 (the broadcast row shifted right by 16 in lanes 4-7, then left by 16).
ALIGNER_TARGET_WIDE_AVX2 __attribute__((always_inline)) inline __m256 wide_avx2_load_bf16(const unsigned char* rows, std::size_t h) noexcept {
  const __m256i w = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + h * 16)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_srlv_epi32(w, _mm256_setr_epi32(0, 0, 0, 0, 16, 16, 16, 16)), 16));
}

/// One half-step h of an R x V tile: V panel loads, R x V FMAs with the query rows' half h.
template <storage St, std::size_t R, std::size_t V>
ALIGNER_TARGET_WIDE_AVX2 __attribute__((always_inline)) inline void wide_avx2_step(__m256 (&acc)[R][V], const unsigned char* rows,
                                                                                   std::size_t panel_bytes, const float* q,
                                                                                   std::size_t q_row, std::size_t h, bool single) noexcept {
  __m256 d[V];
  for (std::size_t v = 0; v != V; ++v) {
    if constexpr (St == storage::bf16)
      d[v] = wide_avx2_load_bf16(rows + v * panel_bytes, h);  // (a bf16 panel has no single rows: pairs hold a 0 past dim)
    else
      d[v] = wide_avx2_load<St>(rows + v * panel_bytes, h, single);
  }
  for (std::size_t r = 0; r != R; ++r) {
    const __m256 qh = _mm256_loadu_ps(q + r * q_row + h * 8);
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm256_fmadd_ps(qh, d[v], acc[r][v]);
  }
}

/// An R x V tile (R <= 4, V <= 2) of 4-wide panels of storage St into out[(r * V + v) * 4 + l], as wide_tile_rows.
template <storage St, std::size_t R, std::size_t V, class Prefetch>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE_AVX2 void wide_avx2_tile_rows(const unsigned char* base, std::size_t panel_bytes, std::size_t dim,
                                                                   const std::uint32_t* q, std::size_t q_row, Prefetch pf,
                                                                   float* out) noexcept {
  static_assert(R * V <= 8, "8 accumulators of the 16 ymm registers");
  using traits = storage_traits<St>;
  const unsigned char* rows = base + traits::header_words(4) * 4;
  const float* qf = reinterpret_cast<const float*>(q);
  // bf16: one pair row a half-step, the last one of an odd dim holding a 0 (the query's component there is 0 too)
  const std::size_t halves = St == storage::bf16 ? (dim + 1) / 2 : dim / 2;
  __m256 acc[R][V];
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm256_setzero_ps();
  for (std::size_t h = 0; h != halves; ++h) {
    if (h % 2 == 0) pf.tick();  // one line a 64-byte step, as the AVX-512 tiles
    wide_avx2_step<St, R, V>(acc, rows, panel_bytes, qf, q_row, h, false);
  }
  if (St != storage::bf16 && dim % 2) wide_avx2_step<St, R, V>(acc, rows, panel_bytes, qf, q_row, halves, true);
  pf.rest();
  for (std::size_t v = 0; v != V; ++v) {
    const float* scale = traits::scaled ? reinterpret_cast<const float*>(base + v * panel_bytes) : nullptr;
    for (std::size_t r = 0; r != R; ++r) {
      const __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[r][v]), _mm256_extractf128_ps(acc[r][v], 1));
      _mm_storeu_ps(out + (r * V + v) * 4, scale ? _mm_mul_ps(s, _mm_loadu_ps(scale)) : s);
    }
  }
}

}  // namespace detail
#endif

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
