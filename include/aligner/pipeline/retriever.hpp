/** @file retriever.hpp
 *  @brief aligner_retriever<Backend>: ALIGNER retrieval over any MIPS backend (SPEC section 6).
 *
 *  1. Index: every document's kept tokens (salience pruning β^d, pruner.hpp) go into the backend, identical vectors
 *     once (index_params.dedup_tokens); token_postings maps each backend vector to the documents holding it;
 *     every token goes into a packed token_store.
 *  2. Search: each kept query token (β^q) asks the backend for its top k' vectors.
 *  3. Gather: each hit expands to every document holding that vector; their union (minus removed and filtered
 *     documents) are the candidates; search_params.ndocs > 0 keeps the best ndocs of them by the hits' similarities
 *     (cut_token_hits).
 *  4. Rerank: each candidate gets sim(Q, D) over all tokens of both sides (scorer.hpp), the top N are returned,
 *     best first, ties toward the smaller document id. `exhaustive` skips 2-3 and reranks every document.
 *  5. Explain: the aligned pairs behind one document's score.
 *  Document ids are 0-based in insertion order. Thread safety: const members (search, search_multi,
 *  search_batch, explain, and save_index of io/index_file.hpp) may run concurrently with each other; add/remove must not overlap anything on
 *  the same retriever. The retriever enforces this without locking the hot path: a search counts itself in and
 *  out, add/remove refuse to start while a search runs and searches refuse to start during add/remove, both
 *  with aligner::concurrency_error. To mutate while serving, guard the retriever with a std::shared_mutex
 *  (searches shared, add/remove exclusive) or swap in a rebuilt retriever. */
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../backends/concepts.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../math/alignment.hpp"
#include "../math/pruner.hpp"
#include "../math/salience.hpp"
#include "../math/explain.hpp"
#include "../math/scorer.hpp"
#include "../storage/token_store.hpp"
#include "access_guard.hpp"
#include "search_params.hpp"
#include "token_postings.hpp"

namespace aligner {

/// Everything a retriever holds, as one value: what save_index writes and load_index rebuilds (io/index_file.hpp).
template <mips_backend Backend>
struct retriever_state {
  Backend backend;
  index_params params{};
  std::optional<salience_scorer> doc_scorer{};  ///< computes the salience of documents added without one
  token_store store{};                           ///< every document's tokens, packed for the rerank
  token_postings tokens{};                       ///< backend vector id -> the documents holding that vector
  std::vector<bool> removed{};                   ///< per document
  std::size_t removed_count = 0;
};

namespace detail {

inline constexpr std::size_t stack_queries = 8;  ///< queries a block of a batch's exhaustive searches holds at most
inline constexpr std::size_t stack_rows = 512;   ///< and their rows (a longer query goes alone)

inline constexpr std::size_t stack_score_floats = std::size_t(1) << 23;  ///< scores a stacked rerank holds at most (32 MB)
inline constexpr std::size_t scan_rows = 64;  ///< searched rows a block of a batch's token searches holds at most (token_topk's row block)

/// The blocks ([first, last) queries) of a batch: consecutive queries, no more a block than spreads the batch over
/// every thread. Exhaustive searches: up to stack_queries queries (and `max_stack`: stack_members_for) and stack_rows
/// rows a block (a longer query alone), swept together by the rerank. Token searches where `stack_token_searches`
/// (a rows_independent_backend, no nprobe): up to scan_rows searched rows a block (the rows left after β^q),
/// searched by one backend call. Empty where blocks would not help: other searches, or one query a thread.
inline std::vector<std::pair<std::size_t, std::size_t>> query_blocks(const sequence_set_view& queries, const std::vector<search_params>& per,
                                                                   unsigned threads, bool stack_token_searches = false,
                                                                   std::size_t max_stack = stack_queries) {
  const std::size_t nq = queries.size();
  std::vector<std::pair<std::size_t, std::size_t>> blocks;
  if (nq == 0) return blocks;
  const bool exhaustive = per[0].exhaustive;
  if (!exhaustive && (!stack_token_searches || per[0].nprobe != 0)) return blocks;
  const unsigned workers = worker_count(nq, threads);
  const std::size_t per_block = std::min(exhaustive ? std::min(max_stack, stack_queries) : nq, (nq + workers - 1) / workers);
  if (per_block < 2) return blocks;
  const std::size_t max_rows = exhaustive ? stack_rows : scan_rows;
  auto rows_of = [&](std::size_t q) {
    return exhaustive ? queries.length(q) : prune_keep_count(queries.length(q), per[q].query_prune);
  };
  for (std::size_t q = 0; q != nq;) {
    std::size_t end = q + 1, rows = rows_of(q);
    while (end != nq && end - q < per_block && rows + rows_of(end) <= max_rows) rows += rows_of(end++);
    blocks.emplace_back(q, end);
    q = end;
  }
  return blocks;
}

/// How many queries a stacked rerank of `candidates` documents under `per_doc` strategies scores at once: up to
/// stack_queries, and no more than keep its scores within stack_score_floats (a batch over a quarter of a million
/// documents and six strategies stacks 5 queries, not 8); at least 1.
inline std::size_t stack_members_for(std::size_t candidates, std::size_t per_doc) noexcept {
  return std::clamp<std::size_t>(stack_score_floats / std::max<std::size_t>(1, candidates * std::max<std::size_t>(1, per_doc)), 1, stack_queries);
}

/// The stack of one block of queries q0 .. q1 - 1 (query_blocks): `members` (indices from q0) are the queries
/// with rows whose candidates are the first such query's (same_candidates(g, first)) and whose query salience is
/// given as that one's is (all or none); with two or more, `rows` holds their rows back to back, `salience` their
/// rerank salience and `row_offsets` where each member's rows start (and the end). At most `max_members` members
/// (stack_members_for); the rest of the block goes alone.
struct query_stack {
  std::vector<std::size_t> members;
  std::vector<float> rows, salience;
  std::vector<std::size_t> row_offsets{0};
  bool stacked(std::size_t g) const { return members.size() >= 2 && std::find(members.begin(), members.end(), g) != members.end(); }
};

template <class SameCandidates>
query_stack stack_queries_of(const sequence_set_view& queries, const std::vector<search_params>& per, std::size_t q0, std::size_t q1,
                             SameCandidates&& same_candidates, std::size_t max_members = stack_queries) {
  query_stack st;
  for (std::size_t g = 0; g != q1 - q0 && st.members.size() < max_members; ++g) {
    const std::size_t q = q0 + g;
    if (queries.length(q) == 0) continue;
    if (!st.members.empty()) {
      const std::size_t first = st.members.front();
      if (!same_candidates(g, first) || per[q].rerank_query_salience().empty() != per[q0 + first].rerank_query_salience().empty())
        continue;
    }
    st.members.push_back(g);
  }
  if (st.members.size() < 2) return st;
  const std::size_t dim = queries.tokens.cols;
  for (std::size_t g : st.members) {
    const matrix_view<float> query = queries.sequence(q0 + g);
    for (std::size_t i = 0; i != query.rows; ++i) st.rows.insert(st.rows.end(), query.row(i), query.row(i) + dim);
    const auto u = per[q0 + g].rerank_query_salience();
    st.salience.insert(st.salience.end(), u.begin(), u.end());
    st.row_offsets.push_back(st.row_offsets.back() + query.rows);
  }
  return st;
}

}  // namespace detail

template <mips_backend Backend>
class aligner_retriever {
 public:
  /// An empty retriever over `backend` (moved in; it must be empty). `doc_scorer`, when given, computes the
  /// salience of documents added without an explicit one.
  explicit aligner_retriever(Backend backend, index_params params = {},
                             std::optional<salience_scorer> doc_scorer = std::nullopt)
      : s_{std::move(backend), params, std::move(doc_scorer), token_store(), token_postings(params.dedup_tokens)} {
    detail::check_beta(s_.params.doc_prune, "index_params.doc_prune");
    ALIGNER_EXPECTS(s_.backend.size() == 0, "the backend must be empty, it holds ", s_.backend.size(), " vectors");
    if (s_.params.precision == storage::residual) {
      if (s_.params.codec) {
        ALIGNER_EXPECTS(s_.params.codec->dim() == s_.backend.dim(), "index_params.codec has dim ", s_.params.codec->dim(),
                        " but the backend has dim ", s_.backend.dim());
        s_.store = token_store(s_.backend.dim(), storage::residual, s_.params.codec);
      } else {
        const auto& r = s_.params.residual;
        ALIGNER_EXPECTS(r.nbits == 1 || r.nbits == 2 || r.nbits == 4 || r.nbits == 8, "index_params.residual.nbits must be 1, 2, 4 or 8, got ",
                        r.nbits);
        ALIGNER_EXPECTS(anisotropy_setting_valid(r.anisotropy), "index_params.residual.anisotropy must be 0 (default) or in [1, ",
                        residual_codec::max_anisotropy, "], got ", r.anisotropy);
        s_.store = token_store(s_.backend.dim());  // until the codec is trained by the first add
      }
    } else {
      ALIGNER_EXPECTS(!s_.params.codec, "index_params.codec is given but the precision is ", to_string(s_.params.precision));
      s_.store = token_store(s_.backend.dim(), params.precision);
    }
    if (s_.doc_scorer)
      ALIGNER_EXPECTS(s_.doc_scorer->dim() == s_.backend.dim(), "document salience scorer has dim ", s_.doc_scorer->dim(),
                      " but the backend has dim ", s_.backend.dim());
  }

