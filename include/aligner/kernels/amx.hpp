/** @file amx.hpp
 *  @brief S tiles from Intel AMX-BF16 (`tdpbf16ps`) over bf16 panels, chosen at run time.
 *
 *  A bf16 panel (layout.hpp, storage.hpp) stores pair c2 of token l in word c2 * W + l: read as an AMX tile of
 *  K/2 rows x W columns of 32 bits it is exactly the "B" operand of tdpbf16ps (pairs of bf16 per column), so panels
 *  are read in place, 16 pairs (32 components) a tile. The "A" operand is 16 query rows of the query's bf16 pairs
 *  (query_to_bf16_pairs, zero-padded to 16 rows). One tile call computes 16 query rows x up to 4 panels into four
 *  accumulator tiles (tmm0..3), stores them into the caller's registers-sized array and leaves selection to the
 *  same folds as the vector engine (aligned_rows.hpp, token_scan.hpp); a bf16 engine's tiles are two such calls (8
 *  panels, amx_engine_panels), so a Top-k fold takes 8 batches a row at once. S is never held beyond 16 x 8W values
 *  (32 x 8W where a bf16 sweep pairs two 16-row blocks of the query against each B load: amx_engine::rows_paired).
 *  Register use: tmm4 = A; a dimension that fills whole k-blocks (16 pairs, or 16 int8 quads: no tail) has B in
 *  tmm6 / tmm7 (alternating) and a second A shape in tmm5, where the int8 engine puts its second query term so that
 *  both terms share each B load (tile_paired: per k-block two A loads, two B loads and four tdpbssd into tmm0..3).
 *  A dimension with a tail of t < 16 words a row has B in tmm5 / tmm6 over the whole blocks and reads the tail with
 *  tmm7 (A, t words a row) and tmm6 (B, t rows), configured so (the tile shapes are fixed per configuration, and a
 *  configuration is loaded only when it differs from the thread's current one).
 *  Arithmetic: products of bf16 values are exact in float; tdpbf16ps sums each pair and accumulates in float32
 *  (round to nearest even; denormal inputs are flushed to zero, as the instruction specifies), so results differ
 *  from the vector bf16 path by float rounding only. The instructions are issued by inline assembly, so no compiler
 *  flag is needed; the engine runs only where amx_bf16_usable() (core/cpu.hpp) says the CPU, the OS and the
 *  process permission allow it.
 *
 *  The same tiles with `tdpbssd` (AMX-INT8) score int8 panels (amx_i8_engine). An int8 panel keeps component c of
 *  token l in byte c * W + l; tdpbssd wants the four components 4 c4 .. 4 c4 + 3 of a token in one 32-bit word, so
 *  each group of panels (16 KB once re-laid) is re-laid first, 64 bytes (four components of 16 tokens) per
 *  AVX512-VBMI `vpermb`, in a function compiled for that target (no compiler flag needed; every AMX CPU has VBMI).
 *  The query is quantised in two int8 terms per component, q ≈ (a F + b) * (s / F) (query_to_i8_quads: a is the
 *  int8 token rule, b the rounded remainder at F = 254 steps, so the query keeps about 16 bits: one int8 term cost
 *  0.0012 nDCG@10 on SciFact against the float query). Both terms are multiplied by the document's int8 components
 *  in tiles of their own, summed exactly in int32 as F Σ a d + Σ b d, and turned into floats as
 *      S_ij = (float(F Σ_c a_ic d_jc + Σ_c b_ic d_jc) * scale_j) * (s_i / F)
 *  (float(int) rounds only where the sum passes 2^24; two float roundings). The vector path keeps the query in
 *  float, so the two differ by the query's remainder, at most s_i / (2F) per component. */
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
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

#if ALIGNER_HAVE_AMX && defined(ALIGNER_AMX_EMULATE)
// A test build: the tile statements run on the software model of amx_emulator.hpp.
#include "amx_emulator.hpp"
#define ALIGNER_TILE_ZERO(t) ::aligner::detail::amx_emu::zero(t)
#define ALIGNER_TILE_LOAD(t, base, stride) ::aligner::detail::amx_emu::load(t, base, static_cast<long>(stride))
#define ALIGNER_TILE_STORE(t, base, stride) ::aligner::detail::amx_emu::store(t, base, static_cast<long>(stride))
#define ALIGNER_TILE_DPBF16(c, a, b) ::aligner::detail::amx_emu::dpbf16(c, a, b)
#define ALIGNER_TILE_DPBSSD(c, a, b) ::aligner::detail::amx_emu::dpbssd(c, a, b)
#define ALIGNER_TILE_READ_CONFIG(cfg) ::aligner::detail::amx_emu::store_config(&(cfg))
#define ALIGNER_TILE_WRITE_CONFIG(cfg) ::aligner::detail::amx_emu::load_config(&(cfg))
#include <immintrin.h>
#elif ALIGNER_HAVE_AMX
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
#define ALIGNER_TILE_DPBSSD(c, a, b) \
  __asm__ volatile("{tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c "|tdpbssd tmm" #c ", tmm" #a ", tmm" #b "}" ::: "memory")
