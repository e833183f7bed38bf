// Exact MIPS backend token search: q query tokens against t stored tokens of dim 128, top-k per token.
// _eigen_naive: one Eigen GEMM per query block + nth_element per row (what a straightforward port does);
// _ref: scalar double inner products (aligner::ref::dot) + nth_element per row.
#include "bench_common.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>

using namespace aligner_bench;

namespace {

struct token_index {
  std::size_t dim, size;
  std::vector<float> tokens;
  aligner::exact_backend backend;
  token_index(std::size_t t, std::size_t d, aligner::storage st) : dim(d), size(t), backend(d, st) {
    tokens = query(t, d, 99);
    backend.add({tokens.data(), t, d});
  }
};

const token_index& index_of(std::size_t t, aligner::storage st = aligner::storage::f32) {
  static std::map<std::pair<std::size_t, aligner::storage>, std::unique_ptr<token_index>> cache;
  auto& p = cache[{t, st}];
  if (!p) p = std::make_unique<token_index>(t, 128, st);
  return *p;
}

/// One exact token search per iteration over an index of storage `st`, with a fresh or a reused scan_workspace.
void exact_search_run(benchmark::State& state, aligner::storage st, bool reuse_workspace) {
  const std::size_t q = std::size_t(state.range(0)), t = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const auto& idx = index_of(t, st);
  const auto qs = query(q, idx.dim);
  aligner::scan_workspace ws;
  for (auto _ : state)
    benchmark::DoNotOptimize((reuse_workspace ? idx.backend.search({qs.data(), q, idx.dim}, k, ws)
                                              : idx.backend.search({qs.data(), q, idx.dim}, k)).ids.data());
  state.SetLabel(kernel_label(st));
  const double it = double(state.iterations());
  state.counters["queries_per_second"] = benchmark::Counter(it * double(q), benchmark::Counter::kIsRate);
  state.counters["flops"] = benchmark::Counter(it * 2.0 * double(q) * double(t) * double(idx.dim), benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
}

void exact_search_xsimd(benchmark::State& state) { exact_search_run(state, aligner::storage::f32, false); }
/// The same over a bf16 exact backend (AMX-BF16 tiles where the CPU has them; the query rounded to bf16).
void exact_search_xsimd_bf16(benchmark::State& state) { exact_search_run(state, aligner::storage::bf16, true); }
/// The same over an int8 exact backend (a float scale per vector; AMX-INT8 tiles where the CPU has them, else
/// AVX512-VNNI tiles, else the vector tiles with the values widened to float).
void exact_search_xsimd_i8(benchmark::State& state) { exact_search_run(state, aligner::storage::i8, true); }
/// The same with a caller-owned scan_workspace reused across searches (no per-call allocation).
void exact_search_xsimd_workspace(benchmark::State& state) { exact_search_run(state, aligner::storage::f32, true); }

/// Nearest-centroid assignment (residual_codec::assign, what k-means training and every residual encode run): 4096
/// Gaussian tokens of dim 128 against K Gaussian centroids a call, the scan in float (scan:1) or bfloat16 (scan:2;
/// AMX-BF16 tiles where the CPU has them), the candidates then chosen in double. flops: the scan's 2 * tokens * K *
/// dim.
void centroid_assign(benchmark::State& state) {
  const std::size_t K = std::size_t(state.range(0)), n = 4096, dim = 128;
  const auto how = state.range(1) == 2 ? aligner::residual_codec::centroid_scan::bf16 : aligner::residual_codec::centroid_scan::f32;
  const aligner::residual_codec codec(dim, 1, query(K, dim, 5), std::vector<float>(dim, 0.f), std::vector<float>(2 * dim, 0.f));
  const auto tokens = query(n, dim, 6);
  std::vector<std::uint32_t> ids(n);
  aligner::scan_workspace ws;
  for (auto _ : state) {
    codec.assign({tokens.data(), n, dim}, ids.data(), ws, how);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetLabel(kernel_label(state.range(1) == 2 ? aligner::storage::bf16 : aligner::storage::f32));
  const double it = double(state.iterations());
  state.counters["tokens_per_second"] = benchmark::Counter(it * double(n), benchmark::Counter::kIsRate);
  state.counters["flops"] = benchmark::Counter(it * 2.0 * double(n) * double(K) * double(dim), benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
}

void exact_search_eigen_naive(benchmark::State& state) {
  using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::size_t q = std::size_t(state.range(0)), t = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const auto& idx = index_of(t);
  const auto qs = query(q, idx.dim);
  const Eigen::Map<const mat> qm(qs.data(), Eigen::Index(q), Eigen::Index(idx.dim));
  const Eigen::Map<const mat> xm(idx.tokens.data(), Eigen::Index(t), Eigen::Index(idx.dim));
  mat s;
  std::vector<std::int64_t> ids(t);
  for (auto _ : state) {
    s.noalias() = qm * xm.transpose();
    for (std::size_t i = 0; i != q; ++i) {
      const float* row = s.row(Eigen::Index(i)).data();
      std::iota(ids.begin(), ids.end(), 0);
      std::nth_element(ids.begin(), ids.begin() + std::ptrdiff_t(k), ids.end(), [row](auto a, auto b) { return row[a] > row[b]; });
      benchmark::DoNotOptimize(ids.data());
    }
  }
  const double it = double(state.iterations());
  state.counters["queries_per_second"] = benchmark::Counter(it * double(q), benchmark::Counter::kIsRate);
  state.counters["flops"] = benchmark::Counter(it * 2.0 * double(q) * double(t) * double(idx.dim), benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
}

/// Scalar double reference: every inner product with aligner::ref::dot, then nth_element per query token.
void exact_search_ref(benchmark::State& state) {
  const std::size_t q = std::size_t(state.range(0)), t = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const auto& idx = index_of(t);
  const auto qs = query(q, idx.dim);
  std::vector<std::pair<double, std::int64_t>> row(t);
  for (auto _ : state) {
    for (std::size_t i = 0; i != q; ++i) {
      for (std::size_t j = 0; j != t; ++j) row[j] = {aligner::ref::dot(qs.data() + i * idx.dim, idx.tokens.data() + j * idx.dim, idx.dim), std::int64_t(j)};
      std::nth_element(row.begin(), row.begin() + std::ptrdiff_t(k), row.end(), std::greater<>());
      benchmark::DoNotOptimize(row.data());
    }
  }
  const double it = double(state.iterations());
  state.counters["queries_per_second"] = benchmark::Counter(it * double(q), benchmark::Counter::kIsRate);
  state.counters["flops"] = benchmark::Counter(it * 2.0 * double(q) * double(t) * double(idx.dim), benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
}

}  // namespace

BENCHMARK(exact_search_xsimd)->ArgNames({"q", "tokens", "k"})->Args({32, 1 << 20, 100})->Args({32, 1 << 20, 4000})->Unit(benchmark::kMillisecond);
BENCHMARK(exact_search_xsimd_bf16)->ArgNames({"q", "tokens", "k"})->Args({32, 1 << 20, 100})->Args({32, 1 << 20, 4000})->Unit(benchmark::kMillisecond);
BENCHMARK(exact_search_xsimd_i8)->ArgNames({"q", "tokens", "k"})->Args({32, 1 << 20, 100})->Args({32, 1 << 20, 4000})->Unit(benchmark::kMillisecond);
BENCHMARK(exact_search_xsimd_workspace)->ArgNames({"q", "tokens", "k"})->Args({32, 1 << 20, 100})->Args({32, 1 << 20, 4000})->Unit(benchmark::kMillisecond);
BENCHMARK(centroid_assign)->ArgNames({"centroids", "scan"})->Args({1024, 1})->Args({1024, 2})->Args({2048, 1})->Args({2048, 2})->Args({16384, 1})->Args({16384, 2})->Unit(benchmark::kMillisecond);
BENCHMARK(exact_search_eigen_naive)->ArgNames({"q", "tokens", "k"})->Args({32, 1 << 20, 100})->Args({32, 1 << 20, 4000})->Unit(benchmark::kMillisecond);
BENCHMARK(exact_search_ref)->ArgNames({"q", "tokens", "k"})->Args({32, 1 << 20, 100})->Args({32, 1 << 20, 4000})->Unit(benchmark::kMillisecond);
