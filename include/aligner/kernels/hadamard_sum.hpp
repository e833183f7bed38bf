/** @file hadamard_sum.hpp
 *  @brief The fused S∘A row reduction: for every query token i, the sum of its k largest similarities.
 *
 *  For query rows q_i and document tokens d_j (j < doc_rows), with S_ij = q_i . d_j and optional document
 *  weights w_j (salience; 1 when absent), the kernel returns per query row
 *
 *      row_sum_i = Σ_{j ∈ top_k(S_i)} w_j S_ij,     row_z_i = Σ_{j ∈ top_k(S_i)} w_j
 *
 *  where top_k(S_i) holds the k largest entries of row i, ties toward the smaller j. A is never
 *  materialised: S is computed tile by tile (R query rows x V panels of W document tokens, broadcast-FMA
 *  register blocking over the packed panel layout of panels.hpp), and each tile is folded straight into a
 *  lane-wise running top-K (K = the next of 1, 2, 4, 8, 16 at or above k); the W*K survivors of a row hold
 *  its global top-k, which a final selection picks. Budgets k > 16 compute the row of S into a buffer and
 *  select with nth_element. Complexity O(n * m * dim) FLOPs plus O(n * m * K) compare/blend operations.
 *  Thread-safe: per-thread scratch. */
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include "../core/config.hpp"
#include "../core/types.hpp"
#include "panels.hpp"
#include "simd_compat.hpp"

namespace aligner::ref {

/// Scalar specification of the kernel, in double: row sums of the top-k similarities (ties toward smaller j).
/// `doc_weights` may be null (all ones). `k` is clamped to doc.rows.
inline void aligned_row_sums(matrix_view<float> query, matrix_view<float> doc, std::size_t k,
                             const float* doc_weights, double* row_sum, double* row_z) {
  const std::size_t m = doc.rows;
  k = std::min(k, m);
  std::vector<double> s(m);
  std::vector<std::size_t> order(m);
  for (std::size_t i = 0; i != query.rows; ++i) {
    for (std::size_t j = 0; j != m; ++j) {
      double acc = 0.0;
      for (std::size_t c = 0; c != query.cols; ++c) acc += double(query.row(i)[c]) * double(doc.row(j)[c]);
      s[j] = acc;
    }
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return s[a] > s[b]; });
    double sum = 0.0, z = 0.0;
    for (std::size_t t = 0; t != k; ++t) {
      const double w = doc_weights ? double(doc_weights[order[t]]) : 1.0;
      sum += w * s[order[t]];
      z += w;
    }
    row_sum[i] = sum;
    row_z[i] = z;
  }
}

}  // namespace aligner::ref

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

/// What a caller scores after the current document: its packed bytes are prefetched while the current one is
/// scored (optional; an empty hint prefetches nothing past the document).
struct prefetch_hint {
  const void* data = nullptr;
  std::size_t bytes = 0;
};

/// Kernel over a packed document (see panels.hpp). Preconditions (unchecked): 1 <= k, query.cols == dim,
/// doc_rows < 2^24, panels 64-byte aligned, all values finite.
///
/// The multi-budget form takes B budgets and writes row_sum[i * B + b], row_z[i * B + b] for budget b: one pass
/// over S serves a whole grid of Top-k / Top-p strategies (the sums are prefix sums of one sorted top list).
struct hadamard_rows_kernel {
  template <class Arch>
  void operator()(Arch, matrix_view<float> query, const float* panels, std::size_t doc_rows, std::size_t k,
                  const float* doc_weights, double* row_sum, double* row_z) const {
    const std::size_t budgets[] = {k};
    (*this)(Arch{}, query, panels, doc_rows, std::span<const std::size_t>(budgets), doc_weights, row_sum, row_z);
  }
  template <class Arch>
  void operator()(Arch, matrix_view<float> query, const float* panels, std::size_t doc_rows,
                  std::span<const std::size_t> budgets, const float* doc_weights, double* row_sum, double* row_z,
                  prefetch_hint next = {}) const;
};