#define ALIGNER_TILE_READ_CONFIG(cfg) __asm__ volatile("sttilecfg %0" : "=m"(cfg)::"memory")
#define ALIGNER_TILE_WRITE_CONFIG(cfg) __asm__ volatile("ldtilecfg %0" ::"m"(cfg) : "memory")
#include <immintrin.h>
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

/// True where the panel width of Arch fits an AMX tile's 4 .. 16 float columns: the AMX engines exist only there.
template <class Arch>
inline constexpr bool amx_tiles_fit = panel_width<Arch> >= 4 && panel_width<Arch> <= 16;

/// True when bf16 panels are scored on AMX-BF16 now for this architecture.
template <class Arch = default_arch>
bool bf16_on_amx() {
  return amx_tiles_fit<Arch> && amx_bf16_usable();
}

/// Loads `want` unless it is the calling thread's current tile configuration (sttilecfg reads it back; a released
/// state reads as zeros, so a fresh or released thread is configured). Requires amx_bf16_usable().
inline void amx_configure(const amx_tile_config& want) noexcept {
#if ALIGNER_HAVE_AMX
  amx_tile_config now;
  ALIGNER_TILE_READ_CONFIG(now);
  if (std::memcmp(&now, &want, sizeof want) != 0) ALIGNER_TILE_WRITE_CONFIG(want);
#else
  (void)want;
#endif
}

/// Which AMX dot product a tile engine issues: tdpbf16ps over bf16 pairs (float results) or tdpbssd over int8
/// quads (int32 results, left in the tile's bits for amx_i8_engine to convert).
enum class amx_op { bf16, int8 };

/// Panels an AMX engine's tile covers: 8 for AMX-BF16 (two tile calls of 4, so that a Top-k fold takes 8 batches at
/// once: one sort network, and a document of 128 tokens folds each row once instead of twice), 4 for the int8 inner
/// engine (amx_i8_engine calls its 4-panel tiles itself).
template <amx_op Op>
inline constexpr std::size_t amx_engine_panels = Op == amx_op::bf16 ? 8 : 4;

/// The tile engine interface of aligned_rows.hpp on AMX tiles over panels whose rows are 32-bit words of W tokens:
/// bf16 pairs (a bf16 panel as stored) or int8 quads (an int8 panel re-laid by relayout_i8_quads). Preconditions
/// (unchecked): the matching amx_*_usable(); query_words holds the query's rows in the same words
/// (query_to_bf16_pairs or query_to_i8_quads, zero rows up to 16); the rest as tile_engine. Works for any panel
/// width W in 4 .. 16 (AMX tiles have up to 16 columns).
template <class Arch, amx_op Op = amx_op::bf16>
struct amx_engine : tile_engine_base<amx_engine<Arch, Op>, Arch, amx_engine_panels<Op>> {
  using base = tile_engine_base<amx_engine<Arch, Op>, Arch, amx_engine_panels<Op>>;
  using typename base::batch;
  using base::width;
  using base::block_panels;
  static_assert(width >= 4 && width <= 16, "AMX tiles hold 4 to 16 float columns");
  static constexpr std::size_t block_rows = 16;
  static constexpr std::size_t span_bytes = std::size_t(256) << 10;

  const void* panels;
  std::size_t dim, doc_rows, panel_total;
  matrix_view<float> query;
  const std::uint32_t* query_words;
  prefetch_hint next{};
  std::size_t pairs, full_blocks, tail;  ///< words a token row has (bf16 pairs or int8 quads), in tiles of 16 and a tail

  /// 32-bit words of one token (or query row) in this engine's operands.
  static constexpr std::size_t words_of(std::size_t dim) noexcept { return Op == amx_op::bf16 ? (dim + 1) / 2 : (dim + 3) / 4; }

  amx_engine(const void* panels_, std::size_t doc_rows_, matrix_view<float> query_, const std::uint32_t* query_words_,
             prefetch_hint next_ = {}) noexcept
      : panels(panels_), dim(query_.cols), doc_rows(doc_rows_), panel_total(panel_count<Arch>(doc_rows_)), query(query_),
        query_words(query_words_), next(next_), pairs(words_of(query_.cols)), full_blocks(pairs / 16), tail(pairs % 16) {}

  /// True when two A tiles can share each B load (no tail): tile_paired (the int8 engine's two query terms).
  bool paired() const noexcept { return tail == 0; }

  /// True when sweep visits 32-row tiles (two 16-row blocks of the query against each B load): AMX-BF16 where the
  /// words fill whole k-blocks and the query has more than 16 rows. Halves the B tile loads (the panels' reads from
  /// L2) of the 16-row tiles; the last block of 16 rows, if any, stays a 16-row tile.
  bool rows_paired() const noexcept { return Op == amx_op::bf16 && paired() && query.rows > 16; }

