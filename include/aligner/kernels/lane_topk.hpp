/** @file lane_topk.hpp
 *  @brief Lane-wise running top-K in registers: each of the W lanes of a batch keeps its own K best (value, index)
 *  pairs, sorted best first, as K batches (a "state" of K * W floats, plus K * W indices when Indexed).
 *
 *  - `fold` merges V new batches into a state: the new batches are sorted lane-wise by a small sorting network,
 *    then one bitonic merge combines them with the state (the element-wise better of state_k and new_(K-1-k) is a
 *    bitonic sequence holding the top K of both). O(K log K) compare/blends per fold, no branches.
 *  - `merge_lanes` picks the best kk <= K of all W * K entries of a state by a butterfly of log2(W) bitonic merges
 *    across lanes (lane l merges its list with lane l ^ S's at stage S), leaving the overall best K in every lane.
 *  Order: value descending, then index ascending (`Indexed`); value only when !Indexed. K is a power of two. */
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

template <class Arch>
struct lane_topk {
  using batch = xsimd::batch<float, Arch>;
  static constexpr std::size_t width = batch::size;

  /// Compare-exchange of (value, index) pairs, lane-wise: (a, ia) receives the better of the two (greater value;
  /// equal values: smaller index; value only when !Indexed), (b, ib) the other.
  template <bool Indexed>
  ALIGNER_ALWAYS_INLINE static void exchange(batch& a, batch& ia, batch& b, batch& ib) noexcept {
    if constexpr (Indexed) {
      const auto a_first = (a > b) || ((a == b) && (ia < ib));
      const batch hi = xsimd::select(a_first, a, b), lo = xsimd::select(a_first, b, a);
      const batch ihi = xsimd::select(a_first, ia, ib), ilo = xsimd::select(a_first, ib, ia);
      a = hi, b = lo, ia = ihi, ib = ilo;
    } else {
      const batch hi = xsimd::max(a, b), lo = xsimd::min(a, b);
      a = hi, b = lo;
    }
  }

  /// Sorts a bitonic sequence of K batches lane-wise, best first.
  template <std::size_t K, bool Indexed>
  ALIGNER_ALWAYS_INLINE static void bitonic_merge(batch (&a)[K], batch (&ia)[K]) noexcept {
    // Compile-time strides and indices, so the arrays stay in registers (a runtime loop kept them on the stack).
    [&]<std::size_t... L>(std::index_sequence<L...>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      (bitonic_level<K, (K >> (L + 1)), Indexed>(a, ia), ...);
    }(std::make_index_sequence<std::bit_width(K) - 1>{});
  }

  /// Folds V <= 8 new batches (values s, indices id) into the state at st / sid. Fresh: the state is empty (not
  /// read; written as the fold into an all -inf state would leave it, its first V entries the sorted new batches).
  /// K = 1 takes the best of the V batches (V - 1 exchanges into s[0]); otherwise 5 to 8 batches (the AMX-BF16 tiles
  /// of 8 panels) are sorted by Batcher's 19-exchange network for 8, the missing ones as -inf.
  template <std::size_t K, bool Indexed, std::size_t V, bool Fresh = false>
  ALIGNER_INLINE_WHEN_OPTIMIZING static void fold(batch (&s)[V], batch (&id)[V], float* st, float* sid) noexcept {
    static_assert(V >= 1 && V <= 8, "fold takes 1 to 8 batches");
    if constexpr (K == 1) {
      for (std::size_t v = 1; v != V; ++v) exchange<Indexed>(s[0], id[0], s[v], id[v]);
      fold_sorted<K, Indexed, V, Fresh>(s, id, st, sid);
      return;
    } else if constexpr (V > 4) {
      batch s8[8], id8[8];
      for (std::size_t v = 0; v != 8; ++v) {
        s8[v] = v < V ? s[v < V ? v : 0] : batch(-std::numeric_limits<float>::infinity());
        id8[v] = v < V ? id[v < V ? v : 0] : batch(0.f);
      }
      sort8<Indexed>(s8, id8);
      fold_sorted<K, Indexed, 8, Fresh>(s8, id8, st, sid);
      return;
    }
    if constexpr (V == 2) exchange<Indexed>(s[0], id[0], s[1], id[1]);
    if constexpr (V == 3) {
      exchange<Indexed>(s[0], id[0], s[1], id[1]);
      exchange<Indexed>(s[1], id[1], s[2], id[2]);
      exchange<Indexed>(s[0], id[0], s[1], id[1]);
    }
    if constexpr (V == 4) {
      exchange<Indexed>(s[0], id[0], s[1], id[1]);
      exchange<Indexed>(s[2], id[2], s[3], id[3]);
      exchange<Indexed>(s[0], id[0], s[2], id[2]);
      exchange<Indexed>(s[1], id[1], s[3], id[3]);
      exchange<Indexed>(s[1], id[1], s[2], id[2]);
    }
    fold_sorted<K, Indexed, V, Fresh>(s, id, st, sid);
  }