namespace detail {

template <class Arch, storage St = storage::f32>
struct hadamard_impl {
  using batch = xsimd::batch<float, Arch>;
  static constexpr std::size_t width = batch::size;
  // Register blocking: 4 query rows x (4 panels with 32 vector registers, 2 with 16).
  static constexpr std::size_t block_rows = 4;
  static constexpr std::size_t block_panels = sizeof(batch) >= 64 ? 4 : 2;

  const void* panels;  ///< packed panels in storage St (kernels/panels.hpp)
  std::size_t dim, doc_rows, panel_total;
  matrix_view<float> query;
  const std::uint32_t* query_bf16 = nullptr;  ///< query rows as bf16 pairs (stride (dim + 1) / 2), AVX512-BF16 path
  prefetch_hint next{};                       ///< what the caller scores after this document (may be empty)

  /// Bytes per packed panel, and the span of panels scored together (kept in L2; see run_topk).
  std::size_t panel_bytes() const noexcept { return panel_words(St, dim, width) * 4; }
  static constexpr std::size_t span_bytes = std::size_t(256) << 10;

  static void prefetch_line(const char* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 0, 3);
#else
    (void)p;
#endif
  }

  /// The lines the current tile prefetches, [pf_at, pf_stop): sweep sets them before each tile, the tile issues
  /// one every other component step (then the rest at its end). Spread out like this the prefetches never fill
  /// the core's miss buffers; issued back to back before each tile they stalled it (7% slower on Zen 4).
  mutable const char* pf_at = nullptr;
  mutable const char* pf_stop = nullptr;
  ALIGNER_ALWAYS_INLINE void prefetch_tick() const noexcept {
    if (pf_at < pf_stop) {
      prefetch_line(pf_at);
      pf_at += 64;
    }
  }
  void prefetch_rest() const noexcept {
    for (; pf_at < pf_stop; pf_at += 64) prefetch_line(pf_at);
  }

  /// acc[r][v] = S tile of rows i0 + r and panel p0 + v.
  template <std::size_t R, std::size_t V>
  void tile(std::size_t i0, std::size_t p0, batch (&acc)[R][V]) const noexcept {
    if constexpr (St == storage::bf16)
      tile_bf16<R, V>(i0, p0, acc);
    else
      tile_decoded<R, V>(i0, p0, acc);
  }

  /// bfloat16 panels: each 32-bit word holds two components of one token.
  template <std::size_t R, std::size_t V>
  ALIGNER_NOINLINE void tile_bf16(std::size_t i0, std::size_t p0, batch (&out)[R][V]) const noexcept {
    using words = xsimd::batch<std::uint32_t, Arch>;
    batch acc[R][V];
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) acc[r][v] = batch(0.f);
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
        prefetch_tick();
        __m512i d[V];
        for (std::size_t v = 0; v != V; ++v) d[v] = _mm512_load_si512(base + v * panel_stride + c2 * width);
        for (std::size_t r = 0; r != R; ++r) {
          const __m512i qc = _mm512_set1_epi32(int(q[r][c2]));
          for (std::size_t v = 0; v != V; ++v) a[r][v] = _mm512_dpbf16_ps(a[r][v], (__m512bh)qc, (__m512bh)d[v]);
        }
      }
      prefetch_rest();
      for (std::size_t r = 0; r != R; ++r)
        for (std::size_t v = 0; v != V; ++v) out[r][v] = batch(a[r][v]);
      return;
    }
#endif
    // Portable: decode the two halves to float (a shift and a mask) and use float FMAs with the float query.
    const float* q[R];
    for (std::size_t r = 0; r != R; ++r) q[r] = query.row(i0 + r);
    const words high_mask(0xffff0000u);
    for (std::size_t c2 = 0; c2 != pairs; ++c2) {
      prefetch_tick();
      batch lo[V], hi[V];
      for (std::size_t v = 0; v != V; ++v) {
        const words w = words::load_aligned(base + v * panel_stride + c2 * width);
        lo[v] = xsimd::bitwise_cast<batch>(words(w << 16));
        hi[v] = xsimd::bitwise_cast<batch>(words(w & high_mask));
      }
      const bool has_high = 2 * c2 + 1 < dim;
      for (std::size_t r = 0; r != R; ++r) {
        const batch q0(q[r][2 * c2]);
        for (std::size_t v = 0; v != V; ++v) acc[r][v] = xsimd::fma(q0, lo[v], acc[r][v]);
        if (has_high) {
          const batch q1(q[r][2 * c2 + 1]);
          for (std::size_t v = 0; v != V; ++v) acc[r][v] = xsimd::fma(q1, hi[v], acc[r][v]);
        }
      }
    }
    prefetch_rest();
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) out[r][v] = acc[r][v];
  }

  /// Component row c of a panel (W lanes) widened to float: f32 as is, f16 through F16C where the build has it,
  /// i8 sign-extended and converted (the per-token scale is applied to the finished dot products).