  std::size_t panel_bytes() const noexcept { return pairs * width * 4; }

  /// The configuration of this engine's shapes.
  amx_tile_config config() const noexcept {
    amx_tile_config c;
    const auto cols = std::uint16_t(width * 4);
    for (int t = 0; t != 4; ++t) c.rows[t] = 16, c.colsb[t] = cols;  // accumulators: 16 rows x W floats
    c.rows[4] = 16, c.colsb[4] = 64;                                    // A: 16 rows x 16 words
    if (tail == 0) {
      c.rows[5] = 16, c.colsb[5] = 64;    // second A
      c.rows[6] = 16, c.colsb[6] = cols;  // B: 16 words x W tokens
      c.rows[7] = 16, c.colsb[7] = cols;  // second B
    } else {
      c.rows[5] = 16, c.colsb[5] = cols;                                  // B: 16 words x W tokens
      c.rows[6] = std::uint8_t(tail), c.colsb[6] = cols;                  // tail B: t words x W tokens (and B)
      c.rows[7] = 16, c.colsb[7] = std::uint16_t(tail * 4);               // tail A: 16 rows x t words
    }
    return c;
  }

  /// acc[r][v] = S tile of rows i0 + r (r < 16; rows past the query are zero) and panel p0 + v (for int8: the
  /// int32 sums, in the batches' bits).
  template <std::size_t R, std::size_t V>
  void tile(std::size_t i0, std::size_t p0, batch (&acc)[R][V]) const noexcept {
    static_assert(R == 16 || R == 32, "AMX tiles are 16 query rows, or two such blocks sharing each B load");
    constexpr std::size_t row_stride = V * sizeof(batch);
    tile_part<R, (V < 4 ? V : 4)>(i0, p0, reinterpret_cast<char*>(&acc[0][0]), row_stride);
    if constexpr (V > 4) tile_part<R, V - 4>(i0, p0 + 4, reinterpret_cast<char*>(&acc[0][4]), row_stride);
  }

  /// Where paired(): the tiles of query-form rows a0 .. a0 + 15 into out0 and a1 .. a1 + 15 into out1 (row stride
  /// c_stride bytes, panel v at v batches), panels p0 .. p0 + V - 1 (V <= 4), every B load shared by both.
  template <std::size_t V>
  void tile_paired(std::size_t a0, std::size_t a1, std::size_t p0, char* out0, char* out1, std::size_t c_stride) const noexcept {
    static_assert(V <= 4, "a tile call computes up to 4 panels");
    const char* q0 = reinterpret_cast<const char*>(query_words + a0 * pairs);
    const char* q1 = reinterpret_cast<const char*>(query_words + a1 * pairs);
    const char* b = static_cast<const char*>(panels) + p0 * panel_bytes();
    const std::size_t pb = panel_bytes();
    paired_step<V >= 2>(q0, q1, b, out0, out1, c_stride);
    if constexpr (V > 2) paired_step<V == 4>(q0, q1, b + 2 * pb, out0 + 2 * sizeof(batch), out1 + 2 * sizeof(batch), c_stride);
  }

  /// Visits every (16-row block, group of up to block_panels panels: 8 bf16, 4 int8) tile once, a 256 KB span of panels
  /// at a time (the span stays in L2 while the row blocks sweep it); prefetches the next span or document into L2, each
  /// tile's slice in equal shares after its B tile loads (issued back to back before each tile, the slices stalled the
  /// core on its full miss queue: on a Xeon with AMX the exact scans ran 1.24x (i8) and 1.27x (bf16) faster spread).
  template <class Visit>
  void sweep(Visit&& visit) const {
    amx_configure(config());
    const std::size_t n = query.rows;
    // 32-row tiles over rows [0, pairs_end) where rows_paired(), then 16-row tiles.
    const std::size_t pairs_end = rows_paired() ? (bf16_query_rows(n) / 32) * 32 : 0;
    const std::size_t row_blocks = pairs_end / 32 + (bf16_query_rows(n) - pairs_end) / 16;
    for_each_span(panels, panel_total, panel_bytes(), span_bytes, block_panels, row_blocks, next,
                  [&](std::size_t s0, std::size_t s1, span_prefetch& plan) {
                    const std::size_t loads = block_panels * (full_blocks + (tail ? 1 : 0));  // B loads of a whole tile
                    auto row_block = [&]<std::size_t R>(std::size_t i0) {
                      for (std::size_t p0 = s0; p0 < s1; p0 += block_panels) {
                        const auto [line, stop] = plan.slice();
                        pending = {line, stop};  // into L2, a share after each B load of the tile
                        per_load = (std::size_t(stop - line) / 64 + loads - 1) / loads;
                        visit.template operator()<R>(i0, p0, std::min(block_panels, s1 - p0));
                        pending.rest();  // what a tile of fewer panels (or none) left
                      }
                    };
                    std::size_t i0 = 0;
                    if constexpr (Op == amx_op::bf16)
                      for (; i0 < pairs_end; i0 += 32) row_block.template operator()<32>(i0);
                    for (; i0 < n; i0 += block_rows) row_block.template operator()<block_rows>(i0);
                  });
  }

