// fp32 MaxSim register blockings and sweep orders on AVX-512 (bench/probes/README.md): one 32 x 128 query against
// packed documents of 128 tokens (8 panels of 16 tokens, 8 KB each), Top-1 fold, against the core's FMA peak in the
// same round. The panels are held in registers (an empty asm after each load); "folded" lets GCC fold every panel load
// into its FMAs (four loads of a panel vector per component step at 4 x 4). Shapes R rows x V panels (16 zmm accumulators: 4 x 4, 8 x 2, 2 x 8); orders: query row block outer
// (the library's sweep: every tile re-reads its panels from L2) or panel group outer (a group's panels stay in L1
// while every row block visits them). Pools: one document (L1/L2), 8 documents (512 KB, L2), 2,048 (128 MB, DRAM).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <immintrin.h>
#include <string>
#include <utility>
#include <vector>

constexpr int dim = 128, n = 32, m = 128, W = 16, panels = m / W;
constexpr std::size_t panel_floats = std::size_t(dim) * W, doc_floats = panel_floats * panels;

alignas(64) float query[n * dim];
alignas(64) float rowmax[n][W];
volatile float sink;

template <int R, int V, bool Reg>
__attribute__((always_inline)) inline void tile(const float* q, const float* p) {
  __m512 acc[R][V];
  for (int r = 0; r != R; ++r)
    for (int v = 0; v != V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int c = 0; c != dim; ++c) {
    __m512 d[V];
    for (int v = 0; v != V; ++v) {
      d[v] = _mm512_load_ps(p + v * panel_floats + c * W);
      if constexpr (Reg) __asm__("" : "+v"(d[v]));  // keeps the panel in a register (GCC would fold it into every FMA)
    }
    for (int r = 0; r != R; ++r) {
      const __m512 qc = _mm512_set1_ps(q[r * dim + c]);
      for (int v = 0; v != V; ++v) acc[r][v] = _mm512_fmadd_ps(qc, d[v], acc[r][v]);
    }
  }
  for (int r = 0; r != R; ++r) {
    __m512 mx = _mm512_load_ps(rowmax[r + (q - query) / dim]);
    for (int v = 0; v != V; ++v) mx = _mm512_max_ps(mx, acc[r][v]);
    _mm512_store_ps(rowmax[r + (q - query) / dim], mx);
  }
}

