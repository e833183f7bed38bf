// Shared inputs of the benchmark suite: a pool of documents larger than the last-level cache, packed once.
#pragma once

#include <aligner/aligner.hpp>

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <memory>
#include <random>
#include <vector>

namespace aligner_bench {

/// Documents of length `m` (or uniform in [32, 256] when m == 0), unit vectors, at least `min_bytes` of floats.
struct doc_pool {
  std::size_t dim = 0;
  std::vector<float> tokens;
  std::vector<std::int64_t> offsets{0};
  aligner::token_store store, store_bf16, store_f16, store_i8;

  doc_pool(std::size_t m, std::size_t dim_, std::size_t min_bytes = 96u << 20)
      : dim(dim_), store(dim_), store_bf16(dim_, aligner::storage::bf16), store_f16(dim_, aligner::storage::f16),
        store_i8(dim_, aligner::storage::i8) {
    std::mt19937_64 rng(42 + m + dim);
    std::uniform_int_distribution<std::size_t> len(32, 256);
    std::normal_distribution<float> nd;
    while (tokens.size() * sizeof(float) < min_bytes) {
      const std::size_t rows = m ? m : len(rng);
      for (std::size_t r = 0; r != rows; ++r) {
        double norm = 0;
        const std::size_t at = tokens.size();
        for (std::size_t c = 0; c != dim; ++c) tokens.push_back(nd(rng)), norm += double(tokens.back()) * tokens.back();
        for (std::size_t c = 0; c != dim; ++c) tokens[at + c] = float(tokens[at + c] / std::sqrt(norm));
      }
      offsets.push_back(offsets.back() + std::int64_t(rows));
    }
    store.add(view(), {}, false);
    store_bf16.add(view(), {}, false);
    store_f16.add(view(), {}, false);
    store_i8.add(view(), {}, false);
  }
  aligner::sequence_set_view view() const { return {{tokens.data(), std::size_t(offsets.back()), dim}, offsets}; }
  std::size_t size() const { return offsets.size() - 1; }
  const aligner::token_store& of(aligner::storage st) const {
    switch (st) {
      case aligner::storage::bf16: return store_bf16;
      case aligner::storage::f16: return store_f16;
      case aligner::storage::i8: return store_i8;
      default: return store;
    }
  }
  std::size_t length(std::size_t d) const { return std::size_t(offsets[d + 1] - offsets[d]); }
  const float* doc(std::size_t d) const { return tokens.data() + offsets[d] * std::int64_t(dim); }
};

/// Megabytes of float vectors in a streamed pool: ALIGNER_BENCH_POOL_MB (whole number >= 1), else 96. A machine whose
/// last-level cache holds the compact stores' copies of 96 MB (bf16 48 MB, i8 24 MB) needs more to stream them from
/// DRAM (bench/dram.sh uses 2048).
inline std::size_t pool_megabytes() {
  const char* v = std::getenv("ALIGNER_BENCH_POOL_MB");
  if (!v || !*v) return 96;
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(v, &end, 10);
  if (*end != '\0' || mb == 0 || mb > (1ull << 20)) throw std::invalid_argument(std::string("ALIGNER_BENCH_POOL_MB must be a whole number of megabytes >= 1, got '") + v + "'");
  return std::size_t(mb);
}

/// One pool per shape, built on first use: larger than the last-level cache (pool_megabytes(), 96 MB by default),
/// or 512 KB (L2-resident) when `cached`.
inline const doc_pool& pool(std::size_t m, std::size_t dim, bool cached = false) {
  static std::map<std::tuple<std::size_t, std::size_t, bool>, std::unique_ptr<doc_pool>> pools;
  auto& p = pools[{m, dim, cached}];
  if (!p) p = std::make_unique<doc_pool>(m, dim, cached ? std::size_t(512) << 10 : pool_megabytes() << 20);
  return *p;
}

inline std::vector<float> query(std::size_t n, std::size_t dim, std::uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> q(n * dim);
  for (auto& x : q) x = nd(rng);
  return q;
}

/// Sets docs_per_second, flops (2 n m dim per document) and tokens counters.
/// The kernel that scores storage `st` in this process (the benchmark's label): "amx-bf16", "avx512-bf16" (vdpbf16ps),
/// or the compiled architecture's vector tiles.
inline std::string kernel_label(aligner::storage st, std::size_t residual_nbits = 0) {
  const std::string arch = aligner::default_arch::name();
  switch (st) {
    case aligner::storage::bf16:
      if (aligner::kernel_info().amx_bf16) return "amx-bf16";
      return aligner::bf16_rounds_query<> ? "avx512-bf16" : arch + "-widen";
    case aligner::storage::residual:
      if (aligner::kernel_info().amx_bf16) return "amx-bf16-residual-decode";
      if (ALIGNER_HAVE_VNNI_VBMI && aligner::panel_width<> == 16 && residual_nbits <= 4) return "avx512-vnni-residual-decode";
      return aligner::bf16_rounds_query<> ? "avx512-bf16-residual-decode" : arch + "-residual-decode";
    case aligner::storage::i8:
      if (aligner::kernel_info().amx_int8) return "amx-int8";
      return aligner::i8_on_vnni() ? "avx512-vnni-i8" : arch + "-widen";
    default: return arch;
  }
}

inline void set_counters(benchmark::State& state, double docs, double flops) {
  state.counters["docs_per_second"] = benchmark::Counter(docs, benchmark::Counter::kIsRate);
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetItemsProcessed(std::int64_t(docs));
}

}  // namespace aligner_bench
