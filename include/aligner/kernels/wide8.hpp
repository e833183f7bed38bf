/** @file wide8.hpp
 *  @brief AVX-512 register tiles over 8-wide panels, chosen at run time: a portable build (AVX2, panel width 8) on
 *  a CPU with AVX-512 scores with 512-bit FMAs anyway.
 *
 *  A build's panel width follows its compiler flags (layout.hpp): -march=x86-64-v3 packs 8 tokens a panel and its
 *  vector kernels use 256-bit registers. On a CPU with AVX-512 the same panels are read 64 bytes at a time here, in
 *  functions compiled for AVX-512 by `__attribute__((target(...)))` (no compiler flag needed; they run only where
 *  avx512_usable(), core/cpu.hpp, says the CPU and the OS have AVX-512 F/BW/VL/DQ):
 *  - One 64-byte load of an 8-wide panel holds two consecutive component rows: components 2j and 2j + 1 of its 8
 *    tokens (f32; f16 and i8 load 32 and 16 bytes and widen them; bf16 holds pairs 2j and 2j + 1, i.e. components
 *    4j .. 4j + 3).
 *  - The query is expanded once into the matching 64-byte rows (query_to_wide8): row i, step j holds q_i,2j in the
 *    low 8 lanes and q_i,2j+1 in the high 8 (bf16: the query's bf16 pair words 2j and 2j + 1, query_to_wide8_bf16),
 *    so one FMA (vdpbf16ps) per (query row, panel) advances two components (four for bf16) of 8 tokens, with no
 *    shuffle on the FMA ports.
 *  - A tile is 4 query rows x 4 panels: 16 zmm accumulators. Its low and high halves are added at the end and the
 *    result handed over as 8-wide float batches, so every fold of the build (aligned_rows.hpp, token_scan.hpp)
 *    runs unchanged.
 *  Arithmetic: each lane sums the even and the odd components separately, in float32 with fused multiply-adds, and
 *  adds the two at the end (the 256-bit tiles sum the components in order): the results differ from them by float
 *  rounding only. bf16 panels run here only where the CPU has AVX512-BF16 (vdpbf16ps, the query rounded to bf16 as
 *  the AVX512-BF16 build and AMX do); elsewhere they stay on the 256-bit tiles. A dimension with an odd number of
 *  steps ends with a masked load of the last component row (pair row), so nothing past a panel is read.
 *  `ALIGNER_NO_AVX512=1` or set_avx512_enabled(false) keeps this engine off (tests compare both). */
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

#if ALIGNER_X86_64_ASM && !defined(ALIGNER_DISABLE_WIDE8)
#include <immintrin.h>
/// The run-time AVX-512 tiles of 8-wide panels are compiled (x86-64 with GCC or Clang; define ALIGNER_DISABLE_WIDE8
/// to leave them out).
#define ALIGNER_HAVE_WIDE8 1
#define ALIGNER_TARGET_WIDE8 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define ALIGNER_TARGET_WIDE8_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#else
#define ALIGNER_HAVE_WIDE8 0
#endif

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// True when 8-wide panels of storage `st` are scored by this file's AVX-512 tiles now: the build's panel width is
/// 8, the tiles are compiled, avx512_usable() (and, for bf16, avx512_bf16_usable()).
template <class Arch = default_arch>
bool wide8_runs(storage st) {
  if constexpr (ALIGNER_HAVE_WIDE8 && panel_width<Arch> == 8) {
    if (st == storage::residual) return false;
    return st == storage::bf16 ? avx512_bf16_usable() : avx512_usable();
  } else {
    (void)st;
    return false;
  }
}

/// 32-bit words of a query's expanded float form (query_to_wide8): 16 a step, ceil(cols / 2) steps a row.
inline constexpr std::size_t wide8_query_words(std::size_t rows, std::size_t cols) noexcept { return rows * ((cols + 1) / 2) * 16; }

/// 32-bit words of a query's expanded bf16 form (query_to_wide8_bf16): 16 a step, ceil(ceil(cols / 2) / 2) steps a row.
inline constexpr std::size_t wide8_bf16_query_words(std::size_t rows, std::size_t cols) noexcept {
  return rows * (((cols + 1) / 2 + 1) / 2) * 16;
}