  /// Builds from documents stored back to back; `doc_salience` empty or one value per token.
  aligner_retriever(Backend backend, const sequence_set_view& docs, index_params params = {},
                    std::span<const float> doc_salience = {}, std::optional<salience_scorer> doc_scorer = std::nullopt)
      : aligner_retriever(std::move(backend), params, std::move(doc_scorer)) {
    add(docs, doc_salience);
  }

  /// A retriever over a complete state (as load_index rebuilds it). Throws aligner::invalid_argument when the parts
  /// do not fit together (dims, counts, document ids, removal count).
  explicit aligner_retriever(retriever_state<Backend> state) : s_(std::move(state)) {
    detail::check_beta(s_.params.doc_prune, "index_params.doc_prune");
    ALIGNER_EXPECTS(s_.store.dim() == s_.backend.dim(), "token store dim ", s_.store.dim(), " differs from the backend dim ",
                    s_.backend.dim());
    const bool awaiting_codec = s_.params.precision == storage::residual && !s_.params.codec && s_.store.size() == 0;
    ALIGNER_EXPECTS(s_.store.precision() == s_.params.precision || awaiting_codec, "token store precision ",
                    to_string(s_.store.precision()), " differs from index_params.precision ", to_string(s_.params.precision));
    ALIGNER_EXPECTS(awaiting_codec || s_.store.codec() == s_.params.codec, "token store codec differs from index_params.codec");
    ALIGNER_EXPECTS(s_.params.dedup_tokens == s_.tokens.dedup(), "index_params.dedup_tokens differs from the token map's");
    ALIGNER_EXPECTS(s_.params.token_index || s_.backend.size() == 0, "index_params.token_index is false but the backend holds ",
                    s_.backend.size(), " vectors");
    ALIGNER_EXPECTS(s_.tokens.size() == s_.backend.size(), "backend holds ", s_.backend.size(),
                    " vectors but the token map has ", s_.tokens.size());
    ALIGNER_EXPECTS(s_.removed.size() == s_.store.size(), s_.removed.size(), " removal flags for ", s_.store.size(), " documents");
    for (std::size_t t = 0; t != s_.tokens.size(); ++t)
      ALIGNER_EXPECTS(s_.tokens.first_docs()[t] < s_.store.size(), "token map names document ", s_.tokens.first_docs()[t],
                      " (entry ", t, ") of ", s_.store.size());
    ALIGNER_EXPECTS(s_.removed_count == std::size_t(std::count(s_.removed.begin(), s_.removed.end(), true)), "removed_count ",
                    s_.removed_count, " does not match the removal flags");
    if (s_.doc_scorer)
      ALIGNER_EXPECTS(s_.doc_scorer->dim() == s_.backend.dim(), "document salience scorer has dim ", s_.doc_scorer->dim(),
                      " but the backend has dim ", s_.backend.dim());
    index_centroids(0);
  }

  // Moving or copying transfers the state; the copy's search/mutation counters start at zero (access_guard).
  aligner_retriever(aligner_retriever&&) noexcept = default;
  aligner_retriever& operator=(aligner_retriever&&) noexcept = default;
  aligner_retriever(const aligner_retriever&)
    requires std::copy_constructible<Backend>
  = default;