 private:
  /// Up to 4 panels of a tile (one tile call) into out (row stride c_stride bytes).
  template <std::size_t R, std::size_t V>
  void tile_part(std::size_t i0, std::size_t p0, char* out, std::size_t c_stride) const noexcept {
    if constexpr (R == 32)  // rows_paired(): two A tiles against each B load
      tile_paired<V>(i0, i0 + 16, p0, out, out + 16 * c_stride, c_stride);
    else if (tail == 0)
      tile_amx<V, false>(i0, p0, out, c_stride);
    else
      tile_amx<V, true>(i0, p0, out, c_stride);
  }

  mutable prefetch_slice<true> pending{};  ///< the lines the current tile prefetches (set by sweep)
  mutable std::size_t per_load = 0;        ///< of them, issued after each B tile load

  /// A tile's share of its prefetch slice after a B load. The tile functions work on a copy of `pending` and
  /// `per_load` in locals (written back at the end): as members they were loaded and stored around every tile
  /// instruction, whose memory clobbers forbid keeping them in registers.
  ALIGNER_ALWAYS_INLINE static void prefetch_share(prefetch_slice<true>& slice, std::size_t count) noexcept {
    for (std::size_t i = 0; i != count; ++i) slice.tick();
  }

#if ALIGNER_HAVE_AMX
// The engine's dot product (Op): tdpbf16ps or tdpbssd.
#define ALIGNER_TILE_DP(c, a, b)             \
  do {                                       \
    if constexpr (Op == amx_op::bf16)        \
      ALIGNER_TILE_DPBF16(c, a, b);          \
    else                                     \
      ALIGNER_TILE_DPBSSD(c, a, b);          \
  } while (0)
#endif
  template <std::size_t V, bool Tail>
  ALIGNER_NOINLINE void tile_amx(std::size_t i0, std::size_t p0, char* out, std::size_t c_stride) const noexcept {
#if ALIGNER_HAVE_AMX
    const std::size_t a_stride = pairs * 4, b_stride = width * 4, b_block = 16 * width * 4;
    const char* a = reinterpret_cast<const char*>(query_words + i0 * pairs);
    const char* b0 = static_cast<const char*>(panels) + p0 * panel_bytes();
    const std::size_t pb = panel_bytes();
    prefetch_slice<true> slice = pending;
    const std::size_t share = per_load;
    ALIGNER_TILE_ZERO(0);
    if constexpr (V > 1) ALIGNER_TILE_ZERO(1);
    if constexpr (V > 2) ALIGNER_TILE_ZERO(2);
    if constexpr (V > 3) ALIGNER_TILE_ZERO(3);
    for (std::size_t kb = 0, blocks = full_blocks; kb != blocks; ++kb) {
      ALIGNER_TILE_LOAD(4, a + kb * 64, a_stride);
      const char* b = b0 + kb * b_block;
      if constexpr (Tail) {
        ALIGNER_TILE_LOAD(5, b, b_stride);
        ALIGNER_TILE_DP(0, 4, 5);
        prefetch_share(slice, share);
      } else {
        ALIGNER_TILE_LOAD(6, b, b_stride);
        ALIGNER_TILE_DP(0, 4, 6);
        prefetch_share(slice, share);
      }
      if constexpr (Tail) {
        if constexpr (V > 1) { ALIGNER_TILE_LOAD(5, b + pb, b_stride); ALIGNER_TILE_DP(1, 4, 5); prefetch_share(slice, share); }
        if constexpr (V > 2) { ALIGNER_TILE_LOAD(5, b + 2 * pb, b_stride); ALIGNER_TILE_DP(2, 4, 5); prefetch_share(slice, share); }
        if constexpr (V > 3) { ALIGNER_TILE_LOAD(5, b + 3 * pb, b_stride); ALIGNER_TILE_DP(3, 4, 5); prefetch_share(slice, share); }
      } else {  // no tail: B in tmm6 / tmm7 (tmm5 holds the second A of the paired tiles)
        if constexpr (V > 1) { ALIGNER_TILE_LOAD(7, b + pb, b_stride); ALIGNER_TILE_DP(1, 4, 7); prefetch_share(slice, share); }
        if constexpr (V > 2) { ALIGNER_TILE_LOAD(6, b + 2 * pb, b_stride); ALIGNER_TILE_DP(2, 4, 6); prefetch_share(slice, share); }
        if constexpr (V > 3) { ALIGNER_TILE_LOAD(7, b + 3 * pb, b_stride); ALIGNER_TILE_DP(3, 4, 7); prefetch_share(slice, share); }
      }
    }
    if constexpr (Tail) {
      ALIGNER_TILE_LOAD(7, a + full_blocks * 64, a_stride);
      const char* b = b0 + full_blocks * b_block;
      ALIGNER_TILE_LOAD(6, b, b_stride);
      ALIGNER_TILE_DP(0, 7, 6);
      prefetch_share(slice, share);
      if constexpr (V > 1) { ALIGNER_TILE_LOAD(6, b + pb, b_stride); ALIGNER_TILE_DP(1, 7, 6); prefetch_share(slice, share); }
      if constexpr (V > 2) { ALIGNER_TILE_LOAD(6, b + 2 * pb, b_stride); ALIGNER_TILE_DP(2, 7, 6); prefetch_share(slice, share); }
      if constexpr (V > 3) { ALIGNER_TILE_LOAD(6, b + 3 * pb, b_stride); ALIGNER_TILE_DP(3, 7, 6); prefetch_share(slice, share); }
    }
    pending = slice;
    char* c = out;
    ALIGNER_TILE_STORE(0, c, c_stride);
    if constexpr (V > 1) ALIGNER_TILE_STORE(1, c + sizeof(batch), c_stride);
    if constexpr (V > 2) ALIGNER_TILE_STORE(2, c + 2 * sizeof(batch), c_stride);
    if constexpr (V > 3) ALIGNER_TILE_STORE(3, c + 3 * sizeof(batch), c_stride);
#else
    (void)i0, (void)p0, (void)out, (void)c_stride;
#endif
  }

