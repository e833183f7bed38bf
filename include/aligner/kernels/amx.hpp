/** @file amx.hpp
 *  @brief S tiles from Intel AMX-BF16 (`tdpbf16ps`) over bf16 panels, chosen at run time.
 *
 *  A bf16 panel (layout.hpp, storage.hpp) stores pair c2 of token l in word c2 * W + l: read as an AMX tile of
 *  K/2 rows x W columns of 32 bits it is exactly the "B" operand of tdpbf16ps (pairs of bf16 per column), so panels
 *  are read in place, 16 pairs (32 components) a tile. The "A" operand is 16 query rows of the query's bf16 pairs
 *  (query_to_bf16_pairs, zero-padded to 16 rows). One tile call computes 16 query rows x up to 4 panels into four
 *  accumulator tiles (tmm0..3), stores them into the caller's registers-sized array and leaves selection to the
 *  same folds as the vector engine (aligned_rows.hpp, token_scan.hpp): S is never held beyond 16 x 4W values.
 *  Register use: tmm4 = A, tmm5/tmm6 = B (alternating); a dimension that is not a multiple of 32 has a tail of
 *  t < 16 pairs, read by tmm7 (A, t pairs a row) and tmm6 (B, t rows), configured so (the tile shapes are fixed per
 *  configuration, and a configuration is loaded only when it differs from the thread's current one).
 *  Arithmetic: products of bf16 values are exact in float; tdpbf16ps sums each pair and accumulates in float32
 *  (round to nearest even; denormal inputs are flushed to zero, as the instruction specifies), so results differ
 *  from the vector bf16 path by float rounding only. The instructions are issued by inline assembly, so no compiler
 *  flag is needed; the engine runs only where amx_bf16_usable() (core/cpu.hpp) says the CPU, the OS and the
 *  process permission allow it. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../core/config.hpp"
#include "../core/cpu.hpp"
#include "../core/types.hpp"
#include "layout.hpp"
#include "storage.hpp"
#include "tile.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

#if ALIGNER_HAVE_AMX
// Each statement names its tile register literally (the instructions encode it); the memory clobbers keep the
// compiler from moving ordinary loads and stores of the buffers across them.
#define ALIGNER_TILE_ZERO(t) __asm__ volatile("{tilezero %%tmm" #t "|tilezero tmm" #t "}" ::: "memory")
#define ALIGNER_TILE_LOAD(t, base, stride)                                                                  \
  __asm__ volatile("{tileloadd (%0,%1,1), %%tmm" #t "|tileloadd tmm" #t ", [%0+%1*1]}" ::"r"(base),           \
                   "r"(static_cast<long>(stride))                                                              \
                   : "memory")
#define ALIGNER_TILE_STORE(t, base, stride)                                                                 \
  __asm__ volatile("{tilestored %%tmm" #t ", (%0,%1,1)|tilestored [%0+%1*1], tmm" #t "}" ::"r"(base),          \
                   "r"(static_cast<long>(stride))                                                              \
                   : "memory")
#define ALIGNER_TILE_DPBF16(c, a, b) \
  __asm__ volatile("{tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c "|tdpbf16ps tmm" #c ", tmm" #a ", tmm" #b "}" ::: "memory")
#endif

namespace aligner {

/// The 64-byte tile configuration of ldtilecfg (palette 1).
struct alignas(64) amx_tile_config {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(amx_tile_config) == 64);

/// Loads `want` unless it is the calling thread's current tile configuration (sttilecfg reads it back; a released
/// state reads as zeros, so a fresh or released thread is configured). Requires amx_bf16_usable().
inline void amx_configure(const amx_tile_config& want) noexcept {
#if ALIGNER_HAVE_AMX
  amx_tile_config now;
  __asm__ volatile("sttilecfg %0" : "=m"(now)::"memory");
  if (std::memcmp(&now, &want, sizeof want) != 0) __asm__ volatile("ldtilecfg %0" ::"m"(want) : "memory");
#else
  (void)want;
#endif
}

/// The tile engine interface of aligned_rows.hpp over bf16 panels, on AMX-BF16. Preconditions (unchecked):
/// amx_bf16_usable(); query_bf16 holds query_to_bf16_pairs of `query` (zero rows up to 16); the rest as
/// tile_engine. Works for any panel width W in 4 .. 16 (AMX tiles have up to 16 columns).
template <class Arch>
struct amx_bf16_engine : tile_engine_base<amx_bf16_engine<Arch>, Arch, 4> {
  using base = tile_engine_base<amx_bf16_engine<Arch>, Arch, 4>;
  using typename base::batch;
  using base::width;
  using base::block_panels;
  static_assert(width >= 4 && width <= 16, "AMX tiles hold 4 to 16 float columns");
  static constexpr std::size_t block_rows = 16;
  static constexpr std::size_t span_bytes = std::size_t(256) << 10;

  const void* panels;
  std::size_t dim, doc_rows, panel_total;
  matrix_view<float> query;
  const std::uint32_t* query_bf16;
  prefetch_hint next{};
  std::size_t pairs, full_blocks, tail;

  amx_bf16_engine(const void* panels_, std::size_t doc_rows_, matrix_view<float> query_, const std::uint32_t* query_bf16_,
                  prefetch_hint next_ = {}) noexcept
      : panels(panels_), dim(query_.cols), doc_rows(doc_rows_), panel_total(panel_count<Arch>(doc_rows_)), query(query_),
        query_bf16(query_bf16_), next(next_), pairs((query_.cols + 1) / 2), full_blocks(pairs / 16), tail(pairs % 16) {}

  std::size_t panel_bytes() const noexcept { return pairs * width * 4; }

  /// The configuration of this engine's shapes.
  amx_tile_config config() const noexcept {
    amx_tile_config c;
    const auto cols = std::uint16_t(width * 4);
    for (int t = 0; t != 4; ++t) c.rows[t] = 16, c.colsb[t] = cols;  // accumulators: 16 rows x W floats
    c.rows[4] = 16, c.colsb[4] = 64;                                    // A: 16 rows x 16 pairs
    c.rows[5] = 16, c.colsb[5] = cols;                                  // B: 16 pairs x W tokens
    if (tail == 0) {
      c.rows[6] = 16, c.colsb[6] = cols;  // second B
    } else {
      c.rows[6] = std::uint8_t(tail), c.colsb[6] = cols;                  // tail B: t pairs x W tokens
      c.rows[7] = 16, c.colsb[7] = std::uint16_t(tail * 4);               // tail A: 16 rows x t pairs
    }
    return c;
  }

  /// acc[r][v] = S tile of rows i0 + r (r < 16; rows past the query are zero) and panel p0 + v.
  template <std::size_t R, std::size_t V>
  void tile(std::size_t i0, std::size_t p0, batch (&acc)[R][V]) const noexcept {
    static_assert(R == 16, "AMX tiles are 16 query rows");
    if (tail == 0)
      tile_amx<V, false>(i0, p0, &acc[0][0]);
    else
      tile_amx<V, true>(i0, p0, &acc[0][0]);
  }

  /// Visits every (16-row block, group of up to 4 panels) tile once, a 256 KB span of panels at a time (the span
  /// stays in L2 while the row blocks sweep it); prefetches the next span or document in slices between tiles.
  template <class Visit>
  void sweep(Visit&& visit) const {
    amx_configure(config());
    const std::size_t n = query.rows;
    for_each_span(panels, panel_total, panel_bytes(), span_bytes, block_panels, (n + block_rows - 1) / block_rows, next,
                  [&](std::size_t s0, std::size_t s1, span_prefetch& plan) {
                    for (std::size_t i0 = 0; i0 < n; i0 += block_rows)
                      for (std::size_t p0 = s0; p0 < s1; p0 += block_panels) {
                        for (auto [line, stop] = plan.slice(); line < stop; line += 64) prefetch_read<2>(line);
                        visit.template operator()<block_rows>(i0, p0, std::min(block_panels, s1 - p0));
                      }
                  });
  }

 private:
  template <std::size_t V, bool Tail>
  ALIGNER_NOINLINE void tile_amx(std::size_t i0, std::size_t p0, batch* out) const noexcept {
#if ALIGNER_HAVE_AMX
    const std::size_t a_stride = pairs * 4, b_stride = width * 4, b_block = 16 * width * 4, c_stride = V * sizeof(batch);
    const char* a = reinterpret_cast<const char*>(query_bf16 + i0 * pairs);
    const char* b0 = static_cast<const char*>(panels) + p0 * panel_bytes();
    const std::size_t pb = panel_bytes();
    ALIGNER_TILE_ZERO(0);
    if constexpr (V > 1) ALIGNER_TILE_ZERO(1);
    if constexpr (V > 2) ALIGNER_TILE_ZERO(2);
    if constexpr (V > 3) ALIGNER_TILE_ZERO(3);
    for (std::size_t kb = 0; kb != full_blocks; ++kb) {
      ALIGNER_TILE_LOAD(4, a + kb * 64, a_stride);
      const char* b = b0 + kb * b_block;
      ALIGNER_TILE_LOAD(5, b, b_stride);
      ALIGNER_TILE_DPBF16(0, 4, 5);
      if constexpr (Tail) {
        if constexpr (V > 1) { ALIGNER_TILE_LOAD(5, b + pb, b_stride); ALIGNER_TILE_DPBF16(1, 4, 5); }
        if constexpr (V > 2) { ALIGNER_TILE_LOAD(5, b + 2 * pb, b_stride); ALIGNER_TILE_DPBF16(2, 4, 5); }
        if constexpr (V > 3) { ALIGNER_TILE_LOAD(5, b + 3 * pb, b_stride); ALIGNER_TILE_DPBF16(3, 4, 5); }
      } else {
        if constexpr (V > 1) { ALIGNER_TILE_LOAD(6, b + pb, b_stride); ALIGNER_TILE_DPBF16(1, 4, 6); }
        if constexpr (V > 2) { ALIGNER_TILE_LOAD(5, b + 2 * pb, b_stride); ALIGNER_TILE_DPBF16(2, 4, 5); }
        if constexpr (V > 3) { ALIGNER_TILE_LOAD(6, b + 3 * pb, b_stride); ALIGNER_TILE_DPBF16(3, 4, 6); }
      }
    }
    if constexpr (Tail) {
      ALIGNER_TILE_LOAD(7, a + full_blocks * 64, a_stride);
      const char* b = b0 + full_blocks * b_block;
      ALIGNER_TILE_LOAD(6, b, b_stride);
      ALIGNER_TILE_DPBF16(0, 7, 6);
      if constexpr (V > 1) { ALIGNER_TILE_LOAD(6, b + pb, b_stride); ALIGNER_TILE_DPBF16(1, 7, 6); }
      if constexpr (V > 2) { ALIGNER_TILE_LOAD(6, b + 2 * pb, b_stride); ALIGNER_TILE_DPBF16(2, 7, 6); }
      if constexpr (V > 3) { ALIGNER_TILE_LOAD(6, b + 3 * pb, b_stride); ALIGNER_TILE_DPBF16(3, 7, 6); }
    }
    char* c = reinterpret_cast<char*>(out);
    ALIGNER_TILE_STORE(0, c, c_stride);
    if constexpr (V > 1) ALIGNER_TILE_STORE(1, c + sizeof(batch), c_stride);
    if constexpr (V > 2) ALIGNER_TILE_STORE(2, c + 2 * sizeof(batch), c_stride);
    if constexpr (V > 3) ALIGNER_TILE_STORE(3, c + 3 * sizeof(batch), c_stride);
#else
    (void)i0, (void)p0, (void)out;
#endif
  }
};

/// True when bf16 documents are scored now with the query rounded to bfloat16 too (AVX512-BF16's vdpbf16ps in
/// an AVX-512 build, or AMX-BF16 at run time); false when the vector path widens the documents and keeps the query
/// in float.
template <class Arch = default_arch>
bool bf16_query_rounded() {
  return bf16_rounds_query<Arch> || (panel_width<Arch> >= 4 && panel_width<Arch> <= 16 && amx_bf16_usable());
}

/// Every q_i . d_j of a packed document into s_out (query.rows x panels * W, row stride s_stride; padding lanes
/// get 0) by the engine the fused kernel uses now for storage `st`: AMX-BF16 tiles for bf16 where
/// amx_bf16_usable(), the vector tiles otherwise (so explain reproduces the kernel's values). `query_bf16`: the
/// query's bf16 pairs, or null to convert them here where needed.
template <class Arch = default_arch>
void packed_similarity_rows(matrix_view<float> query, storage st, const void* panels, std::size_t doc_rows, float* s_out,
                            std::size_t s_stride, const std::uint32_t* query_bf16 = nullptr) {
  std::vector<std::uint32_t> converted;
  if (st == storage::bf16 && query_bf16 == nullptr && bf16_query_rounded<Arch>()) {
    converted.resize(bf16_query_words(query.rows, query.cols));
    query_to_bf16_pairs(query, converted.data());
    query_bf16 = converted.data();
  }
  if constexpr (panel_width<Arch> >= 4 && panel_width<Arch> <= 16) {
    if (st == storage::bf16 && amx_bf16_usable()) {
      const amx_bf16_engine<Arch> engine(panels, doc_rows, query, query_bf16);
      engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
        engine.template store_rows<R>(i0, p0, here, s_out, s_stride);
      });
      return;
    }
  }
  similarity_rows<Arch>(query, st, panels, doc_rows, s_out, s_stride, query_bf16);
}

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