  /// The whole state (for persistence and inspection).
  const retriever_state<Backend>& state() const noexcept { return s_; }

  std::size_t dim() const noexcept { return s_.backend.dim(); }
  /// Documents ever added (removed ones included: ids are never reused).
  std::size_t size() const noexcept { return s_.store.size(); }
  std::size_t live_size() const noexcept { return s_.store.size() - s_.removed_count; }
  /// Vectors in the token index (distinct vectors when index_params.dedup_tokens).
  std::size_t indexed_tokens() const noexcept { return s_.tokens.size(); }
  /// (vector, document) pairs a token hit can expand to (the token index's posting entries).
  std::size_t indexed_postings() const noexcept { return s_.tokens.postings(); }
  const Backend& backend() const noexcept { return s_.backend; }
  const token_store& store() const noexcept { return s_.store; }
  const index_params& params() const noexcept { return s_.params; }
  /// Residual stores: centroid -> the documents holding a token assigned to it (ascending); empty otherwise.
  const std::vector<std::vector<std::uint32_t>>& centroid_postings() const noexcept { return centroid_docs_; }
  bool is_removed(std::int64_t id) const noexcept { return id >= 0 && std::size_t(id) < size() && s_.removed[std::size_t(id)]; }

  /// Adds documents; returns the id of the first. Salience: `doc_salience` (one per token), else the doc
  /// scorer's, else none (then β^d must be 1). All or nothing: on error nothing changes.
  std::int64_t add(const sequence_set_view& docs, std::span<const float> doc_salience = {}) {
    const access_guard::writing guard(access_, "add");
    detail::check_offsets(docs.offsets, docs.tokens.rows, "document offsets");
    ALIGNER_EXPECTS(docs.tokens.rows == 0 || docs.tokens.cols == dim(), "documents have dim ", docs.tokens.cols,
                    " but the retriever has dim ", dim());
    detail::check_matrix(docs.tokens, "document tokens", false);
    if (s_.params.check_finite) {  // named by document and token, not by a row of the joined set
      const std::size_t bad = detail::first_non_finite(docs.tokens);
      if (bad != docs.tokens.rows * docs.tokens.cols) {
        const std::size_t row = bad / docs.tokens.cols;
        const std::size_t d = std::size_t(std::upper_bound(docs.offsets.begin(), docs.offsets.end(), std::int64_t(row)) - docs.offsets.begin()) - 1;
        ALIGNER_EXPECTS(false, "document ", d, " of this add (it would get id ", size() + d, ") holds a non-finite value ",
                        docs.tokens.row(row)[bad % docs.tokens.cols], " at token ", row - std::size_t(docs.offsets[d]), ", component ",
                        bad % docs.tokens.cols);
      }
    }
    check_storable(s_.params.precision, docs.tokens);  // before the backend sees anything
    ALIGNER_EXPECTS(size() + docs.size() < std::size_t(std::numeric_limits<std::uint32_t>::max()), "too many documents");
    std::vector<float> computed;
    if (doc_salience.empty() && s_.doc_scorer && docs.tokens.rows) {
      computed = (*s_.doc_scorer)(docs, false);
      doc_salience = computed;
    }
    detail::check_weights(doc_salience, docs.tokens.rows, "doc_salience");
    const bool with_salience = !doc_salience.empty();
    ALIGNER_EXPECTS(with_salience || s_.params.doc_prune == 1.0, "index_params.doc_prune = ", s_.params.doc_prune,
                    " needs document salience (pass doc_salience or a salience scorer)");
    // A residual store without a codec trains one on these tokens first (may throw: nothing has changed yet).
    const auto& report = s_.params.progress;
    std::optional<token_store> trained;
    if (s_.params.precision == storage::residual && !s_.params.codec && docs.tokens.rows) {
      if (report) report({"codec", 0, 1});
      auto codec = std::make_shared<const residual_codec>(train_residual_codec(docs.tokens, s_.params.residual));
      if (report) report({"codec", 1, 1});
      trained.emplace(dim(), storage::residual, std::move(codec));
      if (s_.store.size()) {  // documents added before, all empty (else the codec would exist): carried over
        const std::vector<std::int64_t> zeros(s_.store.size() + 1, 0);
        trained->add(sequence_set_view{matrix_view<float>(nullptr, 0, dim()), zeros}, s_.store.all_salience(), false);
      }
    }
    if (s_.store.size() > 0 && docs.size() > 0)
      ALIGNER_EXPECTS(with_salience == s_.store.has_salience(), "the retriever's documents ",
                      s_.store.has_salience() ? "have" : "have no", " salience; added documents must match");
    // Kept tokens, gathered contiguously for the backend.
    std::vector<float> kept;
    std::vector<std::uint32_t> kept_doc;
    const std::size_t first = size();
    for (std::size_t d = 0; d != docs.size(); ++d) {
      const matrix_view<float> doc = docs.sequence(d);
      auto take = [&](std::size_t j) {
        kept.insert(kept.end(), doc.row(j), doc.row(j) + dim());
        kept_doc.push_back(std::uint32_t(first + d));
      };
      if (s_.params.doc_prune >= 1.0 || doc.rows == 0) {
        for (std::size_t j = 0; j != doc.rows; ++j) take(j);
      } else {
        for (std::uint32_t j : prune(doc_salience.subspan(std::size_t(docs.offsets[d]), doc.rows), s_.params.doc_prune)) take(j);
      }
    }
    // Identical vectors once: only vectors new to the index go to the backend (none without a token index).
    if (!s_.params.token_index) kept_doc.clear();
    auto plan = s_.tokens.prepare(matrix_view<float>(kept.data(), kept_doc.size(), dim()), kept_doc);
    if (plan.fresh_rows.size() != kept_doc.size()) {
      std::size_t w = 0;
      for (std::size_t r : plan.fresh_rows) std::copy_n(kept.data() + r * dim(), dim(), kept.data() + w++ * dim());
    }
    // Every input is validated above; the backend goes first (an adapter may still reject), then the store and the
    // token map, whose updates cannot fail on validated input (only on allocation).
    const matrix_view<float> fresh(kept.data(), plan.fresh_rows.size(), dim());
    if constexpr (configurable_backend<Backend>) {
      // The values were checked above (or index_params.check_finite is false): the backend does not scan them again.
      backend_add_options options{.check_finite = false, .threads = s_.params.threads};
      if (report && fresh.rows) {
        report({"token index", 0, fresh.rows});
        options.progress = [&](std::size_t done, std::size_t total) { report({"token index", done, total}); };
      }
      s_.backend.add(fresh, options);
    } else {
      s_.backend.add(fresh);
    }
    if (trained) {
      s_.params.codec = trained->codec();
      s_.store = std::move(*trained);
    }
    if (report && docs.size()) report({"store", 0, docs.size()});
    s_.store.add(docs, doc_salience, false);
    if (report && docs.size()) report({"store", docs.size(), docs.size()});
    s_.tokens.commit(std::move(plan));
    index_centroids(first);
    s_.removed.resize(s_.store.size(), false);
    return std::int64_t(first);
  }

