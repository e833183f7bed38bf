/** @file token_scan.hpp
 *  @brief Exact top-k inner products of query rows against every token of a packed run of panels: the engine of the
 *  exact MIPS backend (backends/exact.hpp).
 *
 *  One sweep (tile.hpp) over every token per block of 64 query rows: L2-sized spans, each scored by all row blocks
 *  of 4, the next span prefetched meanwhile. Each S tile is compared in registers with its rows' current k-th best
 *  score (mask_bits), so S never goes to memory; only survivors are appended to their row's candidate list, which
 *  is compacted to the best k whenever it reaches 2k + tokens / 256 (that slack within 64 .. 1024; bucket select,
 *  below). Amortised O(1) per survivor.
 *  Result order: score descending, ties toward the smaller token id (ranks_before). Tokens reach a row in increasing
 *  id order, so after a compaction a later token must beat the k-th best strictly.
 *  Complexity O(rows * tokens * dim). Scratch lives in a caller-owned `scan_workspace` (one per thread). */
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "../core/config.hpp"
#include "../core/types.hpp"
#include "layout.hpp"
#include "simd_compat.hpp"
#include "storage.hpp"
#include "amx.hpp"
#include "int8_vnni.hpp"
#include "tile.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// One candidate of a row (trivial, so a workspace's buffers are never initialised wholesale).
struct scan_candidate {
  float score;
  std::int64_t id;
};

/// Scratch of token_topk, reused across calls (one per thread).
struct scan_workspace {
  struct row_state {
    std::unique_ptr<scan_candidate[]> cand;  ///< [0, size) are candidates; room for one tile's appends past the limit
    std::size_t capacity = 0, size = 0;
    float threshold = -std::numeric_limits<float>::infinity();
  };
  std::vector<row_state> rows;
  std::vector<std::uint32_t> query_bf16;  ///< a query block's bf16 pairs (bf16 tokens)
  std::vector<std::uint32_t> query_i8;    ///< a query block's int8 form (i8 tokens on AMX-INT8)
  std::vector<std::uint32_t> query_i16;   ///< a query block's 16-bit form (i8 tokens on AVX512-VNNI)
  aligned_vector<std::uint32_t> query_wide;  ///< a query block expanded for the AVX-512 tiles of 4- and 8-wide panels (wide.hpp)
  aligned_vector<std::uint32_t> relaid;   ///< i8 panels re-laid for AMX-INT8 or VNNI, a group at a time
  std::vector<std::uint16_t> bucket_of;
  std::vector<scan_candidate> boundary;
  std::vector<float> rows_in;  ///< a caller's own scan rows (residual_codec::assign: tokens augmented with a 1)
  topk_result rows_out;        ///< and their candidates
};

namespace detail {

inline bool candidate_before(const scan_candidate& a, const scan_candidate& b) noexcept {
  return ranks_before(a.score, a.id, b.score, b.id);
}

/// Keeps the best `keep` (score desc, id asc) of a row's candidates by a bucket select: one pass finds the score
/// range, one counts the scores in B equal buckets of it, the bucket holding the keep-th score is found from the
/// top, everything above it is kept (a branch-free filter) and only that bucket's entries are ordered (nth_element).
/// The bucket index is a monotone function of the score, so "above" is exact and ties share a bucket.
/// B is the power of two at or above the candidate count, from 64 to 1024: a few dozen candidates (a nearest-centroid
/// scan keeps 8 of about 80) would otherwise pay for clearing and walking 1024 buckets, which took a fifth of
/// assign's time against 1,024 centroids. (nth_element over all candidates was 3-5x slower at k' = 4000.)
inline void compact_candidates(scan_workspace::row_state& st, std::size_t keep, scan_workspace& ws) {
  scan_candidate* c = st.cand.get();
  const std::size_t size = st.size;
  float lo = c[0].score, hi = lo;
  for (std::size_t i = 1; i != size; ++i) {
    lo = std::min(lo, c[i].score);
    hi = std::max(hi, c[i].score);
  }
  constexpr std::size_t max_buckets = 1024;
  const std::size_t buckets = std::clamp<std::size_t>(std::bit_ceil(size), 64, max_buckets);
  const float scale = float(buckets) / (hi - lo);
  if (!(hi > lo) || !(scale > 0.f) || !std::isfinite(scale)) {  // all equal, or a range beyond float
    std::nth_element(c, c + (keep - 1), c + size, candidate_before);
    st.size = keep;
    st.threshold = c[keep - 1].score;
    return;
  }
  std::uint32_t hist[max_buckets];
  std::fill_n(hist, buckets, 0u);
  ws.bucket_of.resize(size);
  for (std::size_t i = 0; i != size; ++i) {
    const std::size_t b = std::min(buckets - 1, std::size_t((c[i].score - lo) * scale));
    ws.bucket_of[i] = std::uint16_t(b);
    ++hist[b];
  }
  std::size_t above = 0, edge = buckets;  // above = entries in buckets > edge, fewer than keep
  while (edge-- != 0 && above + hist[edge] < keep) above += hist[edge];
  ws.boundary.clear();
  std::size_t kept = 0;
  for (std::size_t i = 0; i != size; ++i) {
    const scan_candidate e = c[i];
    if (ws.bucket_of[i] == edge) ws.boundary.push_back(e);
    c[kept] = e;  // kept <= i: in place
    kept += ws.bucket_of[i] > edge;
  }
  const std::size_t need = keep - above;  // 1 <= need <= boundary.size()
  std::nth_element(ws.boundary.begin(), ws.boundary.begin() + std::ptrdiff_t(need - 1), ws.boundary.end(), candidate_before);
  std::copy_n(ws.boundary.begin(), need, c + kept);
  st.size = keep;
  st.threshold = ws.boundary[need - 1].score;  // the keep-th best score
}

/// Budgets up to this many candidates keep each row's list sorted as it fills (insert_candidate) instead of
/// appending and compacting: a survivor past the first `keep` then costs an insertion into `keep` entries, and the
/// threshold rises with every insertion instead of once a compaction.
inline constexpr std::size_t insertion_keep = 16;

/// Inserts `c` into a row's sorted list of at most `keep` candidates (best first); when the list is full, `c`
/// replaces its last entry if it ranks before it, and the threshold becomes the new keep-th score.
inline void insert_candidate(scan_workspace::row_state& st, std::size_t keep, scan_candidate c) noexcept {
  scan_candidate* a = st.cand.get();
  std::size_t n = st.size;
  if (n == keep) {
    if (!candidate_before(c, a[n - 1])) return;
    --n;
  }
  std::size_t pos = n;
  for (; pos != 0 && candidate_before(c, a[pos - 1]); --pos) a[pos] = a[pos - 1];
  a[pos] = c;
  st.size = n + 1;
  if (st.size == keep) st.threshold = a[keep - 1].score;
}

}  // namespace detail

