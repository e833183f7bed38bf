// Rerank kernel: one query of n tokens against documents of m tokens (dim), alignment Top-k or Top-p 1%.
// Variants with identical arguments: _xsimd (the library's fused kernel over the packed token store), _ref
// (scalar double reference), _eigen_naive (Eigen GEMM Q * D^T per document, then a max or partial sort per row).
// Arguments: n, m (0 = variable lengths uniform in [32, 256]), dim, k (0 = Top-p 1%).
#include "bench_common.hpp"

#include <algorithm>

using namespace aligner_bench;

namespace {

aligner::alignment strategy_of(std::int64_t k) {
  return k == 0 ? aligner::alignment::top_p(0.01) : aligner::alignment::top_k(std::size_t(k));
}

double flops_of(const doc_pool& p, std::size_t first, std::size_t count, std::size_t n) {
  double tokens = 0;
  for (std::size_t d = first; d != first + count; ++d) tokens += double(p.length(d % p.size()));
  return 2.0 * double(n) * tokens * double(p.dim);
}

/// The pool's documents as residual codes (256 centroids trained on the pool, so the per-call centroid scores cost
/// about 3% of a 64-document batch at n = 32), built once per shape and nbits.
const aligner::token_store& residual_store(const doc_pool& p, std::size_t nbits) {
  static std::map<std::tuple<const doc_pool*, std::size_t>, std::unique_ptr<aligner::token_store>> stores;
  auto& slot = stores[{&p, nbits}];
  if (!slot) {
    auto codec = std::make_shared<const aligner::residual_codec>(aligner::train_residual_codec(
        p.view().tokens, {.nbits = nbits, .centroids = 256, .sample = 65536, .iterations = 4}));
    slot = std::make_unique<aligner::token_store>(p.dim, aligner::storage::residual, std::move(codec));
    slot->add(p.view(), {}, false);
  }
  return *slot;
}

void hadamard_run(benchmark::State& state, aligner::storage st, bool cached = false, std::size_t nbits = 0) {
  const std::size_t n = std::size_t(state.range(0)), m = std::size_t(state.range(1)), dim = std::size_t(state.range(2));
  const auto& p = pool(m, dim, cached);
  const aligner::token_store& store = nbits ? residual_store(p, nbits) : p.of(st);
  const auto q = query(n, dim);
  const aligner::score_params params{.strategy = strategy_of(state.range(3)), .check_finite = false};
  constexpr std::size_t batch = 64;
  std::vector<std::uint32_t> which(batch);
  std::vector<float> out(batch);
  std::size_t next = 0, docs = 0;
  double flops = 0, bytes = 0;
  const auto starts = store.panel_offsets();  // each document's first word (no end entry)
  auto doc_bytes = [&](std::size_t d) {
    const auto end = d + 1 < starts.size() ? starts[d + 1] : std::int64_t(store.packed_elements());
    return 4.0 * double(end - starts[d]);
  };
  for (auto _ : state) {
    for (std::size_t i = 0; i != batch; ++i) {
      which[i] = std::uint32_t((next + i) % p.size());
      bytes += doc_bytes(which[i]);
    }
    aligner::score_store({q.data(), n, dim}, store, which, out, params);
    benchmark::DoNotOptimize(out.data());
    flops += flops_of(p, next, batch, n);
    next += batch;
    docs += batch;
  }
  set_counters(state, double(docs), flops);
  state.SetBytesProcessed(std::int64_t(bytes));  // the documents' packed panels (bytes_per_second: against memory_read_bandwidth)
  state.SetLabel(kernel_label(st, nbits));
}

using aligner::storage;
void hadamard_xsimd(benchmark::State& state) { hadamard_run(state, storage::f32); }
/// The same kernel over bfloat16 document storage (vdpbf16ps with AVX512-BF16, else decode + float FMA).
void hadamard_xsimd_bf16(benchmark::State& state) { hadamard_run(state, storage::bf16); }
/// float16 storage (F16C conversion + float FMA) and int8 with a per-token scale (sign-extend + convert).
void hadamard_xsimd_f16(benchmark::State& state) { hadamard_run(state, storage::f16); }
void hadamard_xsimd_i8(benchmark::State& state) { hadamard_run(state, storage::i8); }
/// The same kernels over a 512 KB (L2-resident) pool: the compute-bound rate, without DRAM streaming.
void hadamard_xsimd_cached(benchmark::State& state) { hadamard_run(state, storage::f32, true); }
void hadamard_xsimd_bf16_cached(benchmark::State& state) { hadamard_run(state, storage::bf16, true); }
void hadamard_xsimd_i8_cached(benchmark::State& state) { hadamard_run(state, storage::i8, true); }
/// Short queries (real queries without padding: SciFact's GloVe queries hold 6-18 tokens, the 10th to 90th
/// percentile), cached as above: how the query's rows are cut into register tiles shows at these n.
void hadamard_xsimd_short(benchmark::State& state) { hadamard_run(state, storage::f32, true); }

/// Residual codes (centroid id + nbits per component): centroid scores once per call, residual panels decoded a
/// group at a time into L1 and swept by the float tiles.
void hadamard_xsimd_residual2(benchmark::State& state) { hadamard_run(state, storage::residual, false, 2); }
void hadamard_xsimd_residual4(benchmark::State& state) { hadamard_run(state, storage::residual, false, 4); }

void hadamard_ref(benchmark::State& state) {
  const std::size_t n = std::size_t(state.range(0)), m = std::size_t(state.range(1)), dim = std::size_t(state.range(2));
  const auto& p = pool(m, dim);
  const auto q = query(n, dim);
  const aligner::score_params params{.strategy = strategy_of(state.range(3)), .check_finite = false};
  std::size_t next = 0, docs = 0;
  double flops = 0;
  for (auto _ : state) {
    const std::size_t d = next++ % p.size();
    benchmark::DoNotOptimize(aligner::ref::score({q.data(), n, dim}, {p.doc(d), p.length(d), dim}, params));
    flops += flops_of(p, d, 1, n);
    ++docs;
  }
  set_counters(state, double(docs), flops);
}

void hadamard_eigen_naive(benchmark::State& state) {
  using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::size_t n = std::size_t(state.range(0)), m = std::size_t(state.range(1)), dim = std::size_t(state.range(2));
  const auto& p = pool(m, dim);
  const auto qv = query(n, dim);
  const Eigen::Map<const mat> q(qv.data(), Eigen::Index(n), Eigen::Index(dim));
  const auto strategy = strategy_of(state.range(3));
  std::size_t next = 0, docs = 0;
  double flops = 0;
  mat s;
  std::vector<float> row;
  for (auto _ : state) {
    const std::size_t d = next++ % p.size();
    const Eigen::Map<const mat> doc(p.doc(d), Eigen::Index(p.length(d)), Eigen::Index(dim));
    s.noalias() = q * doc.transpose();
    const std::size_t k = strategy.row_budget(p.length(d));
    double total = 0;
    if (k == 1) {
      total = s.rowwise().maxCoeff().sum();
    } else {
      for (Eigen::Index i = 0; i != s.rows(); ++i) {
        row.assign(s.row(i).data(), s.row(i).data() + s.cols());
        std::partial_sort(row.begin(), row.begin() + std::ptrdiff_t(k), row.end(), std::greater<>());
        for (std::size_t t = 0; t != k; ++t) total += row[t];
      }
    }
    benchmark::DoNotOptimize(total / double(n * k));
    flops += flops_of(p, d, 1, n);
    ++docs;
  }
  set_counters(state, double(docs), flops);
}

/// 64 consecutive documents of the pool as row-major matrices back to back (a sequence_set_view over them), the
/// next 64 on each call, wrapping before the pool's end: what score_batch and the packing benchmarks read.
struct unpacked_batches {
  const doc_pool& p;
  std::size_t start = 0;
  std::vector<std::int64_t> offsets = std::vector<std::int64_t>(65);
  aligner::sequence_set_view next() {
    if (start + 64 > p.size()) start = 0;
    for (std::size_t i = 0; i <= 64; ++i) offsets[i] = p.offsets[start + i] - p.offsets[start];
    const aligner::sequence_set_view v{{p.doc(start), std::size_t(offsets[64]), p.dim}, offsets};
    start += 64;
    return v;
  }
};

/// score_batch: one query against 64 row-major documents, each packed into f32 panels on the fly (the
/// hadamard_xsimd of the same shape scores the same pool packed once; the ratio is the packing's cost).
void score_batch_unpacked(benchmark::State& state) {
  const std::size_t n = std::size_t(state.range(0)), m = std::size_t(state.range(1)), dim = std::size_t(state.range(2));
  const auto& p = pool(m, dim);
  const auto q = query(n, dim);
  const aligner::prepared_query pq({q.data(), n, dim}, {.strategy = strategy_of(state.range(3)), .check_finite = false},
                                   aligner::storage::f32);
  unpacked_batches batches{p};
  aligner::score_workspace ws;
  std::vector<float> out(64);
  double docs = 0, flops = 0;
  for (auto _ : state) {
    const aligner::sequence_set_view v = batches.next();
    aligner::score_batch(pq, v, out, {}, false, &ws);
    benchmark::DoNotOptimize(out.data());
    flops += 2.0 * double(n) * double(v.tokens.rows) * double(dim);
    docs += 64;
  }
  set_counters(state, docs, flops);
  state.SetLabel(kernel_label(aligner::storage::f32, 0));
}

/// Packing alone: 64 row-major documents into f32 panels per iteration, by pack_panels (register transposes of
/// W x W blocks) and, as the baseline, token by token (pack_token: each token's components stored W words apart).
/// bytes_per_second counts the floats read.
void pack_run(benchmark::State& state, bool by_token) {
  const std::size_t m = std::size_t(state.range(0)), dim = std::size_t(state.range(1));
  const auto& p = pool(m, dim);
  unpacked_batches batches{p};
  aligner::aligned_vector<std::uint32_t> panels;
  double docs = 0, bytes = 0;
  for (auto _ : state) {
    const aligner::sequence_set_view v = batches.next();
    for (std::size_t d = 0; d != v.size(); ++d) {
      const aligner::matrix_view<float> doc = v.sequence(d);
      panels.resize(aligner::packed_words(aligner::storage::f32, doc.rows, dim));
      if (by_token) {
        std::fill(panels.begin(), panels.end(), 0u);
        for (std::size_t t = 0; t != doc.rows; ++t) aligner::pack_token(aligner::storage::f32, doc.row(t), dim, t, panels.data());
      } else {
        aligner::pack_panels(aligner::storage::f32, doc, panels.data());
      }
      benchmark::DoNotOptimize(panels.data());
      bytes += double(doc.rows * dim * 4);
    }
    docs += 64;
  }
  state.counters["docs/s"] = benchmark::Counter(docs, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(std::int64_t(bytes));
}
void pack_f32(benchmark::State& state) { pack_run(state, false); }
void pack_f32_by_token(benchmark::State& state) { pack_run(state, true); }

void pack_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "dim"});
  for (std::int64_t m : {32, 128, 0})
    for (std::int64_t dim : {96, 100, 128}) b->Args({m, dim});
}

