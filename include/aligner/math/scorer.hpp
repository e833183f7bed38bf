/** @file scorer.hpp
 *  @brief The ALIGNER score (SPEC section 1):
 *
 *      A = Ã ∘ (u^q ⊗ u^d),   Z = Σ_ij A_ij,   sim(Q, D) = (1/Z) Σ_ij S_ij A_ij,   S_ij = q_i . d_j
 *
 *  with Ã the sparse mask of an alignment strategy (alignment.hpp) and u^q, u^d optional saliences (1 when
 *  absent). `normalization::none` returns Σ S∘A undivided (Top-1 without salience: ColBERT's MaxSim).
 *  Z == 0 (or an empty side) gives 0. A is never materialised: kernels/aligned_rows.hpp folds each tile of S into a
 *  per-row top-k. Complexity O(n · m · dim).
 *
 *  Entry points: `score` (one pair), `score_batch` (one query against documents stored back to back, packed on the
 *  fly), `score_packed` / `score_packed_multi` (against packed documents, e.g. a token_store: no packing at all),
 *  `explain` (the aligned pairs: math/explain.hpp). Scoring one query against many documents: build a `prepared_query` once (validated,
 *  copied, converted for the bf16 instruction where it runs) and pass a `score_workspace` (scratch, one per thread)
 *  to skip per-call allocations. Everything is thread-safe when each thread has its own workspace.
 *  `ref::score` is the double-precision specification the fast path is tested against. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <span>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../kernels/aligned_rows.hpp"
#include "../kernels/dot.hpp"
#include "../kernels/layout.hpp"
#include "../kernels/tile.hpp"
#include "alignment.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

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

/// Scratch of the scorer, reused across calls: one per thread, never shared by concurrent calls.
struct score_workspace {
  rows_workspace rows;
  std::vector<double> row_sum, row_z, column_sum, column_z;
  std::vector<std::size_t> budgets, budget_of;
  std::vector<float> first_token;
  aligned_vector<std::uint32_t> packed;  ///< a document packed on the fly (score, score_batch)
  aligned_vector<float> similarities;    ///< explain's S
  aligned_vector<float> centroid_scores; ///< residual documents: q_i . centroid_k of the current query, centroid-major
  std::vector<float> query_major, extended_query;  ///< (its scratch)
  residual_i8_query residual_i8;         ///< residual documents on the VNNI path: the current query's int8 form
};

/// What the residual kernels take of a query for one codec (detail::prepare_residual_query): its centroid scores,
/// centroid-major, and its int8 form where the VNNI kernel runs (else null).
struct residual_query {
  const float* centroid_scores = nullptr;
  const residual_i8_query* i8 = nullptr;
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

inline const float* data_or_null(std::span<const float> s) noexcept { return s.empty() ? nullptr : s.data(); }

inline void check_score_inputs(matrix_view<float> query, matrix_view<float> doc_tokens, const score_params& params,
                               std::size_t doc_salience_rows) {
  params.strategy.validate();
  ALIGNER_EXPECTS(query.rows == 0 || doc_tokens.rows == 0 || query.cols == doc_tokens.cols, "query dim ", query.cols,
                  " does not match document dim ", doc_tokens.cols);
  ALIGNER_EXPECTS(query.cols > 0 || query.rows == 0, "query has ", query.rows, " tokens of dimension 0");
  check_sequence_length(query.rows, "the query");
  check_matrix(query, "query", params.check_finite);
  check_matrix(doc_tokens, "document tokens", params.check_finite);
  check_weights(params.query_salience, query.rows, "query_salience");
  check_weights(params.doc_salience, doc_salience_rows, "doc_salience");
}

}  // namespace detail

/// A query validated and laid out once for scoring against many documents: its rows (copied, contiguous), its
/// strategy, normalisation and salience (copied), and the forms the kernels of this CPU read for each storage
/// (bf16 pairs, the int8 forms, the expanded rows of the run-time AVX-512 tiles). `only`: prepare just the forms
/// that documents of that storage use (the others are converted per call if such documents come after all);
/// empty: every form. Throws aligner::invalid_argument like aligner::score; params.doc_salience must be empty
/// (documents bring theirs).
class prepared_query {
 public:
  prepared_query(matrix_view<float> query, const score_params& params = {}, std::optional<storage> only = std::nullopt)
      : strategy_(params.strategy), norm_(params.norm), only_(only) {
    ALIGNER_EXPECTS(params.doc_salience.empty(), "a prepared query takes no doc_salience: documents bring their own");
    detail::check_score_inputs(query, matrix_view<float>(nullptr, 0, query.cols), params, 0);
    rows_.resize(query.rows * query.cols);
    for (std::size_t i = 0; i != query.rows; ++i) std::copy_n(query.row(i), query.cols, rows_.data() + i * query.cols);
    view_ = {rows_.data(), query.rows, query.cols};
    salience_.assign(params.query_salience.begin(), params.query_salience.end());
    auto for_any = [&](std::initializer_list<storage> users) {
      return !only || std::find(users.begin(), users.end(), *only) != users.end();
    };
    if (bf16_query_rounded<>() && for_any({storage::bf16, storage::residual})) {
      bf16_.resize(bf16_query_words(query.rows, query.cols));
      query_to_bf16_pairs(view_, bf16_.data());
    }
    if ((wide_runs<>(storage::f32) && for_any({storage::f32, storage::f16, storage::i8, storage::residual})) ||
        (wide_avx2_runs<>(storage::bf16) && !bf16_on_amx<>() && for_any({storage::bf16}))) {  // (bf16 on the AVX2 tiles: the float form)
      wide_.resize(wide_query_words(query.rows, query.cols));
      query_to_wide(view_, wide_.data());
    }
    if (wide_runs<>(storage::bf16) && !bf16_on_amx<>() && for_any({storage::bf16})) {  // (AMX-BF16 scores bf16 where it runs)
      wide_bf16_.resize(wide_bf16_query_words(query.rows, query.cols));
      query_to_wide_bf16(view_, wide_bf16_.data());
    }
    if (for_any({storage::i8})) {
      if (i8_on_amx<>()) {
        i8_.resize(i8_query_words(query.rows, query.cols));
        query_to_i8_quads(view_, i8_.data());
      } else if (i8_on_vnni<>()) {
        i16_.resize(i16_query_words(query.rows, query.cols));
        query_to_i16_pairs(view_, i16_.data());
      }
    }
  }
  prepared_query(const prepared_query& other) : prepared_query(other.view_, other.params(), other.only_) {}
  prepared_query& operator=(const prepared_query& other) { return *this = prepared_query(other); }
  prepared_query(prepared_query&&) noexcept = default;
  prepared_query& operator=(prepared_query&&) noexcept = default;

  matrix_view<float> rows() const noexcept { return view_; }
  std::size_t dim() const noexcept { return view_.cols; }
  const alignment& strategy() const noexcept { return strategy_; }
  normalization norm() const noexcept { return norm_; }
  const float* salience() const noexcept { return detail::data_or_null(salience_); }
  /// The query as bf16 pairs for the AVX512-BF16 and AMX paths (null where neither ran when it was prepared).
  const std::uint32_t* bf16_pairs() const noexcept { return bf16_.empty() ? nullptr : bf16_.data(); }
  /// The query's int8 form for the AMX-INT8 path (null where it did not run when the query was prepared).
  const std::uint32_t* i8_quads() const noexcept { return i8_.empty() ? nullptr : i8_.data(); }
  /// The 16-bit form of the int8 query for the VNNI int8 path (null where it did not run when the query was prepared).
  const std::uint32_t* i16_pairs() const noexcept { return i16_.empty() ? nullptr : i16_.data(); }
  /// The query expanded for the run-time AVX-512 tiles of 4- and 8-wide panels, f32/f16/i8 and bf16 (wide.hpp; null where
  /// they did not run when the query was prepared).
  const std::uint32_t* wide() const noexcept { return wide_.empty() ? nullptr : wide_.data(); }
  const std::uint32_t* wide_bf16() const noexcept { return wide_bf16_.empty() ? nullptr : wide_bf16_.data(); }
  /// Every form, as the kernels take them.
  query_forms forms() const noexcept { return {bf16_pairs(), i8_quads(), i16_pairs(), wide(), wide_bf16()}; }
  score_params params() const { return {.strategy = strategy_, .norm = norm_, .query_salience = salience_, .check_finite = false}; }

 private:
  std::vector<float> rows_;
  matrix_view<float> view_{};
  alignment strategy_;
  normalization norm_;
  std::optional<storage> only_;
  std::vector<float> salience_;
  std::vector<std::uint32_t> bf16_, i8_, i16_;
  aligned_vector<std::uint32_t> wide_, wide_bf16_;
};

namespace detail {

/// d_0 of a packed document, contiguous (the dense strategy).
inline const float* first_token(const void* panels, storage st, std::size_t dim, score_workspace& ws,
                                const residual_codec* codec = nullptr) {
  ws.first_token.resize(dim);
  for (std::size_t c = 0; c != dim; ++c)
    ws.first_token[c] = codec ? codec->decode(panels, panel_width<>, 0, c) : packed_value(st, panels, panel_width<>, dim, 0, c);
  return ws.first_token.data();
}

/// Residual documents: what the kernels need of the query for the documents' codec, prepared into the workspace once
/// per query and call: its centroid scores (centroid_scores_by_centroid) and, where residual_on_vnni(codec), its
/// int8 form (residual_query_to_i8). Both null for other documents.
inline residual_query prepare_residual_query(const prepared_query& q, const packed_sequences& docs, score_workspace& ws) {
  if (docs.precision != storage::residual || q.rows().rows == 0) return {};
  ws.centroid_scores.resize(docs.codec->centroids() * centroid_score_rows(q.rows().rows));
  centroid_scores_by_centroid(q.rows(), *docs.codec, ws.centroid_scores.data(), ws.query_major, ws.extended_query);
  residual_query out{ws.centroid_scores.data(), nullptr};
  if (residual_on_vnni(*docs.codec)) {
    residual_query_to_i8(q.rows(), *docs.codec, ws.residual_i8);
    out.i8 = &ws.residual_i8;
  }
  return out;
}

/// The row budgets of `strategies` for a document of doc_rows tokens into ws.budgets (distinct, in first-use order)
/// and ws.budget_of (per strategy; -1 for dense). Returns the number of budgets.
inline std::size_t plan_budgets(std::span<const alignment> strategies, std::size_t doc_rows, score_workspace& ws) {
  ws.budgets.clear();
  ws.budget_of.assign(strategies.size(), std::size_t(-1));
  for (std::size_t t = 0; t != strategies.size(); ++t) {
    if (strategies[t].kind == alignment::kind_t::dense) continue;
    const std::size_t b = strategies[t].row_budget(doc_rows);
    const auto it = std::find(ws.budgets.begin(), ws.budgets.end(), b);
    ws.budget_of[t] = std::size_t(it - ws.budgets.begin());
    if (it == ws.budgets.end()) ws.budgets.push_back(b);
  }
  return ws.budgets.size();
}

/// Every query row's aligned sums against one packed document at each of ws.budgets (nb of them, nb > 0):
/// ws.row_sum / ws.row_z, query.rows x nb. Rows are scored independently of each other.
/// F32Only: st is storage::f32 (score, score_batch), and only its kernels are compiled.
template <bool F32Only = false>
void row_sums_one(const prepared_query& q, storage st, const void* panels, std::size_t doc_rows, const float* doc_salience,
                  std::size_t nb, score_workspace& ws, prefetch_hint next, const residual_codec* codec, residual_query rq) {
  const matrix_view<float> query = q.rows();
  ws.row_sum.resize(query.rows * nb);
  ws.row_z.resize(query.rows * nb);
  if constexpr (F32Only)
    aligned_row_sums_f32(query, panels, doc_rows, ws.budgets, doc_salience, ws.row_sum.data(), ws.row_z.data(), ws.rows, q.forms(),
                         next);
  else if (st == storage::residual)
    aligned_row_sums_residual(query, *codec, static_cast<const std::uint32_t*>(panels), doc_rows, ws.budgets, doc_salience,
                              ws.row_sum.data(), ws.row_z.data(), ws.rows, rq.centroid_scores, q.bf16_pairs(), next, rq.i8, q.wide());
  else
    aligned_row_sums(query, st, panels, doc_rows, ws.budgets, doc_salience, ws.row_sum.data(), ws.row_z.data(), ws.rows,
                     q.forms(), next);
}

/// The score of query rows r0 .. r1 - 1 at budget b of nb (the row sums of row_sums_one): `query_salience` holds
/// row r0's weight first (null: all ones).
inline float combine_rows(score_workspace& ws, std::size_t nb, std::size_t b, std::size_t r0, std::size_t r1,
                          const float* query_salience, normalization norm) {
  if (nb == 1)
    return float(combine(std::span<const double>(ws.row_sum).subspan(r0, r1 - r0), std::span<const double>(ws.row_z).subspan(r0, r1 - r0),
                         query_salience, norm));
  ws.column_sum.resize(r1 - r0);
  ws.column_z.resize(r1 - r0);
  for (std::size_t i = r0; i != r1; ++i) {
    ws.column_sum[i - r0] = ws.row_sum[i * nb + b];
    ws.column_z[i - r0] = ws.row_z[i * nb + b];
  }
  return float(combine(ws.column_sum, ws.column_z, query_salience, norm));
}

/// Scores of the queries stacked in `q` against one packed document under several strategies at once (one pass over
/// S): query g holds rows row_offsets[g] .. row_offsets[g + 1] - 1 (its salience and normalisation are q's) and its
/// score under strategies[k] goes to out[g * query_stride + k]. Every row's sums are computed as they would be for
/// the query alone, each query's score combines its own rows in order, and the dense strategy reads the query's own
/// first row, so a stack scores each query bit for bit as alone. No validation.
/// Residual documents (st == storage::residual) need their codec and what the kernels take of the query for it, `rq`
/// (prepare_residual_query).
template <bool F32Only = false>
void score_one_stacked(const prepared_query& q, std::span<const std::size_t> row_offsets, std::span<const alignment> strategies,
                              storage st, const void* panels, std::size_t doc_rows, const float* doc_salience, float* out,
                              std::size_t query_stride, score_workspace& ws, prefetch_hint next, const residual_codec* codec,
                              residual_query rq) {
  const std::size_t queries = row_offsets.size() - 1;
  const matrix_view<float> rows = q.rows();
  if (rows.rows == 0 || doc_rows == 0) {
    for (std::size_t g = 0; g != queries; ++g) std::fill_n(out + g * query_stride, strategies.size(), 0.f);
    return;
  }
  const std::size_t nb = plan_budgets(strategies, doc_rows, ws);
  if (nb) row_sums_one<F32Only>(q, st, panels, doc_rows, doc_salience, nb, ws, next, codec, rq);
  const float* first = nullptr;  // d_0, for a dense strategy
  for (std::size_t g = 0; g != queries; ++g) {
    const float* u = q.salience() ? q.salience() + row_offsets[g] : nullptr;
    for (std::size_t k = 0; k != strategies.size(); ++k) {
      if (ws.budget_of[k] != std::size_t(-1)) {
        out[g * query_stride + k] = combine_rows(ws, nb, ws.budget_of[k], row_offsets[g], row_offsets[g + 1], u, q.norm());
      } else {
        if (!first) first = first_token(panels, st, rows.cols, ws, codec);
        out[g * query_stride + k] = dense_score(rows.row(row_offsets[g]), first, rows.cols, u, doc_salience, q.norm());
      }
    }
  }
}

/// Scores of a prepared query against one packed document under several strategies at once (one pass over S);
/// `strategies` empty means the query's own. No validation. Residual documents as score_one_stacked.
/// F32Only as row_sums_one.
template <bool F32Only = false>
void score_one(const prepared_query& q, std::span<const alignment> strategies, storage st, const void* panels,
                      std::size_t doc_rows, const float* doc_salience, float* out, score_workspace& ws, prefetch_hint next = {},
                      const residual_codec* codec = nullptr, residual_query rq = {}) {
  if (strategies.empty()) strategies = {&q.strategy(), 1};
  const std::size_t rows[2] = {0, q.rows().rows};
  score_one_stacked<F32Only>(q, rows, strategies, st, panels, doc_rows, doc_salience, out, 0, ws, next, codec, rq);
}

/// Several queries at once: `stacked` holds their rows back to back (query g's rows are row_offsets[g] ..
/// row_offsets[g + 1] - 1; its salience and normalisation are every query's) and each document of `which` is swept
/// once for all of them: out[g * query_stride + t * per_doc + k] is query g's score of document which[t] under
/// strategies[k] (empty: the stacked query's own), equal bit for bit to scoring each query alone
/// (score_one_stacked); the next document's panels are prefetched meanwhile. `rq`: what residual documents' kernels
/// take of the stacked query for docs.codec, prepared by the caller (prepare_residual_query; several stores sharing
/// one codec share it), or empty to prepare it here. No validation.
inline void score_documents_stacked(const prepared_query& stacked, std::span<const std::size_t> row_offsets,
                                    std::span<const alignment> strategies, const packed_sequences& docs,
                                    std::span<const std::uint32_t> which, float* out, std::size_t per_doc, std::size_t query_stride,
                                    bool use_doc_salience, score_workspace& ws, residual_query rq = {}) {
  if (strategies.empty()) strategies = {&stacked.strategy(), 1};
  const std::size_t n = which.size();
  if (rq.centroid_scores == nullptr && n) rq = prepare_residual_query(stacked, docs, ws);
  for (std::size_t t = 0; t != n; ++t) {
    const std::size_t s = which[t];
    const prefetch_hint next = t + 1 < n ? prefetch_hint{docs.panels(which[t + 1]), docs.bytes_of(which[t + 1])} : prefetch_hint{};
    score_one_stacked(stacked, row_offsets, strategies, docs.precision, docs.panels(s), docs.length(s),
                      use_doc_salience ? docs.salience_of(s) : nullptr, out + t * per_doc, query_stride, ws, next, docs.codec, rq);
  }
}

/// How a rerank of `n` documents is shared out to `threads` threads (0 = one per hardware thread): the threads used
/// and the documents of a chunk. A chunk holds at least 16 documents (a workspace's warm-up and a task's hand-out are
/// paid per chunk), and there are about four chunks a thread, so that a slow chunk (long documents) does not hold the
/// others up. One thread: one chunk of all n.
struct rerank_split {
  unsigned workers = 1;
  std::size_t chunk = 1;
};
inline rerank_split split_rerank(std::size_t n, unsigned threads) noexcept {
  constexpr std::size_t min_chunk = 16;
  const unsigned workers = worker_count(n / min_chunk, threads);
  if (workers <= 1) return {1, std::max<std::size_t>(n, 1)};
  return {workers, std::max(min_chunk, (n + 4 * std::size_t(workers) - 1) / (4 * std::size_t(workers)))};
}

/// score_documents_stacked with the documents shared out to `threads` threads (split_rerank): chunks of consecutive
/// documents, each scored on its own workspace; a residual store's query form is prepared once (into ws) and read by
/// every chunk. The scores are those of one thread bit for bit (a document's score depends on nothing else). One
/// thread, or too few documents for two chunks: score_documents_stacked itself.
inline void score_documents_parallel(const prepared_query& stacked, std::span<const std::size_t> row_offsets,
                                     std::span<const alignment> strategies, const packed_sequences& docs,
                                     std::span<const std::uint32_t> which, float* out, std::size_t per_doc, std::size_t query_stride,
                                     bool use_doc_salience, score_workspace& ws, residual_query rq, unsigned threads) {
  const std::size_t n = which.size();
  const rerank_split split = split_rerank(n, threads);
  if (split.workers <= 1) {
    score_documents_stacked(stacked, row_offsets, strategies, docs, which, out, per_doc, query_stride, use_doc_salience, ws, rq);
    return;
  }
  if (rq.centroid_scores == nullptr) rq = prepare_residual_query(stacked, docs, ws);
  parallel_for((n + split.chunk - 1) / split.chunk, split.workers, [&](std::size_t c) {
    const std::size_t first = c * split.chunk, count = std::min(split.chunk, n - first);
    score_workspace local;
    score_documents_stacked(stacked, row_offsets, strategies, docs, which.subspan(first, count), out + first * per_doc, per_doc,
                            query_stride, use_doc_salience, local, rq);
  });
}

/// Packs one row-major document into the workspace (f32 panels).
inline const std::uint32_t* pack_into(matrix_view<float> doc, score_workspace& ws) {
  ws.packed.resize(packed_words(storage::f32, doc.rows, doc.cols));
  pack_panels(storage::f32, doc, ws.packed.data());
  return ws.packed.data();
}

inline void check_packed_call(const prepared_query& q, const packed_sequences& docs, std::span<const std::uint32_t> which,
                              std::size_t out_size, std::size_t per_doc) {
  ALIGNER_EXPECTS(q.rows().rows == 0 || docs.size() == 0 || q.dim() == docs.dim, "query dim ", q.dim(),
                  " does not match the documents' dim ", docs.dim);
  ALIGNER_EXPECTS(docs.precision != storage::residual || docs.codec != nullptr, "residual documents without their codec");
  ALIGNER_EXPECTS(out_size == which.size() * per_doc, "output has ", out_size, " entries for ", which.size(), " documents x ",
                  per_doc, " strategies");
  for (std::uint32_t s : which) ALIGNER_EXPECTS(s < docs.size(), "document index ", s, " is outside the ", docs.size(), " documents");
}

}  // namespace detail

namespace detail {

/// The loop of score_packed / score_packed_multi: documents `which` in order, each scored under `strategies` (empty:
/// the query's own) into out + t * per_doc, the next document's panels prefetched meanwhile (score_documents_stacked
/// of the one query). No validation. `rq` as score_documents_stacked.
inline void score_documents(const prepared_query& q, std::span<const alignment> strategies, const packed_sequences& docs,
                            std::span<const std::uint32_t> which, float* out, std::size_t per_doc, bool use_doc_salience,
                            score_workspace* workspace, residual_query rq = {}) {
  score_workspace local;
  const std::size_t rows[2] = {0, q.rows().rows};
  score_documents_stacked(q, rows, strategies, docs, which, out, per_doc, 0, use_doc_salience, workspace ? *workspace : local, rq);
}

}  // namespace detail

/// Scores a prepared query against packed documents `which` (e.g. of a token_store): out[t] for which[t]. The
/// documents' salience is used when `use_doc_salience` and they have one. Nothing is written on error.
inline void score_packed(const prepared_query& q, const packed_sequences& docs, std::span<const std::uint32_t> which,
                         std::span<float> out, bool use_doc_salience = true, score_workspace* workspace = nullptr) {
  detail::check_packed_call(q, docs, which, out.size(), 1);
  detail::score_documents(q, {}, docs, which, out.data(), 1, use_doc_salience, workspace);
}

/// Scores under several strategies in one pass over each S: out[t * strategies.size() + g] is document which[t]
/// under strategies[g] (the prepared query's own strategy is not used). Validation as score_packed.
inline void score_packed_multi(const prepared_query& q, const packed_sequences& docs, std::span<const std::uint32_t> which,
                               std::span<const alignment> strategies, std::span<float> out, bool use_doc_salience = true,
                               score_workspace* workspace = nullptr) {
  for (const auto& a : strategies) a.validate();
  ALIGNER_EXPECTS(!strategies.empty() || which.empty(), "score_packed_multi needs at least one strategy");
  detail::check_packed_call(q, docs, which, out.size(), strategies.size());
  detail::score_documents(q, strategies, docs, which, out.data(), strategies.size(), use_doc_salience, workspace);
}

/// One query against packed documents `which` (prepares the query on each call; see prepared_query).
/// params.doc_salience must be empty: the documents' own salience is used when `use_doc_salience`.
inline void score_store(matrix_view<float> query, const packed_sequences& docs, std::span<const std::uint32_t> which,
                        std::span<float> out, const score_params& params = {}, bool use_doc_salience = true) {
  score_packed(prepared_query(query, params, docs.precision), docs, which, out, use_doc_salience);
}

/// One query against every packed document (out has docs.size() entries).
inline void score_store(matrix_view<float> query, const packed_sequences& docs, std::span<float> out,
                        const score_params& params = {}, bool use_doc_salience = true) {
  std::vector<std::uint32_t> all(docs.size());
  std::iota(all.begin(), all.end(), std::uint32_t{0});
  score_store(query, docs, all, out, params, use_doc_salience);
}

/// Several strategies in one pass (see score_packed_multi).
inline void score_store_multi(matrix_view<float> query, const packed_sequences& docs, std::span<const std::uint32_t> which,
                              std::span<const alignment> strategies, std::span<float> out, const score_params& params = {},
                              bool use_doc_salience = true) {
  score_packed_multi(prepared_query(query, params, docs.precision), docs, which, strategies, out, use_doc_salience);
}

/// sim(Q, D) of one query and one document (row-major token matrices of the same dim).
/// Throws aligner::invalid_argument on a dim mismatch, a bad strategy, NaN/Inf (when params.check_finite),
/// or saliences of the wrong length or with negative/non-finite values.
inline float score(matrix_view<float> query, matrix_view<float> doc, const score_params& params = {}) {
  detail::check_score_inputs(query, doc, params, doc.rows);
  detail::check_sequence_length(doc.rows, "the document");
  if (query.rows == 0 || doc.rows == 0) return 0.f;
  if (params.strategy.kind == alignment::kind_t::dense)
    return detail::dense_score(query.row(0), doc.row(0), doc.cols, detail::data_or_null(params.query_salience),
                               detail::data_or_null(params.doc_salience), params.norm);
  score_params qp = params;
  qp.doc_salience = {};
  qp.check_finite = false;
  const prepared_query q(query, qp, storage::f32);
  score_workspace ws;
  float out = 0.f;
  detail::score_one<true>(q, {}, storage::f32, detail::pack_into(doc, ws), doc.rows, detail::data_or_null(params.doc_salience), &out, ws);
  return out;
}

/// A prepared query against every document of a set stored back to back (each packed on the fly into the
/// workspace); out[d] = sim(Q, D_d). `doc_salience`: empty or one value per token of the set. The documents are
/// validated once per call (check_finite as given); nothing is written on error.
inline void score_batch(const prepared_query& q, const sequence_set_view& docs, std::span<float> out,
                        std::span<const float> doc_salience = {}, bool check_finite = true, score_workspace* workspace = nullptr) {
  detail::check_offsets(docs.offsets, docs.tokens.rows, "document offsets");
  detail::check_matrix(docs.tokens, "document tokens", check_finite);
  detail::check_weights(doc_salience, docs.tokens.rows, "doc_salience");
  ALIGNER_EXPECTS(q.rows().rows == 0 || docs.tokens.rows == 0 || q.dim() == docs.tokens.cols, "query dim ", q.dim(),
                  " does not match document dim ", docs.tokens.cols);
  ALIGNER_EXPECTS(out.size() == docs.size(), "score_batch output has ", out.size(), " entries for ", docs.size(), " documents");
  score_workspace local;
  score_workspace& ws = workspace ? *workspace : local;
  const float* ud = detail::data_or_null(doc_salience);
  const bool dense = q.strategy().kind == alignment::kind_t::dense;
  for (std::size_t d = 0; d != docs.size(); ++d) {
    const matrix_view<float> doc = docs.sequence(d);
    const float* doc_ud = ud ? ud + docs.offsets[d] : nullptr;
    if (q.rows().rows == 0 || doc.rows == 0) {
      out[d] = 0.f;
    } else if (dense) {  // one dot product: no packing
      out[d] = detail::dense_score(q.rows().row(0), doc.row(0), doc.cols, q.salience(), doc_ud, q.norm());
    } else {
      detail::score_one<true>(q, {}, storage::f32, detail::pack_into(doc, ws), doc.rows, doc_ud, &out[d], ws);
    }
  }
}

/// Scores one query against every document of a set stored back to back; out[d] = sim(Q, D_d).
/// params.doc_salience, when given, has one entry per token of the whole set. Nothing is written on error.
inline void score_batch(matrix_view<float> query, const sequence_set_view& docs, std::span<float> out,
                        const score_params& params = {}) {
  score_params qp = params;
  qp.doc_salience = {};
  score_batch(prepared_query(query, qp, storage::f32), docs, out, params.doc_salience, params.check_finite);
}

/// score_batch returning a new vector.
inline std::vector<float> score_batch(matrix_view<float> query, const sequence_set_view& docs, const score_params& params = {}) {
  std::vector<float> out(docs.size());
  score_batch(query, docs, out, params);
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

ALIGNER_KERNEL_DIAGNOSTICS_END
