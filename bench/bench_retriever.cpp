// Retriever on real data (bundled Cranfield, GloVe tokens): batch search throughput by thread count, exhaustive
// rerank (every document scored per query) and token search (k' = 1000, 40%-pruned index), with recall@10 of
// the token-search results against the exhaustive ones.
#include "bench_common.hpp"

#include <aligner/eval/idf.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/crc32c.hpp>
#include <aligner/io/index_directory.hpp>
#include <aligner/io/index_file.hpp>

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <random>

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
  if (st == aligner::storage::i8) {
    static const cranfield_fixture i8(aligner::storage::i8);
    return i8;
  }
  if (st == aligner::storage::residual) {
    static const cranfield_fixture residual(aligner::storage::residual);
    return residual;
  }
  static const cranfield_fixture bf16(aligner::storage::bf16);
  return bf16;
}

/// Every query of `queries` on one thread, as search_batch (blocks) or one search at a time (the baseline), with a
/// queries_per_second counter.
void search_all(benchmark::State& state, const aligner::aligner_retriever<aligner::exact_backend>& index, const aligner::sequence_set_view& queries,
                const aligner::search_params& p, bool blocks) {
  std::vector<aligner::search_result> out(queries.size());
  for (auto _ : state) {
    if (blocks) {
      out = index.search_batch(queries, p, {}, 1);
    } else {
      for (std::size_t q = 0; q != queries.size(); ++q) out[q] = index.search(queries.sequence(q), p);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["queries_per_second"] =
      benchmark::Counter(double(state.iterations()) * double(queries.size()), benchmark::Counter::kIsRate);
}

/// Exhaustive search of every Cranfield query on one thread, Top-1, each storage (0 f32, 1 bf16, 2 i8,
/// 3 residual:2): blocks = 1 is search_batch (queries in blocks of 8, each document swept once a block), blocks = 0
/// the same searches one query at a time (search in a loop: the baseline, in the same run). The results are equal.
void retriever_exhaustive_blocks(benchmark::State& state) {
  constexpr aligner::storage storages[] = {aligner::storage::f32, aligner::storage::bf16, aligner::storage::i8, aligner::storage::residual};
  const auto st = storages[state.range(0)];
  const auto& f = fixture(st);
  state.SetLabel(aligner_bench::kernel_label(st, st == aligner::storage::residual ? 2 : 0));
  const bool blocks = state.range(1) == 1;
  const aligner::search_params p{.top = 10, .exhaustive = true, .use_doc_salience = false};
  const auto queries = f.c.queries.view();
  search_all(state, f.index, queries, p, blocks);
  double flops = 0;
  for (std::size_t q = 0; q != queries.size(); ++q) flops += 2.0 * double(queries.length(q)) * double(f.c.docs.tokens()) * double(f.c.docs.dim);
  state.counters["flops"] = benchmark::Counter(double(state.iterations()) * flops, benchmark::Counter::kIsRate);
}

/// A contextual-like collection for the token search: 2,048 documents of 256 random tokens (2^19 tokens, no two
/// alike, dim 128) and 64 queries of 12 tokens, the backend's tokens in storage `st` (the rerank store in f32).
struct scan_fixture {
  static constexpr std::size_t docs = 2048, doc_len = 256, dim = 128, queries = 64, query_len = 12;
  explicit scan_fixture(aligner::storage st)
      : tokens(aligner_bench::query(docs * doc_len, dim, 11)),
        query_rows(aligner_bench::query(queries * query_len, dim, 12)),
        index(aligner::exact_backend(dim, st), view(tokens, docs, doc_len, doc_offsets), {}) {}
  static aligner::sequence_set_view view(const std::vector<float>& rows, std::size_t n, std::size_t len, std::vector<std::int64_t>& offsets) {
    offsets.resize(n + 1);
    for (std::size_t i = 0; i <= n; ++i) offsets[i] = std::int64_t(i * len);
    return {{rows.data(), n * len, dim}, offsets};
  }
  std::vector<float> tokens, query_rows;
  std::vector<std::int64_t> doc_offsets, query_offsets;
  aligner::aligner_retriever<aligner::exact_backend> index;
};

const scan_fixture& scan(aligner::storage st) {
  static std::map<aligner::storage, std::unique_ptr<scan_fixture>> all;
  auto& f = all[st];
  if (!f) f = std::make_unique<scan_fixture>(st);
  return *f;
}

/// Token search (k' = 20, Top-1 rerank of the candidates) of 64 queries of 12 tokens against 2^19 tokens on one
/// thread, the token index in storage 0 f32, 1 bf16, 2 i8: blocks = 1 is search_batch (the exact backend searches up
/// to 64 rows of consecutive queries in one scan), blocks = 0 the same searches one query at a time (the baseline,
/// in the same run). The results are equal. flops: the scan's 2 x rows x tokens x dim.
void retriever_token_blocks(benchmark::State& state) {
  constexpr aligner::storage storages[] = {aligner::storage::f32, aligner::storage::bf16, aligner::storage::i8};
  const auto st = storages[state.range(0)];
  auto& f = const_cast<scan_fixture&>(scan(st));  // (view() fills its query offsets)
  state.SetLabel(aligner_bench::kernel_label(st));
  const bool blocks = state.range(1) == 1;
  const aligner::search_params p{.candidates_per_token = 20, .top = 10, .use_doc_salience = false};
  const auto queries = scan_fixture::view(f.query_rows, scan_fixture::queries, scan_fixture::query_len, f.query_offsets);
  search_all(state, f.index, queries, p, blocks);
  const double flops = 2.0 * double(queries.tokens.rows) * double(scan_fixture::docs * scan_fixture::doc_len) * double(scan_fixture::dim);
  state.counters["flops"] = benchmark::Counter(double(state.iterations()) * flops, benchmark::Counter::kIsRate);
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

/// One search's latency on `threads` threads (search_params.threads): every Cranfield query searched one at a time,
/// exhaustive Top-1 rerank of all 1,400 documents, f32 or bf16 (storage 0 / 1); threads = 1 is the baseline of the
/// same run. queries_per_second here is one query after another, so it is the inverse of the mean latency.
void retriever_search_threads(benchmark::State& state) {
  const auto st = state.range(1) == 1 ? aligner::storage::bf16 : aligner::storage::f32;
  const auto& f = fixture(st);
  state.SetLabel(aligner_bench::kernel_label(st));
  const aligner::search_params p{.top = 10, .exhaustive = true, .use_doc_salience = false, .threads = unsigned(state.range(0))};
  const auto queries = f.c.queries.view();
  aligner::search_result out;
  for (auto _ : state) {
    for (std::size_t q = 0; q != queries.size(); ++q) {
      out = f.index.search(queries.sequence(q), p);
      benchmark::DoNotOptimize(out.ids.data());
    }
  }
  state.counters["queries_per_second"] =
      benchmark::Counter(double(state.iterations()) * double(queries.size()), benchmark::Counter::kIsRate);
}

/// A synthetic residual:2 index directory of 8 segments for directory_search_threads (made once, in the temporary
/// folder): 16,000 documents of 64-256 tokens (about 2.6M), dim 128, each document's tokens drawn from its own 96
/// words of a 40,000-word vocabulary (random unit vectors) plus context noise, 4,096 centroids; 64 queries of 24 tokens
/// from the words of a random document.
struct synthetic_directory {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / "aligner_bench_directory";
  std::vector<float> queries;
  std::vector<std::int64_t> offsets{0};
  static constexpr std::size_t dim = 128;

  synthetic_directory() {
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal;
    std::uniform_int_distribution<std::size_t> word_of(0, 39'999), length(64, 256);
    std::vector<float> vocab(40'000 * dim);
    for (std::size_t w = 0; w != 40'000; ++w) {
      double norm = 0;
      for (std::size_t c = 0; c != dim; ++c) norm += double(vocab[w * dim + c] = normal(rng)) * vocab[w * dim + c];
      for (std::size_t c = 0; c != dim; ++c) vocab[w * dim + c] /= float(std::sqrt(norm));
    }
    auto token = [&](std::size_t w, std::vector<float>& out) {  // the word plus 0.3 of noise, normalised
      std::array<float, dim> t;
      double norm = 0;
      for (std::size_t c = 0; c != dim; ++c) norm += double(t[c] = vocab[w * dim + c] + 0.3f / std::sqrt(float(dim)) * normal(rng)) * t[c];
      for (std::size_t c = 0; c != dim; ++c) out.push_back(t[c] / float(std::sqrt(norm)));
    };
    std::vector<std::vector<std::size_t>> words(16'000);
    for (auto& w : words)
      for (std::size_t k = 0; k != 96; ++k) w.push_back(word_of(rng));
    std::filesystem::remove_all(dir);
    aligner::directory_params dp;
    dp.residual.centroids = 4096;
    dp.residual.threads = 0;
    auto writer = aligner::index_directory_writer::create(dir, dim, dp);
    for (std::size_t seg = 0; seg != 8; ++seg) {
      std::vector<float> tokens;
      std::vector<std::int64_t> offs{0};
      for (std::size_t d = seg * 2'000; d != (seg + 1) * 2'000; ++d) {
        const std::size_t m = length(rng);
        for (std::size_t j = 0; j != m; ++j) token(words[d][std::uniform_int_distribution<std::size_t>(0, 95)(rng)], tokens);
        offs.push_back(offs.back() + std::int64_t(m));
      }
      writer.add({{tokens.data(), std::size_t(offs.back()), dim}, offs});
    }
    for (std::size_t q = 0; q != 64; ++q) {
      const auto& w = words[std::uniform_int_distribution<std::size_t>(0, words.size() - 1)(rng)];
      for (std::size_t j = 0; j != 24; ++j) token(w[std::uniform_int_distribution<std::size_t>(0, 95)(rng)], queries);
      offsets.push_back(offsets.back() + 24);
    }
  }
};

/// One search's latency on an index directory (the synthetic one above), `threads` threads (search_params.threads:
/// the segments' posting walks and the rerank), centroid postings with nprobe 4 and ndocs 1000 (the defaults), one
/// query after another; threads = 1 is the baseline of the same run.
void directory_search_threads(benchmark::State& state) {
  static const synthetic_directory syn;
  static const aligner::index_directory_reader reader(syn.dir);
  const aligner::search_params p{.top = 10, .nprobe = 4, .ndocs = 1000, .threads = unsigned(state.range(0))};
  const aligner::sequence_set_view queries{{syn.queries.data(), std::size_t(syn.offsets.back()), syn.dim}, syn.offsets};
  aligner::search_result out;
  std::size_t candidates = 0;
  for (auto _ : state) {
    for (std::size_t q = 0; q != queries.size(); ++q) {
      out = reader.search(queries.sequence(q), p);
      candidates += out.candidates_scored;
      benchmark::DoNotOptimize(out.ids.data());
    }
  }
  state.counters["queries_per_second"] =
      benchmark::Counter(double(state.iterations()) * double(queries.size()), benchmark::Counter::kIsRate);
  state.counters["candidates"] = double(candidates) / double(std::max<std::size_t>(1, state.iterations() * queries.size()));
}

/// Opening a saved index (Cranfield, f32, mapped): the checksum pass over every byte and the parts that are
/// copied (token map, settings); bytes_per_second is the file's size over the open time.
void index_open(benchmark::State& state) {
  const auto& f = fixture(aligner::storage::f32);
  const auto path = std::filesystem::temp_directory_path() / "aligner_bench_open.aidx";
  aligner::save_index(f.index, path);
  const auto bytes = std::filesystem::file_size(path);
  for (auto _ : state) {
    auto back = aligner::load_index<aligner::exact_backend>(path, {.mmap = state.range(0) == 1});
    benchmark::DoNotOptimize(back.size());
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
  state.counters["file_mb"] = double(bytes) / 1e6;
  std::filesystem::remove(path);
}

/// CRC-32C over 64 MB: the run-time choice (SSE4.2 where the CPU has it) against the table, in one run.
void crc32c_pass(benchmark::State& state) {
  static const std::vector<unsigned char> data = [] {
    std::vector<unsigned char> d(std::size_t(64) << 20);
    std::mt19937 rng(1);
    for (auto& b : d) b = static_cast<unsigned char>(rng());
    return d;
  }();
  const bool table = state.range(0) == 1;
  state.SetLabel(table ? "table" : "run-time choice");
  for (auto _ : state) {
    const std::uint32_t c = table ? ~aligner::io::detail::crc32c_table_driven(data.data(), data.size(), ~0u)
                                  : aligner::io::crc32c(data.data(), data.size());
    benchmark::DoNotOptimize(c);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(data.size()));
}

}  // namespace

BENCHMARK(index_open)->ArgNames({"mmap"})->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(crc32c_pass)->ArgNames({"table"})->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(retriever_exhaustive_blocks)->ArgNames({"storage", "blocks"})->ArgsProduct({{0, 1, 2, 3}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(retriever_token_blocks)->ArgNames({"storage", "blocks"})->ArgsProduct({{0, 1, 2}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(retriever_search_threads)->ArgNames({"threads", "bf16"})->ArgsProduct({{1, 2, 4, 8, 16}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(directory_search_threads)->ArgNames({"threads"})->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(retriever_batch)->ArgNames({"threads", "exhaustive", "bf16"})->ArgsProduct({{1, 2, 4, 8, 16}, {0, 1}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