#if defined(__SSE2__)
  static constexpr bool sse2_build = true;
#else
  static constexpr bool sse2_build = false;
#endif

  ALIGNER_ALWAYS_INLINE static batch load_row(const unsigned char* panel, std::size_t c) noexcept {
    if constexpr (St == storage::f32) {
      return batch::load_aligned(reinterpret_cast<const float*>(panel) + c * width);
    } else if constexpr (St == storage::f16) {
      const unsigned char* p = panel + c * width * 2;
#if defined(__AVX512F__)
      if constexpr (width == 16) return batch(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__)
      if constexpr (width == 8) return batch(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
      if constexpr (width == 4) return batch(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#endif
      // Portable: widen to 32 bits, then shift into float position and scale by 2^112 (exact for normal and
      // subnormal halves); Inf/NaN get the float exponent; the sign goes back on last.
      using words = xsimd::batch<std::uint32_t, Arch>;
      alignas(64) std::uint32_t wide[width];
      if (!(width == 4 && sse2_build))
        for (std::size_t l = 0; l != width; ++l) {
          std::uint16_t h;
          std::memcpy(&h, p + 2 * l, 2);
          wide[l] = h;
        }
      words h;
#if defined(__SSE2__)
      if constexpr (width == 4)
        h = words(_mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128()));
      else
#endif
        h = words::load_aligned(wide);
      const words em = h & words(0x7fffu), sign = (h & words(0x8000u)) << 16;
      const words finite = xsimd::bitwise_cast<words>(batch(xsimd::bitwise_cast<batch>(words(em << 13)) * batch(5.192296858534828e33f)));
      const words special = words(0x7f800000u) | words((em & words(0x3ffu)) << 13);
      return xsimd::bitwise_cast<batch>(words(xsimd::select(em >= words(0x7c00u), special, finite) | sign));
    } else {
      static_assert(St == storage::i8);
      const unsigned char* p = panel + width * 4 + c * width;
#if defined(__AVX512F__)
      if constexpr (width == 16)
        return batch(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__AVX2__)
      if constexpr (width == 8)
        return batch(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__SSE2__)
      if constexpr (width == 4) {  // sign-extend 4 bytes: duplicate them up to the top byte of each lane, shift back
        std::int32_t word;
        std::memcpy(&word, p, 4);
        __m128i x = _mm_cvtsi32_si128(word);
        x = _mm_unpacklo_epi8(x, x);
        x = _mm_unpacklo_epi16(x, x);
        return batch(_mm_cvtepi32_ps(_mm_srai_epi32(x, 24)));
      }
#endif
      alignas(64) float lane[width];
      for (std::size_t l = 0; l != width; ++l) lane[l] = float(static_cast<std::int8_t>(p[l]));
      return batch::load_aligned(lane);
    }
  }

  /// f32, f16 and i8 panels: broadcast-FMA over component rows widened to float. Accumulates in locals and
  /// writes `out` once: accumulating straight into the output array made GCC store every accumulator on every
  /// step (it cannot prove the array does not alias the panels).
  template <std::size_t R, std::size_t V>
  ALIGNER_NOINLINE void tile_decoded(std::size_t i0, std::size_t p0, batch (&out)[R][V]) const noexcept {
    batch acc[R][V];
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) acc[r][v] = batch(0.f);
    const float* q[R];
    for (std::size_t r = 0; r != R; ++r) q[r] = query.row(i0 + r);
    const std::size_t stride = panel_bytes();
    const unsigned char* base = static_cast<const unsigned char*>(panels) + p0 * stride;
    for (std::size_t c = 0; c != dim; ++c) {
      if (c & 1) prefetch_tick();
      batch d[V];
      for (std::size_t v = 0; v != V; ++v) d[v] = load_row(base + v * stride, c);
      for (std::size_t r = 0; r != R; ++r) {
        const batch qc(q[r][c]);
        for (std::size_t v = 0; v != V; ++v) acc[r][v] = xsimd::fma(qc, d[v], acc[r][v]);
      }
    }
    prefetch_rest();
    if constexpr (St == storage::i8) {  // per-token scales, stored ahead of each panel's bytes
      for (std::size_t v = 0; v != V; ++v) {
        const batch scale = batch::load_unaligned(reinterpret_cast<const float*>(base + v * stride));
        for (std::size_t r = 0; r != R; ++r) acc[r][v] *= scale;
      }
    }
    for (std::size_t r = 0; r != R; ++r)
      for (std::size_t v = 0; v != V; ++v) out[r][v] = acc[r][v];
  }

  /// Lanes of panel p that hold real tokens keep their value; padding becomes -inf.
  batch mask_tail(batch s, std::size_t p) const noexcept {
    const std::size_t valid = doc_rows - p * width;
    if (valid >= width) return s;
    alignas(64) float lane[width];
    for (std::size_t l = 0; l != width; ++l) lane[l] = float(l);
    return xsimd::select(batch::load_aligned(lane) < batch(float(valid)), s,
                         batch(-std::numeric_limits<float>::infinity()));
  }

  static batch lane_ids(std::size_t p) noexcept {
    alignas(64) float lane[width];
    for (std::size_t l = 0; l != width; ++l) lane[l] = float(p * width + l);
    return batch::load_aligned(lane);
  }

  /// Folds a tile into the running states: per row, the V new batches (V panels of W tokens) are sorted lane-wise
  /// by a small network, then merged into the row's K-deep lane columns (sorted best first) with one bitonic
  /// merge: the element-wise better of state_k and new_(K-1-k) is bitonic and holds the top K of both.
  /// Order: value desc, then token index asc (value only when !Indexed). States live in memory between tiles;
  /// each fold reads and writes them once per row (not once per panel).
  template <std::size_t K, bool Indexed, std::size_t R, std::size_t V>
  void tile_and_fold(std::size_t i0, std::size_t p0, float* states, float* ids) const noexcept {
    batch acc[R][V];
    tile<R, V>(i0, p0, acc);
    batch pid[V];
    if constexpr (Indexed)
      for (std::size_t v = 0; v != V; ++v) pid[v] = lane_ids(p0 + v);
    for (std::size_t r = 0; r != R; ++r) {
      batch s[V], id[V];
      for (std::size_t v = 0; v != V; ++v) {
        s[v] = mask_tail(acc[r][v], p0 + v);
        id[v] = Indexed ? pid[v] : batch(0.f);
      }
      // Sorting network for V <= 4.
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
      float* st = states + (i0 + r) * K * width;
      float* sid = Indexed ? ids + (i0 + r) * K * width : nullptr;
      batch a[K], ia[K];
      for (std::size_t k = 0; k != K; ++k) {
        a[k] = batch::load_aligned(st + k * width);
        ia[k] = Indexed ? batch::load_aligned(sid + k * width) : batch(0.f);
      }
      constexpr std::size_t L = V < K ? V : K;
      for (std::size_t t = 0; t != L; ++t) exchange<Indexed>(a[K - 1 - t], ia[K - 1 - t], s[t], id[t]);
      bitonic_merge<K, Indexed>(a, ia);
      for (std::size_t k = 0; k != K; ++k) {
        a[k].store_aligned(st + k * width);
        if constexpr (Indexed) ia[k].store_aligned(sid + k * width);
      }
    }
  }

  /// Sorts a bitonic sequence of K (a power of two) lane-wise, best first.
  template <std::size_t K, bool Indexed>
  ALIGNER_ALWAYS_INLINE static void bitonic_merge(batch (&a)[K], batch (&ia)[K]) noexcept {
    // Compile-time strides and indices, so the arrays stay in registers (a runtime loop kept them on the stack).
    [&]<std::size_t... L>(std::index_sequence<L...>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      (bitonic_level<K, (K >> (L + 1)), Indexed>(a, ia), ...);
    }(std::make_index_sequence<std::bit_width(K) - 1>{});
  }
  template <std::size_t K, std::size_t D, bool Indexed>
  ALIGNER_ALWAYS_INLINE static void bitonic_level(batch (&a)[K], batch (&ia)[K]) noexcept {
    [&]<std::size_t... I>(std::index_sequence<I...>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      ((void)((I & D) == 0 ? (exchange<Indexed>(a[I], ia[I], a[(I | D)], ia[(I | D)]), 0) : 0), ...);
    }(std::make_index_sequence<K>{});
  }

  /// Calls f(std::integral_constant<std::size_t, V>{}) for the run-time panel count of a tile (1 .. block_panels),
  /// so tile bodies are compiled once per V.
  template <class F>
  ALIGNER_ALWAYS_INLINE static void with_panels(std::size_t panels_here, F&& f) {
    switch (panels_here) {
      case 1: f(std::integral_constant<std::size_t, 1>{}); break;
      case 2: f(std::integral_constant<std::size_t, 2>{}); break;
      case 3: if constexpr (block_panels >= 3) f(std::integral_constant<std::size_t, 3>{}); break;
      default: if constexpr (block_panels >= 4) f(std::integral_constant<std::size_t, 4>{}); break;
    }
  }

  template <std::size_t K, bool Indexed, std::size_t R>
  void fold_rows(std::size_t i0, std::size_t p0, std::size_t panels_here, float* states, float* ids) const noexcept {
    with_panels(panels_here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>) {
      tile_and_fold<K, Indexed, R, V>(i0, p0, states, ids);
    });
  }

  /// Writes the prefix sums of a row's best-first (value, index) list at every budget.
  static void prefix_sums(const std::pair<float, float>* sorted, std::size_t available, std::span<const std::size_t> budgets,
                          const float* weights, bool indexed, double* row_sum, double* row_z) noexcept {
    for (std::size_t b = 0; b != budgets.size(); ++b) {
      const std::size_t kk = std::min(budgets[b], available);
      double sum = 0.0, z = 0.0;
      for (std::size_t t = 0; t != kk; ++t) {
        const double w = indexed ? double(weights[std::size_t(sorted[t].second)]) : 1.0;
        sum += w * double(sorted[t].first);
        z += w;
      }
      row_sum[b] = sum;
      row_z[b] = z;
    }
  }

  template <std::size_t S>
  struct xor_lanes {
    static constexpr std::uint32_t get(std::size_t i, std::size_t) { return std::uint32_t(i ^ S); }
  };

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

  /// The best kk <= K of a row's W x K survivors, best first, into out (value, index). Columns (one per lane) are
  /// sorted best first; at each butterfly stage S, lane l merges its list with lane l ^ S's: the element-wise
  /// better of a_k and b_(K-1-k) is a bitonic sequence holding the top K of both, which a bitonic merge sorts.
  /// log2(W) stages, O(K log K) vector operations each, no branches.
  template <std::size_t K, bool Indexed>
  static void lane_merge(const float* st, const float* sid, std::pair<float, float>* out, std::size_t kk) noexcept {
    batch a[K], ia[K];
    for (std::size_t k = 0; k != K; ++k) {
      a[k] = batch::load_aligned(st + k * width);
      ia[k] = Indexed ? batch::load_aligned(sid + k * width) : batch(0.f);
    }
    auto stage = [&]<std::size_t S>(std::integral_constant<std::size_t, S>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      using index_batch = xsimd::batch<std::uint32_t, Arch>;
      constexpr auto mask = xsimd::make_batch_constant<index_batch, xor_lanes<S>>();
      batch b[K], ib[K];
      for (std::size_t k = 0; k != K; ++k) {
        b[k] = xsimd::swizzle(a[K - 1 - k], mask);
        if constexpr (Indexed) ib[k] = xsimd::swizzle(ia[K - 1 - k], mask);
      }
      for (std::size_t k = 0; k != K; ++k) exchange<Indexed>(a[k], ia[k], b[k], ib[k]);
      bitonic_merge<K, Indexed>(a, ia);
    };
    [&]<std::size_t... L>(std::index_sequence<L...>) ALIGNER_ALWAYS_INLINE_LAMBDA {
      (stage(std::integral_constant<std::size_t, (width >> (L + 1))>{}), ...);
    }(std::make_index_sequence<std::bit_width(width) - 1>{});
    alignas(64) float v[width], id[width];
    for (std::size_t k = 0; k != kk; ++k) {
      a[k].store_aligned(v);
      ia[k].store_aligned(id);
      out[k] = {v[0], id[0]};
    }
  }

  /// Visits every (query row block, panel group) tile once: visit.template operator()<R>(i0, p0, panels_here).
  /// Loop order: the document is cut into spans of at most span_bytes (L2-resident); within a span every block
  /// of query rows sweeps all panel groups, so the span streams from L2 while the query block stays in L1.
  /// While a span is scored, the bytes scored next (the span after it, or `next` after the last span) are
  /// prefetched in equal slices by the tiles (see pf_at), so DRAM latency overlaps with compute. (Sweeping all query
  /// blocks over one panel group instead keeps the group in L1 but leaves no L1 room to prefetch into: the DRAM
  /// stream then ran at a quarter of the core's bandwidth.)
  template <class Visit>
  void sweep(Visit&& visit) const {
    const std::size_t n = query.rows;
    const std::size_t span = std::max(block_panels, span_bytes / panel_bytes() / block_panels * block_panels);
    const std::size_t row_blocks = (n + block_rows - 1) / block_rows;
    for (std::size_t s0 = 0; s0 < panel_total; s0 += span) {
      const std::size_t s1 = std::min(panel_total, s0 + span);
      const char* pf = s1 < panel_total ? static_cast<const char*>(panels) + s1 * panel_bytes() : static_cast<const char*>(next.data);
      const std::size_t pf_bytes = s1 < panel_total ? std::min(panel_total - s1, span) * panel_bytes()
                                                    : (next.data ? std::min(next.bytes, span * panel_bytes()) : 0);
      const std::size_t calls = row_blocks * ((s1 - s0 + block_panels - 1) / block_panels);
      const std::size_t lines = (pf_bytes + 63) / 64, per_call = (lines + calls - 1) / calls;
      std::size_t issued = 0;
      auto prefetch_slice = [&]() {
        const std::size_t end = std::min(lines, issued + per_call);
        pf_at = pf + issued * 64;
        pf_stop = pf + end * 64;
        issued = end;
      };
      std::size_t i0 = 0;
      for (; i0 + block_rows <= n; i0 += block_rows)
        for (std::size_t p0 = s0; p0 < s1; p0 += block_panels) {
          prefetch_slice();
          visit.template operator()<block_rows>(i0, p0, std::min(block_panels, s1 - p0));
        }
      if (i0 == n) continue;
      for (std::size_t p0 = s0; p0 < s1; p0 += block_panels) {
        prefetch_slice();
        const std::size_t here = std::min(block_panels, s1 - p0);
        switch (n - i0) {
          case 1: visit.template operator()<1>(i0, p0, here); break;
          case 2: visit.template operator()<2>(i0, p0, here); break;
          case 3: visit.template operator()<3>(i0, p0, here); break;
          default: break;
        }
      }
    }
  }

  template <std::size_t K, bool Indexed>
  void run_topk(std::span<const std::size_t> budgets, std::size_t kmax, const float* weights, double* row_sum,
                double* row_z) const {
    const std::size_t n = query.rows, nb = budgets.size();
    thread_local aligned_vector<float> states_buf, ids_buf;
    states_buf.assign(n * K * width, -std::numeric_limits<float>::infinity());
    if constexpr (Indexed) ids_buf.assign(n * K * width, 0.f);
    float* states = states_buf.data();
    float* ids = Indexed ? ids_buf.data() : nullptr;
    sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
      fold_rows<K, Indexed, R>(i0, p0, here, states, ids);
    });
    // Final selection: the row's W*K survivors hold its top-kmax.
    const std::size_t kk = std::min(kmax, doc_rows);
    thread_local std::vector<std::pair<float, float>> cand;
    for (std::size_t i = 0; i != n; ++i) {
      const float* st = states + i * K * width;
      if constexpr (K == 1 && !Indexed) {
        if (nb == 1) {  // Top-1 without weights: a horizontal max
          row_sum[i] = double(reduce_max(batch::load_aligned(st)));
          row_z[i] = 1.0;
          continue;
        }
      }
      // Each lane's column of K values is sorted best first; a butterfly of bitonic merges leaves the row's
      // best K (value desc, then token index asc) in every lane, best first.
      cand.resize(kk);
      lane_merge<K, Indexed>(st, Indexed ? ids + i * K * width : nullptr, cand.data(), kk);
      prefix_sums(cand.data(), kk, budgets, weights, Indexed, row_sum + i * nb, row_z + i * nb);
    }
  }

  template <std::size_t R>
  void store_rows(std::size_t i0, std::size_t p0, std::size_t panels_here, float* s_rows, std::size_t s_stride) const noexcept {
    with_panels(panels_here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>) {
      batch acc[R][V];
      tile<R, V>(i0, p0, acc);
      for (std::size_t r = 0; r != R; ++r)
        for (std::size_t v = 0; v != V; ++v) acc[r][v].store_unaligned(s_rows + (i0 + r) * s_stride + (p0 + v) * width);
    });
  }

  /// Budgets above 16: the whole S (n x panels*W) goes to a buffer, each row is selected with nth_element.
  void run_full(std::span<const std::size_t> budgets, std::size_t kmax, const float* weights, double* row_sum,
                double* row_z) const {
    const std::size_t n = query.rows, s_stride = panel_total * width, nb = budgets.size();
    thread_local aligned_vector<float> s_buf;
    s_buf.resize(n * s_stride);
    sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
      store_rows<R>(i0, p0, here, s_buf.data(), s_stride);
    });
    const std::size_t kk = std::min(kmax, doc_rows);
    thread_local std::vector<std::pair<float, float>> cand;
    for (std::size_t i = 0; i != n; ++i) {
      const float* s = s_buf.data() + i * s_stride;
      cand.resize(doc_rows);
      for (std::size_t j = 0; j != doc_rows; ++j) cand[j] = {s[j], float(j)};
      auto better = [](const std::pair<float, float>& a, const std::pair<float, float>& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      };
      if (kk < doc_rows) std::nth_element(cand.begin(), cand.begin() + std::ptrdiff_t(kk), cand.end(), better);
      std::sort(cand.begin(), cand.begin() + std::ptrdiff_t(kk), better);
      prefix_sums(cand.data(), kk, budgets, weights, weights != nullptr, row_sum + i * nb, row_z + i * nb);
    }
  }
};

}  // namespace detail

