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

  /// Folds V <= 4 new batches (values s, indices id) into the state at st / sid. Fresh: the state is empty (not
  /// read; written as the fold into an all -inf state would leave it, its first V entries the sorted new batches).
  template <std::size_t K, bool Indexed, std::size_t V, bool Fresh = false>
  ALIGNER_ALWAYS_INLINE static void fold(batch (&s)[V], batch (&id)[V], float* st, float* sid) noexcept {
    static_assert(V >= 1 && V <= 4, "fold takes 1 to 4 batches");
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
    constexpr std::size_t L = V < K ? V : K;
    if constexpr (Fresh) {  // the V new batches are sorted lane-wise now (V <= 4: the networks above sort fully)
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
  /// a multiple of width. Rows go width at a time: after the first butterfly stage a row's list fills each half of
  /// the batch twice over, so two rows' halves are blended into one batch and merged on together, then four rows'
  /// quarters, ...; 2 * width - 2 stages per width rows instead of width * log2(width), and the same lists.
  template <std::size_t K, bool Indexed>
  static void merge_lanes_rows(const float* st, const float* sid, std::size_t rows, float* out_v, float* out_id,
                               std::size_t out_stride) noexcept {
    for (std::size_t r0 = 0; r0 < rows; r0 += width) {
      batch a[K], ia[K];
      merged_group<K, Indexed, width>(st, sid, r0, rows, a, ia);
      // lane l now holds row r0 + bitreverse(l): reverse the lanes back into row order.
      using index_batch = xsimd::batch<std::uint32_t, Arch>;
      constexpr auto order = xsimd::make_batch_constant<index_batch, reversed_bits>();
      for (std::size_t k = 0; k != K; ++k) {
        if constexpr (width > 1) {
          xsimd::swizzle(a[k], order).store_unaligned(out_v + k * out_stride + r0);
          if constexpr (Indexed) xsimd::swizzle(ia[k], order).store_unaligned(out_id + k * out_stride + r0);
        } else {
          a[k].store_unaligned(out_v + k * out_stride + r0);
          if constexpr (Indexed) ia[k].store_unaligned(out_id + k * out_stride + r0);
        }
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
    for (std::size_t k = 0; k != K; ++k) exchange<Indexed>(a[k], ia[k], b[k], ib[k]);
    bitonic_merge<K, Indexed>(a, ia);
  }

  /// Rows r0 .. r0 + G - 1 merged through the stages width/2 .. width/(2G) and packed into one batch set: lane l
  /// holds row r0 + (l's top log2(G) bits, reversed) in every lane of its width/G-lane group. Rows past `rows` are
  /// empty (-inf).
  template <std::size_t K, bool Indexed, std::size_t G>
  static void merged_group(const float* st, const float* sid, std::size_t r0, std::size_t rows, batch (&a)[K],
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
      if constexpr (width > 1) lane_stage<K, Indexed, width / 2>(a, ia);
    } else {
      batch b[K], ib[K];
      merged_group<K, Indexed, G / 2>(st, sid, r0, rows, a, ia);
      merged_group<K, Indexed, G / 2>(st, sid, r0 + G / 2, rows, b, ib);
      // Both halves went through stage width / G: a lane equals its partner across bit width / G, so the lanes
      // with that bit set can carry the second group.
      constexpr auto second = xsimd::make_batch_bool_constant<batch, lanes_with_bit<width / G>>();
      for (std::size_t k = 0; k != K; ++k) {
        a[k] = xsimd::select(second, b[k], a[k]);
        if constexpr (Indexed) ia[k] = xsimd::select(second, ib[k], ia[k]);
      }
      if constexpr (width / G > 1) lane_stage<K, Indexed, width / (2 * G)>(a, ia);
    }
  }

  template <std::size_t B>
  struct lanes_with_bit {
    static constexpr bool get(std::size_t i, std::size_t) { return (i & B) != 0; }
  };
  struct reversed_bits {
    static constexpr std::uint32_t get(std::size_t i, std::size_t n) {
      std::uint32_t r = 0;
      for (std::size_t b = 1; b < n; b <<= 1) r = (r << 1) | ((i & b) ? 1u : 0u);
      return r;
    }
  };

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