/// Exact top-k of every query row against the `tokens` tokens packed (storage St) at `panels`, best first, into
/// rows [0, queries.rows) of `out` (out.k == k; slots past `tokens` keep id -1 / score -inf). `accept`, when given,
/// restricts the result to the token ids it accepts (asked only for tokens that beat a row's running threshold).
/// Preconditions (unchecked): k >= 1, queries.cols == the panels' dim, values finite, panels 64-byte aligned.
/// The storage is a template argument (the exact backend scans float32, bfloat16 or int8): each instantiation is a
/// large function. bf16 tokens are scanned on AMX-BF16 tiles where amx_bf16_usable() (the query rounded to bf16
/// too); i8 tokens on AMX-INT8 where i8_on_amx() (the query in its two int8 terms, amx.hpp), on vpdpwssd tiles where
/// i8_on_vnni() (its 16-bit form, int8_vnni.hpp), else on the vector tiles with the float query: the scores are
/// those engines' S values, as the rerank computes them for the same panels.
template <storage St = storage::f32, class Arch = default_arch, class Accept = std::nullptr_t>
void token_topk(matrix_view<float> queries, const void* panels, std::size_t tokens, std::size_t k, topk_result& out,
                scan_workspace& ws, const Accept& accept = nullptr) {
  if (tokens == 0 || queries.rows == 0) return;
  constexpr std::size_t row_block = 64;
  const std::size_t keep = std::min(k, tokens);
  // 3k + 1024 and 6k + 1024 measured no faster; until a row's first compaction every token is appended, so the
  // slack shrinks with the scan (a nearest-centroid assignment over 16,384 centroids at k = 8: 64, not 1,024).
  const std::size_t limit = 2 * keep + std::clamp<std::size_t>(tokens / 256, 64, 1024);
  const bool sorted_rows = keep <= detail::insertion_keep;  // small budgets: sorted lists, no compactions
  if (ws.rows.size() < std::min(row_block, queries.rows)) ws.rows.resize(std::min(row_block, queries.rows));
  // make_engine(block) builds the engine of one block of query rows (its query forms converted into ws).
  auto scan = [&](auto make_engine) {
    for (std::size_t r0 = 0; r0 < queries.rows; r0 += row_block) {
      const std::size_t rows = std::min(row_block, queries.rows - r0);
      const matrix_view<float> block = queries.middle_rows(r0, rows);
      const auto engine = make_engine(block);
      using engine_t = std::decay_t<decltype(engine)>;
      using batch = typename engine_t::batch;
      constexpr std::size_t width = engine_t::width;
      const std::size_t capacity = limit + engine_t::block_panels * width;
      for (std::size_t i = 0; i != rows; ++i) {
        auto& row = ws.rows[i];
        if (row.capacity < capacity) {
          row.cand = std::make_unique_for_overwrite<scan_candidate[]>(capacity);
          row.capacity = capacity;
        }
        row.size = 0;
        row.threshold = -std::numeric_limits<float>::infinity();
      }
      engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
        engine_t::with_panels(p0, here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>, std::size_t p) {
          batch acc[R][V];
          engine.template tile<R, V>(i0, p, acc);
          const std::size_t live = std::min(R, rows - i0);  // AMX tiles: 16 rows, maybe past the block
          for (std::size_t r = 0; r != live; ++r) {
            auto& row = ws.rows[i0 + r];
            for (std::size_t v = 0; v != V; ++v) {
              const batch threshold(row.threshold);  // sorted rows raise it with every insertion
              const batch s = engine.mask_tail(acc[r][v], p + v);  // padding lanes: -inf, never a candidate
              std::uint64_t survivors = detail::mask_bits(s > threshold);
              if (survivors == 0) continue;
              alignas(64) float lane[width];
              s.store_aligned(lane);
              scan_candidate* cand = row.cand.get();
              const std::int64_t first = std::int64_t((p + v) * width);
              for (; survivors != 0; survivors &= survivors - 1) {  // lanes in increasing order: ids stay sorted
                const int l = std::countr_zero(survivors);
                if constexpr (!std::is_same_v<Accept, std::nullptr_t>)
                  if (!accept(first + l)) continue;
                if (sorted_rows)
                  detail::insert_candidate(row, keep, {lane[l], first + l});
                else
                  cand[row.size++] = {lane[l], first + l};
              }
            }
            if (row.size >= limit) detail::compact_candidates(row, keep, ws);  // never with sorted rows (size <= keep)
          }
        });
      });
      for (std::size_t i = 0; i != rows; ++i) {
        auto& row = ws.rows[i];
        if (row.size > keep) detail::compact_candidates(row, keep, ws);
        scan_candidate* first = row.cand.get();
        std::sort(first, first + row.size, detail::candidate_before);  // (a packed 64-bit key sort saved 1%: not kept)
        for (std::size_t t = 0; t != row.size; ++t) {
          out.ids[(r0 + i) * k + t] = first[t].id;
          out.scores[(r0 + i) * k + t] = first[t].score;
        }
      }
    }
  };
  auto vector_tiles = [&](matrix_view<float> block) {
    const std::uint32_t* block_bf16 = St == storage::bf16 && bf16_rounds_query<Arch> ? bf16_pairs_or_convert(block, nullptr, ws.query_bf16) : nullptr;
    return tile_engine<Arch, St>(panels, tokens, block, block_bf16, {}, wide_query_or_convert<Arch>(St, block, nullptr, ws.query_wide));
  };
  auto relaid = [&](std::size_t words) {  // the int8 engines' scratch
    if (ws.relaid.size() < words) ws.relaid.resize(words);
    return ws.relaid.data();
  };
  [&] {  // the engine this storage runs on here
    if constexpr (St == storage::bf16 && amx_tiles_fit<Arch>)
      if (bf16_on_amx<Arch>())
        return scan([&](matrix_view<float> block) {
          return amx_bf16_engine<Arch>(panels, tokens, block, bf16_pairs_or_convert(block, nullptr, ws.query_bf16));
        });
    if constexpr (St == storage::i8) {
      if constexpr (amx_tiles_fit<Arch>)
        if (i8_on_amx<Arch>())
          return scan([&](matrix_view<float> block) {
            return amx_i8_engine<Arch>(panels, tokens, block, i8_quads_or_convert(block, nullptr, ws.query_i8),
                                       relaid(amx_i8_engine<Arch>::scratch_words(block.cols)));
          });
      if (i8_on_vnni<Arch>())
        return scan([&](matrix_view<float> block) {
          return vnni_i8_engine<Arch>(panels, tokens, block, i16_pairs_or_convert(block, nullptr, ws.query_i16),
                                      relaid(vnni_i8_engine<Arch>::scratch_words(block.cols)));
        });
    }
    scan(vector_tiles);
  }();
  if (limit > (std::size_t(1) << 16))  // do not keep a large k's buffers alive in a long-lived workspace
    for (auto& row : ws.rows) row = {};
}