namespace detail {

/// Runs the hadamard rows over panels of storage St.
template <class Arch, storage St>
void run_hadamard_rows(matrix_view<float> query, const void* panels, std::size_t doc_rows, std::span<const std::size_t> budgets,
                       const float* doc_weights, double* row_sum, double* row_z, prefetch_hint next) {
  const std::size_t kmax = budgets.empty() ? 0 : *std::max_element(budgets.begin(), budgets.end());
  if (doc_rows == 0 || kmax == 0) {
    std::fill(row_sum, row_sum + query.rows * budgets.size(), 0.0);
    std::fill(row_z, row_z + query.rows * budgets.size(), 0.0);
    return;
  }
  hadamard_impl<Arch, St> impl{panels, query.cols, doc_rows, panel_count<Arch>(doc_rows), query};
  impl.next = next;
  if constexpr (St == storage::bf16) {  // query rows as bf16 pairs, for the AVX512-BF16 instruction
    // Converted once per query, not per document: the last query seen by this thread is kept (a compare of the
    // floats costs a fraction of the conversion, which was a quarter of the time at m = 128).
    thread_local std::vector<std::uint32_t> q16;
    thread_local std::vector<float> q_seen;
    thread_local std::size_t q_cols = 0;
    const std::size_t pairs = (query.cols + 1) / 2, count = query.rows * query.cols;
    bool same = q_cols == query.cols && q_seen.size() == count;
    for (std::size_t i = 0; same && i != query.rows; ++i)
      same = std::memcmp(q_seen.data() + i * query.cols, query.row(i), query.cols * sizeof(float)) == 0;
    if (!same) {
      q_seen.resize(count);
      for (std::size_t i = 0; i != query.rows; ++i) std::copy_n(query.row(i), query.cols, q_seen.data() + i * query.cols);
      q_cols = query.cols;
      q16.resize(query.rows * pairs);
    }
    for (std::size_t i = 0; !same && i != query.rows; ++i)
      for (std::size_t c2 = 0; c2 != pairs; ++c2) {
        const std::uint32_t lo = to_bf16(query.row(i)[2 * c2]);
        const std::uint32_t hi = 2 * c2 + 1 < query.cols ? to_bf16(query.row(i)[2 * c2 + 1]) : 0u;
        q16[i * pairs + c2] = lo | (hi << 16);
      }
    impl.query_bf16 = q16.data();
  }
  const bool indexed = doc_weights != nullptr;
  auto go = [&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
    if (indexed)
      impl.template run_topk<K, true>(budgets, kmax, doc_weights, row_sum, row_z);
    else
      impl.template run_topk<K, false>(budgets, kmax, doc_weights, row_sum, row_z);
  };
  if (kmax == 1) go(std::integral_constant<std::size_t, 1>{});
  else if (kmax == 2) go(std::integral_constant<std::size_t, 2>{});
  else if (kmax <= 4) go(std::integral_constant<std::size_t, 4>{});
  else if (kmax <= 8) go(std::integral_constant<std::size_t, 8>{});
  else if (kmax <= 16) go(std::integral_constant<std::size_t, 16>{});
  else impl.run_full(budgets, kmax, doc_weights, row_sum, row_z);
}

}  // namespace detail