  /// One or two panels (Two) at b, b + panel_bytes() against A rows at q0 (into tmm0 / tmm1, stored at out0) and q1
  /// (tmm2 / tmm3, stored at out1), every k-block: A0 -> tmm4, B0 -> tmm6, B1 -> tmm7, A1 -> tmm5. No tail.
  template <bool Two>
  ALIGNER_NOINLINE void paired_step(const char* q0, const char* q1, const char* b, char* out0, char* out1, std::size_t c_stride) const noexcept {
#if ALIGNER_HAVE_AMX
    const std::size_t a_stride = pairs * 4, b_stride = width * 4, b_block = 16 * width * 4, pb = panel_bytes();
    prefetch_slice<true> slice = pending;
    const std::size_t share = per_load;
    ALIGNER_TILE_ZERO(0);
    ALIGNER_TILE_ZERO(2);
    if constexpr (Two) {
      ALIGNER_TILE_ZERO(1);
      ALIGNER_TILE_ZERO(3);
    }
    for (std::size_t kb = 0, blocks = full_blocks; kb != blocks; ++kb) {
      const char* bk = b + kb * b_block;
      ALIGNER_TILE_LOAD(4, q0 + kb * 64, a_stride);
      ALIGNER_TILE_LOAD(6, bk, b_stride);
      ALIGNER_TILE_DP(0, 4, 6);
      prefetch_share(slice, share);
      if constexpr (Two) {
        ALIGNER_TILE_LOAD(7, bk + pb, b_stride);
        ALIGNER_TILE_DP(1, 4, 7);
        prefetch_share(slice, share);
      }
      ALIGNER_TILE_LOAD(5, q1 + kb * 64, a_stride);
      ALIGNER_TILE_DP(2, 5, 6);
      if constexpr (Two) ALIGNER_TILE_DP(3, 5, 7);
    }
    pending = slice;
    ALIGNER_TILE_STORE(0, out0, c_stride);
    ALIGNER_TILE_STORE(2, out1, c_stride);
    if constexpr (Two) {
      ALIGNER_TILE_STORE(1, out0 + sizeof(batch), c_stride);
      ALIGNER_TILE_STORE(3, out1 + sizeof(batch), c_stride);
    }
#else
    (void)q0, (void)q1, (void)b, (void)out0, (void)out1, (void)c_stride;
#endif
  }
#undef ALIGNER_TILE_DP
};

/// The AMX-BF16 engine over bf16 panels read in place.
template <class Arch>
using amx_bf16_engine = amx_engine<Arch, amx_op::bf16>;

// ------------------------------------------------------------------------------------------ AMX-INT8

/// The factor F of a query's second int8 term at dimension `dim`: 254, or less where the combined sum
/// F * Σ a d + Σ b d could leave int32 (127 * dim * 127.5 * F < 2^31, i.e. dim > 522).
inline constexpr std::int32_t i8_query_factor(std::size_t dim) noexcept {
  return std::int32_t(std::clamp<std::size_t>(std::size_t(132623) / std::max<std::size_t>(dim, 1), 1, 254));
}

/// Words of a query's int8 form (query_to_i8_quads): ceil(cols / 4) quads a row for 2 bf16_query_rows(rows) rows
/// (both terms), then one float scale a row (in the words' bits).
inline constexpr std::size_t i8_query_words(std::size_t rows, std::size_t cols) noexcept {
  return bf16_query_rows(rows) * (2 * ((cols + 3) / 4) + 1);
}

