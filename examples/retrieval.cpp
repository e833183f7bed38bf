// End-to-end ALIGNER retrieval over a collection folder with every available MIPS backend.
//
//   retrieval [COLLECTION_DIR] [--prune-doc B] [--candidates K] [--threads T] [--split S]
//
// COLLECTION_DIR defaults to the bundled data/cranfield; ../shared/data/scifact works too. Documents are indexed
// with IDF salience (β^d pruning keeps the top B of each document's tokens in the token index), the judged
// queries are searched with k' = K candidates per query token, candidates are reranked over all tokens, and
// nDCG@10 is printed for Top-1 and Top-p 1% with each backend, next to build time and time per query.
#include <aligner/aligner.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>
#ifdef ALIGNER_HAVE_FAISS
#include <aligner/backends/faiss.hpp>
#include <faiss/IndexHNSW.h>
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
#include <aligner/backends/hnswlib.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#ifndef ALIGNER_DATA_DIR
#define ALIGNER_DATA_DIR "data"
#endif

namespace {

using seconds = std::chrono::duration<double>;
auto now() { return std::chrono::steady_clock::now(); }

struct options {
  std::string dir = ALIGNER_DATA_DIR "/cranfield", split = "test";
  double prune_doc = 0.4;
  std::size_t candidates = 1000;
  unsigned threads = 1;
};

template <class Backend>
void run(const char* name, Backend backend, const aligner::io::collection& c, const std::vector<float>& ud, const options& o) {
  const auto t0 = now();
  aligner::aligner_retriever<Backend> index(std::move(backend), c.docs.view(), {.doc_prune = o.prune_doc}, ud);
  const double build = seconds(now() - t0).count();
  // The judged queries, back to back.
  std::vector<float> qtok;
  std::vector<std::int64_t> qoff{0};
  std::vector<std::string> qids;
  for (std::size_t q = 0; q != c.queries.size(); ++q) {
    if (!c.judgments.count(c.queries.ids[q]) || c.queries.view().length(q) == 0) continue;
    const auto v = c.queries.sequence(q);
    qtok.insert(qtok.end(), v.data, v.data + v.rows * v.cols);
    qoff.push_back(qoff.back() + std::int64_t(v.rows));
    qids.push_back(c.queries.ids[q]);
  }
  const aligner::sequence_set_view queries{{qtok.data(), std::size_t(qoff.back()), c.docs.dim}, qoff};
  for (const auto& strategy : {aligner::alignment::top1(), aligner::alignment::top_p(0.01)}) {
    const aligner::search_params p{.strategy = strategy, .candidates_per_token = o.candidates, .top = 100, .use_doc_salience = false};
    const auto t1 = now();
    const auto results = index.search_batch(queries, p, {}, o.threads);
    const double per_query_ms = 1e3 * seconds(now() - t1).count() / double(results.size());
    aligner::io::run run;
    std::size_t candidates = 0;
    for (std::size_t q = 0; q != results.size(); ++q) {
      auto& entries = run[qids[q]];
      for (std::size_t r = 0; r != results[q].ids.size(); ++r)
        entries.push_back({c.docs.ids[std::size_t(results[q].ids[r])], results[q].scores[r]});
      candidates += results[q].candidates_scored;
    }
    std::printf("%-14s %-10s nDCG@10 %.4f  R@100 %.4f  %8.2f ms/query  %7.0f candidates/query  build %6.1f s  (%zu tokens indexed)\n",
                name, strategy.name().c_str(), aligner::ndcg_at(10, run, c.judgments).mean,
                aligner::recall_at(100, run, c.judgments).mean, per_query_ms, double(candidates) / double(results.size()), build,
                index.indexed_tokens());
  }
}

}  // namespace

int main(int argc, char** argv) try {
  options o;
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* flag) {
      if (i + 1 >= argc) throw aligner::invalid_argument(std::string(flag) + " needs a value");
      return std::string(argv[++i]);
    };
    if (!std::strcmp(argv[i], "--prune-doc")) o.prune_doc = std::stod(value("--prune-doc"));
    else if (!std::strcmp(argv[i], "--candidates")) o.candidates = std::stoul(value("--candidates"));
    else if (!std::strcmp(argv[i], "--threads")) o.threads = unsigned(std::stoul(value("--threads")));
    else if (!std::strcmp(argv[i], "--split")) o.split = value("--split");
    else if (argv[i][0] == '-') throw aligner::invalid_argument(std::string("unknown option ") + argv[i]);
    else o.dir = argv[i];
  }
  const auto c = aligner::io::load_collection(o.dir, "glove100", o.split);
  const auto ud = aligner::lookup_salience(c.docs, aligner::token_idf(c.docs, c.vocab_size));
  std::printf("%s: %zu docs, %zu tokens, %zu judged queries; doc pruning %.2f, k' = %zu, %u thread(s), kernels %s\n",
              o.dir.c_str(), c.docs.size(), c.docs.tokens(), c.judgments.size(), o.prune_doc, o.candidates, o.threads,
              aligner::compiled_arch_name().c_str());
  run("exact", aligner::exact_backend(c.docs.dim), c, ud, o);
#ifdef ALIGNER_HAVE_FAISS
  {
    auto hnsw = std::make_unique<faiss::IndexHNSWFlat>(int(c.docs.dim), 16, faiss::METRIC_INNER_PRODUCT);
    hnsw->hnsw.efConstruction = 80;
    auto params = std::make_shared<faiss::SearchParametersHNSW>();
    params->efSearch = 128;
    run("faiss-hnsw", aligner::faiss_backend(std::move(hnsw), params), c, ud, o);
  }
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
  run("hnswlib", aligner::hnswlib_backend(c.docs.dim, {.ef_construction = 80, .ef_search = 128}), c, ud, o);
#endif
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "retrieval: %s\n", e.what());
  return 2;
}