template <class Arch>
void hadamard_rows_kernel::operator()(Arch, matrix_view<float> query, const float* panels, std::size_t doc_rows,
                                      std::span<const std::size_t> budgets, const float* doc_weights, double* row_sum,
                                      double* row_z, prefetch_hint next) const {
  detail::run_hadamard_rows<Arch, storage::f32>(query, panels, doc_rows, budgets, doc_weights, row_sum, row_z, next);
}

/// The same reduction over bfloat16 panels (kernels/panels.hpp, pack_panels_bf16); accumulation in float.
struct hadamard_rows_bf16_kernel {
  template <class Arch>
  void operator()(Arch, matrix_view<float> query, const std::uint32_t* panels, std::size_t doc_rows,
                  std::span<const std::size_t> budgets, const float* doc_weights, double* row_sum, double* row_z,
                  prefetch_hint next = {}) const {
    detail::run_hadamard_rows<Arch, storage::bf16>(query, panels, doc_rows, budgets, doc_weights, row_sum, row_z, next);
  }
};

/// The same reduction over panels of any storage (kernels/panels.hpp: packed_words / pack_panels_as).
struct hadamard_rows_packed_kernel {
  template <class Arch>
  void operator()(Arch, matrix_view<float> query, storage st, const void* panels, std::size_t doc_rows,
                  std::span<const std::size_t> budgets, const float* doc_weights, double* row_sum, double* row_z,
                  prefetch_hint next = {}) const {
    switch (st) {
      case storage::f32: detail::run_hadamard_rows<Arch, storage::f32>(query, panels, doc_rows, budgets, doc_weights, row_sum, row_z, next); break;
      case storage::bf16: detail::run_hadamard_rows<Arch, storage::bf16>(query, panels, doc_rows, budgets, doc_weights, row_sum, row_z, next); break;
      case storage::f16: detail::run_hadamard_rows<Arch, storage::f16>(query, panels, doc_rows, budgets, doc_weights, row_sum, row_z, next); break;
      case storage::i8: detail::run_hadamard_rows<Arch, storage::i8>(query, panels, doc_rows, budgets, doc_weights, row_sum, row_z, next); break;
    }
  }
};

/// Row-major S tile kernel: s_out (query.rows x panels*W, row stride s_stride floats) receives every q_i . d_j
/// of a packed sequence (padding lanes get 0). Used by explain.
struct similarity_kernel {
  template <class Arch>
  void operator()(Arch, matrix_view<float> query, const float* panels, std::size_t doc_rows, float* s_out,
                  std::size_t s_stride) const noexcept {
    const detail::hadamard_impl<Arch> impl{panels, query.cols, doc_rows, panel_count<Arch>(doc_rows), query};
    impl.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
      impl.template store_rows<R>(i0, p0, here, s_out, s_stride);
    });
  }
};

}  // namespace aligner
