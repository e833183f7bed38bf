/** @file scorer.hpp
 *  @brief The ALIGNER score (SPEC section 1):
 *
 *      A = Ã ∘ (u^q ⊗ u^d),   Z = Σ_ij A_ij,   sim(Q, D) = (1/Z) Σ_ij S_ij A_ij,   S_ij = q_i . d_j
 *
 *  with Ã the sparse mask of an alignment strategy (alignment.hpp) and u^q, u^d optional saliences (1 when
 *  absent). `normalization::none` returns Σ S∘A undivided (Top-1 without salience: ColBERT's MaxSim).
 *  Z == 0 (or an empty side) gives 0. A is never materialised: the kernel of kernels/hadamard_sum.hpp folds
 *  each tile of S into a per-row top-k. Complexity O(n · m · dim). Thread-safe (per-thread scratch).
 *  `ref::score` is the double-precision specification the fast path is tested against. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "alignment.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/types.hpp"
#include "kernels/dot.hpp"
#include "kernels/hadamard_sum.hpp"
#include "kernels/panels.hpp"

namespace aligner {

/// Per-call knobs of the scorer.
struct score_params {
  alignment strategy = alignment::top1();
  normalization norm = normalization::mean;
  std::span<const float> query_salience{};  ///< u^q: empty (all ones) or one finite value >= 0 per query token
  std::span<const float> doc_salience{};    ///< u^d: empty, or one per document token (per token of the whole
                                            ///< set for score_batch)
  bool check_finite = true;                 ///< reject NaN/Inf in the token vectors (O(size) scan)
};

/// One aligned pair of an explanation.
struct aligned_pair {
  std::uint32_t query_token = 0;  ///< i
  std::uint32_t doc_token = 0;    ///< j
  float similarity = 0.f;         ///< S_ij
  float weight = 0.f;             ///< A_ij = u^q_i · u^d_j (1 without salience)
};

/// Why a document got its score: every aligned pair, grouped by query token (ascending), each group best first.
struct explanation {
  std::vector<aligned_pair> pairs;
  double numerator = 0.0;  ///< Σ S∘A
  double z = 0.0;          ///< Σ A
  float score = 0.f;       ///< the score under the requested normalisation
};

namespace detail {

inline double combine(std::span<const double> row_sum, std::span<const double> row_z, const float* query_salience,
                      normalization norm) noexcept {
  double num = 0.0, z = 0.0;
  for (std::size_t i = 0; i != row_sum.size(); ++i) {
    const double u = query_salience ? double(query_salience[i]) : 1.0;
    num += u * row_sum[i];
    z += u * row_z[i];
  }
  if (norm == normalization::none) return num;
  return z > 0.0 ? num / z : 0.0;
}

/// The dense strategy: only the pair (0, 0) is aligned. `doc_first` is d_0 (contiguous).
inline float dense_score(const float* query_first, const float* doc_first, std::size_t dim, const float* query_salience,
                         const float* doc_salience, normalization norm) noexcept {
  const double s = double(dot(query_first, doc_first, dim));
  const double w = (query_salience ? double(query_salience[0]) : 1.0) * (doc_salience ? double(doc_salience[0]) : 1.0);
  return float(norm == normalization::none ? w * s : (w > 0.0 ? s : 0.0));
}

/// Document token 0 out of a packed sequence of either storage.
template <class Arch = default_arch>
void first_token(const void* panels, storage st, std::size_t dim, std::vector<float>& out) {
  out.resize(dim);
  for (std::size_t c = 0; c != dim; ++c)
    out[c] = packed_value(st, panels, panel_width<Arch>, dim, 0, c);
}

/// The rows kernel over panels of either storage.
template <class Arch = default_arch>
void rows_kernel(matrix_view<float> query, const void* panels, storage st, std::size_t doc_rows,
                 std::span<const std::size_t> budgets, const float* doc_salience, double* row_sum, double* row_z,
                 prefetch_hint next = {}) {
  hadamard_rows_packed_kernel{}(Arch{}, query, st, panels, doc_rows, budgets, doc_salience, row_sum, row_z, next);
}

/// Score of a query against one packed document (no validation).
template <class Arch = default_arch>
float score_packed(matrix_view<float> query, const void* panels, std::size_t doc_rows, storage st,
                   const alignment& strategy, normalization norm, const float* query_salience, const float* doc_salience,
                   prefetch_hint next = {}) {
  if (query.rows == 0 || doc_rows == 0) return 0.f;
  thread_local std::vector<double> row_sum, row_z;
  if (strategy.kind == alignment::kind_t::dense) {  // gather d_0 out of its panel, then one dot product
    thread_local std::vector<float> first;
    first_token<Arch>(panels, st, query.cols, first);
    return dense_score(query.row(0), first.data(), query.cols, query_salience, doc_salience, norm);
  }
  {
    row_sum.resize(query.rows);
    row_z.resize(query.rows);
    const std::size_t budget[] = {strategy.row_budget(doc_rows)};
    rows_kernel<Arch>(query, panels, st, doc_rows, std::span<const std::size_t>(budget), doc_salience, row_sum.data(),
                      row_z.data(), next);
  }
  return float(combine(row_sum, row_z, query_salience, norm));
}

/// Scores of one query against one packed document under several strategies at once (one pass over S).
template <class Arch = default_arch>
void score_packed_multi(matrix_view<float> query, const void* panels, std::size_t doc_rows, storage st,
                        std::span<const alignment> strategies, normalization norm, const float* query_salience,
                        const float* doc_salience, float* out, prefetch_hint next = {}) {
  if (query.rows == 0 || doc_rows == 0) {
    std::fill(out, out + strategies.size(), 0.f);
    return;
  }
  thread_local std::vector<std::size_t> budgets, which;
  thread_local std::vector<double> row_sum, row_z, column_sum, column_z;
  budgets.clear();
  which.assign(strategies.size(), std::size_t(-1));
  for (std::size_t t = 0; t != strategies.size(); ++t) {
    if (strategies[t].kind == alignment::kind_t::dense) continue;
    const std::size_t b = strategies[t].row_budget(doc_rows);
    auto it = std::find(budgets.begin(), budgets.end(), b);
    which[t] = std::size_t(it - budgets.begin());
    if (it == budgets.end()) budgets.push_back(b);
  }
  const std::size_t nb = budgets.size();
  if (nb) {
    row_sum.resize(query.rows * nb);
    row_z.resize(query.rows * nb);
    rows_kernel<Arch>(query, panels, st, doc_rows, std::span<const std::size_t>(budgets), doc_salience, row_sum.data(),
                      row_z.data(), next);
  }
  column_sum.resize(query.rows);
  column_z.resize(query.rows);
  for (std::size_t t = 0; t != strategies.size(); ++t) {
    if (which[t] == std::size_t(-1)) {
      thread_local std::vector<float> first;
      first_token<Arch>(panels, st, query.cols, first);
      out[t] = dense_score(query.row(0), first.data(), query.cols, query_salience, doc_salience, norm);
      continue;
    }
    for (std::size_t i = 0; i != query.rows; ++i) {
      column_sum[i] = row_sum[i * nb + which[t]];
      column_z[i] = row_z[i * nb + which[t]];
    }
    out[t] = float(combine(column_sum, column_z, query_salience, norm));
  }
}

inline void check_score_inputs(matrix_view<float> query, matrix_view<float> doc_tokens, const score_params& params,
                               std::size_t doc_salience_rows) {
  params.strategy.validate();
  ALIGNER_EXPECTS(query.rows == 0 || doc_tokens.rows == 0 || query.cols == doc_tokens.cols, "query dim ", query.cols,
                  " does not match document dim ", doc_tokens.cols);
  ALIGNER_EXPECTS(query.cols > 0 || query.rows == 0, "query has ", query.rows, " tokens of dimension 0");
  ALIGNER_EXPECTS(doc_tokens.rows < (std::size_t{1} << 24), "document has ", doc_tokens.rows,
                  " tokens; at most 2^24 - 1 are supported per document");
  detail::check_matrix(query, "query", params.check_finite);
  detail::check_matrix(doc_tokens, "document tokens", params.check_finite);
  detail::check_weights(params.query_salience, query.rows, "query_salience");
  detail::check_weights(params.doc_salience, doc_salience_rows, "doc_salience");
}

inline const float* data_or_null(std::span<const float> s) noexcept { return s.empty() ? nullptr : s.data(); }

}  // namespace detail

/// sim(Q, D) of one query and one document (row-major token matrices of the same dim).
/// Throws aligner::invalid_argument on a dim mismatch, a bad strategy, NaN/Inf (when params.check_finite),
/// or saliences of the wrong length or with negative/non-finite values.
inline float score(matrix_view<float> query, matrix_view<float> doc, const score_params& params = {}) {
  detail::check_score_inputs(query, doc, params, doc.rows);
  if (query.rows == 0 || doc.rows == 0) return 0.f;
  if (params.strategy.kind == alignment::kind_t::dense)
    return detail::dense_score(query.row(0), doc.row(0), doc.cols, detail::data_or_null(params.query_salience),
                               detail::data_or_null(params.doc_salience), params.norm);
  thread_local aligned_vector<float> packed;
  packed.resize(packed_size(doc.rows, doc.cols));
  pack_panels(doc, packed.data());
  return detail::score_packed(query, packed.data(), doc.rows, storage::f32, params.strategy, params.norm,
                              detail::data_or_null(params.query_salience), detail::data_or_null(params.doc_salience));
}

/// Scores one query against every document of a set stored back to back; out[d] = sim(Q, D_d).
/// params.doc_salience, when given, has one entry per token of the whole set. Nothing is written on error.
inline void score_batch(matrix_view<float> query, const sequence_set_view& docs, std::span<float> out,
                        const score_params& params = {}) {
  detail::check_offsets(docs.offsets, docs.tokens.rows, "document offsets");
  detail::check_score_inputs(query, docs.tokens, params, docs.tokens.rows);
  ALIGNER_EXPECTS(out.size() == docs.size(), "score_batch output has ", out.size(), " entries for ", docs.size(),
                  " documents");
  thread_local aligned_vector<float> packed;
  const float* ud = detail::data_or_null(params.doc_salience);
  for (std::size_t d = 0; d != docs.size(); ++d) {
    const matrix_view<float> doc = docs.sequence(d);
    if (query.rows == 0 || doc.rows == 0) {
      out[d] = 0.f;
      continue;
    }
    if (params.strategy.kind == alignment::kind_t::dense) {  // one dot product: no packing
      out[d] = detail::dense_score(query.row(0), doc.row(0), doc.cols, detail::data_or_null(params.query_salience),
                                   ud ? ud + docs.offsets[d] : nullptr, params.norm);
      continue;
    }
    packed.resize(packed_size(doc.rows, doc.cols));
    pack_panels(doc, packed.data());
    out[d] = detail::score_packed(query, packed.data(), doc.rows, storage::f32, params.strategy, params.norm,
                                  detail::data_or_null(params.query_salience), ud ? ud + docs.offsets[d] : nullptr);
  }
}

/// score_batch returning a new vector.
inline std::vector<float> score_batch(matrix_view<float> query, const sequence_set_view& docs,
                                      const score_params& params = {}) {
  std::vector<float> out(docs.size());
  score_batch(query, docs, out, params);
  return out;
}

/// The aligned pairs behind sim(Q, D), their similarities and weights; same validation as score().
inline explanation explain(matrix_view<float> query, matrix_view<float> doc, const score_params& params = {}) {
  detail::check_score_inputs(query, doc, params, doc.rows);
  explanation out;
  if (query.rows == 0 || doc.rows == 0) return out;
  aligned_vector<float> packed(packed_size(doc.rows, doc.cols));
  pack_panels(doc, packed.data());
  const std::size_t stride = panel_count(doc.rows) * panel_width<>;
  aligned_vector<float> s(query.rows * stride);
  similarity_kernel{}(default_arch{}, query, packed.data(), doc.rows, s.data(), stride);
  const bool dense = params.strategy.kind == alignment::kind_t::dense;
  const std::size_t rows = dense ? 1 : query.rows, cols = dense ? 1 : doc.rows;
  const std::size_t budget = dense ? 1 : params.strategy.row_budget(doc.rows);
  std::vector<std::uint32_t> order(cols);
  for (std::size_t i = 0; i != rows; ++i) {
    const float* row = s.data() + i * stride;
    std::iota(order.begin(), order.end(), std::uint32_t{0});
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(budget), order.end(),
                      [row](std::uint32_t a, std::uint32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    const double uq = params.query_salience.empty() ? 1.0 : double(params.query_salience[i]);
    for (std::size_t t = 0; t != budget; ++t) {
      const std::uint32_t j = order[t];
      const double w = uq * (params.doc_salience.empty() ? 1.0 : double(params.doc_salience[j]));
      out.pairs.push_back({std::uint32_t(i), j, row[j], float(w)});
      out.numerator += w * double(row[j]);
      out.z += w;
    }
  }
  out.score = float(params.norm == normalization::none ? out.numerator : (out.z > 0.0 ? out.numerator / out.z : 0.0));
  return out;
}

namespace ref {

/// Double-precision specification of sim(Q, D): S in double, per-row stable sort (ties toward smaller j).
/// Validates like aligner::score.
inline double score(matrix_view<float> query, matrix_view<float> doc, const score_params& params = {}) {
  detail::check_score_inputs(query, doc, params, doc.rows);
  if (query.rows == 0 || doc.rows == 0) return 0.0;
  const bool dense = params.strategy.kind == alignment::kind_t::dense;
  const matrix_view<float> q = dense ? query.middle_rows(0, 1) : query;
  const matrix_view<float> d = dense ? doc.middle_rows(0, 1) : doc;
  const std::size_t k = dense ? 1 : params.strategy.row_budget(doc.rows);
  std::vector<double> row_sum(q.rows), row_z(q.rows);
  aligned_row_sums(q, d, k, detail::data_or_null(params.doc_salience), row_sum.data(), row_z.data());
  return detail::combine(row_sum, row_z, detail::data_or_null(params.query_salience), params.norm);
}

}  // namespace ref
}  // namespace aligner