/// The query as AMX-INT8 reads it, in two int8 terms per component so that its precision stays close to float:
/// with s = max |q_i| / 127 (a token's int8 scale; 0 for an all-zero row), x = q / s, a = round(x) clamped to
/// +-127 (the int8 token rule) and b = round((x - a) F) (|b| <= F / 2 <= 127; F = i8_query_factor(cols)),
///     q ≈ (a F + b) * (s / F),   error at most s / (2 F) per component (1/64516 of the row's largest at F = 254).
/// Rows 0 .. R-1 (R = bf16_query_rows(rows)) hold the a terms, rows R .. 2R-1 the b terms: components 4 c4 .. 4 c4 + 3
/// in word c4 of a row (lowest byte first, zeros past cols; rows past the query are zero); then R scales s / F
/// (as float, computed in double). Rounding: to nearest even. Writes i8_query_words(rows, cols) words.
inline void query_to_i8_quads(matrix_view<float> query, std::uint32_t* out) noexcept {
  const std::size_t quads = (query.cols + 3) / 4, rows = bf16_query_rows(query.rows);
  const double factor = double(i8_query_factor(query.cols));
  std::fill(out, out + i8_query_words(query.rows, query.cols), 0u);
  auto put = [&](std::size_t row, std::size_t c, double v) {
    const auto b = std::uint32_t(std::uint8_t(std::int8_t(std::clamp(v, -127.0, 127.0))));
    out[row * quads + c / 4] |= b << (8 * (c % 4));
  };
  for (std::size_t i = 0; i != query.rows; ++i) {
    const float* q = query.row(i);
    const float scale = i8_scale(q, query.cols);
    const float combined = float(double(scale) / factor);
    std::memcpy(out + 2 * rows * quads + i, &combined, 4);
    if (!(scale > 0.f)) continue;
    for (std::size_t c = 0; c != query.cols; ++c) {
      const double x = double(q[c]) / double(scale);
      const double a = std::clamp(std::nearbyint(x), -127.0, 127.0);
      put(i, c, a);
      put(rows + i, c, std::nearbyint((x - a) * factor));
    }
  }
}

/// `given` (a query's int8 form prepared by the caller), or the query converted into `buffer` when it is null.
inline const std::uint32_t* i8_quads_or_convert(matrix_view<float> query, const std::uint32_t* given,
                                                std::vector<std::uint32_t>& buffer) {
  return given_or_converted(given, buffer, i8_query_words(query.rows, query.cols), [&](std::uint32_t* out) { query_to_i8_quads(query, out); });
}

/// The combined scale s / F of row i of a query's int8 form.
inline float i8_query_scale(const std::uint32_t* query_i8, std::size_t rows, std::size_t cols, std::size_t i) noexcept {
  float s;
  std::memcpy(&s, query_i8 + 2 * bf16_query_rows(rows) * ((cols + 3) / 4) + i, 4);
  return s;
}

namespace detail {

/// The component bytes of an int8 panel (component c of lane l at bytes[c * width + l], dim rows) with G components
/// of a lane per 32-bit word, one value at a time: word g * width + l holds components G g .. G g + G - 1 of lane l,
/// each sign-extended to 32 / G bits, the lowest first, 0 past dim. G = 4: relayout_i8_quads' specification (and
/// fallback); G = 2: relayout_i8_pairs' (int8_vnni.hpp).
template <std::size_t G>
void relayout_i8_scalar(const unsigned char* bytes, std::size_t dim, std::size_t width, std::uint32_t* out) noexcept {
  constexpr std::size_t bits = 32 / G;
  constexpr std::uint32_t mask = bits == 32 ? ~0u : (1u << bits) - 1;
  for (std::size_t g = 0; g != (dim + G - 1) / G; ++g)
    for (std::size_t l = 0; l != width; ++l) {
      std::uint32_t word = 0;
      for (std::size_t j = 0; j != G; ++j)
        if (G * g + j < dim) word |= (std::uint32_t(std::int32_t(std::int8_t(bytes[(G * g + j) * width + l]))) & mask) << (bits * j);
      out[g * width + l] = word;
    }
}

/// relayout_i8_quads one byte at a time (the specification of the VBMI version, and the fallback).
inline void relayout_i8_quads_scalar(const unsigned char* bytes, std::size_t dim, std::size_t width, std::uint32_t* out) noexcept {
  relayout_i8_scalar<4>(bytes, dim, width, out);
}

#if ALIGNER_HAVE_AMX
/// Byte b < 4 W of a re-laid block takes byte (b % 4) * W + b / 4 of four component rows of W tokens (W = 4, 8, 16
/// in rows 0, 1, 2).
inline constexpr auto quad_index = [] {
  std::array<std::array<unsigned char, 64>, 3> idx{};
  for (std::size_t r = 0; r != 3; ++r)
    for (std::size_t w = std::size_t(4) << r, b = 0; b != 4 * w; ++b) idx[r][b] = static_cast<unsigned char>((b % 4) * w + b / 4);
  return idx;
}();

/// relayout_i8_quads with one vpermb per four component rows (4 W bytes: a masked load and store below W = 16, and
/// for the last, partial rows). Compiled for AVX512-VBMI whatever the build's flags; callers check the CPU has it.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) inline void relayout_i8_quads_vbmi(
    const unsigned char* bytes, std::size_t dim, std::size_t width, std::uint32_t* out) noexcept {
  if (width != 4 && width != 8 && width != 16) return relayout_i8_quads_scalar(bytes, dim, width, out);
  const __m512i idx = _mm512_loadu_si512(quad_index[std::size_t(std::countr_zero(width)) - 2].data());
  auto mask_of = [](std::size_t n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; };
  const __mmask64 block = mask_of(4 * width);
  for (std::size_t c = 0; c < dim; c += 4) {
    const __m512i in = _mm512_maskz_loadu_epi8(mask_of(std::min<std::size_t>(4, dim - c) * width), bytes + c * width);
    _mm512_mask_storeu_epi8(out + c / 4 * width, block, _mm512_permutexvar_epi8(idx, in));
  }
}
#endif

}  // namespace detail