  /// Adds one document (a token matrix), returning its id.
  std::int64_t add(matrix_view<float> doc, std::span<const float> doc_salience = {}) {
    const std::int64_t offsets[] = {0, std::int64_t(doc.rows)};
    return add(sequence_set_view{doc, offsets}, doc_salience);
  }

  /// Removes a document: it is never returned again (its tokens may stay in the backend; hits are dropped).
  /// Throws for an unknown or already removed id.
  void remove(std::int64_t id) {
    const access_guard::writing guard(access_, "remove");
    ALIGNER_EXPECTS(id >= 0 && std::size_t(id) < size(), "remove: unknown document id ", id, " (the retriever holds ids 0..",
                    std::int64_t(size()) - 1, ")");
    ALIGNER_EXPECTS(!s_.removed[std::size_t(id)], "remove: document id ", id, " is already removed");
    s_.removed[std::size_t(id)] = true;
    ++s_.removed_count;
  }

  /// Searches one query (row-major token matrix).
  search_result search(matrix_view<float> query, const search_params& p = {}) const {
    validate(query, p);
    return search_unchecked(query, p);
  }

  /// Searches many queries stored back to back on `threads` threads (0 = hardware concurrency); results are
  /// identical to serial searches. `query_salience`: empty or one value per token of the whole set (it
  /// replaces p.query_salience per query).
  /// Exhaustive searches (p.exhaustive) go in blocks of up to 8 consecutive queries: each
  /// document is swept once for all the rows of a block (score_documents_stacked), which reads the store once per
  /// block instead of once per query. Token searches over a rows_independent_backend (exact_backend) put up to 64
  /// kept rows of consecutive queries into one backend search, which scans the token index once per block. The
  /// results are the same bit for bit.
  std::vector<search_result> search_batch(const sequence_set_view& queries, const search_params& p = {},
                                          std::span<const float> query_salience = {}, unsigned threads = 0) const {
    const auto per = batch_params(queries, p, query_salience, "search_batch");
    auto all = run_batch(queries, per, {}, threads);
    std::vector<search_result> out(queries.size());
    for (std::size_t q = 0; q != queries.size(); ++q) out[q] = std::move(all[q][0]);
    return out;
  }

  /// search_multi for many queries stored back to back, on `threads` threads (as search_batch, exhaustive searches
  /// in blocks): result[q][g] equals search_multi of query q (with its part of `query_salience`) under strategies[g].
  std::vector<std::vector<search_result>> search_batch_multi(const sequence_set_view& queries, std::span<const alignment> strategies,
                                                             const search_params& p = {}, std::span<const float> query_salience = {},
                                                             unsigned threads = 0) const {
    for (const auto& a : strategies) a.validate();
    ALIGNER_EXPECTS(!strategies.empty(), "search_batch_multi needs at least one strategy");
    const auto per = batch_params(queries, p, query_salience, "search_batch_multi");
    return run_batch(queries, per, strategies, threads);
  }

  /// Searches one query under several strategies at once: candidates are gathered once (with p's k', β^q,
  /// filter) and every candidate's S is computed once; result g ranks the candidates under strategies[g]
  /// (p.strategy is ignored). Equal to separate searches with each strategy.
  std::vector<search_result> search_multi(matrix_view<float> query, std::span<const alignment> strategies,
                                          const search_params& p = {}) const {
    validate(query, p);
    for (const auto& a : strategies) a.validate();
    return search_unchecked_multi(query, strategies, p);
  }

  /// The aligned pairs behind document `id`'s score for `query` under p's strategy, normalisation and salience:
  /// pass the search's parameters, and `score` equals that document's score in the search's results.
  /// Throws invalid_argument for an unknown or removed id (a removed document is never a search hit).
  explanation explain(matrix_view<float> query, std::int64_t id, const search_params& p = {}) const {
    ALIGNER_EXPECTS(id >= 0 && std::size_t(id) < size(), "explain: unknown document id ", id);
    ALIGNER_EXPECTS(!s_.removed[std::size_t(id)], "explain: document id ", id, " was removed");
    validate(query, p);
    const prepared_query pq = rerank_query(query, p, p.strategy);
    return explain_packed(pq, s_.store, std::size_t(id), p.use_doc_salience);
  }

 private:
  /// The query as the rerank scores it under p (its normalisation and rerank salience) and `strategy`, prepared for
  /// the store's storage.
  prepared_query rerank_query(matrix_view<float> query, const search_params& p, const alignment& strategy) const {
    return rerank_query(query, p, strategy, p.rerank_query_salience());
  }

  /// The same with the rows' rerank salience given (a stack of queries: theirs back to back).
  prepared_query rerank_query(matrix_view<float> query, const search_params& p, const alignment& strategy, std::span<const float> salience) const {
    return prepared_query(query, {.strategy = strategy, .norm = p.norm, .query_salience = salience, .check_finite = false}, s_.store.precision());
  }