/// The query as the AVX-512 tiles of 8-wide panels read it against f32, f16 and i8 panels: row i, step j is 16
/// floats (as their bits), q_i,2j in words 0-7 and q_i,2j+1 in words 8-15 (0 past cols). Writes
/// wide8_query_words(rows, cols) words; `out` should be 64-byte aligned.
inline void query_to_wide8(matrix_view<float> query, std::uint32_t* out) noexcept {
  const std::size_t steps = (query.cols + 1) / 2;
  for (std::size_t i = 0; i != query.rows; ++i)
    for (std::size_t j = 0; j != steps; ++j) {
      std::uint32_t* o = out + (i * steps + j) * 16;
      const std::uint32_t lo = std::bit_cast<std::uint32_t>(query.row(i)[2 * j]);
      const std::uint32_t hi = 2 * j + 1 < query.cols ? std::bit_cast<std::uint32_t>(query.row(i)[2 * j + 1]) : 0u;
      std::fill(o, o + 8, lo);
      std::fill(o + 8, o + 16, hi);
    }
}

/// The query as the vdpbf16ps tiles of 8-wide bf16 panels read it: row i, step j is 16 words, the query's bf16 pair
/// word 2j (query_to_bf16_pairs: components 4j, 4j + 1) in words 0-7 and pair word 2j + 1 in words 8-15 (0 past the
/// last pair). Writes wide8_bf16_query_words(rows, cols) words.
inline void query_to_wide8_bf16(matrix_view<float> query, std::uint32_t* out) noexcept {
  const std::size_t pairs = (query.cols + 1) / 2, steps = (pairs + 1) / 2;
  auto pair_word = [&](std::size_t i, std::size_t c2) -> std::uint32_t {
    if (c2 >= pairs) return 0u;
    const std::uint32_t lo = to_bf16(query.row(i)[2 * c2]);
    const std::uint32_t hi = 2 * c2 + 1 < query.cols ? to_bf16(query.row(i)[2 * c2 + 1]) : 0u;
    return lo | (hi << 16);
  };
  for (std::size_t i = 0; i != query.rows; ++i)
    for (std::size_t j = 0; j != steps; ++j) {
      std::uint32_t* o = out + (i * steps + j) * 16;
      std::fill(o, o + 8, pair_word(i, 2 * j));
      std::fill(o + 8, o + 16, pair_word(i, 2 * j + 1));
    }
}

/// The expanded query for storage `st` where wide8_runs(st): `given` (prepared by the caller) or the query
/// converted into `buffer`; null where the tiles do not run (the 256-bit tiles need no expanded form).
template <class Arch = default_arch, class Buffer>
const std::uint32_t* wide8_query_or_convert(storage st, matrix_view<float> query, const std::uint32_t* given, Buffer& buffer) {
  if (!wide8_runs<Arch>(st)) return nullptr;
  if (given != nullptr) return given;
  const bool bf16 = st == storage::bf16;
  buffer.resize(bf16 ? wide8_bf16_query_words(query.rows, query.cols) : wide8_query_words(query.rows, query.cols));
  if (bf16)
    query_to_wide8_bf16(query, buffer.data());
  else
    query_to_wide8(query, buffer.data());
  return buffer.data();
}

