/** @file tile.hpp
 *  @brief The tile sweep: S = Q D^T computed in register tiles over packed panels, never stored whole.
 *
 *  `tile_engine<Arch, St>` computes tiles of R query rows x V panels (W document tokens each) of S by broadcast-FMA
 *  register blocking over panels of storage St (layout.hpp, storage.hpp), and `sweep` visits every tile of a
 *  document once in an order that keeps the data close: the document is cut into spans of at most 256 KB
 *  (L2-resident); within a span every block of query rows sweeps all panel groups, so the span streams from L2 while
 *  the query block stays in L1 (on Intel, where a panel group fits L1, every row block visits one panel group
 *  before the next instead, so each group is read from L2 once: tile_panel_outer). While a span is scored, the bytes scored next (the next span, or the caller's next
 *  document) are prefetched in equal slices by the tiles, one line every other component step, so DRAM latency
 *  overlaps with compute. (Prefetches issued back to back before each tile filled the core's miss buffers and
 *  stalled it; sweeping all query blocks over one panel group starved the prefetches of L1 room.)
 *  What a caller does with each tile (fold it into a running top-k, compare it with thresholds, store it) is the
 *  visitor's business: lane_topk.hpp, aligned_rows.hpp and token_scan.hpp build on this. Every sweep (this one, the
 *  AMX and the residual engines') visits a row block's tile of panel 0 before its other tiles: the top-k folds
 *  start their states there. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__AVX512BF16__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "../core/config.hpp"
#include "../core/cpu.hpp"
#include "../core/types.hpp"
#include "layout.hpp"
#include "simd_compat.hpp"
#include "storage.hpp"
#include "wide.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// True when bf16 panels are scored with AVX512-BF16's vdpbf16ps for this architecture: the query is then
/// rounded to bfloat16 as well (otherwise the query stays float and only the documents are bf16).
template <class Arch = default_arch>
inline constexpr bool bf16_rounds_query =
#if defined(__AVX512BF16__)
    std::is_same_v<Arch, xsimd::avx512bw> || std::is_same_v<Arch, xsimd::avx512dq> ||
    std::is_same_v<Arch, xsimd::avx512cd> || std::is_same_v<Arch, xsimd::avx512f>;
#else
    false;
#endif

/// Query rows of a bf16 query buffer: the rows rounded up to 16 (an AMX tile's rows; the extra rows are zero).
inline constexpr std::size_t bf16_query_rows(std::size_t rows) noexcept { return (rows + 15) / 16 * 16; }

/// 32-bit words of a query's bf16 form (query_to_bf16_pairs).
inline constexpr std::size_t bf16_query_words(std::size_t rows, std::size_t cols) noexcept {
  return bf16_query_rows(rows) * ((cols + 1) / 2);
}

/// Query rows as the bf16 instructions (vdpbf16ps, AMX tdpbf16ps) read them: ceil(cols / 2) words a row,
/// components (2c, 2c + 1) in one word (low half first), the last high half 0 for an odd cols; then zero rows up
/// to bf16_query_rows(rows). Writes bf16_query_words(rows, cols) words.
inline void query_to_bf16_pairs(matrix_view<float> query, std::uint32_t* out) noexcept {
  const std::size_t pairs = (query.cols + 1) / 2;
  std::fill(out + query.rows * pairs, out + bf16_query_words(query.rows, query.cols), 0u);
  for (std::size_t i = 0; i != query.rows; ++i)
    for (std::size_t c2 = 0; c2 != pairs; ++c2) {
      const std::uint32_t lo = to_bf16(query.row(i)[2 * c2]);
      const std::uint32_t hi = 2 * c2 + 1 < query.cols ? to_bf16(query.row(i)[2 * c2 + 1]) : 0u;
      out[i * pairs + c2] = lo | (hi << 16);
    }
}

/// `given` (a query's bf16 pairs prepared by the caller), or the query converted into `buffer` when it is null.
inline const std::uint32_t* bf16_pairs_or_convert(matrix_view<float> query, const std::uint32_t* given,
                                                  std::vector<std::uint32_t>& buffer) {
  return given_or_converted(given, buffer, bf16_query_words(query.rows, query.cols), [&](std::uint32_t* out) { query_to_bf16_pairs(query, out); });
}

/// What a caller scores after the current document: its packed bytes are prefetched while the current one is
/// scored (optional; an empty hint prefetches nothing past the document).
struct prefetch_hint {
  const void* data = nullptr;
  std::size_t bytes = 0;
};

/// Prefetches the line at p for reading (Locality 3: into L1, 2: into L2).
template <int Locality>
ALIGNER_ALWAYS_INLINE void prefetch_read(const char* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 0, Locality);
#else
  (void)p;
#endif
}

/// Which bytes the tiles of one span prefetch, in equal slices: the next span of the document, or (after its last
/// span) the first span's worth of the caller's next document.
struct span_prefetch {
  const char* at = nullptr;
  std::size_t lines = 0, per_call = 0, issued = 0;

  span_prefetch(const void* panels, std::size_t panel_total, std::size_t panel_bytes, std::size_t s1, std::size_t span,
                prefetch_hint next, std::size_t calls) noexcept {
    at = s1 < panel_total ? static_cast<const char*>(panels) + s1 * panel_bytes : static_cast<const char*>(next.data);
    const std::size_t bytes = s1 < panel_total ? std::min(panel_total - s1, span) * panel_bytes
                                               : (next.data ? std::min(next.bytes, span * panel_bytes) : 0);
    lines = (bytes + 63) / 64;
    per_call = (lines + calls - 1) / calls;
  }
  /// The next tile's slice, [first, last).
  std::pair<const char*, const char*> slice() noexcept {
    const std::size_t end = std::min(lines, issued + per_call);
    const std::pair<const char*, const char*> out{at + issued * 64, at + end * 64};
    issued = end;
    return out;
  }
};

/// Cuts panel_total panels of panel_bytes each into L2 spans of about `span_bytes` (whole groups of block_panels)
/// and calls f(s0, s1, plan) for each, with the prefetch plan of the span's row_blocks * groups tiles.
template <class F>
void for_each_span(const void* panels, std::size_t panel_total, std::size_t panel_bytes, std::size_t span_bytes,
                   std::size_t block_panels, std::size_t row_blocks, prefetch_hint next, F&& f) {
  const std::size_t span = std::max(block_panels, span_bytes / panel_bytes / block_panels * block_panels);
  for (std::size_t s0 = 0; s0 < panel_total; s0 += span) {
    const std::size_t s1 = std::min(panel_total, s0 + span);
    span_prefetch plan(panels, panel_total, panel_bytes, s1, span, next, row_blocks * ((s1 - s0 + block_panels - 1) / block_panels));
    f(s0, s1, plan);
  }
}

/// Panels an engine decodes or re-lays at once: whole tiles' worth (block_panels) filling 16 KB at panel_words
/// 32-bit words a panel, at least one tile's, so that the group, its tile inputs and the query stay in L1.
inline std::size_t panels_per_group(std::size_t panel_words, std::size_t block_panels) noexcept {
  return std::max<std::size_t>(1, (std::size_t(16) << 10) / (panel_words * 4) / block_panels) * block_panels;
}

/// Whether the vector tiles prefetch the next panels into L2 only (prefetcht1) rather than into L1 (prefetcht0): on
/// Intel CPUs. On the Xeon with AMX, 10 alternating rounds: streamed fp32 Top-1 / 4 / 8 +8% / +1% / +3% and
/// cache-resident +4% / +3% / +2% with prefetcht1; on Zen 5 prefetcht1 cost 2-7% streamed (bench/RESULTS.md, "The
/// float tiles on Intel"). The AMX engines prefetch into L2 everywhere.
inline bool tile_prefetch_to_l2() noexcept {
  static const bool intel = cpu().vendor == "GenuineIntel";
  return intel;
}

/// Whether a sweep visits every query row block over one panel group before the next group (panel group outer)
/// rather than every panel group for one row block (row block outer), for groups of `group_bytes`: on Intel CPUs
/// whose level-1 data cache holds the group in 3/4 of it (the query rows a tile reads, and the tile's outputs, in
/// the rest). A group then stays in L1 while all row blocks use it, where row block outer reads it again from L2
/// for each (at dim 128, 32 KB a tile of four 16-token panels: the L2 read rate capped Intel's float tiles). On a
/// 2-core Xeon with AMX (48 KB L1), fp32 n = 32, m = 128, dim = 128: streamed Top-1 / Top-8 +16% / +15%, cached
/// +2% / +5% (bench/RESULTS.md, "The float tiles on Intel again"). Elsewhere (Zen 4's L1 is 32 KB; Zen 5 was not
/// measured) the row block stays outer.
inline bool tile_panel_outer(std::size_t group_bytes) noexcept {
  static const std::size_t l1d = cpu().vendor == "GenuineIntel" ? cpu().l1d_bytes : 0;
  return group_bytes * 4 <= l1d * 3;
}

/// Keeps a loaded panel row in a vector register: an empty asm that takes and returns it there, so the compiler
/// cannot fold the load into each FMA that reads it. GCC 12 did exactly that in tile_rows<4, 4> from one version of
/// this file to the next: 16 FMAs with a memory operand (each panel row loaded once per query row) instead of 4
/// loads, which cost float32 Top-1 on a Zen 4 83-93% -> 63-77% of its FMA peak (bench/RESULTS.md, "A panel row
/// loaded once"). Where the batch is not a native x86 vector register it does nothing.
template <class B>
ALIGNER_ALWAYS_INLINE void in_register(B& b) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE__)
  if constexpr (std::is_same_v<typename B::value_type, float>) {
    typename B::register_type r = b;
    __asm__("" : "+v"(r));
    b = B(r);
  }
#else
  (void)b;
#endif
}

/// One tile's prefetch lines [at, stop) at a fixed level (L2: prefetcht1, else prefetcht0), as a tile's loop holds
/// them: a local copy in registers, one line every other component step (tick) and the rest at the end.
template <bool L2>
struct prefetch_slice {
  const char* at = nullptr;
  const char* stop = nullptr;
  ALIGNER_ALWAYS_INLINE void tick() noexcept {
    if (at < stop) {
      prefetch_read<L2 ? 2 : 3>(at);
      at += 64;
    }
  }
  void rest() noexcept {
    for (; at < stop; at += 64) prefetch_read<L2 ? 2 : 3>(at);
  }
};

/// The lines the current tile prefetches, [at, stop): a sweep sets them before each tile; the tile takes them as a
/// prefetch_slice of this CPU's level (tile_prefetch_to_l2), chosen once a tile: with_slice(f) calls
/// f(prefetch_slice<L2>), so the level is a constant of the tile's loop (a test of it at every step cost Zen 5 3-5%
/// streamed fp32 Top-1).
struct tile_prefetch {
  mutable const char* at = nullptr;  ///< set by the sweep of a const engine
  mutable const char* stop = nullptr;
  bool to_l2 = tile_prefetch_to_l2();
  template <class F>
  ALIGNER_ALWAYS_INLINE void with_slice(F&& f) const {
    if (to_l2)
      f(prefetch_slice<true>{at, stop});
    else
      f(prefetch_slice<false>{at, stop});
  }
};

/// The query row blocks of sweep_tiles: f.template operator()<R>(i0) for each block of R rows from i0, in order.
/// BlockRows 4 with RowTails: blocks of 4, then the last 1 to 3 rows as one block. BlockRows 6 (RowTails; the 6- and
/// 5-row tiles of six_row_tiles): where ceil(r / 6) blocks of 6 and 5 rows cover the r rows left (r = 5, 6, 10-12,
/// 15-18 and every r >= 20: 32 rows as 6, 6, 5, 5, 5, 5), those; else a block of 5 while r >= 9 and then the rest as
/// BlockRows 4 does (7 rows as 4 + 3, 8 as 4 + 4, 13 as 5 + 4 + 4). The last 1 to 3 rows take tiles of 4 panels
/// (small_row_tile); cutting 7 rows as 6 + 1, 8 as 6 + 2, 13 as 6 + 6 + 1 instead (ceil(r / 6) tiles, the last of 1-3
/// rows) measured the same or slower on a Zen 3 (n = 7: 1.01x the tiles before small_row_tile against 1.13x for 4 + 3).
/// Without RowTails: blocks of BlockRows, the
/// last one reaching past n (its tiles compute rows past the query from valid rows).
template <std::size_t BlockRows, bool RowTails, class F>
ALIGNER_ALWAYS_INLINE void for_each_row_block(std::size_t n, F&& f) {
  static_assert(!RowTails || BlockRows == 4 || BlockRows == 6, "row tails follow blocks of 4 or 6 rows");
  std::size_t i0 = 0;
  if constexpr (!RowTails) {
    for (; i0 < n; i0 += BlockRows) f.template operator()<BlockRows>(i0);
    return;
  } else {
    if constexpr (BlockRows == 6) {
      for (;;) {
        const std::size_t r = n - i0, c = (r + 5) / 6;
        if (r >= 5 && 5 * c <= r) {  // c blocks of 6 and 5 rows cover the r rows: as few tiles as blocks of 6 would take
          const std::size_t sixes = r - 5 * c;
          for (std::size_t b = 0; b != sixes; ++b, i0 += 6) f.template operator()<6>(i0);
          for (std::size_t b = sixes; b != c; ++b, i0 += 5) f.template operator()<5>(i0);
          return;
        }
        if (r < 9) break;
        f.template operator()<5>(i0);
        i0 += 5;
      }
    }
    for (; n - i0 >= 4; i0 += 4) f.template operator()<4>(i0);
    switch (n - i0) {
      case 1: f.template operator()<1>(i0); break;
      case 2: f.template operator()<2>(i0); break;
      case 3: f.template operator()<3>(i0); break;
      default: break;
    }
  }
}

/// The sweep order of the file comment for an engine of BlockRows query rows x BlockPanels panels: every
/// (query row block, panel group) tile once, visit.template operator()<R>(i0, p0, panels_here), each tile's
/// prefetch slice set in `pf` first. n: the query's rows. The row blocks are for_each_row_block's: with RowTails the
/// last rows are visited as a smaller tile (BlockRows 4: 1 to 3; BlockRows 6: blocks of 6 and 5, then 4s and 1 to 3);
/// without, every tile is BlockRows rows (the run-time VNNI tiles of 4- and 8-wide panels: rows past the query are
/// computed from valid rows and ignored by the folds, as the AMX engines' are). panel_outer: the order of
/// tile_panel_outer (all row blocks over one panel group, then the next group; a row's panels are still visited in
/// increasing order, and a row block's panel 0 first).
template <std::size_t BlockRows, std::size_t BlockPanels, bool RowTails = true, class Visit>
void sweep_tiles(const void* panels, std::size_t panel_total, std::size_t panel_bytes, std::size_t span_bytes, std::size_t n,
                 prefetch_hint next, const tile_prefetch& pf, Visit&& visit, bool panel_outer = false) {
  std::size_t row_blocks = 0;
  for_each_row_block<BlockRows, RowTails>(n, [&]<std::size_t R>(std::size_t) { ++row_blocks; });
  for_each_span(panels, panel_total, panel_bytes, span_bytes, BlockPanels, row_blocks, next,
                [&](std::size_t s0, std::size_t s1, span_prefetch& plan) {
    // One tile: its prefetch slice, then the block's rows.
    auto tile_at = [&]<std::size_t R>(std::size_t i0, std::size_t p0) ALIGNER_ALWAYS_INLINE_LAMBDA {
      std::tie(pf.at, pf.stop) = plan.slice();
      visit.template operator()<R>(i0, p0, std::min(BlockPanels, s1 - p0));
    };
    if (panel_outer) {
      for (std::size_t p0 = s0; p0 < s1; p0 += BlockPanels)
        for_each_row_block<BlockRows, RowTails>(n, [&]<std::size_t R>(std::size_t i0) { tile_at.template operator()<R>(i0, p0); });
    } else {
      for_each_row_block<BlockRows, RowTails>(n, [&]<std::size_t R>(std::size_t i0) {
        for (std::size_t p0 = s0; p0 < s1; p0 += BlockPanels) tile_at.template operator()<R>(i0, p0);
      });
    }
  });
}

/// What every tile engine shares (CRTP over the engine `E`, which has `query`, `doc_rows` and a
/// `tile<R, V>(i0, p0, acc)`): masking of padding lanes, lane indices, the run-time panel count dispatch and storing
/// tiles as rows of S. `MaxV` is the engine's panels per tile (1 .. 8).
template <class E, class Arch, std::size_t MaxV>
struct tile_engine_base {
  using batch = xsimd::batch<float, Arch>;
  static constexpr std::size_t width = batch::size;
  static constexpr std::size_t block_panels = MaxV;

  /// Lanes of panel p that hold real tokens keep their value; padding becomes -inf.
  batch mask_tail(batch s, std::size_t p) const noexcept {
    const std::size_t valid = self().doc_rows - p * width;
    if (valid >= width) return s;
    alignas(64) float lane[width];
    for (std::size_t l = 0; l != width; ++l) lane[l] = float(l);
    return xsimd::select(batch::load_aligned(lane) < batch(float(valid)), s, batch(-std::numeric_limits<float>::infinity()));
  }

  /// Every entry of a tile 0 (the tile of an engine whose instructions are not compiled in; never run).
  template <std::size_t R, std::size_t V>
  static void zero(batch (&out)[R][V]) noexcept {
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) out[r][v] = batch(0.f);
  }

  /// Token indices of panel p's lanes, as floats (exact below 2^24).
  static batch lane_ids(std::size_t p) noexcept {
    alignas(64) float lane[width];
    for (std::size_t l = 0; l != width; ++l) lane[l] = float(p * width + l);
    return batch::load_aligned(lane);
  }

  /// Calls f(std::integral_constant<std::size_t, V>{}, p) for a visit of panels_here (1 .. MaxV) panels from p0, so
  /// that tile bodies are compiled once per V: once (V = panels_here, p = p0) where panels_here is MaxV or at most 4;
  /// else (5 .. 7 panels of an 8-panel engine, the last group of a span) as 4 panels at p0 and the rest at p0 + 4. The
  /// bodies are thus compiled for V in 1 .. 4 and MaxV only: compiling V = 5 .. 7 as well (each a Top-k fold of its
  /// own for every budget K, both index modes and both AMX row blocks) had made a translation unit that uses the
  /// retriever compile 25% longer (quickstart.cpp at -O3: 154 s against 123).
  template <class F>
  ALIGNER_ALWAYS_INLINE static void with_panels(std::size_t p0, std::size_t panels_here, F&& f) {
    static_assert(MaxV == 1 || MaxV == 2 || MaxV == 4 || MaxV == 8, "tiles of 1, 2, 4 or 8 panels");
    if constexpr (MaxV == 8) {
      if (panels_here >= 8) return f(std::integral_constant<std::size_t, 8>{}, p0);
      if (panels_here > 4) {
        f(std::integral_constant<std::size_t, 4>{}, p0);
        p0 += 4, panels_here -= 4;
      }
    }
    switch (panels_here) {
      case 1: f(std::integral_constant<std::size_t, 1>{}, p0); break;
      case 2: if constexpr (MaxV >= 2) f(std::integral_constant<std::size_t, 2>{}, p0); break;
      case 3: if constexpr (MaxV >= 4) f(std::integral_constant<std::size_t, 3>{}, p0); break;
      default: if constexpr (MaxV >= 4) f(std::integral_constant<std::size_t, 4>{}, p0); break;
    }
  }

  /// Writes S rows i0 .. i0 + R - 1 (those below query.rows) of panels p0 .. p0 + panels_here - 1 to s_rows (row
  /// stride s_stride floats).
  template <std::size_t R>
  void store_rows(std::size_t i0, std::size_t p0, std::size_t panels_here, float* s_rows, std::size_t s_stride) const noexcept {
    with_panels(p0, panels_here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>, std::size_t p) {
      batch acc[R][V];
      self().template tile<R, V>(i0, p, acc);
      const std::size_t rows = std::min(R, self().query.rows - i0);
      for (std::size_t r = 0; r != rows; ++r)
        for (std::size_t v = 0; v != V; ++v) acc[r][v].store_unaligned(s_rows + (i0 + r) * s_stride + (p + v) * width);
    });
  }

 private:
  const E& self() const noexcept { return static_cast<const E&>(*this); }
};

#if ALIGNER_X86_64_ASM && defined(__AVX2__) && defined(__FMA__) && !defined(ALIGNER_DISABLE_SIX_ROW_TILE)
/// The 6-row tiles of 8-wide panels are compiled (an AVX2 + FMA build with GCC-style inline assembly; define
/// ALIGNER_DISABLE_SIX_ROW_TILE to leave them out).
#define ALIGNER_HAVE_SIX_ROW_TILE 1
#else
#define ALIGNER_HAVE_SIX_ROW_TILE 0
#endif

/// Whether tile_engine<Arch, St> scores its row storage in tiles of 6 and 5 query rows x 2 panels (for_each_row_block)
/// where the run-time AVX-512 tiles do not run: 8-wide panels of f32, f16 or i8 in an AVX2 + FMA build. 12
/// accumulators, 2 panel rows and one broadcast take 15 of the 16 ymm registers; the 4 x 2 tile's 8 accumulators are
/// just the FMA latency's worth (4 cycles x 2 ports), and on an AVX2-only Zen 3 it reached 64% of the FMA peak in a
/// probe where 6 x 2 reached 89-98% (bench/RESULTS.md, "Residual codes on AVX2"). GCC 12 spilled two of the 12
/// accumulators in the generic tile body, so the 6 x 2 and 5 x 2 bodies are written in assembly (detail::six_row_tile).
template <class Arch, storage St>
inline constexpr bool six_row_tiles = ALIGNER_HAVE_SIX_ROW_TILE && panel_width<Arch> == 8 &&
                                      (St == storage::f32 || St == storage::f16 || St == storage::i8)
#if ALIGNER_HAVE_SIX_ROW_TILE
                                      && std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>
#endif
    ;

#if ALIGNER_HAVE_SIX_ROW_TILE || (ALIGNER_HAVE_WIDE && !defined(ALIGNER_DISABLE_SIX_ROW_TILE))
namespace detail {

/// Bytes of one component row of an 8-wide panel of St (the assembly loads it from (%[d]) into ymm13 and the next
/// panel's from (%[d],%[ps]) into ymm14, widened to float): 8 floats, halves or bytes. Also one half-step (two
/// component rows) of a 4-wide panel (six_row_tile_wide).
template <storage St>
inline constexpr std::size_t six_row_bytes = St == storage::f32 ? 32 : St == storage::f16 || St == storage::bf16 ? 16 : 8;

/// Query row r's 8 floats for this step into ymm15 by QOP ("vbroadcastss": one component, to every lane;
/// "vmovups": the AVX2 engine's expanded half-row, wide.hpp), times both panel rows (ymm13, ymm14), into accumulators
/// a<r>0 and a<r>1. The three registers are fixed (clobbered) rather than operands: 12 accumulators in and out are 24
/// of an asm statement's 30 operands.
#define ALIGNER_SIX_ROW_FMAS(QOP, Q, A0, A1)                                                                 \
  QOP " " Q ", %%ymm15\n\tvfmadd231ps %%ymm13, %%ymm15, %[" A0 "]\n\tvfmadd231ps %%ymm14, %%ymm15, %[" A1 "]\n\t"
/// Query rows 0-4: rows 0-2 at (%[q0]), (%[q0],%[qs]), (%[q0],%[qs],2), rows 3-4 at (%[q3]), (%[q3],%[qs]); and
/// their 10 accumulators as asm operands.
#define ALIGNER_FIVE_ROW_FMAS(QOP)                                                                           \
  ALIGNER_SIX_ROW_FMAS(QOP, "(%[q0])", "a00", "a01") ALIGNER_SIX_ROW_FMAS(QOP, "(%[q0],%[qs])", "a10", "a11")     \
  ALIGNER_SIX_ROW_FMAS(QOP, "(%[q0],%[qs],2)", "a20", "a21") ALIGNER_SIX_ROW_FMAS(QOP, "(%[q3])", "a30", "a31")   \
  ALIGNER_SIX_ROW_FMAS(QOP, "(%[q3],%[qs])", "a40", "a41")
#define ALIGNER_FIVE_ROW_ACCS                                                                                \
  [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),              \
      [a30] "+x"(a30), [a31] "+x"(a31), [a40] "+x"(a40), [a41] "+x"(a41)
/// The inputs: pointers, and after them the operands the loads need (bf16's shift counts), each with a comma first.
#define ALIGNER_ROW_STEP_INPUTS(...)                                                                         \
  : [d] "r"(d), [ps] "r"(ps), [q0] "r"(q0), [q3] "r"(q3), [qs] "r"(qs) __VA_ARGS__ : "xmm13", "xmm14", "xmm15", "memory"
/// One step of the 6 x 2 tile after LOADS (the two panel rows into ymm13 and ymm14): rows 0-4, then row 5 at
/// (%[q3],%[qs],2).
#define ALIGNER_SIX_ROW_STEP(QOP, LOADS, ...)                                                                \
  __asm__(LOADS ALIGNER_FIVE_ROW_FMAS(QOP) ALIGNER_SIX_ROW_FMAS(QOP, "(%[q3],%[qs],2)", "a50", "a51")              \
          : ALIGNER_FIVE_ROW_ACCS, [a50] "+x"(a50), [a51] "+x"(a51) ALIGNER_ROW_STEP_INPUTS(__VA_ARGS__))
/// The same for 5 query rows (10 accumulators).
#define ALIGNER_FIVE_ROW_STEP(QOP, LOADS, ...) \
  __asm__(LOADS ALIGNER_FIVE_ROW_FMAS(QOP) : ALIGNER_FIVE_ROW_ACCS ALIGNER_ROW_STEP_INPUTS(__VA_ARGS__))
#define ALIGNER_ROWS_STEP(QOP, LOADS, ...)              \
  if constexpr (R == 6)                                 \
    ALIGNER_SIX_ROW_STEP(QOP, LOADS, __VA_ARGS__);      \
  else                                                  \
    ALIGNER_FIVE_ROW_STEP(QOP, LOADS, __VA_ARGS__)
/// The panel rows' loads of one step of storage St into ymm13 and ymm14, widened to float.
#define ALIGNER_ROWS_STEP_OF(QOP)                                                                            \
  if constexpr (St == storage::f32) {                                                                        \
    ALIGNER_ROWS_STEP(QOP, "vmovups (%[d]), %%ymm13\n\tvmovups (%[d],%[ps]), %%ymm14\n\t");                     \
  } else if constexpr (St == storage::f16) {                                                                 \
    ALIGNER_ROWS_STEP(QOP, "vcvtph2ps (%[d]), %%ymm13\n\tvcvtph2ps (%[d],%[ps]), %%ymm14\n\t");                 \
  } else {                                                                                                   \
    ALIGNER_ROWS_STEP(QOP, "vpmovsxbd (%[d]), %%ymm13\n\tvpmovsxbd (%[d],%[ps]), %%ymm14\n\t"                   \
                           "vcvtdq2ps %%ymm13, %%ymm13\n\tvcvtdq2ps %%ymm14, %%ymm14\n\t");                      \
  }

#if ALIGNER_HAVE_SIX_ROW_TILE
/// S tile of R = 5 or 6 query rows (row r at q0 + r * q_stride floats) x 2 panels of 8 lanes (at panel, panel +
/// panel_stride bytes; component rows from `data`, the panel's header first for i8) over dim components, into out (row
/// r's 2 batches of 8 floats at out + r * out_stride), with the per-token scale of i8 applied. The arithmetic is tile_engine::tile_rows's:
/// one fused multiply-add a component, in component order, then the scale; the results are the same bits.
template <storage St, std::size_t R, bool L2>
ALIGNER_NOINLINE void six_row_tile(const unsigned char* panel, std::size_t panel_stride, std::size_t data, std::size_t dim,
                                   const float* query_row0, std::size_t q_stride, prefetch_slice<L2> slice, float* out,
                                   std::size_t out_stride) noexcept {
  static_assert(R == 5 || R == 6, "tiles of 5 or 6 rows");
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00, a40 = a00,
         a41 = a00, a50 = a00, a51 = a00;
  const unsigned char* d = panel + data;
  const std::size_t ps = panel_stride, qs = q_stride * 4;
  const float* q0 = query_row0;
  const float* q3 = query_row0 + 3 * q_stride;
  constexpr std::size_t row = six_row_bytes<St>;
  auto step = [&]() ALIGNER_ALWAYS_INLINE_LAMBDA {
    ALIGNER_ROWS_STEP_OF("vbroadcastss")
    d += row, ++q0, ++q3;
  };
  std::size_t c = 0;
  for (; c + 4 <= dim; c += 4) {
    step();
    slice.tick();
    step();
    step();
    slice.tick();
    step();
  }
  for (; c != dim; ++c) {
    if (c & 1) slice.tick();
    step();
  }
  slice.rest();
  if constexpr (St == storage::i8) {  // the per-token scales: the panel's header
    const __m256 s0 = _mm256_loadu_ps(reinterpret_cast<const float*>(panel));  // an i8 panel is 4-byte aligned
    const __m256 s1 = _mm256_loadu_ps(reinterpret_cast<const float*>(panel + panel_stride));
    a00 = _mm256_mul_ps(a00, s0), a10 = _mm256_mul_ps(a10, s0), a20 = _mm256_mul_ps(a20, s0);
    a30 = _mm256_mul_ps(a30, s0), a40 = _mm256_mul_ps(a40, s0), a50 = _mm256_mul_ps(a50, s0);
    a01 = _mm256_mul_ps(a01, s1), a11 = _mm256_mul_ps(a11, s1), a21 = _mm256_mul_ps(a21, s1);
    a31 = _mm256_mul_ps(a31, s1), a41 = _mm256_mul_ps(a41, s1), a51 = _mm256_mul_ps(a51, s1);
  }
  const __m256 acc[12] = {a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51};
  for (std::size_t k = 0; k != 2 * R; ++k) _mm256_storeu_ps(out + k / 2 * out_stride + k % 2 * 8, acc[k]);
}


#if ALIGNER_HAVE_SIX_ROW_TILE
/// The rows' 8 floats of one component, broadcast into ymm12 (row 0), ymm13, ymm14; each panel row into ymm15 by LOAD,
/// times every row into accumulator a<r><v>. small_row_tile's step for 1 to 3 rows x 4 panels.
#define ALIGNER_SMALL_B1 "vbroadcastss (%[q0]), %%ymm12\n\t"
#define ALIGNER_SMALL_B2 ALIGNER_SMALL_B1 "vbroadcastss (%[q0],%[qs]), %%ymm13\n\t"
#define ALIGNER_SMALL_B3 ALIGNER_SMALL_B2 "vbroadcastss (%[q0],%[qs],2), %%ymm14\n\t"
#define ALIGNER_SMALL_F1(v) "vfmadd231ps %%ymm15, %%ymm12, %[a0" #v "]\n\t"
#define ALIGNER_SMALL_F2(v) ALIGNER_SMALL_F1(v) "vfmadd231ps %%ymm15, %%ymm13, %[a1" #v "]\n\t"
#define ALIGNER_SMALL_F3(v) ALIGNER_SMALL_F2(v) "vfmadd231ps %%ymm15, %%ymm14, %[a2" #v "]\n\t"
#define ALIGNER_SMALL_ACC1 [a00] "+x"(a00), [a01] "+x"(a01), [a02] "+x"(a02), [a03] "+x"(a03)
#define ALIGNER_SMALL_ACC2 ALIGNER_SMALL_ACC1, [a10] "+x"(a10), [a11] "+x"(a11), [a12] "+x"(a12), [a13] "+x"(a13)
#define ALIGNER_SMALL_ACC3 ALIGNER_SMALL_ACC2, [a20] "+x"(a20), [a21] "+x"(a21), [a22] "+x"(a22), [a23] "+x"(a23)
#define ALIGNER_SMALL_ASM(N, LOAD)                                                                              \
  __asm__(ALIGNER_SMALL_B##N LOAD("(%[d])") ALIGNER_SMALL_F##N(0) LOAD("(%[d],%[ps])") ALIGNER_SMALL_F##N(1)        \
              LOAD("(%[d],%[ps],2)") ALIGNER_SMALL_F##N(2) LOAD("(%[d3])") ALIGNER_SMALL_F##N(3)                   \
          : ALIGNER_SMALL_ACC##N                                                                                \
          : [d] "r"(d), [d3] "r"(d3), [ps] "r"(ps), [q0] "r"(q0), [qs] "r"(qs)                                    \
          : "xmm12", "xmm13", "xmm14", "xmm15", "memory")
#define ALIGNER_SMALL_STEP(LOAD)       \
  if constexpr (R == 1)                \
    ALIGNER_SMALL_ASM(1, LOAD);        \
  else if constexpr (R == 2)           \
    ALIGNER_SMALL_ASM(2, LOAD);        \
  else                                 \
    ALIGNER_SMALL_ASM(3, LOAD)
#define ALIGNER_SMALL_LOAD_F32(A) "vmovups " A ", %%ymm15\n\t"
#define ALIGNER_SMALL_LOAD_F16(A) "vcvtph2ps " A ", %%ymm15\n\t"
#define ALIGNER_SMALL_LOAD_I8(A) "vpmovsxbd " A ", %%ymm15\n\tvcvtdq2ps %%ymm15, %%ymm15\n\t"

/// S tile of R = 1 to 3 query rows x 4 panels of 8 lanes, the rows a sweep of 6- and 5-row blocks leaves (its last
/// block): as two tiles of 2 panels each such tile had 2R accumulators and waited on the FMA latency (on a Zen 3 a
/// 1-, 2- or 3-row tile took as long as a 5-row one); 4 panels give 4R, with the R broadcasts and one panel row in
/// the other 4 registers. Arguments as six_row_tile's; out: R x 4 batches of 8 floats, row-major. The arithmetic is
/// tile_rows's: one fused multiply-add a component, in component order, then the i8 scale; the same bits.
template <storage St, std::size_t R, bool L2>
ALIGNER_NOINLINE void small_row_tile(const unsigned char* panel, std::size_t panel_stride, std::size_t data, std::size_t dim,
                                     const float* query_row0, std::size_t q_stride, prefetch_slice<L2> slice, float* out) noexcept {
  static_assert(R >= 1 && R <= 3, "tiles of 1 to 3 rows");
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00, a20 = a00,
         a21 = a00, a22 = a00, a23 = a00;
  const unsigned char* d = panel + data;
  const unsigned char* d3 = d + 3 * panel_stride;
  const std::size_t ps = panel_stride, qs = q_stride * 4;
  const float* q0 = query_row0;
  constexpr std::size_t row = six_row_bytes<St>;
  auto step = [&]() ALIGNER_ALWAYS_INLINE_LAMBDA {
    if constexpr (St == storage::f32) {
      ALIGNER_SMALL_STEP(ALIGNER_SMALL_LOAD_F32);
    } else if constexpr (St == storage::f16) {
      ALIGNER_SMALL_STEP(ALIGNER_SMALL_LOAD_F16);
    } else {
      ALIGNER_SMALL_STEP(ALIGNER_SMALL_LOAD_I8);
    }
    d += row, d3 += row, ++q0;
  };
  std::size_t c = 0;
  for (; c + 4 <= dim; c += 4) {  // unrolled as six_row_tile's: a step is 4R FMAs, few against the loop's own work
    step();
    slice.tick();
    step();
    step();
    slice.tick();
    step();
  }
  for (; c != dim; ++c) {
    if (c & 1) slice.tick();
    step();
  }
  slice.rest();
  // Row r's 4 entries into out, each times its panel's token scales for i8 (the panel's header; 4-byte aligned). Named
  // variables rather than an array: an array of the accumulators kept them on the stack through the loop.
  auto put = [&](std::size_t r, __m256 x0, __m256 x1, __m256 x2, __m256 x3) ALIGNER_ALWAYS_INLINE_LAMBDA {
    if constexpr (St == storage::i8) {
      auto scale = [&](std::size_t v) { return _mm256_loadu_ps(reinterpret_cast<const float*>(panel + v * panel_stride)); };
      x0 = _mm256_mul_ps(x0, scale(0)), x1 = _mm256_mul_ps(x1, scale(1));
      x2 = _mm256_mul_ps(x2, scale(2)), x3 = _mm256_mul_ps(x3, scale(3));
    }
    _mm256_storeu_ps(out + r * 32, x0), _mm256_storeu_ps(out + r * 32 + 8, x1);
    _mm256_storeu_ps(out + r * 32 + 16, x2), _mm256_storeu_ps(out + r * 32 + 24, x3);
  };
  put(0, a00, a01, a02, a03);
  if constexpr (R >= 2) put(1, a10, a11, a12, a13);
  if constexpr (R >= 3) put(2, a20, a21, a22, a23);
}

#undef ALIGNER_SMALL_LOAD_I8
#undef ALIGNER_SMALL_LOAD_F16
#undef ALIGNER_SMALL_LOAD_F32
#undef ALIGNER_SMALL_STEP
#undef ALIGNER_SMALL_ASM
#undef ALIGNER_SMALL_ACC3
#undef ALIGNER_SMALL_ACC2
#undef ALIGNER_SMALL_ACC1
#undef ALIGNER_SMALL_F3
#undef ALIGNER_SMALL_F2
#undef ALIGNER_SMALL_F1
#undef ALIGNER_SMALL_B3
#undef ALIGNER_SMALL_B2
#undef ALIGNER_SMALL_B1
#endif
#endif

#if ALIGNER_HAVE_WIDE && !defined(ALIGNER_DISABLE_SIX_ROW_TILE)
/// The AVX2 engine's 6 x 2 and 5 x 2 tiles of 4-wide panels (wide.hpp; a portable build on a CPU with AVX2 but no
/// usable AVX-512): six_row_tile's body with the query's expanded half-row (query_to_wide at W = 4: components 2h and
/// 2h + 1 in 4 lanes each; row r at q + r * q_row words) loaded whole instead of broadcast, one half-step (two
/// component rows of both panels) a step, and an odd dimension's last component row added with intrinsics. The
/// arithmetic is wide_avx2_tile_rows's: lanes 0-3 the even components, 4-7 the odd ones, in order by FMA; the halves
/// added at the end, then the i8 scale. out: row r's 2 entries of 4 floats at out + r * out_stride.
template <storage St, std::size_t R, bool L2>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE_AVX2 void six_row_tile_wide(const unsigned char* panel, std::size_t panel_stride, std::size_t dim,
                                                                  const std::uint32_t* q, std::size_t q_row, prefetch_slice<L2> slice,
                                                                  float* out, std::size_t out_stride) noexcept {
  static_assert(R == 5 || R == 6, "tiles of 5 or 6 rows");
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00, a40 = a00,
         a41 = a00, a50 = a00, a51 = a00;
  const unsigned char* d = panel + storage_traits<St>::header_words(4) * 4;
  const std::size_t ps = panel_stride, qs = q_row * 4;
  const float* q0 = reinterpret_cast<const float*>(q);
  const float* q3 = q0 + 3 * q_row;
  constexpr std::size_t row = six_row_bytes<St>;
  // bf16: one pair row a half-step, the last one of an odd dim holding a 0 (the query's component there is 0 too)
  const std::size_t halves = St == storage::bf16 ? (dim + 1) / 2 : dim / 2;
  [[maybe_unused]] const __m256i cnt = _mm256_setr_epi32(0, 0, 0, 0, 16, 16, 16, 16);  // bf16's shift counts
  for (std::size_t h = 0; h != halves; ++h) {
    if (h % 2 == 0) slice.tick();
    if constexpr (St == storage::bf16) {  // a pair row of both panels widened as wide_avx2_load_bf16 does
      ALIGNER_ROWS_STEP("vmovups", "vbroadcasti128 (%[d]), %%ymm13\n\tvbroadcasti128 (%[d],%[ps]), %%ymm14\n\t"
                                   "vpsrlvd %[cnt], %%ymm13, %%ymm13\n\tvpsrlvd %[cnt], %%ymm14, %%ymm14\n\t"
                                   "vpslld $16, %%ymm13, %%ymm13\n\tvpslld $16, %%ymm14, %%ymm14\n\t",
                        , [cnt] "x"(cnt));
    } else {
      ALIGNER_ROWS_STEP_OF("vmovups")
    }
    d += row, q0 += 8, q3 += 8;
  }
  if constexpr (St != storage::bf16) {
    if (dim % 2) {  // the last component row alone: 4 values of each panel, the upper lanes 0 (the query's are 0 too)
      const unsigned char* rows = panel + storage_traits<St>::header_words(4) * 4;
      const __m256 d0 = wide_avx2_load<St>(rows, halves, true), d1 = wide_avx2_load<St>(rows + ps, halves, true);
      wide_avx2_fma2(q0, d0, d1, a00, a01);
      wide_avx2_fma2(q0 + q_row, d0, d1, a10, a11);
      wide_avx2_fma2(q0 + 2 * q_row, d0, d1, a20, a21);
      wide_avx2_fma2(q3, d0, d1, a30, a31);
      wide_avx2_fma2(q3 + q_row, d0, d1, a40, a41);
      if constexpr (R == 6) wide_avx2_fma2(q3 + 2 * q_row, d0, d1, a50, a51);
    }
  }
  slice.rest();
  const __m256 acc[12] = {a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51};
  for (std::size_t k = 0; k != 2 * R; ++k) {
    const __m128 sum = _mm_add_ps(_mm256_castps256_ps128(acc[k]), _mm256_extractf128_ps(acc[k], 1));
    float* at = out + k / 2 * out_stride + k % 2 * 4;
    if constexpr (St == storage::i8)  // the per-token scales: the panel's header
      _mm_storeu_ps(at, _mm_mul_ps(sum, _mm_loadu_ps(reinterpret_cast<const float*>(panel + (k % 2) * panel_stride))));
    else
      _mm_storeu_ps(at, sum);
  }
}
#endif

#undef ALIGNER_ROWS_STEP_OF
#undef ALIGNER_ROWS_STEP
#undef ALIGNER_FIVE_ROW_STEP
#undef ALIGNER_SIX_ROW_STEP
#undef ALIGNER_ROW_STEP_INPUTS
#undef ALIGNER_FIVE_ROW_ACCS
#undef ALIGNER_FIVE_ROW_FMAS
#undef ALIGNER_SIX_ROW_FMAS

}  // namespace detail
#endif

/// Panels a tile of tile_engine<Arch> covers: 4 with 32 vector registers (AVX-512), and with 4- or 8-wide panels where
/// the run-time AVX-512 tiles are compiled (wide.hpp: 16 zmm accumulators; the build's own 128- and 256-bit tiles
/// then run as two of 2); else 2. At W = 4 the run-time tiles had been 4 rows x 2 panels: 8 accumulators, just the
/// FMA latency's worth, and 6 loads per 8 FMAs; with 4 panels a portable build's float32 rerank ran 1.40-1.46x faster
/// on a Xeon with AMX (bench/RESULTS.md, "The run-time AVX-512 tiles of 4-wide panels: 4 panels a tile").
template <class Arch>
inline constexpr std::size_t tile_engine_panels =
    (sizeof(xsimd::batch<float, Arch>) >= 64 || (ALIGNER_HAVE_WIDE && (panel_width<Arch> == 8 || panel_width<Arch> == 4))) ? 4 : 2;

/// Register tiles of S over one packed document (or any run of panels). Preconditions (unchecked): query.cols ==
/// the panels' dim, panels 64-byte aligned, doc_rows <= max_sequence_tokens, values finite; for bf16 with
/// bf16_rounds_query, `query_bf16` holds the query as query_to_bf16_pairs writes it. `query_wide`: the query
/// expanded for the run-time AVX-512 tiles of 4- and 8-wide panels (wide_query_or_convert), used where
/// wide_runs(St); null keeps the build's tiles.
template <class Arch, storage St>
struct tile_engine : tile_engine_base<tile_engine<Arch, St>, Arch, tile_engine_panels<Arch>> {
  using base = tile_engine_base<tile_engine<Arch, St>, Arch, tile_engine_panels<Arch>>;
  using typename base::batch;
  using traits = storage_traits<St>;
  using base::width;
  // Register blocking: 4 query rows x (4 panels with 32 vector registers, 2 with 16); 6 and 5 rows x 2 panels where
  // six_row_tiles (sweep).
  static constexpr std::size_t block_rows = 4;
  using base::block_panels;
  static constexpr std::size_t span_bytes = std::size_t(256) << 10;

  const void* panels;
  std::size_t dim, doc_rows, panel_total;
  matrix_view<float> query;
  const std::uint32_t* query_bf16 = nullptr;
  prefetch_hint next{};
  const std::uint32_t* query_wide = nullptr;  ///< the expanded query where the run-time AVX-512 or AVX2 tiles run, else null

  tile_engine(const void* panels_, std::size_t doc_rows_, matrix_view<float> query_, const std::uint32_t* query_bf16_ = nullptr,
              prefetch_hint next_ = {}, const std::uint32_t* query_wide_ = nullptr) noexcept
      : panels(panels_), dim(query_.cols), doc_rows(doc_rows_), panel_total(panel_count<Arch>(doc_rows_)), query(query_),
        query_bf16(query_bf16_), next(next_), query_wide(query_wide_) {
#if ALIGNER_HAVE_WIDE
    // bf16 (pairs): the AVX2 tiles where AVX512-BF16 does not run (then query_wide is the float form, query_to_wide)
    if constexpr (width == 4) wide_avx2_ = query_wide_ != nullptr && !(traits::pairs ? avx512_bf16_usable() : avx512_usable());
#endif
  }

  std::size_t panel_bytes() const noexcept { return traits::panel_words(dim, width) * 4; }

  /// acc[r][v] = S tile of rows i0 + r and panel p0 + v.
  template <std::size_t R, std::size_t V>
  void tile(std::size_t i0, std::size_t p0, batch (&acc)[R][V]) const noexcept {
#if ALIGNER_HAVE_SIX_ROW_TILE
    if constexpr (R == 5 || R == 6) {  // sweep visits such blocks only where six_row_tiles and the AVX-512 tiles do not run
      static_assert(six_row_tiles<Arch, St>, "5- and 6-row tiles are the AVX2 tiles of 8-wide row storages");
      if constexpr (V == 2 || V == 4) {  // 4 panels: two tiles of 2 written straight into acc (row stride 4 batches)
        const std::size_t stride = panel_bytes();
        float* out = reinterpret_cast<float*>(&acc[0][0]);
        auto two_panels = [&](std::size_t p, float* at) {
          pf.with_slice([&](auto slice) {
            detail::six_row_tile<St, R>(static_cast<const unsigned char*>(panels) + p * stride, stride,
                                     traits::header_words(width) * 4, dim, query.row(i0), query.stride_elems, slice, at,
                                     V * width);
          });
        };
        two_panels(p0, out);
        if constexpr (V == 4) {
          pf.at = pf.stop;  // the first half issued the tile's prefetch slice
          two_panels(p0 + 2, out + 2 * width);
        }
        return;
      }  // 1 panel: the generic body below; 3: two tiles below, the first of 2 panels
    }
#endif
#if ALIGNER_HAVE_WIDE
    if constexpr (width == 4 && (V <= 2 || (R > 4 && V == 4) || (R <= 2 && V == 4))) {
      // The run-time AVX2 tiles of 4-wide panels (wide.hpp): 4 x 2 and smaller in intrinsics, 6 x 2 and 5 x 2 in
      // assembly (sweep's row blocks of 6 and 5 where they run; 4 panels as two of them written straight into acc);
      // 1 or 2 rows of 4 panels (a sweep's last rows) as one intrinsics tile; other V > 2: two of them below.
      if (wide_avx2_) {  // (set only with a query_wide)
        const std::size_t stride = panel_bytes(), q_row = wide_query_words(1, dim, width);
        const auto* base = static_cast<const unsigned char*>(panels) + p0 * stride;
        float* out = reinterpret_cast<float*>(&acc[0][0]);
#if !defined(ALIGNER_DISABLE_SIX_ROW_TILE)
        if constexpr (R > 4 && V != 1) {
          auto two_panels = [&](std::size_t v, float* at) {
            pf.with_slice([&](auto slice) {
              detail::six_row_tile_wide<St, R>(base + v * stride, stride, dim, query_wide + i0 * q_row, q_row, slice, at,
                                               V * width);
            });
          };
          two_panels(0, out);
          if constexpr (V == 4) {
            pf.at = pf.stop;  // the first half issued the tile's prefetch slice
            two_panels(2, out + 2 * width);
          }
        } else
#endif
        {
          pf.with_slice([&](auto slice) {
            detail::wide_avx2_tile_rows<St, R, V>(base, stride, dim, query_wide + i0 * q_row, q_row, slice, out);
          });
        }
        return;
      }
    }
    if constexpr ((width == 8 || width == 4) && R <= 4) {
      if (query_wide != nullptr && !wide_avx2_) {  // the run-time AVX-512 tiles (wide.hpp): G = 16 / W rows a 64-byte step
        float* out = reinterpret_cast<float*>(&acc[0][0]);  // R x V batches of W floats, contiguous
        if constexpr (traits::pairs) {
          const std::size_t words = traits::panel_words(dim, width), q_row = wide_bf16_query_words(1, dim, width);
          pf.with_slice([&](auto slice) {
            detail::wide_tile_bf16<width, R, V>(static_cast<const std::uint32_t*>(panels) + p0 * words, words, (dim + 1) / 2,
                                                query_wide + i0 * q_row, q_row, slice, out);
          });
        } else {
          const std::size_t stride = panel_bytes(), q_row = wide_query_words(1, dim, width);
          pf.with_slice([&](auto slice) {
            detail::wide_tile_rows<St, width, R, V>(static_cast<const unsigned char*>(panels) + p0 * stride, stride, dim,
                                                    query_wide + i0 * q_row, q_row, slice, out);
          });
        }
        return;
      }
    }
#endif
#if ALIGNER_HAVE_SIX_ROW_TILE
    if constexpr (six_row_tiles<Arch, St> && R <= 3 && V == 4) {  // the last 1-3 rows of a sweep of 6- and 5-row blocks
      const std::size_t stride = panel_bytes();
      pf.with_slice([&](auto slice) {
        detail::small_row_tile<St, R>(static_cast<const unsigned char*>(panels) + p0 * stride, stride,
                                      traits::header_words(width) * 4, dim, query.row(i0), query.stride_elems, slice,
                                      reinterpret_cast<float*>(&acc[0][0]));
      });
      return;
    }
#endif
    if constexpr (V > 2 && (width == 8 || width == 4)) {  // the 128- and 256-bit tiles hold 2 panels: two of them
      batch a[R][2], b[R][V - 2];
      tile<R, 2>(i0, p0, a);
      pf.at = pf.stop;  // the first half issued the tile's prefetch slice
      tile<R, V - 2>(i0, p0 + 2, b);
      for (std::size_t r = 0; r != R; ++r) {
        acc[r][0] = a[r][0], acc[r][1] = a[r][1];
        for (std::size_t v = 2; v != V; ++v) acc[r][v] = b[r][v - 2];
      }
    } else if constexpr (width == 4 && R > 4) {
      // Blocks of 5 and 6 rows at W = 4 are swept only for the AVX2 tiles (above), so the build's own bodies are not
      // compiled for them.
    } else if constexpr (traits::pairs) {
      pf.with_slice([&](auto slice) { tile_pairs<R, V>(i0, p0, acc, slice); });
    } else {
      pf.with_slice([&](auto slice) { tile_rows<R, V>(i0, p0, acc, slice); });
    }
  }

  /// Visits every (query row block, panel group) tile once: visit.template operator()<R>(i0, p0, panels_here),
  /// in the span order of the file comment.
  template <class Visit>
  void sweep(Visit&& visit) const {
    auto go = [&]<std::size_t Rows>() {
      sweep_tiles<Rows, block_panels>(panels, panel_total, panel_bytes(), span_bytes, query.rows, next, pf, visit,
                                      tile_panel_outer(block_panels * panel_bytes()));
    };
    if constexpr (six_row_tiles<Arch, St>)
      if (query_wide == nullptr) return go.template operator()<6>();  // blocks of 6 and 5 rows (for_each_row_block)
#if ALIGNER_HAVE_WIDE && !defined(ALIGNER_DISABLE_SIX_ROW_TILE)
    if constexpr (width == 4)
      if (wide_avx2_) return go.template operator()<6>();  // the AVX2 tiles of 4-wide panels: the same row blocks
#endif
    go.template operator()<block_rows>();
  }

 private:
  tile_prefetch pf;
  bool wide_avx2_ = false;  ///< query_wide is for the AVX2 tiles of 4-wide panels (wide_avx2_runs), not the AVX-512 ones

  /// Storages whose words hold two components (bfloat16): vdpbf16ps where bf16_rounds_query, else both halves
  /// widened to float and two float FMAs with the float query.
  template <std::size_t R, std::size_t V, bool L2>
  ALIGNER_NOINLINE void tile_pairs(std::size_t i0, std::size_t p0, batch (&out)[R][V], prefetch_slice<L2> slice) const noexcept {
    const std::size_t pairs = (dim + 1) / 2, panel_stride = pairs * width;
    const auto* base = static_cast<const std::uint32_t*>(panels) + p0 * panel_stride;
#if defined(__AVX512BF16__)
    if constexpr (bf16_rounds_query<Arch>) {
      // vdpbf16ps: per lane acc += q_2c * d_2c + q_2c+1 * d_2c+1 (query rounded to bf16 as well).
      __m512 a[R][V];
      for (std::size_t r = 0; r != R; ++r)
        for (std::size_t v = 0; v != V; ++v) a[r][v] = _mm512_setzero_ps();
      const std::uint32_t* q[R];
      for (std::size_t r = 0; r != R; ++r) q[r] = query_bf16 + (i0 + r) * pairs;
      for (std::size_t c2 = 0; c2 != pairs; ++c2) {
        slice.tick();
        __m512i d[V];
        for (std::size_t v = 0; v != V; ++v) d[v] = _mm512_load_si512(base + v * panel_stride + c2 * width);
        for (std::size_t r = 0; r != R; ++r) {
          const __m512i qc = _mm512_set1_epi32(int(q[r][c2]));
          for (std::size_t v = 0; v != V; ++v) a[r][v] = _mm512_dpbf16_ps(a[r][v], (__m512bh)qc, (__m512bh)d[v]);
        }
      }
      slice.rest();
      for (std::size_t r = 0; r != R; ++r)
        for (std::size_t v = 0; v != V; ++v) out[r][v] = batch(a[r][v]);
      return;
    }
#endif
    batch acc[R][V];
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) acc[r][v] = batch(0.f);
    const float* q[R];
    for (std::size_t r = 0; r != R; ++r) q[r] = query.row(i0 + r);
    for (std::size_t c2 = 0; c2 != pairs; ++c2) {
      slice.tick();
      batch lo[V], hi[V];
      for (std::size_t v = 0; v != V; ++v) traits::template load_pair<Arch>(base + v * panel_stride, c2, lo[v], hi[v]);
      const bool has_high = 2 * c2 + 1 < dim;
      for (std::size_t r = 0; r != R; ++r) {
        const batch q0(q[r][2 * c2]);
        for (std::size_t v = 0; v != V; ++v) acc[r][v] = detail::fmadd(q0, lo[v], acc[r][v]);
        if (has_high) {
          const batch q1(q[r][2 * c2 + 1]);
          for (std::size_t v = 0; v != V; ++v) acc[r][v] = detail::fmadd(q1, hi[v], acc[r][v]);
        }
      }
    }
    slice.rest();
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) out[r][v] = acc[r][v];
  }

  /// Storages with one component per row of lanes (f32, f16, i8): broadcast-FMA over component rows widened to
  /// float, then the per-token scale where the storage has one. Accumulates in locals and writes `out` once
  /// (accumulating straight into the output array made GCC store every accumulator on every step: it cannot prove
  /// the array does not alias the panels).
  template <std::size_t R, std::size_t V, bool L2>
  ALIGNER_NOINLINE void tile_rows(std::size_t i0, std::size_t p0, batch (&out)[R][V], prefetch_slice<L2> slice) const noexcept {
    batch acc[R][V];
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) acc[r][v] = batch(0.f);
    const float* q[R];
    for (std::size_t r = 0; r != R; ++r) q[r] = query.row(i0 + r);
    const std::size_t stride = panel_bytes();
    const unsigned char* base = static_cast<const unsigned char*>(panels) + p0 * stride;
    auto step = [&](std::size_t c) ALIGNER_ALWAYS_INLINE_LAMBDA {
      batch d[V];
      for (std::size_t v = 0; v != V; ++v) {
        d[v] = traits::template load_row<Arch>(base + v * stride, c);
        in_register(d[v]);
      }
      for (std::size_t r = 0; r != R; ++r) {
        const batch qc(q[r][c]);
        for (std::size_t v = 0; v != V; ++v) acc[r][v] = detail::fmadd(qc, d[v], acc[r][v]);
      }
    };
    std::size_t c = 0;
    for (; c + 4 <= dim; c += 4) {
      step(c);
      slice.tick();
      step(c + 1);
      step(c + 2);
      slice.tick();
      step(c + 3);
    }
    for (; c != dim; ++c) {
      if (c & 1) slice.tick();
      step(c);
    }
    slice.rest();
    if constexpr (traits::scaled) {
      for (std::size_t v = 0; v != V; ++v) {
        const batch scale = traits::template load_scales<Arch>(base + v * stride);
        for (std::size_t r = 0; r != R; ++r) acc[r][v] *= scale;
      }
    }
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) out[r][v] = acc[r][v];
  }
};

/// Every q_i . d_j of a packed document into s_out (query.rows x panels * W, row stride s_stride floats; padding
/// lanes get 0). Used by explain.
template <class Arch = default_arch>
void similarity_rows(matrix_view<float> query, storage st, const void* panels, std::size_t doc_rows, float* s_out,
                     std::size_t s_stride, const std::uint32_t* query_bf16 = nullptr, const std::uint32_t* query_wide = nullptr) {
  aligned_vector<std::uint32_t> converted;
  query_wide = wide_query_or_convert<Arch>(st, query, query_wide, converted);
  visit_storage(st, [&]<storage S>(std::integral_constant<storage, S>) {
    const tile_engine<Arch, S> engine(panels, doc_rows, query, query_bf16, {}, query_wide);
    engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
      engine.template store_rows<R>(i0, p0, here, s_out, s_stride);
    });
  });
}

/// similarity_rows of float32 panels alone: only the float engine is compiled (explain of two float matrices).
template <class Arch = default_arch>
void similarity_rows_f32(matrix_view<float> query, const void* panels, std::size_t doc_rows, float* s_out, std::size_t s_stride,
                         const std::uint32_t* query_wide = nullptr) {
  aligned_vector<std::uint32_t> converted;
  query_wide = wide_query_or_convert<Arch>(storage::f32, query, query_wide, converted);
  const tile_engine<Arch, storage::f32> engine(panels, doc_rows, query, nullptr, {}, query_wide);
  engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
    engine.template store_rows<R>(i0, p0, here, s_out, s_stride);
  });
}

#ifdef ALIGNER_KERNEL_INSTANCE  // separate compilation (core/config.hpp)
ALIGNER_KERNEL_INSTANCE void similarity_rows_f32<default_arch>(matrix_view<float>, const void*, std::size_t, float*, std::size_t,
                                                               const std::uint32_t*);
ALIGNER_KERNEL_INSTANCE void similarity_rows<default_arch>(matrix_view<float>, storage, const void*, std::size_t, float*, std::size_t,
                                                           const std::uint32_t*, const std::uint32_t*);
#endif

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