  void validate(matrix_view<float> query, const search_params& p) const {
    p.strategy.validate();
    ALIGNER_EXPECTS(query.rows == 0 || query.cols == dim(), "query dim ", query.cols, " does not match the index dim ", dim());
    ALIGNER_EXPECTS(p.top >= 1, "search_params.top must be >= 1, got ", p.top);
    ALIGNER_EXPECTS(p.exhaustive || p.candidates_per_token >= 1, "search_params.candidates_per_token (k') must be >= 1, got ",
                    p.candidates_per_token);
    ALIGNER_EXPECTS(p.nprobe == 0 || s_.store.codec() || (s_.params.precision == storage::residual && size() == 0),
                    "search_params.nprobe = ", p.nprobe, " needs a residual token store (index_params.precision = storage::residual)");
    ALIGNER_EXPECTS(p.exhaustive || p.nprobe > 0 || s_.params.token_index,
                    "this retriever has no token index (index_params.token_index = false): search with nprobe or exhaustive");
    detail::check_beta(p.query_prune, "search_params.query_prune");
    ALIGNER_EXPECTS(p.query_prune == 1.0 || query.rows == 0 || !p.query_salience.empty(), "search_params.query_prune = ", p.query_prune,
                    " needs query_salience");  // (an empty query has an empty salience: no result either way)
    detail::check_matrix(query, "query", p.check_finite);
    detail::check_weights(p.query_salience, query.rows, "query_salience");
    for (std::size_t i = 0; i != p.allowed_ids.size(); ++i)
      ALIGNER_EXPECTS(p.allowed_ids[i] >= 0 && std::size_t(p.allowed_ids[i]) < size(), "search_params.allowed_ids[", i, "] = ",
                      p.allowed_ids[i], " is not a document id (the retriever holds ids 0..", std::int64_t(size()) - 1, ")");
  }

  /// What gathering a query's candidates decides before its token search (plan_gather): the candidates themselves
  /// where no token search is needed (`done`), else the rows to search and what the hits are filtered by.
  struct gather_plan {
    bool done = true;
    std::vector<std::uint32_t> candidates;  ///< done: the candidates (sorted ids)
    bool restricted = false;                ///< a filter or allowed_ids
    std::vector<char> ok;                   ///< restricted: ok[d] = d may be returned (read by the backend's threads, never written then)
    std::vector<std::uint32_t> allowed;     ///< restricted: the allowed documents, sorted
    std::size_t allowed_with_tokens = 0;
    std::vector<float> kept;                ///< the searched rows where they are not the query's own (pruned or strided)
    matrix_view<float> rows{};              ///< the rows to search (into the query or `kept`)
    bool returnable(std::uint32_t d, const std::vector<bool>& removed) const { return restricted ? ok[d] != 0 : !removed[d]; }
  };

  /// Candidate documents of a query (sorted ids) and the diagnostics of gathering them. A restricted search (filter
  /// or allowed_ids) decides once per document whether it may be returned, pushes that decision into the token
  /// search of a filtering_backend, reranks a small allowed set whole, and returns min(top, allowed documents)
  /// results: when the token search finds fewer, every allowed document is reranked.
  std::vector<std::uint32_t> gather(matrix_view<float> query, const search_params& p, search_result& diag) const {
    gather_plan plan = plan_gather(query, p, diag);
    if (plan.done) return std::move(plan.candidates);
    if (p.nprobe) {
      auto returnable = [&](std::uint32_t d) { return plan.returnable(d, s_.removed); };
      std::vector<std::uint32_t> candidates;
      if (s_.store.codec()) candidates = probe_centroids(plan.rows, p, returnable, diag);
      if (plan.restricted && candidates.size() < std::min(p.top, plan.allowed_with_tokens)) return every_allowed(plan, p, diag);
      return candidates;
    }
    return finish_gather(plan, p, token_search(plan, plan.rows, p), diag);
  }

  /// gather up to the token search: the candidates where none is needed (an empty query or index, exhaustive, a
  /// small allowed set, an empty backend), else the rows to search (the kept query tokens, contiguous).
  gather_plan plan_gather(matrix_view<float> query, const search_params& p, search_result& diag) const {
    gather_plan plan;
    diag.empty_query = query.rows == 0;
    if (query.rows == 0 || live_size() == 0) return plan;
    plan.restricted = p.filter || !p.allowed_ids.empty();
    std::size_t allowed_tokens = 0;
    auto consider = [&](std::size_t d) {
      if (plan.ok[d] || s_.removed[d] || (p.filter && !p.filter(std::int64_t(d)))) return;
      plan.ok[d] = 1;
      plan.allowed.push_back(std::uint32_t(d));
      allowed_tokens += s_.store.length(d);
      plan.allowed_with_tokens += s_.store.length(d) != 0;
    };
    if (plan.restricted) {
      plan.ok.assign(size(), 0);
      if (!p.allowed_ids.empty()) {
        for (std::int64_t id : p.allowed_ids) consider(std::size_t(id));
        std::sort(plan.allowed.begin(), plan.allowed.end());
      } else {
        for (std::size_t d = 0; d != size(); ++d) consider(d);
      }
    }
    if (p.exhaustive) {
      plan.candidates = every_allowed(plan, p, diag);
      return plan;
    }
    // Kept query tokens, contiguous.
    const float* search_rows = nullptr;
    std::size_t search_count = query.rows;
    if (p.query_prune < 1.0) {
      const auto keep = prune(p.query_salience, p.query_prune);
      diag.query_tokens_pruned = query.rows - keep.size();
      for (std::uint32_t i : keep) plan.kept.insert(plan.kept.end(), query.row(i), query.row(i) + dim());
      search_rows = plan.kept.data();
      search_count = keep.size();
    } else if (query.stride_elems != dim()) {
      for (std::size_t i = 0; i != query.rows; ++i) plan.kept.insert(plan.kept.end(), query.row(i), query.row(i) + dim());
      search_rows = plan.kept.data();
    } else {
      search_rows = query.data;
    }
    // An allowed set holding no more tokens than the token search could return hits is reranked whole: the rerank
    // then touches no more tokens than the candidates of an unfiltered search could, and the result is exact.
    if (plan.restricted && allowed_tokens <= search_count * p.candidates_per_token) {
      plan.candidates = every_allowed(plan, p, diag);
      return plan;
    }
    diag.tokens_searched = search_count;
    plan.rows = matrix_view<float>(search_rows, search_count, dim());
    if (!p.nprobe && s_.backend.size() == 0) return plan;
    plan.done = false;
    return plan;
  }

  /// Every allowed document of a plan; outside an exhaustive search only those with tokens (a token search never
  /// finds an empty document, so the shortcuts return what a complete token search would).
  std::vector<std::uint32_t> every_allowed(const gather_plan& plan, const search_params& p, search_result& diag) const {
    diag.reranked_all_allowed = true;
    std::vector<std::uint32_t> out;
    auto take = [&](std::uint32_t d) {
      if (p.exhaustive || s_.store.length(d) != 0) out.push_back(d);
    };
    if (plan.restricted)
      for (std::uint32_t d : plan.allowed) take(d);
    else
      for (std::size_t d = 0; d != size(); ++d)
        if (!s_.removed[d]) take(std::uint32_t(d));
    return out;
  }

