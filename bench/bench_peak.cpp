// This machine's single-core FP32 FMA peak, measured in the same run as the kernels so efficiency is a ratio:
// 16 independent accumulator chains of xsimd FMAs (enough to cover FMA latency x throughput on current cores).
#include "bench_common.hpp"

namespace {

void fp32_fma_peak(benchmark::State& state) {
  using batch = xsimd::batch<float, aligner::default_arch>;
  constexpr int chains = 16, inner = 256;
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

}  // namespace

BENCHMARK(fp32_fma_peak);
