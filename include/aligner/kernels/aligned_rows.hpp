/** @file aligned_rows.hpp
 *  @brief The fused S∘A row reduction: for every query token i, the sum of its k largest similarities.
 *
 *  For query rows q_i and document tokens d_j (j < doc_rows), with S_ij = q_i . d_j and optional document
 *  weights w_j (salience; 1 when absent), the kernel returns per query row
 *
 *      row_sum_i = Σ_{j ∈ top_k(S_i)} w_j S_ij,     row_z_i = Σ_{j ∈ top_k(S_i)} w_j
 *
 *  where top_k(S_i) holds the k largest entries of row i, ties toward the smaller j. A is never materialised:
 *  S comes tile by tile from the sweep of tile.hpp and each tile is folded straight into a lane-wise running top-K
 *  (lane_topk.hpp; K = the next of 1, 2, 4, 8, 16 at or above k; a row's first tile writes its state, nothing
 *  initialises it); the W*K survivors of a row hold its global top-k, which a final selection picks for W rows at
 *  once (merge_lanes_rows: rows paired up level by level, width - 1 lane-wise merges per width rows). Budgets k > 16 compute the rows
 *  of S into a buffer and select with nth_element.
 *  Several budgets at once (a grid of Top-k / Top-p strategies) share one pass: their sums are prefix sums of one
 *  sorted top list. Complexity O(n * m * dim) FLOPs plus O(n * m * K) compare/blend operations.
 *  Scratch lives in a caller-owned `rows_workspace` (one per thread); `ref::aligned_row_sums` beside it is the
 *  specification the kernel is tested against. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/types.hpp"
#include "amx.hpp"
#include "int8_vnni.hpp"
#include "lane_topk.hpp"
#include "layout.hpp"
#include "residual.hpp"
#include "simd_compat.hpp"
#include "storage.hpp"
#include "tile.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner::ref {

/// Scalar specification of the kernel, in double: row sums of the top-k similarities (ties toward smaller j).
/// `doc_weights` may be null (all ones). `k` is clamped to doc.rows.
inline void aligned_row_sums(matrix_view<float> query, matrix_view<float> doc, std::size_t k, const float* doc_weights,
                             double* row_sum, double* row_z) {
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

/// Scratch of the row reduction, reused across calls (one per thread; never shared by concurrent calls).
struct rows_workspace {
  aligned_vector<float> states, ids, s_rows;
  std::vector<std::pair<float, float>> candidates;
  std::vector<std::uint32_t> query_bf16;  ///< the query's bf16 pairs, when the caller did not supply them
  std::vector<std::uint32_t> query_i8;    ///< the query's int8 form (AMX-INT8), when the caller did not supply it
  std::vector<std::uint32_t> query_i16;   ///< its 16-bit form (VNNI int8 path), when the caller did not supply it
  aligned_vector<std::uint32_t> query_wide;  ///< its expanded form (AVX-512 tiles of 4- and 8-wide panels), when not supplied
  aligned_vector<std::uint32_t> relaid;   ///< int8 panels re-laid for AMX-INT8 a group at a time
  aligned_vector<float> decoded;          ///< residual panels decoded a group at a time
  residual_i8_query residual_i8;          ///< the query's int8 form for a residual codec (VNNI), when not supplied
  aligned_vector<float> sorted;           ///< every row's top K, sorted, k-major (values, then indices)
  std::vector<double> sums;               ///< the rows' running prefix sums
};

namespace detail {

template <class Arch, class Engine>
struct aligned_rows_impl {
  using engine_t = Engine;
  using lanes = lane_topk<Arch>;
  using batch = typename engine_t::batch;
  static constexpr std::size_t width = engine_t::width;

  const engine_t& engine;
  rows_workspace& ws;

  /// The sums at every budget: row_sum[i * B + b] and row_z[i * B + b] over the first min(budgets[b], available)
  /// entries of row i's best-first list, which is column i of sorted_v (values) and sorted_id (indices, read when
  /// Indexed), k-major with row stride `stride`. Each row's sum is built in list order (t = 0, 1, ...); the rows run
  /// side by side, so their chains overlap.
  template <bool Indexed>
  void prefix_sums(const float* sorted_v, const float* sorted_id, std::size_t stride, std::size_t available,
                   std::span<const std::size_t> budgets, const float* weights, double* row_sum, double* row_z) const {
    const std::size_t n = engine.query.rows, nb = budgets.size();
    ws.sums.resize(2 * n);
    double* sum = ws.sums.data();
    double* z = sum + n;
    for (std::size_t b = 0; b != nb; ++b) {
      const std::size_t kb = std::min(budgets[b], available);
      std::fill(sum, sum + 2 * n, 0.0);
      for (std::size_t t = 0; t != kb; ++t) {
        const float* v = sorted_v + t * stride;
        if constexpr (Indexed) {
          const float* id = sorted_id + t * stride;
          for (std::size_t i = 0; i != n; ++i) {
            const double w = double(weights[std::size_t(id[i])]);
            sum[i] += w * double(v[i]);
            z[i] += w;
          }
        } else {
          for (std::size_t i = 0; i != n; ++i) sum[i] += double(v[i]);
        }
      }
      for (std::size_t i = 0; i != n; ++i) {
        row_sum[i * nb + b] = sum[i];
        row_z[i * nb + b] = Indexed ? z[i] : double(kb);
      }
    }
  }

  /// Tile rows i0 .. i0 + R - 1 of panels p0 .. p0 + V - 1, padding masked, folded into the rows' states.
  template <std::size_t K, bool Indexed, std::size_t R, std::size_t V>
  void tile_and_fold(std::size_t i0, std::size_t p0, float* states, float* ids) const noexcept {
    batch acc[R][V];
    engine.template tile<R, V>(i0, p0, acc);
    // AMX tiles are 16 rows; the query may end before
    fold_tile<K, Indexed, V>(&acc[0][0], std::min(R, engine.query.rows - i0), i0, p0, states, ids);
  }

  /// Rows i0 .. i0 + rows - 1 of a tile of panels p0 .. p0 + V - 1 (acc: rows x V batches, row-major), padding
  /// masked, folded into the rows' states. Compiled once per (K, Indexed, V) rather than once more for every tile row
  /// count R of the engines (1-6 and 16): the folds were most of the code of each tile_and_fold.
  template <std::size_t K, bool Indexed, std::size_t V>
  ALIGNER_NOINLINE void fold_tile(const batch* acc, std::size_t rows, std::size_t i0, std::size_t p0, float* states,
                                  float* ids) const noexcept {
    batch pid[V];
    if constexpr (Indexed)
      for (std::size_t v = 0; v != V; ++v) pid[v] = engine_t::lane_ids(p0 + v);
    for (std::size_t r = 0; r != rows; ++r) {
      batch s[V], id[V];
      for (std::size_t v = 0; v != V; ++v) {
        s[v] = engine.mask_tail(acc[r * V + v], p0 + v);
        id[v] = Indexed ? pid[v] : batch(0.f);
      }
      float* st = states + (i0 + r) * K * width;
      float* sid = Indexed ? ids + (i0 + r) * K * width : nullptr;
      if (p0 == 0)  // every sweep visits a row block's panel 0 first: the state starts here
        lanes::template fold<K, Indexed, V, true>(s, id, st, sid);
      else
        lanes::template fold<K, Indexed, V>(s, id, st, sid);
    }
  }

  template <std::size_t K, bool Indexed>
  void run_topk(std::span<const std::size_t> budgets, std::size_t kmax, const float* weights, double* row_sum,
                double* row_z) const {
    const std::size_t n = engine.query.rows, doc_rows = engine.doc_rows;
    ws.states.resize(n * K * width);  // written by each row's first fold (the tile of panel 0)
    if constexpr (Indexed) ws.ids.resize(n * K * width);
    float* states = ws.states.data();
    float* ids = Indexed ? ws.ids.data() : nullptr;
    engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
      engine_t::with_panels(p0, here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>, std::size_t p) {
        tile_and_fold<K, Indexed, R, V>(i0, p, states, ids);
      });
    });
    // Final selection: the row's W*K survivors hold its top-kmax.
    const std::size_t kk = std::min(kmax, doc_rows);
    // Every row's sorted top K at once (k-major, a row per column), then the sums of each budget's prefix.
    const std::size_t stride = (n + width - 1) / width * width;
    ws.sorted.resize(K * stride * (Indexed ? 2 : 1));
    float* sorted_v = ws.sorted.data();
    float* sorted_id = Indexed ? sorted_v + K * stride : nullptr;
    // (Top-1 too: a horizontal max a row instead, one lane at a time in xsimd 8.1, was 14% of the AMX-BF16 Top-1
    // rerank's time on a Xeon; the merge takes width - 1 lane-wise maxima per width rows.)
    lanes::template merge_lanes_rows<K, Indexed>(states, ids, n, sorted_v, sorted_id, stride);
    prefix_sums<Indexed>(sorted_v, sorted_id, stride, kk, budgets, weights, row_sum, row_z);
  }

  /// Budgets above 16: the whole S (n x panels*W) goes to a buffer, each row is selected with nth_element.
  void run_full(std::span<const std::size_t> budgets, std::size_t kmax, const float* weights, double* row_sum,
                double* row_z) const {
    const std::size_t n = engine.query.rows, s_stride = engine.panel_total * width;
    const std::size_t doc_rows = engine.doc_rows;
    ws.s_rows.resize(n * s_stride);
    float* s_rows = ws.s_rows.data();
    engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
      engine.template store_rows<R>(i0, p0, here, s_rows, s_stride);
    });
    const std::size_t kk = std::min(kmax, doc_rows);
    auto& cand = ws.candidates;
    ws.sorted.resize(kk * n * (weights ? 2 : 1));  // each row's best kk, k-major as prefix_sums reads them
    float* sorted_v = ws.sorted.data();
    float* sorted_id = sorted_v + kk * n;
    for (std::size_t i = 0; i != n; ++i) {
      const float* s = s_rows + i * s_stride;
      cand.resize(doc_rows);
      for (std::size_t j = 0; j != doc_rows; ++j) cand[j] = {s[j], float(j)};
      auto better = [](const std::pair<float, float>& a, const std::pair<float, float>& b) {
        return ranks_before(a.first, a.second, b.first, b.second);
      };
      if (kk < doc_rows) std::nth_element(cand.begin(), cand.begin() + std::ptrdiff_t(kk), cand.end(), better);
      std::sort(cand.begin(), cand.begin() + std::ptrdiff_t(kk), better);
      for (std::size_t t = 0; t != kk; ++t) {
        sorted_v[t * n + i] = cand[t].first;
        if (weights) sorted_id[t * n + i] = cand[t].second;
      }
    }
    if (weights)
      prefix_sums<true>(sorted_v, sorted_id, n, kk, budgets, weights, row_sum, row_z);
    else
      prefix_sums<false>(sorted_v, nullptr, n, kk, budgets, weights, row_sum, row_z);
  }

  void run(std::span<const std::size_t> budgets, std::size_t kmax, const float* weights, double* row_sum, double* row_z) const {
    const bool indexed = weights != nullptr;
    auto go = [&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
      if (indexed)
        run_topk<K, true>(budgets, kmax, weights, row_sum, row_z);
      else
        run_topk<K, false>(budgets, kmax, weights, row_sum, row_z);
    };
    if (kmax == 1) go(std::integral_constant<std::size_t, 1>{});
    else if (kmax == 2) go(std::integral_constant<std::size_t, 2>{});
    else if (kmax <= 4) go(std::integral_constant<std::size_t, 4>{});
    else if (kmax <= 8) go(std::integral_constant<std::size_t, 8>{});
    else if (kmax <= 16) go(std::integral_constant<std::size_t, 16>{});
    else run_full(budgets, kmax, weights, row_sum, row_z);
  }
};

}  // namespace detail

/// Every q_i . d_j of a packed document into s_out (query.rows x panels * W, row stride s_stride; padding lanes
/// get 0) by the engine the fused kernel uses now for storage `st`: AMX-BF16 tiles for bf16 where
/// amx_bf16_usable(), AMX-INT8 for i8 where i8_on_amx(), vpdpwssd tiles for i8 where i8_on_vnni(), the vector tiles
/// otherwise (so explain reproduces the kernel's values). `forms`: the query's prepared forms, or null ones to convert them here where needed.
template <class Arch = default_arch>
void packed_similarity_rows(matrix_view<float> query, storage st, const void* panels, std::size_t doc_rows, float* s_out,
                            std::size_t s_stride, query_forms forms = {}) {
  std::vector<std::uint32_t> converted;
  const std::uint32_t* query_bf16 = forms.bf16;
  if (st == storage::bf16 && bf16_query_rounded<Arch>()) query_bf16 = bf16_pairs_or_convert(query, query_bf16, converted);
  auto store_all = [&](const auto& engine) {
    engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) { engine.template store_rows<R>(i0, p0, here, s_out, s_stride); });
  };
  if constexpr (amx_tiles_fit<Arch>) {
    if (st == storage::bf16 && amx_bf16_usable()) return store_all(amx_bf16_engine<Arch>(panels, doc_rows, query, query_bf16));
    if (st == storage::i8 && i8_on_amx<Arch>()) {
      aligned_vector<std::uint32_t> scratch(amx_i8_engine<Arch>::scratch_words(query.cols));
      return store_all(amx_i8_engine<Arch>(panels, doc_rows, query, i8_quads_or_convert(query, forms.i8, converted), scratch.data()));
    }
  }
  if (st == storage::i8 && i8_on_vnni<Arch>()) {
    aligned_vector<std::uint32_t> scratch(vnni_i8_engine<Arch>::scratch_words(query.cols));
    return store_all(vnni_i8_engine<Arch>(panels, doc_rows, query, i16_pairs_or_convert(query, forms.i16, converted), scratch.data()));
  }
  similarity_rows<Arch>(query, st, panels, doc_rows, s_out, s_stride, query_bf16, forms.wide_for<Arch>(st));
}

namespace detail {

/// The prologue of the aligned_row_sums entry points: the largest of `budgets`, or 0 (and every row's sums zeroed)
/// when there is nothing to align (no budget, an empty document).
inline std::size_t largest_budget_or_zero_sums(std::size_t query_rows, std::size_t doc_rows, std::span<const std::size_t> budgets,
                                              double* row_sum, double* row_z) {
  const std::size_t kmax = budgets.empty() ? 0 : *std::max_element(budgets.begin(), budgets.end());
  if (doc_rows == 0 || kmax == 0) {
    std::fill(row_sum, row_sum + query_rows * budgets.size(), 0.0);
    std::fill(row_z, row_z + query_rows * budgets.size(), 0.0);
    return 0;
  }
  return kmax;
}

}  // namespace detail

/// aligned_row_sums of float32 panels alone (below).
template <class Arch = default_arch>
void aligned_row_sums_f32(matrix_view<float> query, const void* panels, std::size_t doc_rows, std::span<const std::size_t> budgets,
                          const float* doc_weights, double* row_sum, double* row_z, rows_workspace& ws, query_forms forms = {},
                          prefetch_hint next = {});

/// The kernel over one packed document of storage `st` (layout.hpp). Writes row_sum[i * B + b], row_z[i * B + b]
/// for query row i and budget b of the B = budgets.size() budgets. Preconditions (unchecked): every budget >= 1,
/// query.cols == the panels' dim, doc_rows <= max_sequence_tokens, panels 64-byte aligned, values finite.
/// bf16 panels run on AMX-BF16 tiles where amx_bf16_usable(), i8 panels on AMX-INT8 where i8_on_amx() (amx.hpp) or
/// on vpdpwssd tiles where i8_on_vnni() (int8_vnni.hpp, the same arithmetic), else on the vector engine. `forms`:
/// the query as query_to_bf16_pairs writes it, used for bf16 panels where bf16_query_rounded(), as
/// query_to_i8_quads writes it, used for i8 panels where i8_on_amx(), and as query_to_i16_pairs writes it, used
/// where i8_on_vnni() (null: converted into the workspace on each call). `next`: what the caller scores next, prefetched meanwhile.
template <class Arch = default_arch>
void aligned_row_sums(matrix_view<float> query, storage st, const void* panels, std::size_t doc_rows,
                      std::span<const std::size_t> budgets, const float* doc_weights, double* row_sum, double* row_z,
                      rows_workspace& ws, query_forms forms = {}, prefetch_hint next = {}) {
  if (st == storage::f32) return aligned_row_sums_f32<Arch>(query, panels, doc_rows, budgets, doc_weights, row_sum, row_z, ws, forms, next);
  const std::size_t kmax = detail::largest_budget_or_zero_sums(query.rows, doc_rows, budgets, row_sum, row_z);
  if (kmax == 0) return;
  const std::uint32_t* query_bf16 = forms.bf16;
  const bool amx = st == storage::bf16 && bf16_on_amx<Arch>();
  if (st == storage::bf16 && (bf16_rounds_query<Arch> || amx)) query_bf16 = bf16_pairs_or_convert(query, query_bf16, ws.query_bf16);
  auto run_on = [&](const auto& engine) {
    detail::aligned_rows_impl<Arch, std::decay_t<decltype(engine)>>{engine, ws}.run(budgets, kmax, doc_weights, row_sum, row_z);
  };
  auto relaid = [&](std::size_t words) {  // the int8 engines' scratch
    if (ws.relaid.size() < words) ws.relaid.resize(words);
    return ws.relaid.data();
  };
  if constexpr (amx_tiles_fit<Arch>) {
    if (amx) return run_on(amx_bf16_engine<Arch>(panels, doc_rows, query, query_bf16, next));
    if (st == storage::i8 && i8_on_amx<Arch>())
      return run_on(amx_i8_engine<Arch>(panels, doc_rows, query, i8_quads_or_convert(query, forms.i8, ws.query_i8),
                                        relaid(amx_i8_engine<Arch>::scratch_words(query.cols)), next));
  }
  if (st == storage::i8 && i8_on_vnni<Arch>())
    return run_on(vnni_i8_engine<Arch>(panels, doc_rows, query, i16_pairs_or_convert(query, forms.i16, ws.query_i16),
                                       relaid(vnni_i8_engine<Arch>::scratch_words(query.cols)), next));
  const std::uint32_t* query_wide = wide_query_or_convert<Arch>(st, query, forms.wide_for<Arch>(st), ws.query_wide);
  visit_storage(st, [&]<storage S>(std::integral_constant<storage, S>) {
    if constexpr (S != storage::f32) run_on(tile_engine<Arch, S>(panels, doc_rows, query, query_bf16, next, query_wide));
  });
}

/// aligned_row_sums of float32 panels (storage::f32), the same arithmetic: it instantiates the float engine alone, so
/// a program that only scores row-major matrices (score, score_batch) compiles none of the other storages' kernels.
template <class Arch>
void aligned_row_sums_f32(matrix_view<float> query, const void* panels, std::size_t doc_rows, std::span<const std::size_t> budgets,
                          const float* doc_weights, double* row_sum, double* row_z, rows_workspace& ws, query_forms forms,
                          prefetch_hint next) {
  const std::size_t kmax = detail::largest_budget_or_zero_sums(query.rows, doc_rows, budgets, row_sum, row_z);
  if (kmax == 0) return;
  const std::uint32_t* query_wide = wide_query_or_convert<Arch>(storage::f32, query, forms.wide, ws.query_wide);
  const tile_engine<Arch, storage::f32> engine(panels, doc_rows, query, forms.bf16, next, query_wide);
  detail::aligned_rows_impl<Arch, tile_engine<Arch, storage::f32>>{engine, ws}.run(budgets, kmax, doc_weights, row_sum, row_z);
}

/// The same over one document of residual codes (residual.hpp): `qct` holds centroid_scores_by_centroid of the
/// query. Decodes a panel group at a time into the workspace (never the whole document) and sweeps it on the path of
/// with_residual_path: AMX-BF16 tiles where amx_bf16_usable(), VNNI int8 tiles where residual_on_vnni(codec), else
/// the vector tiles (vdpbf16ps in an AVX512-BF16 build). `query_bf16`: the query's bf16 pairs (AMX, vdpbf16ps) and
/// `query_i8`: its int8 form for this codec (VNNI, residual_query_to_i8), each null to convert it here. `next`: the
/// caller's next document, prefetched during the last group. `query_wide`: the query expanded for the run-time
/// AVX-512 tiles of 4- or 8-wide float panels (query_to_wide; null: converted here where they run).
template <class Arch = default_arch>
void aligned_row_sums_residual(matrix_view<float> query, const residual_codec& codec, const std::uint32_t* panels,
                               std::size_t doc_rows, std::span<const std::size_t> budgets, const float* doc_weights,
                               double* row_sum, double* row_z, rows_workspace& ws, const float* qct,
                               const std::uint32_t* query_bf16 = nullptr, prefetch_hint next = {},
                               const residual_i8_query* query_i8 = nullptr, const std::uint32_t* query_wide = nullptr) {
  const std::size_t kmax = detail::largest_budget_or_zero_sums(query.rows, doc_rows, budgets, row_sum, row_z);
  if (kmax == 0) return;
  with_residual_path<Arch>(codec, [&]<residual_path P>(std::integral_constant<residual_path, P>) {
    using engine_t = residual_engine<Arch, P>;
    if constexpr (engine_t::rounds) query_bf16 = bf16_pairs_or_convert(query, query_bf16, ws.query_bf16);
    if constexpr (P == residual_path::vnni) query_i8 = residual_i8_or_convert(query, codec, query_i8, ws.residual_i8);
    const std::uint32_t* wide = nullptr;
    if constexpr (P == residual_path::vector && !engine_t::rounds) wide = wide_query_or_convert<Arch>(storage::f32, query, query_wide, ws.query_wide);
    const std::size_t need = engine_t::scratch_floats(query.cols, query.rows);
    if (ws.decoded.size() < need) ws.decoded.resize(need);
    const engine_t engine(codec, panels, doc_rows, query, qct, ws.decoded.data(), query_bf16, next, query_i8, wide);
    detail::aligned_rows_impl<Arch, engine_t>{engine, ws}.run(budgets, kmax, doc_weights, row_sum, row_z);
  });
}

#ifdef ALIGNER_KERNEL_INSTANCE  // separate compilation (core/config.hpp)
ALIGNER_KERNEL_INSTANCE void packed_similarity_rows<default_arch>(matrix_view<float>, storage, const void*, std::size_t, float*,
                                                                  std::size_t, query_forms);
ALIGNER_KERNEL_INSTANCE void aligned_row_sums<default_arch>(matrix_view<float>, storage, const void*, std::size_t,
                                                            std::span<const std::size_t>, const float*, double*, double*,
                                                            rows_workspace&, query_forms, prefetch_hint);
ALIGNER_KERNEL_INSTANCE void aligned_row_sums_f32<default_arch>(matrix_view<float>, const void*, std::size_t, std::span<const std::size_t>,
                                                                const float*, double*, double*, rows_workspace&, query_forms,
                                                                prefetch_hint);
ALIGNER_KERNEL_INSTANCE void aligned_row_sums_residual<default_arch>(matrix_view<float>, const residual_codec&, const std::uint32_t*,
                                                                     std::size_t, std::span<const std::size_t>, const float*,
                                                                     double*, double*, rows_workspace&, const float*,
                                                                     const std::uint32_t*, prefetch_hint, const residual_i8_query*,
                                                                     const std::uint32_t*);
#endif

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
