// This machine's single-core FP32 FMA peak, measured in the same run as the kernels so efficiency is a ratio:
// independent accumulator chains of xsimd FMAs, enough to cover FMA latency x throughput on current cores: 16 with 32
// vector registers (AVX-512), 12 with 16 (AVX2, SSE), where 16 chains and the two operands spilled to the stack and
// read 57 GFLOP/s on a Zen 3 core whose peak is 102.
#include "bench_common.hpp"

namespace {

void fp32_fma_peak(benchmark::State& state) {
  using batch = xsimd::batch<float, aligner::default_arch>;
  constexpr int chains = sizeof(batch) >= 64 ? 16 : 12, inner = 256;
  batch acc[chains];
  for (int c = 0; c != chains; ++c) acc[c] = batch(float(c) * 1e-3f);
  const batch a(0.999999f), b(1e-7f);
  for (auto _ : state) {
    for (int i = 0; i != inner; ++i)
      for (int c = 0; c != chains; ++c) acc[c] = xsimd::fma(acc[c], a, b);
    for (int c = 0; c != chains; ++c) benchmark::DoNotOptimize(acc[c]);
  }
  const double flops = 2.0 * double(batch::size) * chains * inner * double(state.iterations());
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(aligner::compiled_arch_name());
}

/// One core's streaming read bandwidth: sums a 1 GiB buffer (far above any last-level cache) with 8 independent
/// vector chains, the way the rerank kernel streams documents (sequential panels, the hardware prefetchers on).
/// bytes_per_second is the bound that the kernels' own bytes_per_second (packed panels read) is held against.
void memory_read_bandwidth(benchmark::State& state) {
  using batch = xsimd::batch<float, aligner::default_arch>;
  constexpr std::size_t bytes = std::size_t(1) << 30, chains = 8;
  static const aligner::aligned_vector<float> buffer(bytes / sizeof(float), 1.0f);
  const float* data = buffer.data();
  const std::size_t n = buffer.size();
  for (auto _ : state) {
    batch acc[chains];
    for (auto& a : acc) a = batch(0.f);
    for (std::size_t i = 0; i + chains * batch::size <= n; i += chains * batch::size)
      for (std::size_t c = 0; c != chains; ++c) acc[c] += batch::load_aligned(data + i + c * batch::size);
    for (auto& a : acc) benchmark::DoNotOptimize(a);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
  state.SetLabel(aligner::compiled_arch_name());
}

}  // namespace

BENCHMARK(fp32_fma_peak);
BENCHMARK(memory_read_bandwidth)->Unit(benchmark::kMillisecond)->MinTime(1.0);
