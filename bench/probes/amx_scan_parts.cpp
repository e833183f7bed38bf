// Where the time of an exact scan goes on AMX: tiles only, tiles + threshold compare, the whole token_topk (bench/probes/README.md).
#include <aligner/backends/exact.hpp>
#include <aligner/kernels/amx.hpp>
#include <aligner/kernels/token_scan.hpp>
#include <chrono>
#include <cstdio>
#include <random>

using namespace aligner;
using Arch = default_arch;
using batch = xsimd::batch<float, Arch>;

template <class F>
double best_ms(F&& f, int reps = 5) {
  double best = 1e30;
  for (int r = 0; r != reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

template <class Engine>
std::uint64_t run_engine(const Engine& engine, int mode, std::size_t rows) {
  std::uint64_t sink = 0;
  const batch thr(1e30f);
  engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
    Engine::with_panels(here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>) {
      batch acc[R][V];
      engine.template tile<R, V>(i0, p0, acc);
      if (mode == 0) { sink += std::uint64_t(acc[0][0].get(0) > 0); return; }
      const std::size_t live = std::min(R, rows - i0);
      for (std::size_t r = 0; r != live; ++r)
        for (std::size_t v = 0; v != V; ++v) sink |= detail::mask_bits(engine.mask_tail(acc[r][v], p0 + v) > thr);
    });
  });
  return sink;
}

int main(int argc, char** argv) {
  const std::size_t dim = 128, nq = 32;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> q(nq * dim);
  for (auto& x : q) x = nd(rng);
  for (std::size_t n : {std::size_t(1) << 14, std::size_t(1) << 20}) {
    std::vector<float> x(n * dim);
    for (std::size_t i = 0; i != x.size(); ++i) x[i] = float(int((i * 2654435761u) % 2001) - 1000) / 1000.f;
    const int reps = n < (1u << 16) ? 64 : 1;
    const matrix_view<float> block{q.data(), nq, dim};
    for (storage st : {storage::f32, storage::bf16, storage::i8}) {
      aligned_vector<std::uint32_t> p(packed_words(st, n, dim));
      pack_panels(st, {x.data(), n, dim}, p.data());
      std::uint64_t sink = 0;
      double t[3];
      t[0] = t[1] = 0;
      for (int mode = 0; mode != 2 && (st == storage::f32 || (amx_bf16_usable() && amx_int8_usable())); ++mode) {
        t[mode] = best_ms([&] {
          for (int r = 0; r != reps; ++r) {
            if (st == storage::f32) {
              tile_engine<Arch, storage::f32> e(p.data(), n, block, nullptr, {}, nullptr);
              sink += run_engine(e, mode, nq);
            } else if (st == storage::bf16) {
              std::vector<std::uint32_t> qb;
              amx_bf16_engine<Arch> e(p.data(), n, block, bf16_pairs_or_convert(block, nullptr, qb));
              sink += run_engine(e, mode, nq);
            } else {
              std::vector<std::uint32_t> qi;
              aligned_vector<std::uint32_t> scratch(amx_i8_engine<Arch>::scratch_words(dim));
              amx_i8_engine<Arch> e(p.data(), n, block, i8_quads_or_convert(block, nullptr, qi), scratch.data());
              sink += run_engine(e, mode, nq);
            }
          }
        });
      }
      scan_workspace ws;
      topk_result out(nq, 100);
      t[2] = best_ms([&] {
        for (int r = 0; r != reps; ++r) {
          if (st == storage::f32) token_topk<storage::f32>(block, p.data(), n, 100, out, ws);
          else if (st == storage::bf16) token_topk<storage::bf16>(block, p.data(), n, 100, out, ws);
          else token_topk<storage::i8>(block, p.data(), n, 100, out, ws);
        }
      });
      const double per = 1e6 / (double(n) * nq * reps);  // ns per S value, from ms
      std::printf("n=%zu %-5s tiles %.3f ns/S  +cmp %.3f ns/S  token_topk %.3f ns/S   (%.1f / %.1f / %.1f ms per pass) sink %llu\n", n,
                  std::string(to_string(st)).c_str(), t[0] * per, t[1] * per, t[2] * per, t[0] / reps, t[1] / reps, t[2] / reps,
                  (unsigned long long)(sink & 1));
    }
  }
}