  /// fold's second half: s[0 .. L) (L = min(V, K)) holds the best L of the new batches lane-wise, best first (the
  /// rest of s is not read); they go into the state.
  template <std::size_t K, bool Indexed, std::size_t V, bool Fresh>
  ALIGNER_ALWAYS_INLINE static void fold_sorted(batch (&s)[V], batch (&id)[V], float* st, float* sid) noexcept {
    constexpr std::size_t L = V < K ? V : K;
    if constexpr (Fresh) {  // the first L entries of the state are s[0 .. L), the rest -inf
      for (std::size_t k = 0; k != K; ++k) {
        (k < L ? s[k < L ? k : 0] : batch(-std::numeric_limits<float>::infinity())).store_aligned(st + k * width);
        if constexpr (Indexed) (k < L ? id[k < L ? k : 0] : batch(0.f)).store_aligned(sid + k * width);
      }
      return;
    }
    batch a[K], ia[K];
    for (std::size_t k = 0; k != K; ++k) {
      a[k] = batch::load_aligned(st + k * width);
      ia[k] = Indexed ? batch::load_aligned(sid + k * width) : batch(0.f);
    }
    for (std::size_t t = 0; t != L; ++t) exchange<Indexed>(a[K - 1 - t], ia[K - 1 - t], s[t], id[t]);
    bitonic_merge<K, Indexed>(a, ia);
    for (std::size_t k = 0; k != K; ++k) {
      a[k].store_aligned(st + k * width);
      if constexpr (Indexed) ia[k].store_aligned(sid + k * width);
    }
  }

  /// The best kk <= K entries of a state, best first, into out as (value, index) (index 0 when !Indexed).
  template <std::size_t K, bool Indexed>
  static void merge_lanes(const float* st, const float* sid, std::pair<float, float>* out, std::size_t kk) noexcept {
    batch a[K], ia[K];
    for (std::size_t k = 0; k != K; ++k) {
      a[k] = batch::load_aligned(st + k * width);
      ia[k] = Indexed ? batch::load_aligned(sid + k * width) : batch(0.f);
    }
    [&]<std::size_t... L>(std::index_sequence<L...>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      (lane_stage<K, Indexed, (width >> (L + 1))>(a, ia), ...);
    }(std::make_index_sequence<std::bit_width(width) - 1>{});
    alignas(64) float v[width], id[width];
    for (std::size_t k = 0; k != kk; ++k) {
      a[k].store_aligned(v);
      ia[k].store_aligned(id);
      out[k] = {v[0], id[0]};
    }
  }

  /// merge_lanes for `rows` states at once (state i at st + i * K * width, its indices at sid likewise): row i's best
  /// K entries, best first, go to out_v[k * out_stride + i] (and out_id) for k < K; out_stride >= rows rounded up to
  /// a multiple of width. Rows go width at a time, halving as they pair up: two rows' states give one batch set whose
  /// first half holds, in each lane, the merge of row r's lanes l and l + width/2 and whose second half the same for
  /// row r + 1 (two two-source lane permutes gather the halves, one lane-wise merge combines them); two such sets give
  /// four rows in quarters, ...; after log2(width) levels lane i holds row r0 + i. width - 1 merges per width rows (the
  /// butterfly of merge_lanes takes log2(width) per row), and the same lists.
  template <std::size_t K, bool Indexed>
  static void merge_lanes_rows(const float* st, const float* sid, std::size_t rows, float* out_v, float* out_id,
                               std::size_t out_stride) noexcept {
    for (std::size_t r0 = 0; r0 < rows; r0 += width) {
      batch a[K], ia[K];
      packed_rows<K, Indexed, width>(st, sid, r0, rows, a, ia);
      for (std::size_t k = 0; k != K; ++k) {
        a[k].store_unaligned(out_v + k * out_stride + r0);
        if constexpr (Indexed) ia[k].store_unaligned(out_id + k * out_stride + r0);
      }
    }
  }

