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
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace aligner_bench {

/// Documents of length `m` (or uniform in [32, 256] when m == 0), unit vectors, at least `min_bytes` of floats. The
/// components are drawn from a sum of four 16-bit uniforms (Irwin-Hall, close to normal; rows are normalised anyway)
/// off splitmix64, about 1 ns each, so that a 2 GB pool (bench/dram.sh) is built in seconds. Each storage's packed
/// copy is made when a benchmark first asks for it (`of`), so a process pays only for the stores it measures.
struct doc_pool {
  std::size_t dim = 0;
  std::vector<float> tokens;
  std::vector<std::int64_t> offsets{0};

  doc_pool(std::size_t m, std::size_t dim_, std::size_t min_bytes = 96u << 20) : dim(dim_) {
    std::uint64_t state = 42 + m + dim;
    auto next = [&state] {  // splitmix64
      std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      return z ^ (z >> 31);
    };
    auto component = [&next] {
      const std::uint64_t r = next();
      const double sum = double(r & 0xFFFF) + double((r >> 16) & 0xFFFF) + double((r >> 32) & 0xFFFF) + double(r >> 48);
      return float(sum - 2.0 * 65535.0);
    };
    tokens.reserve(min_bytes / sizeof(float) + 256 * dim);
    while (tokens.size() * sizeof(float) < min_bytes) {
      const std::size_t rows = m ? m : 32 + std::size_t(next() % 225);
      for (std::size_t r = 0; r != rows; ++r) {
        double norm = 0;
        const std::size_t at = tokens.size();
        for (std::size_t c = 0; c != dim; ++c) tokens.push_back(component()), norm += double(tokens.back()) * tokens.back();
        const double inv = 1.0 / std::sqrt(norm);
        for (std::size_t c = 0; c != dim; ++c) tokens[at + c] = float(tokens[at + c] * inv);
      }
      offsets.push_back(offsets.back() + std::int64_t(rows));
    }
  }
  aligner::sequence_set_view view() const { return {{tokens.data(), std::size_t(offsets.back()), dim}, offsets}; }
  std::size_t size() const { return offsets.size() - 1; }
  /// The pool packed in storage `st` (f32, bf16, f16 or i8), packed on first use.
  const aligner::token_store& of(aligner::storage st) const {
    auto& slot = stores_[int(st)];
    if (!slot) {
      slot = std::make_unique<aligner::token_store>(dim, st);
      slot->add(view(), {}, false);
    }
    return *slot;
  }
  std::size_t length(std::size_t d) const { return std::size_t(offsets[d + 1] - offsets[d]); }
  const float* doc(std::size_t d) const { return tokens.data() + offsets[d] * std::int64_t(dim); }

 private:
  mutable std::map<int, std::unique_ptr<aligner::token_store>> stores_;
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

/// The kernel that scores storage `st` in this process (the benchmark's label): "amx-bf16", "avx512-bf16" (vdpbf16ps),
/// "avx512-wide..." (the run-time AVX-512 tiles of 4- and 8-wide panels, wide.hpp), "avx2-wide4..." (its run-time AVX2
/// tiles of 4-wide panels), or the compiled architecture's vector tiles.
inline std::string kernel_label(aligner::storage st, std::size_t residual_nbits = 0) {
  const std::string arch = aligner::default_arch::name();
  if (st != aligner::storage::residual && aligner::wide_runs(st) && !(st == aligner::storage::bf16 && aligner::kernel_info().amx_bf16) &&
      !(st == aligner::storage::i8 && (aligner::kernel_info().amx_int8 || aligner::i8_on_vnni())))
    return std::string(st == aligner::storage::bf16 ? "avx512-bf16-wide" : aligner::wide_avx2_runs(st) ? "avx2-wide" : "avx512-wide") +
           std::to_string(aligner::panel_width<>) +
           (st == aligner::storage::f16 || st == aligner::storage::i8 ? "-widen" : "");
  switch (st) {
    case aligner::storage::bf16:
      if (aligner::kernel_info().amx_bf16) return "amx-bf16";
      if (aligner::wide_avx2_runs(st)) return "avx2-wide" + std::to_string(aligner::panel_width<>) + "-widen";
      return aligner::bf16_rounds_query<> ? "avx512-bf16" : arch + "-widen";
    case aligner::storage::residual:
      if (aligner::kernel_info().amx_bf16 && aligner::panel_width<> == 16) return "amx-bf16-residual-decode";
      if (aligner::kernel_info().amx_bf16 && (!aligner::vnni_runs() || residual_nbits > 4))  // (residual_on_amx)
        return "amx-bf16-wide" + std::to_string(aligner::panel_width<>) + "-residual-decode";
      if (ALIGNER_HAVE_VNNI_VBMI && aligner::panel_width<> == 16 && residual_nbits <= 4) return "avx512-vnni-residual-decode";
      if (aligner::vnni_runs() && residual_nbits <= 4)
        return "avx512-vnni-wide" + std::to_string(aligner::panel_width<>) + "-residual-decode";
      if (aligner::wide_runs(aligner::storage::f32))
        return (aligner::wide_avx2_runs(aligner::storage::f32) ? "avx2-wide" : "avx512-wide") + std::to_string(aligner::panel_width<>) +
               "-residual-decode";
      return aligner::bf16_rounds_query<> ? "avx512-bf16-residual-decode" : arch + "-residual-decode";
    case aligner::storage::i8:
      if (aligner::kernel_info().amx_int8) return "amx-int8";
      if (aligner::i8_on_vnni() && aligner::panel_width<> != 16) return "avx512-vnni-wide" + std::to_string(aligner::panel_width<>) + "-i8";
      return aligner::i8_on_vnni() ? "avx512-vnni-i8" : arch + "-widen";
    default: return arch;
  }
}

/// Sets docs_per_second, flops (2 n m dim per document) and tokens counters.
inline void set_counters(benchmark::State& state, double docs, double flops) {
  state.counters["docs_per_second"] = benchmark::Counter(docs, benchmark::Counter::kIsRate);
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetItemsProcessed(std::int64_t(docs));
}

}  // namespace aligner_bench