#ifdef ALIGNER_KERNEL_INSTANCE  // separate compilation (core/config.hpp): each storage the exact backend scans, unfiltered
                                // and with its id filter (backends/concepts.hpp's id_filter)
#define ALIGNER_TOKEN_TOPK_INSTANCE(St, Accept)                                                                        \
  ALIGNER_KERNEL_INSTANCE void token_topk<St, default_arch, Accept>(matrix_view<float>, const void*, std::size_t, std::size_t, \
                                                                    topk_result&, scan_workspace&, const Accept&)
ALIGNER_TOKEN_TOPK_INSTANCE(storage::f32, std::nullptr_t);
ALIGNER_TOKEN_TOPK_INSTANCE(storage::bf16, std::nullptr_t);
ALIGNER_TOKEN_TOPK_INSTANCE(storage::i8, std::nullptr_t);
ALIGNER_TOKEN_TOPK_INSTANCE(storage::f32, std::function<bool(std::int64_t)>);
ALIGNER_TOKEN_TOPK_INSTANCE(storage::bf16, std::function<bool(std::int64_t)>);
ALIGNER_TOKEN_TOPK_INSTANCE(storage::i8, std::function<bool(std::int64_t)>);
#undef ALIGNER_TOKEN_TOPK_INSTANCE
#endif

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
