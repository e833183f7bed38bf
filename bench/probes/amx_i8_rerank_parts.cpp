// Where the time of the i8 store's Top-1 rerank goes on AMX-INT8 (bench/probes/README.md): n = 32 query rows against
// documents of 128 tokens, dim 128, ns a document, for a pool that stays in cache and one streamed from DRAM.
#include <aligner/kernels/aligned_rows.hpp>
#include <aligner/kernels/amx.hpp>
#include <chrono>
#include <cstdio>
#include <random>

using namespace aligner;
using Arch = default_arch;
using batch = xsimd::batch<float, Arch>;
using ints = xsimd::batch<std::int32_t, Arch>;
using i8_engine = amx_i8_engine<Arch>;
using traits = storage_traits<storage::i8>;

template <class F>
double best_ns(F&& f, std::size_t docs, int reps = 5) {
  double best = 1e30;
  for (int r = 0; r != reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  return best / double(docs);
}

struct pool_t {
  std::size_t docs, words;
  aligned_vector<std::uint32_t> data;
  const void* doc(std::size_t d) const { return data.data() + d * words; }
};

pool_t make_pool(storage st, std::size_t docs, std::size_t m, std::size_t dim) {
  pool_t p{docs, packed_words(st, m, dim), {}};
  p.words = (p.words + 15) / 16 * 16;
  p.data.resize(docs * p.words);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  std::vector<float> x(m * dim);
  for (std::size_t d = 0; d != docs; ++d) {
    for (auto& v : x) v = nd(rng);
    pack_panels(st, {x.data(), m, dim}, p.data.data() + d * p.words);
  }
  return p;
}

int main() {
  const std::size_t dim = 128, nq = 32, m = 128;
  const bool amx = i8_on_amx<Arch>() && bf16_on_amx<Arch>();
  if (!amx) std::printf("no AMX-INT8: the AMX rows are the library's other paths\n");
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> q(nq * dim);
  for (auto& x : q) x = nd(rng);
  const matrix_view<float> query{q.data(), nq, dim};
  std::vector<std::uint32_t> qi, qb;
  const std::uint32_t* q8 = i8_quads_or_convert(query, nullptr, qi);
  const std::uint32_t* q16 = bf16_pairs_or_convert(query, nullptr, qb);
  aligned_vector<std::uint32_t> scratch(i8_engine::scratch_words(dim));
  const std::size_t one = 1;
  const std::span<const std::size_t> top1(&one, 1);
  std::vector<double> rs(nq), rz(nq);
  rows_workspace ws;
  std::uint64_t sink = 0;
  for (std::size_t docs : {std::size_t(8), std::size_t(8192)}) {
    for (int round = 0; round != 3; ++round) {
      const auto p8 = make_pool(storage::i8, docs, m, dim);
      const auto pb = make_pool(storage::bf16, docs, m, dim);
      const auto pf = make_pool(storage::f32, docs, m, dim);
      const int passes = docs < 64 ? 4096 : 1;
      const std::size_t total = docs * std::size_t(passes);
      const std::size_t panel_bytes = traits::panel_words(dim, i8_engine::width) * 4;
      const std::size_t panels = panel_count<Arch>(m);
      // pre-relaid copy of the i8 pool (what a store kept in quads would read), for the "no relayout" rows
      const std::size_t rw = i8_engine::relaid_words(dim);
      aligned_vector<std::uint32_t> relaid(docs * panels * rw);
      for (std::size_t d = 0; d != docs; ++d)
        for (std::size_t pp = 0; pp != panels; ++pp)
          relayout_i8_quads(static_cast<const unsigned char*>(p8.doc(d)) + pp * panel_bytes + traits::header_words(i8_engine::width) * 4, dim,
                            i8_engine::width, relaid.data() + (d * panels + pp) * rw);
      double t[10] = {};
      // 0: relayout only
      t[0] = best_ns([&] {
        for (int r = 0; r != passes; ++r)
          for (std::size_t d = 0; d != docs; ++d)
            for (std::size_t pp = 0; pp != panels; ++pp)
              relayout_i8_quads(static_cast<const unsigned char*>(p8.doc(d)) + pp * panel_bytes + traits::header_words(i8_engine::width) * 4, dim,
                                i8_engine::width, scratch.data() + (pp % i8_engine::group_of(dim)) * rw);
        sink += scratch[3];
      }, total);
      // 1: relayout + paired tiles stored (no conversion); 2: + today's conversion (engine.tile); 3: the whole Top-1
      for (int mode = 1; mode <= 2 && amx; ++mode)
        t[mode] = best_ns([&] {
          for (int r = 0; r != passes; ++r)
            for (std::size_t d = 0; d != docs; ++d) {
              i8_engine e(p8.doc(d), m, query, q8, scratch.data(), {d + 1 < docs ? p8.doc(d + 1) : nullptr, p8.words * 4});
              e.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
                i8_engine::with_panels(here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>) {
                  batch acc[R][V], low[R][V];
                  if (mode == 1)
                    e.inner.template tile_paired<V>(i0, i0 + bf16_query_rows(nq), p0 - e.group_first, &acc[0][0], &low[0][0]);
                  else
                    e.template tile<R, V>(i0, p0, acc);
                  sink += std::uint64_t(acc[1][V - 1].get(0) > 0);
                });
              });
            }
        }, total);
      t[3] = best_ns([&] {
        for (int r = 0; r != passes; ++r)
          for (std::size_t d = 0; d != docs; ++d)
            aligned_row_sums<Arch>(query, storage::i8, p8.doc(d), m, top1, nullptr, rs.data(), rz.data(), ws, query_forms(nullptr, q8),
                                   {d + 1 < docs ? p8.doc(d + 1) : nullptr, p8.words * 4});
        sink += std::uint64_t(rs[0] > 0);
      }, total);
      // 4: single int8 term: relayout + 1 x 4 tiles + cvt * scale * qs; 5: no relayout (pre-relaid), paired + today's
      // conversion; 6: no relayout, single term
      for (int mode = 4; mode <= 6 && amx; ++mode)
        t[mode] = best_ns([&] {
          for (int r = 0; r != passes; ++r)
            for (std::size_t d = 0; d != docs; ++d) {
              const unsigned char* raw = static_cast<const unsigned char*>(p8.doc(d));
              const std::uint32_t* src = mode == 4 ? scratch.data() : relaid.data() + d * panels * rw;
              if (mode == 4)
                for (std::size_t pp = 0; pp != panels; ++pp)
                  relayout_i8_quads(raw + pp * panel_bytes + traits::header_words(i8_engine::width) * 4, dim, i8_engine::width,
                                    scratch.data() + pp * rw);
              amx_engine<Arch, amx_op::int8> inner(src, m, query, q8,
                                                   {mode == 4 ? (d + 1 < docs ? p8.doc(d + 1) : nullptr) : nullptr, mode == 4 ? p8.words * 4 : 0});
              inner.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
                i8_engine::with_panels(here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>) {
                  batch acc[R][V], low[R][V];
                  batch scale[V];
                  for (std::size_t v = 0; v != V; ++v) scale[v] = traits::template load_scales<Arch>(raw + (p0 + v) * panel_bytes);
                  if (mode == 5) {
                    inner.template tile_paired<V>(i0, i0 + bf16_query_rows(nq), p0, &acc[0][0], &low[0][0]);
                    const ints factor(i8_query_factor(dim));
                    for (std::size_t rr = 0; rr != R; ++rr) {
                      const batch qs(i8_query_scale(q8, nq, dim, i0 + rr));
                      for (std::size_t v = 0; v != V; ++v)
                        acc[rr][v] = xsimd::batch_cast<float>(xsimd::bitwise_cast<ints>(acc[rr][v]) * factor + xsimd::bitwise_cast<ints>(low[rr][v])) * scale[v] * qs;
                    }
                  } else {
                    inner.template tile<R, V>(i0, p0, acc);
                    for (std::size_t rr = 0; rr != R; ++rr) {
                      const batch qs(i8_query_scale(q8, nq, dim, i0 + rr));
                      for (std::size_t v = 0; v != V; ++v) acc[rr][v] = xsimd::batch_cast<float>(xsimd::bitwise_cast<ints>(acc[rr][v])) * scale[v] * qs;
                    }
                  }
                  sink += std::uint64_t(acc[1][V - 1].get(0) > 0);
                });
              });
            }
        }, total);
      // 7: bf16 Top-1 (AMX-BF16 where it runs); 8: f32 Top-1; 9: bf16 engine tiles only
      t[7] = best_ns([&] {
        for (int r = 0; r != passes; ++r)
          for (std::size_t d = 0; d != docs; ++d)
            aligned_row_sums<Arch>(query, storage::bf16, pb.doc(d), m, top1, nullptr, rs.data(), rz.data(), ws, query_forms(q16),
                                   {d + 1 < docs ? pb.doc(d + 1) : nullptr, pb.words * 4});
        sink += std::uint64_t(rs[0] > 0);
      }, total);
      t[8] = best_ns([&] {
        for (int r = 0; r != passes; ++r)
          for (std::size_t d = 0; d != docs; ++d)
            aligned_row_sums<Arch>(query, storage::f32, pf.doc(d), m, top1, nullptr, rs.data(), rz.data(), ws, {},
                                   {d + 1 < docs ? pf.doc(d + 1) : nullptr, pf.words * 4});
        sink += std::uint64_t(rs[0] > 0);
      }, total);
      if (amx)
        t[9] = best_ns([&] {
          for (int r = 0; r != passes; ++r)
            for (std::size_t d = 0; d != docs; ++d) {
              amx_bf16_engine<Arch> e(pb.doc(d), m, query, q16, {d + 1 < docs ? pb.doc(d + 1) : nullptr, pb.words * 4});
              e.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
                amx_bf16_engine<Arch>::with_panels(here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>) {
                  batch acc[R][V];
                  e.template tile<R, V>(i0, p0, acc);
                  sink += std::uint64_t(acc[1][V - 1].get(0) > 0);
                });
              });
            }
        }, total);
      std::printf("docs=%zu round %d ns/doc: i8 relayout %.0f | +paired tiles %.0f | +convert %.0f | Top-1 %.0f || single term %.0f | "
                  "pre-relaid paired+convert %.0f | pre-relaid single %.0f || bf16 Top-1 %.0f (tiles %.0f) | f32 Top-1 %.0f   "
                  "[i8 Top-1 / f32 %.2fx, bf16 %.2fx]\n",
                  docs, round, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[9], t[8], t[8] / t[3], t[8] / t[7]);
      std::fflush(stdout);
    }
  }
  std::printf("sink %llu\n", (unsigned long long)(sink & 1));
}