/// True where relayout_i8_quads runs on AVX512-VBMI (CPU and OS), else it runs one byte at a time.
inline bool i8_relayout_vbmi() noexcept { return ALIGNER_HAVE_AMX && avx512_vbmi_usable(); }

/// The component bytes of an int8 panel (`bytes`: component c of lane l at c * width + l, dim rows) as AMX-INT8's
/// B operand: word (c4, l) at c4 * width + l holds components 4 c4 .. 4 c4 + 3 of lane l, lowest byte first, zeros
/// past dim. Writes ceil(dim / 4) * width words; reads dim * width bytes.
inline void relayout_i8_quads(const unsigned char* bytes, std::size_t dim, std::size_t width, std::uint32_t* out) noexcept {
#if ALIGNER_HAVE_AMX
  if (i8_relayout_vbmi()) return detail::relayout_i8_quads_vbmi(bytes, dim, width, out);
#endif
  detail::relayout_i8_quads_scalar(bytes, dim, width, out);
}

/// The tile engine interface over int8 panels on AMX-INT8: each group of panels (16 KB once re-laid) is re-laid into
/// `scratch` (relayout_i8_quads), swept by tdpbssd tiles against the query's int8 form, and each tile is turned into
/// floats with the tokens' and the query rows' scales (file comment). Preconditions (unchecked): amx_int8_usable();
/// query_i8 holds query_to_i8_quads of `query`; scratch holds scratch_words(dim) words, 64-byte aligned; the rest as
/// tile_engine.
template <class Arch>
struct amx_i8_engine : tile_engine_base<amx_i8_engine<Arch>, Arch, 4> {
  using base = tile_engine_base<amx_i8_engine<Arch>, Arch, 4>;
  using typename base::batch;
  using base::width;
  using base::block_panels;
  using inner_t = amx_engine<Arch, amx_op::int8>;
  using ints = xsimd::batch<std::int32_t, Arch>;
  using traits = storage_traits<storage::i8>;
  static constexpr std::size_t block_rows = 16;

  const unsigned char* panels;
  std::size_t dim, doc_rows, panel_total;
  matrix_view<float> query;
  const std::uint32_t* query_i8;
  std::uint32_t* scratch;
  std::size_t group_panels;
  prefetch_hint next;
  mutable std::size_t group_first = 0;  ///< first panel of the re-laid group
  mutable inner_t inner;

  /// Words of one re-laid panel.
  static std::size_t relaid_words(std::size_t dim) noexcept { return (dim + 3) / 4 * width; }
  /// Panels re-laid at once: whole tiles' worth of panels filling 16 KB (at least one tile's).
  static std::size_t group_of(std::size_t dim) noexcept { return panels_per_group(relaid_words(dim), block_panels); }
  static std::size_t scratch_words(std::size_t dim) noexcept { return group_of(dim) * relaid_words(dim); }

  amx_i8_engine(const void* panels_, std::size_t doc_rows_, matrix_view<float> query_, const std::uint32_t* query_i8_,
                std::uint32_t* scratch_, prefetch_hint next_ = {}) noexcept
      : panels(static_cast<const unsigned char*>(panels_)), dim(query_.cols), doc_rows(doc_rows_),
        panel_total(panel_count<Arch>(doc_rows_)), query(query_), query_i8(query_i8_), scratch(scratch_),
        group_panels(group_of(query_.cols)), next(next_), inner(scratch_, 0, query_, query_i8_) {}

  std::size_t panel_bytes() const noexcept { return traits::panel_words(dim, width) * 4; }