template <int R, int V, bool PanelOuter, bool Reg>
__attribute__((noinline)) void doc(const float* d) {
  for (int r = 0; r != n; ++r) _mm512_store_ps(rowmax[r], _mm512_set1_ps(-1e30f));
  if constexpr (PanelOuter) {
    for (int p0 = 0; p0 < panels; p0 += V)
      for (int i0 = 0; i0 < n; i0 += R) tile<R, V, Reg>(query + i0 * dim, d + p0 * panel_floats);
  } else {
    for (int i0 = 0; i0 < n; i0 += R)
      for (int p0 = 0; p0 < panels; p0 += V) tile<R, V, Reg>(query + i0 * dim, d + p0 * panel_floats);
  }
  float s = 0;
  for (int r = 0; r != n; ++r) s += _mm512_reduce_max_ps(_mm512_load_ps(rowmax[r]));
  sink = s;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double peak(long iters = 4000000) {
  __m512 acc[16];
  for (int c = 0; c != 16; ++c) acc[c] = _mm512_set1_ps(float(c) * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  const double t0 = now();
  for (long i = 0; i != iters; ++i) {
    for (int c = 0; c != 16; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  const double t = now() - t0;
  float s = 0;
  for (int c = 0; c != 16; ++c) s += _mm512_reduce_add_ps(acc[c]);
  sink = s;
  return 2.0 * 16 * 16 * double(iters) / t / 1e9;
}

template <int R, int V, bool PanelOuter, bool Reg = true>
double run(const float* pool, std::size_t docs, double seconds) {
  const double flops = 2.0 * n * m * dim;
  long count = 0;
  const double t0 = now();
  double t = 0;
  std::size_t at = 0;
  do {
    for (int k = 0; k != 64; ++k) {
      doc<R, V, PanelOuter, Reg>(pool + at * doc_floats);
      if (++at == docs) at = 0;
    }
    count += 64;
  } while ((t = now() - t0) < seconds);
  return flops * double(count) / t / 1e9;
}

/// Ticks of CPU `cpu` in /proc/stat: {busy (user + system), steal}; {0, 0} where unreadable.
std::pair<long, long> cpu_ticks(int cpu) {
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return {0, 0};
  char line[512];
  const std::string want = "cpu" + std::to_string(cpu) + " ";
  std::pair<long, long> out{0, 0};
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, want.c_str(), want.size()) == 0) {
      long v[10] = {};
      std::sscanf(line + want.size(), "%ld %ld %ld %ld %ld %ld %ld %ld", v, v + 1, v + 2, v + 3, v + 4, v + 5, v + 6, v + 7);
      out = {v[0] + v[2], v[7]};
    }
  std::fclose(f);
  return out;
}

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  if (argc > 2) {  // timeline: alternating chunks of ~0.25 s of the FMA peak loop and the 4 x 4 tile (512 KB pool)
    const int cpu = std::atoi(argv[2]);
    float* pool = static_cast<float*>(std::aligned_alloc(64, 8 * doc_floats * sizeof(float)));
    for (std::size_t i = 0; i != 8 * doc_floats; ++i) pool[i] = float((i * 2654435761u) % 2001) / 1000.f - 1.f;
    for (int i = 0; i != n * dim; ++i) query[i] = float((i * 40503u) % 2001) / 1000.f - 1.f;
    for (int chunk = 0; chunk != rounds; ++chunk) {
      const auto a0 = cpu_ticks(cpu);
      const double pk = peak(5000000);
      const double folded = run<4, 4, false, false>(pool, 8, 0.25), reg = run<4, 4, false>(pool, 8, 0.25);
      const auto a1 = cpu_ticks(cpu);
      std::printf("chunk %2d: peak %6.1f  4x4 folded %6.1f (%5.1f%%)  4x4 reg %6.1f (%5.1f%%)  busy %ld steal %ld ticks\n", chunk, pk,
                  folded, 100 * folded / pk, reg, 100 * reg / pk, a1.first - a0.first, a1.second - a0.second);
      std::fflush(stdout);
    }
    return 0;
  }
  const std::size_t big = 2048;
  float* pool = static_cast<float*>(std::aligned_alloc(64, big * doc_floats * sizeof(float)));
  for (std::size_t i = 0; i != big * doc_floats; ++i) pool[i] = float((i * 2654435761u) % 2001) / 1000.f - 1.f;
  for (int i = 0; i != n * dim; ++i) query[i] = float((i * 40503u) % 2001) / 1000.f - 1.f;
  struct variant {
    const char* name;
    double (*f)(const float*, std::size_t, double);
  } variants[] = {
      {"4x4 row-outer, folded", run<4, 4, false, false>},
      {"4x4 row-outer", run<4, 4, false>},           {"4x4 panel-outer", run<4, 4, true>},
      {"8x2 row-outer", run<8, 2, false>},           {"8x2 panel-outer", run<8, 2, true>},
      {"2x8 row-outer", run<2, 8, false>},           {"2x8 panel-outer", run<2, 8, true>},
  };
  const std::size_t pools[] = {1, 8, big};
  const char* pool_names[] = {"1 doc", "512KB", "128MB"};
  for (int round = 0; round != rounds; ++round) {
    const double pk = peak();
    std::printf("round %d: peak %.1f GFLOP/s\n", round, pk);
    for (const auto& v : variants) {
      std::printf("  %-24s", v.name);
      for (int p = 0; p != 3; ++p) {
        const double g = v.f(pool, pools[p], 0.3);
        std::printf("  %s %6.1f (%4.1f%%)", pool_names[p], g, 100.0 * g / pk);
      }
      std::printf("\n");
    }
    std::fflush(stdout);
  }
}
