// Retriever on real data (bundled Cranfield, GloVe tokens): batch search throughput by thread count, exhaustive
// rerank (every document scored per query) and token search (k' = 1000, 40%-pruned index), with recall@10 of
// the token-search results against the exhaustive ones.
#include "bench_common.hpp"

#include <aligner/eval/idf.hpp>
#include <aligner/io/collection.hpp>

#include <set>

#ifndef ALIGNER_DATA_DIR
#define ALIGNER_DATA_DIR "data"
#endif

namespace {

struct cranfield_fixture {
  explicit cranfield_fixture(aligner::storage st) : precision(st) {}
  aligner::storage precision;
  aligner::io::collection c = aligner::io::load_collection(ALIGNER_DATA_DIR "/cranfield");
  std::vector<float> ud = aligner::lookup_salience(c.docs, aligner::token_idf(c.docs, c.vocab_size));
  aligner::aligner_retriever<aligner::exact_backend> index{aligner::exact_backend(c.docs.dim), c.docs.view(),
                                                          {.doc_prune = 0.4, .precision = precision}, ud};
  std::vector<aligner::search_result> exhaustive_top10 =
      index.search_batch(c.queries.view(), {.top = 10, .exhaustive = true, .use_doc_salience = false}, {}, 0);
};

const cranfield_fixture& fixture(aligner::storage st) {
  static const cranfield_fixture f32(aligner::storage::f32);
  if (st == aligner::storage::f32) return f32;
  static const cranfield_fixture bf16(aligner::storage::bf16);
  return bf16;
}

/// Arguments: threads, exhaustive (0: token search, 1: rerank every document), bf16 (1: the rerank store in
/// bfloat16, scored on AMX where the CPU has it).
void retriever_batch(benchmark::State& state) {
  const auto st = state.range(2) == 1 ? aligner::storage::bf16 : aligner::storage::f32;
  const auto& f = fixture(st);
  state.SetLabel(aligner_bench::kernel_label(st));
  const unsigned threads = unsigned(state.range(0));
  const bool exhaustive = state.range(1) == 1;
  const aligner::search_params p{.candidates_per_token = 1000, .top = 10, .exhaustive = exhaustive, .use_doc_salience = false};
  std::vector<aligner::search_result> out;
  for (auto _ : state) {
    out = f.index.search_batch(f.c.queries.view(), p, {}, threads);
    benchmark::DoNotOptimize(out.data());
  }
  double hit = 0;
  for (std::size_t q = 0; q != out.size(); ++q) {
    const std::set<std::int64_t> want(f.exhaustive_top10[q].ids.begin(), f.exhaustive_top10[q].ids.end());
    std::size_t h = 0;
    for (auto id : out[q].ids) h += want.count(id);
    hit += want.empty() ? 1.0 : double(h) / double(want.size());
  }
  state.counters["queries_per_second"] =
      benchmark::Counter(double(state.iterations()) * double(f.c.queries.size()), benchmark::Counter::kIsRate);
  state.counters["recall_at_10_vs_exhaustive"] = hit / double(out.size());
}

}  // namespace

BENCHMARK(retriever_batch)->ArgNames({"threads", "exhaustive", "bf16"})->ArgsProduct({{1, 2, 4, 8, 16}, {0, 1}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
