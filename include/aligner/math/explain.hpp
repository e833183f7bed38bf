/** @file explain.hpp
 *  @brief Why a document got its score: the aligned pairs (i, j) of its alignment, their similarities S_ij and
 *  weights A_ij, from the same register tiles the scorer uses, next to the scorer's own score. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/types.hpp"
#include "../kernels/dot.hpp"
#include "../kernels/amx.hpp"
#include "../kernels/layout.hpp"
#include "../kernels/tile.hpp"
#include "alignment.hpp"
#include "scorer.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

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

/// The aligned pairs behind the score of packed document `s` (e.g. of a token_store): every pair the kernel aligns,
/// grouped by query token, best first, with S_ij from the same register tiles; `score` is the kernel's own score of
/// that document (bit-identical to score_packed and to a search hit's score). Validation as score_packed.
inline explanation explain_packed(const prepared_query& q, const packed_sequences& docs, std::size_t s, bool use_doc_salience = true);

namespace detail {

/// explain_packed after its validation. F32Only: float32 documents, scored and tiled by the float engine alone (explain
/// of two float matrices compiles no other storage's kernels, as score does).
template <bool F32Only>
explanation explain_in(const prepared_query& q, const packed_sequences& docs, std::size_t s, bool use_doc_salience) {
  explanation out;
  const matrix_view<float> query = q.rows();
  const std::size_t m = docs.length(s);
  if (query.rows == 0 || m == 0) return out;
  score_workspace ws;
  const float* ud = use_doc_salience ? docs.salience_of(s) : nullptr;
  const residual_query rq = F32Only ? residual_query{} : prepare_residual_query(q, docs, ws);
  score_one<F32Only>(q, {}, docs.precision, docs.panels(s), m, ud, &out.score, ws, {}, docs.codec, rq);
  const bool dense = q.strategy().kind == alignment::kind_t::dense;
  const float* uq = q.salience();
  if (dense) {  // the pair (0, 0), with the dot product the dense score uses
    const float s00 = dot(query.row(0), first_token(docs.panels(s), docs.precision, query.cols, ws, docs.codec), query.cols);
    const double w = (uq ? double(uq[0]) : 1.0) * (ud ? double(ud[0]) : 1.0);
    out.pairs.push_back({0, 0, s00, float(w)});
    out.numerator = w * double(s00);
    out.z = w;
    return out;
  }
  const std::size_t stride = panel_count(m) * panel_width<>;
  ws.similarities.resize(query.rows * stride);
  if constexpr (F32Only)
    similarity_rows_f32(query, docs.panels(s), m, ws.similarities.data(), stride, q.wide());
  else if (docs.precision == storage::residual)
    residual_similarity_rows(query, *docs.codec, docs.panels(s), m, ws.similarities.data(), stride, rq.centroid_scores, ws.rows.decoded,
                             q.bf16_pairs(), rq.i8, q.wide());
  else
    packed_similarity_rows(query, docs.precision, docs.panels(s), m, ws.similarities.data(), stride, q.forms());
  const std::size_t budget = q.strategy().row_budget(m);
  std::vector<std::uint32_t> order(m);
  for (std::size_t i = 0; i != query.rows; ++i) {
    const float* row = ws.similarities.data() + i * stride;
    std::iota(order.begin(), order.end(), std::uint32_t{0});
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(budget), order.end(),
                      [row](std::uint32_t a, std::uint32_t b) { return ranks_before(row[a], a, row[b], b); });
    const double u = uq ? double(uq[i]) : 1.0;
    for (std::size_t t = 0; t != budget; ++t) {
      const std::uint32_t j = order[t];
      const double w = u * (ud ? double(ud[j]) : 1.0);
      out.pairs.push_back({std::uint32_t(i), j, row[j], float(w)});
      out.numerator += w * double(row[j]);
      out.z += w;
    }
  }
  return out;
}

}  // namespace detail

inline explanation explain_packed(const prepared_query& q, const packed_sequences& docs, std::size_t s, bool use_doc_salience) {
  ALIGNER_EXPECTS(s < docs.size(), "document index ", s, " is outside the ", docs.size(), " documents");
  const std::uint32_t which[] = {std::uint32_t(s)};  // (s fits: checked first)
  detail::check_packed_call(q, docs, which, 1, 1);
  return detail::explain_in<false>(q, docs, s, use_doc_salience);
}

/// The aligned pairs behind sim(Q, D), their similarities and weights; same validation as score().
inline explanation explain(matrix_view<float> query, matrix_view<float> doc, const score_params& params = {}) {
  detail::check_score_inputs(query, doc, params, doc.rows);
  detail::check_sequence_length(doc.rows, "the document");
  score_params qp = params;
  qp.doc_salience = {};
  qp.check_finite = false;
  const prepared_query q(query, qp, storage::f32);
  aligned_vector<std::uint32_t> packed(packed_words(storage::f32, doc.rows, doc.cols));
  pack_panels(storage::f32, doc, packed.data());
  const std::int64_t panel_offsets[] = {0}, offsets[] = {0, std::int64_t(doc.rows)};
  return detail::explain_in<true>(q, {storage::f32, doc.cols, packed.data(), panel_offsets, offsets, params.doc_salience}, 0, true);
}

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