void shapes(benchmark::internal::Benchmark* b, bool full) {
  b->ArgNames({"n", "m", "dim", "k"});
  for (std::int64_t n : {32, 64})
    for (std::int64_t m : {32, 128, 512, 0})
      for (std::int64_t dim : {96, 128})
        for (std::int64_t k : {1, 2, 4, 8, 0}) {
          if (!full && !(n == 32 && dim == 128)) continue;  // precision and cache variants: the headline shapes only
          b->Args({n, m, dim, k});
        }
}

}  // namespace

BENCHMARK(hadamard_xsimd)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(hadamard_xsimd_bf16)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(hadamard_xsimd_f16)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(hadamard_xsimd_i8)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(hadamard_xsimd_residual2)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(hadamard_xsimd_residual4)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(hadamard_xsimd_cached)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(hadamard_xsimd_bf16_cached)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(hadamard_xsimd_i8_cached)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(hadamard_xsimd_short)->ArgNames({"n", "m", "dim", "k"})->ArgsProduct({{1, 2, 3, 4, 7, 8, 9, 11, 13, 14, 19}, {128}, {128}, {1, 8}});
BENCHMARK(score_batch_unpacked)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(pack_f32)->Apply(pack_shapes);
BENCHMARK(pack_f32_by_token)->Apply(pack_shapes);
BENCHMARK(hadamard_eigen_naive)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(hadamard_ref)->Apply([](auto* b) { shapes(b, true); });