  /// acc[r][v] = S tile of rows i0 + r (r < 16; rows past the query are left as they come) and panel p0 + v: the
  /// tiles of both query terms, combined exactly in int32 as F Σ a d + Σ b d, then scaled (file comment).
  template <std::size_t R, std::size_t V>
  void tile(std::size_t i0, std::size_t p0, batch (&acc)[R][V]) const noexcept {
    static_assert(R == 16, "the int8 engine's tiles are 16 query rows");
    batch low[R][V];
    if (inner.paired()) {  // both terms against each B load
      inner.template tile_paired<V>(i0, i0 + bf16_query_rows(query.rows), p0 - group_first, reinterpret_cast<char*>(&acc[0][0]),
                                    reinterpret_cast<char*>(&low[0][0]), V * sizeof(batch));
    } else {
      inner.template tile<R, V>(i0, p0 - group_first, acc);
      inner.template tile<R, V>(i0 + bf16_query_rows(query.rows), p0 - group_first, low);
    }
    const std::size_t rows = std::min(R, query.rows - i0), pb = panel_bytes();
    batch scale[V];
    for (std::size_t v = 0; v != V; ++v) scale[v] = traits::template load_scales<Arch>(panels + (p0 + v) * pb);
    const ints factor(i8_query_factor(dim));
    for (std::size_t r = 0; r != rows; ++r) {
      const batch qs(i8_query_scale(query_i8, query.rows, dim, i0 + r));
      for (std::size_t v = 0; v != V; ++v) {
        const ints sum = xsimd::bitwise_cast<ints>(acc[r][v]) * factor + xsimd::bitwise_cast<ints>(low[r][v]);
        acc[r][v] = xsimd::batch_cast<float>(sum) * scale[v] * qs;
      }
    }
  }

  /// Re-lays each group of panels, then visits its tiles (panel indices are the document's); the next group, or the
  /// caller's next document, is prefetched meanwhile.
  template <class Visit>
  void sweep(Visit&& visit) const {
    const std::size_t pb = panel_bytes(), words = relaid_words(dim);
    for (std::size_t g0 = 0; g0 < panel_total; g0 += group_panels) {
      const std::size_t g1 = std::min(panel_total, g0 + group_panels);
      for (std::size_t p = g0; p != g1; ++p)
        relayout_i8_quads(panels + p * pb + traits::header_words(width) * 4, dim, width, scratch + (p - g0) * words);
      group_first = g0;
      const std::size_t rows_here = std::min(doc_rows, g1 * width) - g0 * width;
      inner = inner_t(scratch, rows_here, query, query_i8, g1 < panel_total ? prefetch_hint{panels + g1 * pb, (g1 - g0) * pb} : next);
      inner.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) { visit.template operator()<R>(i0, g0 + p0, here); });
    }
  }
};

/// The query in the forms the bf16 and int8 matrix paths read, prepared once per query (prepared_query) or null
/// to be converted per call where a path needs it: bf16 pairs (query_to_bf16_pairs), the int8 form
/// (query_to_i8_quads) and its 16-bit form (query_to_i16_pairs, int8_vnni.hpp).
struct query_forms {
  const std::uint32_t* bf16 = nullptr;
  const std::uint32_t* i8 = nullptr;
  const std::uint32_t* i16 = nullptr;  ///< the 16-bit form of the VNNI int8 path (int8_vnni.hpp, query_to_i16_pairs)
  const std::uint32_t* wide = nullptr;       ///< expanded for the run-time AVX-512 / AVX2 tiles of 4- and 8-wide panels (wide.hpp, query_to_wide)
  const std::uint32_t* wide_bf16 = nullptr;  ///< the same for bf16 panels (query_to_wide_bf16)
  query_forms(const std::uint32_t* bf16_pairs = nullptr, const std::uint32_t* i8_quads = nullptr, const std::uint32_t* i16_pairs = nullptr,
              const std::uint32_t* wide_rows = nullptr, const std::uint32_t* wide_pairs = nullptr) noexcept
      : bf16(bf16_pairs), i8(i8_quads), i16(i16_pairs), wide(wide_rows), wide_bf16(wide_pairs) {}
  /// The expanded form for panels of storage st (wide.hpp): for bf16 the pairs form, or the float one where bf16 runs on
  /// the AVX2 tiles (wide_avx2_runs), which keep the query in float.
  template <class Arch = default_arch>
  const std::uint32_t* wide_for(storage st) const noexcept {
    return st == storage::bf16 && !wide_avx2_runs<Arch>(storage::bf16) ? wide_bf16 : wide;
  }
};

/// True when int8 documents are scored on AMX-INT8 now for this architecture.
template <class Arch = default_arch>
bool i8_on_amx() {
  return amx_tiles_fit<Arch> && amx_int8_usable();
}

/// True when bf16 documents are scored now with the query rounded to bfloat16 too (AVX512-BF16's vdpbf16ps in
/// an AVX-512 build or at run time over 4- and 8-wide panels, or AMX-BF16 at run time); false when the vector path widens
/// the documents and keeps the query in float.
template <class Arch = default_arch>
bool bf16_query_rounded() {
  return bf16_rounds_query<Arch> || bf16_on_amx<Arch>() || wide_runs<Arch>(storage::bf16);
}

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
