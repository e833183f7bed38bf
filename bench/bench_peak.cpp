// This machine's single-core FP32 FMA peak, measured in the same run as the kernels so efficiency is a ratio:
// independent accumulator chains of FMAs, enough to cover FMA latency x throughput on current cores: 16 with 32
// vector registers (AVX-512), 12 with 16 (AVX2, SSE), where 16 chains and the two operands spilled to the stack and
// read 57 GFLOP/s on a Zen 3 core whose peak is 102. The widest FMA the kernels may run: the build's own, or AVX-512 /
// AVX2 + FMA chosen at run time (as the kernels' run-time tiles are, with the same switches), so that a portable
// build's kernels are held against the peak of the units they run on, not its SSE2 baseline's.
#include "bench_common.hpp"

#if ALIGNER_X86_64_ASM
#include <immintrin.h>
#endif

namespace {

constexpr int peak_inner = 256;

/// The peak loop: Chains independent FMA chains over vectors of `lanes` floats, FMA(x) the multiply-add; evaluates to
/// the floats multiplied-added. A macro, so that each body is compiled under its function's target attribute (a
/// lambda or a template would not inherit it, and the intrinsics would not inline).
#define ALIGNER_PEAK_LOOP(Vec, Chains, lanes, SET1, FMA)                                       \
  Vec acc[Chains];                                                                           \
  for (int c = 0; c != Chains; ++c) acc[c] = SET1(float(c) * 1e-3f);                         \
  const Vec a = SET1(0.999999f), b = SET1(1e-7f);                                             \
  for (auto _ : state) {                                                                     \
    for (int i = 0; i != peak_inner; ++i)                                                    \
      for (int c = 0; c != Chains; ++c) acc[c] = FMA(acc[c], a, b);                           \
    for (int c = 0; c != Chains; ++c) benchmark::DoNotOptimize(acc[c]);                       \
  }                                                                                          \
  return 2.0 * double(lanes) * Chains * peak_inner * double(state.iterations())

#if ALIGNER_X86_64_ASM
__attribute__((target("avx512f"))) double fma_peak_avx512(benchmark::State& state) {
  ALIGNER_PEAK_LOOP(__m512, 16, 16, _mm512_set1_ps, _mm512_fmadd_ps);
}

__attribute__((target("avx2,fma"))) double fma_peak_avx2(benchmark::State& state) {
  ALIGNER_PEAK_LOOP(__m256, 12, 8, _mm256_set1_ps, _mm256_fmadd_ps);
}
#endif

using build_batch = xsimd::batch<float, aligner::default_arch>;

double fma_peak_build(benchmark::State& state) {
  ALIGNER_PEAK_LOOP(build_batch, (sizeof(build_batch) >= 64 ? 16 : 12), build_batch::size, build_batch, xsimd::fma);
}
#undef ALIGNER_PEAK_LOOP

void fp32_fma_peak(benchmark::State& state) {
  double flops = 0;
  std::string label = aligner::compiled_arch_name();
#if ALIGNER_X86_64_ASM
  if (sizeof(build_batch) < 64 && aligner::avx512_usable()) {
    flops = fma_peak_avx512(state), label = "avx512f (run time)";
  } else if (sizeof(build_batch) < 32 && aligner::avx2_usable()) {
    flops = fma_peak_avx2(state), label = "avx2+fma (run time)";
  }
#endif
  if (flops == 0) flops = fma_peak_build(state);
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(label);
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
