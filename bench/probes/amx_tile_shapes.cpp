// AMX-BF16 tile loop shapes (bench/probes/README.md): 1 A x 4 B (the bf16 engine's), the same with 3 B registers, 2 A x 2 B; with and without tile
// stores (and a vector pass over the stored tiles). bf16 panels of 16 tokens, dim 128 (4 k-blocks of 16 pairs).
#include <aligner/kernels/amx.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <immintrin.h>

using namespace aligner;
constexpr std::size_t kb_count = 4, panel_bytes = 4096, row_bytes = 256;  // 64 pairs x 4 B a query row

#define TL ALIGNER_TILE_LOAD
#define TD ALIGNER_TILE_DPBF16
#define TS ALIGNER_TILE_STORE
#define TZ ALIGNER_TILE_ZERO

alignas(64) float sinkbuf[4][16 * 16];
volatile float vsink;

__attribute__((noinline)) void consume(int mode) {
  if (mode == 0) return;
  __m512 m = _mm512_set1_ps(-1e30f);
  for (int t = 0; t != 4; ++t)
    for (int r = 0; r != 16; ++r) m = _mm512_max_ps(m, _mm512_load_ps(sinkbuf[t] + r * 16));
  vsink = _mm512_reduce_max_ps(m);
}

// 1 A x 4 B, B in tmm5/tmm6 (b3 = false) or tmm5/6/7 rotating (b3 = true).
template <bool B3>
void v1(const char* q, const char* p, std::size_t panels, int store) {
  for (std::size_t rb = 0; rb != 2; ++rb)
    for (std::size_t p0 = 0; p0 < panels; p0 += 4) {
      TZ(0); TZ(1); TZ(2); TZ(3);
      for (std::size_t kb = 0; kb != kb_count; ++kb) {
        const char* a = q + rb * 16 * row_bytes + kb * 64;
        const char* b = p + p0 * panel_bytes + kb * 1024;
        TL(4, a, row_bytes);
        if constexpr (B3) {
          TL(5, b, 64); TD(0, 4, 5);
          TL(6, b + panel_bytes, 64); TD(1, 4, 6);
          TL(7, b + 2 * panel_bytes, 64); TD(2, 4, 7);
          TL(5, b + 3 * panel_bytes, 64); TD(3, 4, 5);
        } else {
          TL(5, b, 64); TD(0, 4, 5);
          TL(6, b + panel_bytes, 64); TD(1, 4, 6);
          TL(5, b + 2 * panel_bytes, 64); TD(2, 4, 5);
          TL(6, b + 3 * panel_bytes, 64); TD(3, 4, 6);
        }
      }
      if (store) { TS(0, sinkbuf[0], 64); TS(1, sinkbuf[1], 64); TS(2, sinkbuf[2], 64); TS(3, sinkbuf[3], 64); consume(store - 1); }
    }
  if (!store) TS(0, sinkbuf[0], 64);
}

// 2 A x 2 B: A rows 0-15 in tmm4, rows 16-31 in tmm5; B panels p0, p0 + 1 in tmm6, tmm7.
void v2(const char* q, const char* p, std::size_t panels, int store) {
  for (std::size_t p0 = 0; p0 < panels; p0 += 2) {
    TZ(0); TZ(1); TZ(2); TZ(3);
    for (std::size_t kb = 0; kb != kb_count; ++kb) {
      const char* a = q + kb * 64;
      const char* b = p + p0 * panel_bytes + kb * 1024;
      TL(4, a, row_bytes);
      TL(6, b, 64);
      TD(0, 4, 6);
      TL(7, b + panel_bytes, 64);
      TD(1, 4, 7);
      TL(5, a + 16 * row_bytes, row_bytes);
      TD(2, 5, 6);
      TD(3, 5, 7);
    }
    if (store) { TS(0, sinkbuf[0], 64); TS(1, sinkbuf[1], 64); TS(2, sinkbuf[2], 64); TS(3, sinkbuf[3], 64); consume(store - 1); }
  }
  if (!store) TS(0, sinkbuf[0], 64);
}

int main() {
  if (!amx_bf16_usable()) { std::puts("no AMX"); return 0; }
  amx_tile_config c;
  for (int t = 0; t != 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  amx_configure(c);
  alignas(64) static char q[32 * row_bytes];
  for (std::size_t i = 0; i != sizeof q; i += 2) q[i + 1] = 0x3f;  // bf16 ~ 0.5..1
  for (std::size_t n_panels : {std::size_t(64), std::size_t(256), std::size_t(65536)}) {
    aligned_vector<std::uint32_t> panels(n_panels * panel_bytes / 4, 0x3f003f00u);
    const char* p = reinterpret_cast<const char*>(panels.data());
    const int reps = int(std::max<std::size_t>(1, (std::size_t(1) << 16) / n_panels)) * 4;
    const double svalues = double(n_panels) * 16 * 32 * reps;
    auto time = [&](const char* name, auto&& f) {
      double best = 1e30;
      for (int round = 0; round != 5; ++round) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r != reps; ++r) f();
        best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("panels %6zu (%7.1f KB)  %-28s %.3f ns/S  %.1f ns/tdp\n", n_panels, double(n_panels) * 4, name, best / svalues,
                  best / (svalues / 256 * kb_count));
    };
    for (int store : {0, 1, 2}) {
      const char* tag[] = {"no stores", "stores", "stores+vector pass"};
      char name[64];
      std::snprintf(name, sizeof name, "1x4 2B %s", tag[store]);
      time(name, [&] { v1<false>(q, p, n_panels, store); });
      std::snprintf(name, sizeof name, "1x4 3B %s", tag[store]);
      time(name, [&] { v1<true>(q, p, n_panels, store); });
      std::snprintf(name, sizeof name, "2x2 %s", tag[store]);
      time(name, [&] { v2(q, p, n_panels, store); });
    }
  }
  std::printf("%f\n", double(vsink));
}
