/** @file search_params.hpp
 *  @brief The settings and results of aligner_retriever (pipeline/retriever.hpp): what is fixed at indexing, the
 *  knobs of one search, and a ranked result with its diagnostics. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "../kernels/storage.hpp"
#include "../math/alignment.hpp"
#include "../math/residual_training.hpp"

namespace aligner {

/// Where a long add stands (index_params.progress): `stage` is "codec" (training the residual codec on the first
/// add), "token index" (vectors inserted into the backend: done of total vectors) or "store" (documents written to
/// the rerank store, encoded for residual stores); each stage reports 0 of total first and total of total last.
struct build_progress {
  std::string_view stage;
  std::size_t done = 0, total = 0;
};

/// Settings fixed when documents are indexed. Like search_params, the field order is part of the API (designated
/// initialisers) and never changes.
struct index_params {
  double doc_prune = 1.0;  ///< β^d in (0, 1]: fraction of each document's tokens (by salience) given to the backend
  bool check_finite = true;
  storage precision = storage::f32;  ///< token store precision for the rerank (bf16/f16: half the memory, i8: a quarter,
                                     ///< residual: a centroid id + nbits per component, e.g. 27 bytes a token at dim 100, 2 bits)
  /// storage::residual: the codec (kernels/residual.hpp); when null, one is trained with `residual` on the tokens of
  /// the first add that has any (before anything changes; a training error leaves the retriever empty).
  std::shared_ptr<const residual_codec> codec{};
  residual_params residual{};  ///< training settings of that codec (nbits, centroids, sample, iterations, seed, threads)
  /// Identical token vectors enter the backend once, with a posting list of the documents holding them (a hit
  /// expands to all): robust candidates and a smaller index for static embeddings; no effect on distinct vectors.
  bool dedup_tokens = true;
  /// false: document tokens are not given to the backend (it stays empty). Candidates then come from the residual
  /// store's centroid postings (search_params.nprobe) or an exhaustive search: the index holds codes only.
  bool token_index = true;
  /// Threads of an add's token-index insertion (0 = one per hardware thread; bundled backends: hnswlib inserts in
  /// parallel, and its graph then depends on the timing; the exact backend packs on one thread, FAISS uses its own
  /// OpenMP threads). The residual codec's training threads are residual.threads.
  unsigned threads = 1;
  /// Optional: told where a long add stands (build_progress), from the adding threads, one call at a time. It must
  /// not throw. Not saved with the index.
  std::function<void(const build_progress&)> progress{};
};

/// Per-call knobs of a search. The field order is part of the API: users write designated initialisers, which C++
/// requires in declaration order, so fields are never reordered (new ones are appended; test_retriever.cpp spells
/// every field in order and stops compiling if they move). The order: the strategy, the candidate knobs, the
/// restrictions, the switches.
struct search_params {
  alignment strategy = alignment::top1();
  normalization norm = normalization::mean;
  std::size_t candidates_per_token = 4000;  ///< k': backend hits per kept query token (>= 1)
  std::size_t top = 1000;                   ///< N: results returned (>= 1)
  bool exhaustive = false;                  ///< rerank every (allowed, not removed) document, no token search
  /// > 0: centroid-posting candidates instead of the token search (residual stores): each kept query token probes
  /// its nprobe best centroids (by q . centroid) and every document holding a token of one is a candidate.
  std::size_t nprobe = 0;
  /// > 0: keep the best ndocs candidates by an approximate score before the exact rerank (a bound on the rerank's
  /// cost); 0 keeps them all. The score sums, per kept query token, the best similarity through which the candidate
  /// was found or, when that token did not find it, the token's lowest one (XTR's imputation of a missing
  /// similarity: without it a document missing one token's hits loses that token's whole score). With nprobe the
  /// similarities are the probed centroids' (PLAID's centroid interaction); with the token search, its hits' (a hit
  /// on a vector reaches every document holding it). Ties toward the smaller id. Exhaustive searches rerank all.
  std::size_t ndocs = 0;
  double query_prune = 1.0;                 ///< β^q in (0, 1]; < 1 needs query_salience
  std::span<const float> query_salience{};  ///< u^q (one per query token) or empty
  bool use_doc_salience = true;             ///< weight pairs with the stored document salience, when there is one
  /// Optional: only documents for which it returns true (called once per document and search, on the searching
  /// thread). With a filter or allowed_ids a search returns min(top, allowed documents) results: the restriction is
  /// pushed into the token search of a filtering_backend (exact, FAISS), an allowed set of at most k' x (kept query
  /// tokens) tokens is reranked whole, and a token search that finds fewer than `top` allowed documents falls back
  /// to reranking every allowed document.
  std::function<bool(std::int64_t)> filter{};
  std::span<const std::int64_t> allowed_ids{};  ///< optional: only these document ids (each must exist)
  bool check_finite = true;
  /// false: query_salience only chooses the kept query tokens (query_prune) and does not weight the rerank (with
  /// use_doc_salience = false, salience then decides which tokens are searched, never a score).
  bool use_query_salience = true;
  /// Threads of this one search's exact rerank (0 = one per hardware thread): the candidates are shared out in
  /// chunks, each scored on its own workspace, so a search's latency falls with cores while its results stay bit for
  /// bit those of one thread. An index directory's centroid postings are walked segment by segment on the same
  /// threads; a retriever's candidate step (token search, centroid postings) runs on the calling thread.
  /// search_batch / search_batch_multi spread their queries over their own `threads` argument and need 1 here.
  unsigned threads = 1;

  /// The query salience the rerank weighs pairs with (empty when use_query_salience is false).
  std::span<const float> rerank_query_salience() const noexcept { return use_query_salience ? query_salience : std::span<const float>(); }
};

/// Ranked documents of one query plus diagnostics.
struct search_result {
  std::vector<std::int64_t> ids;  ///< document ids, best first
  std::vector<float> scores;      ///< sim(Q, D) of each
  std::size_t candidates_scored = 0;  ///< documents reranked
  std::size_t tokens_searched = 0;    ///< query tokens sent to the backend
  std::size_t query_tokens_pruned = 0;
  std::size_t backend_hits = 0;       ///< valid token hits returned by the backend (centroid probes with nprobe)
  bool reranked_all_allowed = false;  ///< every allowed document was reranked (exhaustive, a small allowed set, or a
                                      ///< filtered token search that found fewer than `top` documents)
  bool empty_query = false;           ///< the query had no tokens: nothing was searched and there are no results
};

}  // namespace aligner