 private:
  /// One butterfly stage: every lane l merges its K-list with lane l ^ S's (both sorted best first).
  template <std::size_t K, bool Indexed, std::size_t S>
  ALIGNER_ALWAYS_INLINE static void lane_stage(batch (&a)[K], batch (&ia)[K]) noexcept {
    using index_batch = xsimd::batch<std::uint32_t, Arch>;
    constexpr auto mask = xsimd::make_batch_constant<index_batch, xor_lanes<S>>();
    batch b[K], ib[K];
    for (std::size_t k = 0; k != K; ++k) {
      b[k] = xsimd::swizzle(a[K - 1 - k], mask);
      if constexpr (Indexed) ib[k] = xsimd::swizzle(ia[K - 1 - k], mask);
    }
    merge_reversed<K, Indexed>(a, ia, b, ib);
  }

  /// a (sorted best first) becomes the best K of a and b (sorted worst first), sorted: the element-wise better of
  /// a_k and b_k is a bitonic sequence holding them.
  template <std::size_t K, bool Indexed>
  ALIGNER_ALWAYS_INLINE static void merge_reversed(batch (&a)[K], batch (&ia)[K], batch (&b)[K], batch (&ib)[K]) noexcept {
    for (std::size_t k = 0; k != K; ++k) exchange<Indexed>(a[k], ia[k], b[k], ib[k]);
    bitonic_merge<K, Indexed>(a, ia);
  }

  /// Rows r0 .. r0 + G - 1, each merged down to width / G lanes, packed in row order: row r0 + t in lanes
  /// [t * width / G, (t + 1) * width / G), each lane a sorted K-list. Rows past `rows` are empty (-inf).
  template <std::size_t K, bool Indexed, std::size_t G>
  static void packed_rows(const float* st, const float* sid, std::size_t r0, std::size_t rows, batch (&a)[K],
                          batch (&ia)[K]) noexcept {
    if constexpr (G == 1) {
      for (std::size_t k = 0; k != K; ++k) {
        if (r0 < rows) {
          a[k] = batch::load_aligned(st + (r0 * K + k) * width);
          ia[k] = Indexed ? batch::load_aligned(sid + (r0 * K + k) * width) : batch(0.f);
        } else {
          a[k] = batch(-std::numeric_limits<float>::infinity());
          ia[k] = batch(0.f);
        }
      }
    } else {
      batch p[K], ip[K], q[K], iq[K];
      packed_rows<K, Indexed, G / 2>(st, sid, r0, rows, p, ip);
      packed_rows<K, Indexed, G / 2>(st, sid, r0 + G / 2, rows, q, iq);
      // Each row's 2 * width / G lanes of p (rows 0 .. G/2 - 1) and q (rows G/2 .. G - 1): the lower half of every
      // row's lanes into a, the upper half into b in reverse list order, so that a lane-wise merge pairs them.
      batch b[K], ib[K];
      for (std::size_t k = 0; k != K; ++k) {
        a[k] = two_source<G, false>(p[k], q[k]);
        b[K - 1 - k] = two_source<G, true>(p[k], q[k]);
        if constexpr (Indexed) {
          ia[k] = two_source<G, false>(ip[k], iq[k]);
          ib[K - 1 - k] = two_source<G, true>(ip[k], iq[k]);
        } else {
          ia[k] = ib[K - 1 - k] = batch(0.f);
        }
      }
      merge_reversed<K, Indexed>(a, ia, b, ib);
    }
  }

  /// Lane j of the level that packs G rows (each in width / G lanes, from G / 2 rows of p and G / 2 of q, each in
  /// 2 * width / G lanes): which lane of its source it takes (the lower or, when Upper, the upper half of its row's
  /// lanes), and whether that source is q.
  template <std::size_t G, bool Upper>
  struct half_lane {
    static constexpr std::uint32_t get(std::size_t j, std::size_t) {
      const std::size_t c_out = width / G, row = j / c_out, i = j % c_out;
      return std::uint32_t((row % (G / 2)) * 2 * c_out + i + (Upper ? c_out : 0));
    }
  };
  template <std::size_t G>
  struct from_q {
    static constexpr bool get(std::size_t j, std::size_t) { return j / (width / G) >= G / 2; }
  };