  /// The backend's top k' of `rows` (one query's, or a block's stacked rows whose plans restrict alike), filtered
  /// to tokens of returnable documents where plan restricts or documents were removed.
  topk_result token_search(const gather_plan& plan, matrix_view<float> rows, const search_params& p) const {
    if constexpr (filtering_backend<Backend>) {
      if (plan.restricted || s_.removed_count != 0)
        return s_.backend.search(rows, p.candidates_per_token, id_filter([&](std::int64_t t) {
                                   return s_.tokens.any_doc(std::size_t(t), [&](std::uint32_t d) { return plan.returnable(d, s_.removed); });
                                 }));
    }
    return s_.backend.search(rows, p.candidates_per_token);
  }

  /// gather after the token search: the plan's query's hits (one row per searched row) to candidates.
  std::vector<std::uint32_t> finish_gather(const gather_plan& plan, const search_params& p, const topk_result& hits, search_result& diag) const {
    std::vector<std::uint32_t> candidates;
    auto returnable = [&](std::uint32_t d) { return plan.returnable(d, s_.removed); };
    auto valid = [&](std::int64_t id) { return id >= 0 && std::size_t(id) < s_.tokens.size(); };
    if (p.ndocs == 0) {
      // Each document once, marked in a bitmap as its hits expand (with identical vectors indexed once, a common
      // vector's hit reaches many documents: sorting every expanded entry took a third of a search's time).
      std::vector<std::uint64_t> seen((size() + 63) / 64, 0);
      for (std::int64_t id : hits.ids) {
        if (!valid(id)) continue;
        ++diag.backend_hits;
        s_.tokens.for_each_doc(std::size_t(id), [&](std::uint32_t d) {
          std::uint64_t& word = seen[d / 64];
          const std::uint64_t bit = std::uint64_t(1) << (d % 64);
          if (word & bit) return;
          word |= bit;
          if (returnable(d)) candidates.push_back(d);
        });
      }
      std::sort(candidates.begin(), candidates.end());
    } else {
      candidates = cut_token_hits(hits, p.ndocs, valid, returnable, diag);
    }
    if (plan.restricted && candidates.size() < std::min(p.top, plan.allowed_with_tokens)) return every_allowed(plan, p, diag);
    return candidates;
  }

