// Quick start: ALIGNER scoring on the bundled Cranfield collection (real GloVe token vectors).
//
//   quickstart [COLLECTION_DIR]      (default: the repository's data/cranfield)
//
// Loads documents, queries and graded judgments; fits the salience FFN u = ReLU(w.x + b) to token IDF and
// gates it with the entropy-regularised top-k; scores every query against every document under several
// alignment strategies (Top-1 = ColBERT MaxSim, Top-k, Top-p, dense, and Top-1 with salience); searches a
// token index pruned by salience and reranks with all tokens; prints nDCG@10 (trec_eval's definition) for each.
#include <aligner/aligner.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>

#ifndef ALIGNER_DATA_DIR
#define ALIGNER_DATA_DIR "data"
#endif

namespace {

using clock_type = std::chrono::steady_clock;

/// Scores every judged query against every packed document and returns the top 100 of each as a run: one score_store
/// call a query (prepared once, validated and laid out for the kernel, then scored against the whole store); the
/// documents' salience in the store is used when `use_doc_salience`. (`score_batch` scores documents stored row-major as they
/// are, packing each on the fly for every query: about 3x slower when the same documents are scored again and again.)
aligner::io::run rank_all(const aligner::io::collection& c, const aligner::token_store& store, aligner::score_params params,
                          const std::vector<float>* query_salience, bool use_doc_salience) {
  aligner::io::run run;
  std::vector<float> scores(store.size());
  for (std::size_t q = 0; q != c.queries.size(); ++q) {
    if (!c.judgments.count(c.queries.ids[q])) continue;
    if (query_salience)
      params.query_salience = std::span<const float>(*query_salience).subspan(std::size_t(c.queries.offsets[q]),
                                                                              c.queries.offsets[q + 1] - c.queries.offsets[q]);
    aligner::score_store(c.queries.sequence(q), store, scores, params, use_doc_salience);
    std::vector<std::size_t> order(store.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    const std::size_t top = std::min<std::size_t>(100, order.size());
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(top), order.end(), [&](std::size_t a, std::size_t b) {
      return aligner::ranks_before(scores[a], a, scores[b], b);
    });
    auto& entries = run[c.queries.ids[q]];
    for (std::size_t r = 0; r != top; ++r) entries.push_back({c.docs.ids[order[r]], scores[order[r]]});
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string dir = argc > 1 ? argv[1] : ALIGNER_DATA_DIR "/cranfield";
  const auto c = aligner::io::load_collection(dir, "glove100", "test");
  std::printf("collection %s: %zu docs (%zu tokens, dim %zu), %zu queries, %zu judged; kernels: %s\n", dir.c_str(),
              c.docs.size(), c.docs.tokens(), c.docs.dim, c.queries.size(), c.judgments.size(),
              aligner::compiled_arch_name().c_str());

  // Salience: fit u = ReLU(w.x + b) to token IDF over the vocabulary, then gate it with the top-k gate.
  const std::vector<float> idf = aligner::token_idf(c.docs, c.vocab_size);
  std::vector<float> vocab_vectors(c.vocab_size * c.docs.dim);
  for (std::size_t t = 0; t != c.docs.tokens(); ++t)
    std::copy_n(c.docs.vectors.data() + t * c.docs.dim, c.docs.dim,
                vocab_vectors.data() + std::size_t(c.docs.token_ids[t]) * c.docs.dim);
  double r2 = 0.0;
  const auto fitted = aligner::fit_salience({vocab_vectors.data(), c.vocab_size, c.docs.dim}, idf, 1e-3, &r2);
  const aligner::salience_scorer query_scorer(std::vector<float>(fitted.weights().begin(), fitted.weights().end()),
                                              fitted.bias(), aligner::gate_params{.alpha = 0.5, .epsilon = 0.002});
  const aligner::salience_scorer doc_scorer(std::vector<float>(fitted.weights().begin(), fitted.weights().end()),
                                            fitted.bias(), aligner::gate_params{.alpha = 0.4, .epsilon = 0.002});
  const std::vector<float> uq = query_scorer(c.queries.view());
  const std::vector<float> ud = doc_scorer(c.docs.view());
  std::printf("salience FFN fitted to IDF: R^2 = %.3f; gated with alpha 0.5 (queries) / 0.4 (docs), eps 0.002\n", r2);

  const std::vector<float> uq_raw = fitted(c.queries.view());  // ungated FFN salience

  struct row { const char* label; aligner::score_params params; const std::vector<float>* uq; };
  using aligner::alignment;
  const row rows[] = {
      {"top1 (ColBERT MaxSim)", {.strategy = alignment::top1()}, nullptr},
      {"topk:4", {.strategy = alignment::top_k(4)}, nullptr},
      {"topp:0.02", {.strategy = alignment::top_p(0.02)}, nullptr},
      {"dense ([CLS] only)", {.strategy = alignment::dense()}, nullptr},
      {"top1 + query salience", {.strategy = alignment::top1()}, &uq_raw},
      {"top1 + gated query salience", {.strategy = alignment::top1()}, &uq},
      {"top1 + gated q+d salience", {.strategy = alignment::top1()}, &uq},
  };
  // The documents packed once (float32 panels), with their gated salience for the last row.
  aligner::token_store store(c.docs.dim, aligner::storage::f32);
  store.add(c.docs.view(), ud);
  std::printf("\n%-34s %9s %9s %9s %10s\n", "strategy (exhaustive rerank)", "nDCG@10", "MRR@10", "R@100", "ms/query");
  for (const row& r : rows) {
    const bool doc_salience = &r == &rows[6];
    const auto start = clock_type::now();
    const auto run = rank_all(c, store, r.params, r.uq, doc_salience);
    const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count() / double(run.size());
    std::printf("%-34s %9.4f %9.4f %9.4f %10.2f\n", r.label, aligner::ndcg_at(10, run, c.judgments).mean,
                aligner::mrr_at(10, run, c.judgments).mean, aligner::recall_at(100, run, c.judgments).mean, ms);
  }

  // Pruning (SPEC section 5): a token index holding 40% of each document's tokens (by ungated salience),
  // k' = 1000 hits per query token, then the rerank over every token of each candidate.
  const std::vector<float> ud_raw = fitted(c.docs.view());
  aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(c.docs.dim), c.docs.view(),
                                                           {.doc_prune = 0.4}, ud_raw);
  aligner::io::run pruned_run;
  std::size_t candidates = 0;
  const auto start = clock_type::now();
  for (std::size_t q = 0; q != c.queries.size(); ++q) {
    if (!c.judgments.count(c.queries.ids[q])) continue;
    const auto hits = index.search(c.queries.sequence(q), {.candidates_per_token = 1000, .top = 100, .use_doc_salience = false});
    candidates += hits.candidates_scored;
    auto& entries = pruned_run[c.queries.ids[q]];
    for (std::size_t r = 0; r != hits.ids.size(); ++r) entries.push_back({c.docs.ids[std::size_t(hits.ids[r])], hits.scores[r]});
  }
  const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count() / double(pruned_run.size());
  std::printf("%-34s %9.4f %9.4f %9.4f %10.2f\n", "top1 via 40%-pruned token index", aligner::ndcg_at(10, pruned_run, c.judgments).mean,
              aligner::mrr_at(10, pruned_run, c.judgments).mean, aligner::recall_at(100, pruned_run, c.judgments).mean, ms);
  std::printf("\npruned index: %zu of %zu document tokens (%.1f%%); %.0f candidates reranked per query\n", index.indexed_tokens(),
              c.docs.tokens(), 100.0 * double(index.indexed_tokens()) / double(c.docs.tokens()),
              double(candidates) / double(pruned_run.size()));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "quickstart: %s\n", e.what());
  return 1;
}