  /// The lanes of half_lane<G, Upper> from p and q (the lower half of the lanes always from p, the upper from q): one
  /// vpermt2ps with AVX-512, a vshufps of two vperm2f128 with 8 lanes, one shufps with 4, else two permutes and a blend.
  template <std::size_t G, bool Upper>
  ALIGNER_ALWAYS_INLINE static batch two_source(const batch& p, const batch& q) noexcept {
#if defined(__AVX512F__)
    if constexpr (width == 16 && std::is_base_of_v<xsimd::avx512f, Arch>) {
      struct permute_index {
        alignas(64) std::uint32_t lane[16];
      };
      static constexpr permute_index index = [] {  // bit 4 picks q
        permute_index t{};
        for (std::size_t j = 0; j != 16; ++j) t.lane[j] = half_lane<G, Upper>::get(j, 16) | (from_q<G>::get(j, 16) ? 16u : 0u);
        return t;
      }();
      return batch(_mm512_permutex2var_ps(p, _mm512_load_si512(index.lane), q));
    } else
#endif
#if defined(__AVX__)
    if constexpr (width == 8 && std::is_base_of_v<xsimd::avx, Arch>) {
      // t = (p's lanes 0-3, q's 0-3), u = (p's 4-7, q's 4-7); each half of the result takes two lanes of t and two of u
      // (the same two in both halves): one vshufps (the halves' permutes are shared by both calls of a level).
      const __m256 t = _mm256_permute2f128_ps(p, q, 0x20), u = _mm256_permute2f128_ps(p, q, 0x31);
      if constexpr (G == 2) {
        return batch(Upper ? u : t);
      } else {
        constexpr int imm = int((half_lane<G, Upper>::get(0, 8) & 3) | ((half_lane<G, Upper>::get(1, 8) & 3) << 2) |
                                ((half_lane<G, Upper>::get(2, 8) & 3) << 4) | ((half_lane<G, Upper>::get(3, 8) & 3) << 6));
        return batch(_mm256_shuffle_ps(t, u, imm));
      }
    } else
#endif
#if defined(__SSE2__)
    if constexpr (width == 4 && std::is_base_of_v<xsimd::sse2, Arch>) {  // lanes 0-1 from p, 2-3 from q: one shufps
      constexpr int imm = int(half_lane<G, Upper>::get(0, 4) | (half_lane<G, Upper>::get(1, 4) << 2) |
                              (half_lane<G, Upper>::get(2, 4) << 4) | (half_lane<G, Upper>::get(3, 4) << 6));
      return batch(_mm_shuffle_ps(p, q, imm));
    } else
#endif
    {
      using index_batch = xsimd::batch<std::uint32_t, Arch>;
      constexpr auto lanes = xsimd::make_batch_constant<index_batch, half_lane<G, Upper>>();
      constexpr auto second = xsimd::make_batch_bool_constant<batch, from_q<G>>();
      return xsimd::select(second, xsimd::swizzle(q, lanes), xsimd::swizzle(p, lanes));
    }
  }

  /// Sorts 8 batches lane-wise, best first: Batcher's odd-even merge sort network (19 exchanges).
  template <bool Indexed>
  ALIGNER_ALWAYS_INLINE static void sort8(batch (&s)[8], batch (&id)[8]) noexcept {
    constexpr int net[19][2] = {{0, 1}, {2, 3}, {4, 5}, {6, 7}, {0, 2}, {1, 3}, {4, 6}, {5, 7}, {1, 2}, {5, 6},
                                {0, 4}, {1, 5}, {2, 6}, {3, 7}, {2, 4}, {3, 5}, {1, 2}, {3, 4}, {5, 6}};
    [&]<std::size_t... E>(std::index_sequence<E...>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      (exchange<Indexed>(s[net[E][0]], id[net[E][0]], s[net[E][1]], id[net[E][1]]), ...);
    }(std::make_index_sequence<19>{});
  }

  template <std::size_t S>
  struct xor_lanes {
    static constexpr std::uint32_t get(std::size_t i, std::size_t) { return std::uint32_t(i ^ S); }
  };

  template <std::size_t K, std::size_t D, bool Indexed>
  ALIGNER_ALWAYS_INLINE static void bitonic_level(batch (&a)[K], batch (&ia)[K]) noexcept {
    [&]<std::size_t... I>(std::index_sequence<I...>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      ((void)((I & D) == 0 ? (exchange<Indexed>(a[I], ia[I], a[(I | D)], ia[(I | D)]), 0) : 0), ...);
    }(std::make_index_sequence<K>{});
  }
};

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