#if ALIGNER_HAVE_WIDE8
namespace detail {

/// Components 2j and 2j + 1 (`half`: 2j alone, the high lanes 0) of an 8-wide panel's component rows at `rows`
/// (past any header), widened to float.
template <storage St>
ALIGNER_TARGET_WIDE8 __attribute__((always_inline)) inline __m512 wide8_load(const unsigned char* rows, std::size_t j, bool half) noexcept {
  if constexpr (St == storage::f32) {
    const float* p = reinterpret_cast<const float*>(rows) + j * 16;
    return half ? _mm512_maskz_loadu_ps(__mmask16(0x00ff), p) : _mm512_loadu_ps(p);
  } else if constexpr (St == storage::f16) {
    const auto* p = reinterpret_cast<const std::uint16_t*>(rows) + j * 16;
    return _mm512_cvtph_ps(half ? _mm256_maskz_loadu_epi16(__mmask16(0x00ff), p) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    static_assert(St == storage::i8, "row storages: f32, f16, i8");
    const unsigned char* p = rows + j * 16;
    const __m128i b = half ? _mm_maskz_loadu_epi8(__mmask16(0x00ff), p) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
  }
}

/// The two halves of a 16-lane accumulator added: the 8-wide row of S.
ALIGNER_TARGET_WIDE8 __attribute__((always_inline)) inline __m256 wide8_fold(__m512 a) noexcept {
  return _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

/// One step j of a tile over row storage St: components 2j, 2j + 1 (`half`: 2j alone) of V panels times R rows of
/// the expanded query. (A function of its own, not a lambda: a lambda does not inherit its caller's target.)
template <storage St, std::size_t R, std::size_t V>
ALIGNER_TARGET_WIDE8 __attribute__((always_inline)) inline void wide8_step_rows(__m512 (&acc)[R][V], const unsigned char* rows,
                                                                                std::size_t panel_bytes, const std::uint32_t* q,
                                                                                std::size_t q_row, std::size_t j, bool half) noexcept {
  __m512 d[V];
  for (std::size_t v = 0; v != V; ++v) d[v] = wide8_load<St>(rows + v * panel_bytes, j, half);
  for (std::size_t r = 0; r != R; ++r) {
    const __m512 qj = _mm512_load_ps(reinterpret_cast<const float*>(q + r * q_row + j * 16));
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_fmadd_ps(qj, d[v], acc[r][v]);
  }
}

/// A tile of R query rows x V panels of storage St (f32, f16, i8) into out[(r * V + v) * 8 + l]. `base`: panel
/// p0; `panel_bytes` apart; `q`: the expanded query's row i0 (query_to_wide8), `q_row` words a row.
template <storage St, std::size_t R, std::size_t V, class Prefetch>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE8 void wide8_tile_rows(const unsigned char* base, std::size_t panel_bytes, std::size_t dim,
                                                           const std::uint32_t* q, std::size_t q_row, const Prefetch& pf,
                                                           float* out) noexcept {
  using traits = storage_traits<St>;
  const unsigned char* rows = base + traits::header_words(8) * 4;
  const std::size_t steps = dim / 2;
  __m512 acc[R][V];
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::size_t j = 0; j != steps; ++j) {
    pf.tick();
    wide8_step_rows<St, R, V>(acc, rows, panel_bytes, q, q_row, j, false);
  }
  if (dim % 2) wide8_step_rows<St, R, V>(acc, rows, panel_bytes, q, q_row, steps, true);
  pf.rest();
  for (std::size_t v = 0; v != V; ++v) {
    __m256 scale = _mm256_set1_ps(1.f);
    if constexpr (traits::scaled) scale = _mm256_loadu_ps(reinterpret_cast<const float*>(base + v * panel_bytes));
    for (std::size_t r = 0; r != R; ++r) {
      __m256 s = wide8_fold(acc[r][v]);
      if constexpr (traits::scaled) s = _mm256_mul_ps(s, scale);
      _mm256_storeu_ps(out + (r * V + v) * 8, s);
    }
  }
}

/// One step j of a bf16 tile: pair rows 2j, 2j + 1 (`half`: 2j alone) of V panels times R rows of the expanded query.
template <std::size_t R, std::size_t V>
ALIGNER_TARGET_WIDE8_BF16 __attribute__((always_inline)) inline void wide8_step_bf16(__m512 (&acc)[R][V], const std::uint32_t* base,
                                                                                     std::size_t panel_words, const std::uint32_t* q,
                                                                                     std::size_t q_row, std::size_t j, bool half) noexcept {
  __m512i d[V];
  for (std::size_t v = 0; v != V; ++v) {
    const std::uint32_t* p = base + v * panel_words + j * 16;
    d[v] = half ? _mm512_maskz_loadu_epi32(__mmask16(0x00ff), p) : _mm512_loadu_si512(p);
  }
  for (std::size_t r = 0; r != R; ++r) {
    const __m512i qj = _mm512_load_si512(q + r * q_row + j * 16);
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)qj, (__m512bh)d[v]);
  }
}

/// The same for bf16 panels with vdpbf16ps: `base` the words of panel p0, `panel_words` apart, `pairs` pair rows a
/// panel; `q` the row i0 of query_to_wide8_bf16's form.
template <std::size_t R, std::size_t V, class Prefetch>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE8_BF16 void wide8_tile_bf16(const std::uint32_t* base, std::size_t panel_words, std::size_t pairs,
                                                                const std::uint32_t* q, std::size_t q_row, const Prefetch& pf,
                                                                float* out) noexcept {
  const std::size_t steps = pairs / 2;
  __m512 acc[R][V];
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t v = 0; v != V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::size_t j = 0; j != steps; ++j) {
    pf.tick();
    wide8_step_bf16<R, V>(acc, base, panel_words, q, q_row, j, false);
  }
  if (pairs % 2) wide8_step_bf16<R, V>(acc, base, panel_words, q, q_row, steps, true);
  pf.rest();
  for (std::size_t r = 0; r != R; ++r)
    for (std::size_t v = 0; v != V; ++v)
      _mm256_storeu_ps(out + (r * V + v) * 8,
                       _mm256_add_ps(_mm512_castps512_ps256(acc[r][v]), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][v]), 1))));
}

}  // namespace detail
#endif

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