  /// The top p.top of candidates by score (stride apart in `scores`), ties toward the smaller id.
  static void rank(const std::vector<std::uint32_t>& candidates, const float* scores, std::size_t stride, std::size_t top,
                   search_result& out) {
    std::vector<std::uint32_t> order(candidates.size());
    std::iota(order.begin(), order.end(), std::uint32_t{0});
    top = std::min(top, order.size());
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(top), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      return ranks_before(scores[a * stride], candidates[a], scores[b * stride], candidates[b]);
    });
    out.ids.resize(top);
    out.scores.resize(top);
    for (std::size_t r = 0; r != top; ++r) {
      out.ids[r] = candidates[order[r]];
      out.scores[r] = scores[order[r] * stride];
    }
    out.candidates_scored = candidates.size();
  }

  search_result search_unchecked(matrix_view<float> query, const search_params& p) const {
    const access_guard::reading guard(access_);
    search_result out;
    const auto candidates = gather(query, p, out);
    rerank_one(query, p, candidates, out);
    return out;
  }

  /// The rerank of search_unchecked: `candidates` (gathered with p) scored and ranked into `out` (which holds the
  /// gathering's diagnostics).
  void rerank_one(matrix_view<float> query, const search_params& p, const std::vector<std::uint32_t>& candidates, search_result& out) const {
    std::vector<float> scores(candidates.size());
    const prepared_query pq = rerank_query(query, p, p.strategy);
    score_candidates(pq, {}, candidates, scores, p);
    rank(candidates, scores.data(), 1, p.top, out);
  }

  /// score_packed / score_packed_multi of the candidates on p.threads threads (detail::score_documents_parallel).
  void score_candidates(const prepared_query& pq, std::span<const alignment> strategies, const std::vector<std::uint32_t>& candidates,
                        std::vector<float>& scores, const search_params& p) const {
    const packed_sequences docs = s_.store.view();
    const std::size_t per_doc = std::max<std::size_t>(1, strategies.size()), rows[2] = {0, pq.rows().rows};
    detail::check_packed_call(pq, docs, candidates, scores.size(), per_doc);
    score_workspace ws;
    detail::score_documents_parallel(pq, rows, strategies, docs, candidates, scores.data(), per_doc, 0, p.use_doc_salience, ws, {},
                                     p.threads);
  }

  std::vector<search_result> search_unchecked_multi(matrix_view<float> query, std::span<const alignment> strategies,
                                                    const search_params& p) const {
    const access_guard::reading guard(access_);
    search_result diag;
    const auto candidates = gather(query, p, diag);
    return rerank_multi(query, strategies, p, candidates, diag);
  }

  std::vector<search_result> rerank_multi(matrix_view<float> query, std::span<const alignment> strategies, const search_params& p,
                                          const std::vector<std::uint32_t>& candidates, const search_result& diag) const {
    std::vector<float> scores(candidates.size() * strategies.size());
    const prepared_query pq = rerank_query(query, p, {});
    ALIGNER_EXPECTS(!strategies.empty() || candidates.empty(), "score_packed_multi needs at least one strategy");  // (as score_packed_multi)
    score_candidates(pq, strategies, candidates, scores, p);
    std::vector<search_result> out(strategies.size(), diag);
    for (std::size_t g = 0; g != strategies.size(); ++g) rank(candidates, scores.data() + g, strategies.size(), p.top, out[g]);
    return out;
  }

  /// Each query's search_params of a batch (p with the query's part of query_salience), validated.
  std::vector<search_params> batch_params(const sequence_set_view& queries, const search_params& p, std::span<const float> query_salience,
                                          const char* what) const {
    detail::check_offsets(queries.offsets, queries.tokens.rows, "query offsets");
    detail::check_weights(query_salience, queries.tokens.rows, "query_salience");
    ALIGNER_EXPECTS(p.query_salience.empty(), what, " takes query salience as its own argument, not in search_params");
    ALIGNER_EXPECTS(p.threads == 1, what, " spreads its queries over its own threads argument: search_params.threads must be 1, got ",
                    p.threads);
    std::vector<search_params> per(queries.size(), p);
    for (std::size_t q = 0; q != queries.size(); ++q) {
      if (!query_salience.empty())
        per[q].query_salience = query_salience.subspan(std::size_t(queries.offsets[q]), queries.length(q));
      validate(queries.sequence(q), per[q]);
    }
    return per;
  }

  /// The searches of a batch: result[q] holds one result per strategy (strategies empty: p.strategy's search alone,
  /// as search_unchecked). Exhaustive searches run in blocks of consecutive queries whose
  /// candidates are the same (every allowed document), scored by score_documents_stacked; a query whose candidates
  /// differ from its block's first, or that has no rows, is reranked alone. An exception in any search (a throwing
  /// filter, a concurrency_error) stops the batch and reaches the caller.
  std::vector<std::vector<search_result>> run_batch(const sequence_set_view& queries, const std::vector<search_params>& per,
                                                    std::span<const alignment> strategies, unsigned threads) const {
    const std::size_t nq = queries.size();
    std::vector<std::vector<search_result>> out(nq);
    auto alone = [&](std::size_t q) {
      if (strategies.empty())
        out[q] = {search_unchecked(queries.sequence(q), per[q])};
      else
        out[q] = search_unchecked_multi(queries.sequence(q), strategies, per[q]);
    };
    const auto blocks = detail::query_blocks(queries, per, threads, rows_independent_backend<Backend>,
                                             detail::stack_members_for(live_size(), strategies.size()));
    if (blocks.empty()) {
      parallel_for(nq, threads, alone);
      return out;
    }
    parallel_for(blocks.size(), threads, [&](std::size_t b) { rerank_block(queries, per, strategies, blocks[b].first, blocks[b].second, out); });
    return out;
  }

  /// One block of run_batch: queries q0 .. q1 - 1.
  void rerank_block(const sequence_set_view& queries, const std::vector<search_params>& per, std::span<const alignment> strategies,
                    std::size_t q0, std::size_t q1, std::vector<std::vector<search_result>>& out) const {
    const access_guard::reading guard(access_);
    const std::size_t count = q1 - q0;
    std::vector<search_result> diag(count);
    std::vector<std::vector<std::uint32_t>> candidates(count);
    if (per[q0].exhaustive || per[q0].nprobe != 0) {
      for (std::size_t g = 0; g != count; ++g) candidates[g] = gather(queries.sequence(q0 + g), per[q0 + g], diag[g]);
    } else {
      gather_block(queries, per, q0, q1, diag, candidates);
    }
    const auto st = detail::stack_queries_of(
        queries, per, q0, q1, [&](std::size_t g, std::size_t first) { return candidates[g] == candidates[first]; },
        detail::stack_members_for(std::max_element(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) { return a.size() < b.size(); })->size(),
                                  strategies.size()));
    const auto& members = st.members;
    auto finish_alone = [&](std::size_t g) {
      const std::size_t q = q0 + g;
      if (strategies.empty()) {
        out[q] = {diag[g]};
        rerank_one(queries.sequence(q), per[q], candidates[g], out[q][0]);
      } else {
        out[q] = rerank_multi(queries.sequence(q), strategies, per[q], candidates[g], diag[g]);
      }
    };
    if (members.size() < 2) {
      for (std::size_t g = 0; g != count; ++g) finish_alone(g);
      return;
    }
    const search_params& p = per[q0 + members.front()];
    const std::vector<std::uint32_t>& which = candidates[members.front()];
    const std::size_t per_doc = strategies.empty() ? 1 : strategies.size();
    const prepared_query pq =
        rerank_query(matrix_view<float>(st.rows.data(), st.row_offsets.back(), dim()), p, strategies.empty() ? p.strategy : alignment{}, st.salience);
    std::vector<float> scores(members.size() * which.size() * per_doc);
    score_workspace ws;
    detail::score_documents_stacked(pq, st.row_offsets, strategies, s_.store, which, scores.data(), per_doc, which.size() * per_doc,
                                    p.use_doc_salience, ws);
    for (std::size_t m = 0; m != members.size(); ++m) {
      const std::size_t g = members[m], q = q0 + g;
      out[q].assign(per_doc, diag[g]);
      for (std::size_t k = 0; k != per_doc; ++k)
        rank(which, scores.data() + m * which.size() * per_doc + k, per_doc, per[q].top, out[q][k]);
    }
    for (std::size_t g = 0; g != count; ++g)
      if (!st.stacked(g)) finish_alone(g);
  }

  /// The candidates of token searches q0 .. q1 - 1 of a batch (rows_independent_backend): the queries that need a
  /// token search and whose plans restrict alike put their rows into one backend search (a row's hits are then
  /// those of its own query's search), the others gather alone; equal to gather() query by query.
  void gather_block(const sequence_set_view& queries, const std::vector<search_params>& per, std::size_t q0, std::size_t q1,
                    std::vector<search_result>& diag, std::vector<std::vector<std::uint32_t>>& candidates) const {
    const std::size_t count = q1 - q0;
    std::vector<gather_plan> plans(count);
    std::vector<std::size_t> members;
    for (std::size_t g = 0; g != count; ++g) {
      plans[g] = plan_gather(queries.sequence(q0 + g), per[q0 + g], diag[g]);
      if (plans[g].done) {
        candidates[g] = std::move(plans[g].candidates);
        continue;
      }
      // The backend's filter is the first member's: a query whose plan restricts otherwise (a batch's queries share
      // their search_params, so none does) or whose k' differs searches alone.
      if (!members.empty()) {
        const gather_plan& first = plans[members.front()];
        if (plans[g].restricted != first.restricted || plans[g].ok != first.ok ||
            per[q0 + g].candidates_per_token != per[q0 + members.front()].candidates_per_token) {
          candidates[g] = finish_gather(plans[g], per[q0 + g], token_search(plans[g], plans[g].rows, per[q0 + g]), diag[g]);
          continue;
        }
      }
      members.push_back(g);
    }
    if (members.empty()) return;
    const std::size_t d = dim();
    std::vector<float> rows;
    std::vector<std::size_t> offsets{0};
    for (std::size_t g : members) {
      const matrix_view<float> r = plans[g].rows;
      for (std::size_t i = 0; i != r.rows; ++i) rows.insert(rows.end(), r.row(i), r.row(i) + d);
      offsets.push_back(offsets.back() + r.rows);
    }
    const search_params& p = per[q0 + members.front()];
    const topk_result all = token_search(plans[members.front()], matrix_view<float>(rows.data(), offsets.back(), d), p);
    const std::size_t k = all.k;
    for (std::size_t m = 0; m != members.size(); ++m) {
      const std::size_t g = members[m], r0 = offsets[m], r1 = offsets[m + 1];
      topk_result hits(r1 - r0, k);
      std::copy(all.ids.begin() + std::ptrdiff_t(r0 * k), all.ids.begin() + std::ptrdiff_t(r1 * k), hits.ids.begin());
      std::copy(all.scores.begin() + std::ptrdiff_t(r0 * k), all.scores.begin() + std::ptrdiff_t(r1 * k), hits.scores.begin());
      candidates[g] = finish_gather(plans[g], per[q0 + g], hits, diag[g]);
    }
  }

  /// Token-search candidates (sorted ids) cut to the best `ndocs` by the token-search score: per searched query row,
  /// the score of the row's best hit whose vector a document holds (hits come best first) minus the row's lowest
  /// valid hit score, summed over the rows (a row that reaches no hit of the document adds 0: its lowest hit score,
  /// XTR's imputation, relative to that lowest). Ties toward the smaller id. Sums in double, in row order.
  template <class Valid, class Returnable>
  std::vector<std::uint32_t> cut_token_hits(const topk_result& hits, std::size_t ndocs, Valid&& valid, Returnable&& returnable,
                                            search_result& diag) const {
    std::vector<std::uint32_t> candidates, last_row(size(), std::uint32_t(-1));
    std::vector<double> approx(size(), 0.0);
    for (std::size_t i = 0; i != hits.rows; ++i) {
      const std::int64_t* ids = hits.ids.data() + i * hits.k;
      const float* scores = hits.scores.data() + i * hits.k;
      double low = 0.0;
      bool any = false;
      for (std::size_t t = 0; t != hits.k; ++t)
        if (valid(ids[t])) low = double(scores[t]), any = true;
      if (!any) continue;
      for (std::size_t t = 0; t != hits.k; ++t) {
        if (!valid(ids[t])) continue;
        ++diag.backend_hits;
        const double gain = double(scores[t]) - low;
        s_.tokens.for_each_doc(std::size_t(ids[t]), [&](std::uint32_t d) {
          if (last_row[d] == std::uint32_t(i)) return;  // the row's best hit of d came first
          if (last_row[d] == std::uint32_t(-1) && returnable(d)) candidates.push_back(d);
          last_row[d] = std::uint32_t(i);
          approx[d] += gain;
        });
      }
    }
    if (candidates.size() > ndocs) {
      std::nth_element(candidates.begin(), candidates.begin() + std::ptrdiff_t(ndocs), candidates.end(),
                       [&](std::uint32_t a, std::uint32_t b) { return ranks_before(approx[a], a, approx[b], b); });
      candidates.resize(ndocs);
    }
    std::sort(candidates.begin(), candidates.end());
    return candidates;
  }

  /// Adds documents first.. size() - 1 of a residual store to the centroid postings.
  void index_centroids(std::size_t first) {
    if (!s_.store.codec()) return;
    const residual_codec& codec = *s_.store.codec();
    centroid_docs_.resize(codec.centroids());
    constexpr std::size_t width = panel_width<>;
    const std::size_t words = codec.panel_words(width);
    for (std::size_t d = first; d < size(); ++d)
      for (std::size_t j = 0; j != s_.store.length(d); ++j) {
        auto& docs = centroid_docs_[residual_codec::centroid_of(s_.store.panels(d) + (j / width) * words, j % width)];
        if (docs.empty() || docs.back() != std::uint32_t(d)) docs.push_back(std::uint32_t(d));
      }
  }

  /// Centroid-posting candidates (sorted ids): the documents holding a token assigned to one of each query row's
  /// nprobe best centroids, cut to the best ndocs by the centroid-only score when p.ndocs > 0.
  template <class Returnable>
  std::vector<std::uint32_t> probe_centroids(matrix_view<float> rows, const search_params& p, Returnable&& returnable,
                                             search_result& diag) const {
    const residual_codec& codec = *s_.store.codec();
    const std::size_t K = codec.centroids(), stride = centroid_score_stride(codec), probes = std::min(p.nprobe, K);
    std::vector<float> qc(rows.rows * stride), scratch;
    centroid_scores(rows, codec, qc.data(), scratch);
    std::vector<std::uint32_t> order(K), candidates;
    std::vector<float> approx(size(), 0.f);
    std::vector<std::uint32_t> last_row(size(), std::uint32_t(-1)), first_row(size(), std::uint32_t(-1));
    for (std::size_t i = 0; i != rows.rows; ++i) {
      const float* score = qc.data() + i * stride;
      std::iota(order.begin(), order.end(), std::uint32_t{0});
      std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(probes), order.end(),
                        [score](std::uint32_t a, std::uint32_t b) { return ranks_before(score[a], a, score[b], b); });
      for (std::size_t t = 0; t != probes; ++t)  // best first: a document's first probe of row i is its best
        for (std::uint32_t d : centroid_docs_[order[t]]) {
          if (last_row[d] == std::uint32_t(i)) continue;
          last_row[d] = std::uint32_t(i);
          approx[d] += score[order[t]] - score[order[probes - 1]];
          if (first_row[d] == std::uint32_t(-1)) {
            first_row[d] = std::uint32_t(i);
            if (returnable(d)) candidates.push_back(d);
          }
        }
    }
    diag.backend_hits = rows.rows * probes;
    if (p.ndocs && candidates.size() > p.ndocs) {
      std::nth_element(candidates.begin(), candidates.begin() + std::ptrdiff_t(p.ndocs), candidates.end(),
                       [&](std::uint32_t a, std::uint32_t b) { return ranks_before(approx[a], a, approx[b], b); });
      candidates.resize(p.ndocs);
    }
    std::sort(candidates.begin(), candidates.end());
    return candidates;
  }

  retriever_state<Backend> s_;
  std::vector<std::vector<std::uint32_t>> centroid_docs_;  ///< residual stores: centroid -> documents holding it (ascending)
  access_guard access_;  ///< searches counted in and out, add/remove refused while they run
};

}  // namespace aligner
