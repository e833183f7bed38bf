// The run-time AVX-512 tiles of 4- and 8-wide panels (wide.hpp) against the double reference and against the build's
// own tiles. They run in a build whose panel width is 4 (test_kernels: no -march) or 8 (test_kernels_avx2,
// -march=x86-64-v3) on a CPU with AVX-512; elsewhere (test_kernels_avx512*) these tests print a note and check only
// that the switch and kernel_info agree.
#include <aligner/backends/exact.hpp>
#include <aligner/kernels/aligned_rows.hpp>
#include <aligner/kernels/kernel_info.hpp>
#include <aligner/kernels/layout.hpp>
#include <aligner/kernels/token_scan.hpp>
#include <aligner/kernels/wide.hpp>
#include <aligner/math/explain.hpp>
#include <aligner/math/scorer.hpp>

#include "test_common.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

using Catch::Matchers::WithinAbs;

namespace wide_test {

/// Restores the AVX-512 and AVX2 switches at scope exit.
struct avx512_switch_guard {
  bool was = aligner::detail::avx512_switch().load() != 0;
  bool was2 = aligner::detail::avx2_switch().load() != 0;
  ~avx512_switch_guard() {
    aligner::set_avx512_enabled(was);
    aligner::set_avx2_enabled(was2);
  }
};

/// The build's own tiles: both run-time engines off.
inline void wide_engines_off() {
  aligner::set_avx512_enabled(false);
  aligner::set_avx2_enabled(false);
}

/// Calls f(name) with each run-time engine of this build and CPU switched on alone: "avx512", and "avx2" where the
/// panels are 4 wide (on a CPU with AVX-512 too, so that the AVX2 tiles are tested there as well); the switches are
/// restored after. None where neither can run (the tests then print a note).
template <class F>
void for_each_wide_engine(F&& f) {
  avx512_switch_guard guard;
  if (ALIGNER_HAVE_WIDE && (aligner::panel_width<> == 4 || aligner::panel_width<> == 8) && aligner::avx512_unavailable_reason().empty()) {
    aligner::set_avx512_enabled(true);
    aligner::set_avx2_enabled(false);
    f("avx512");
  }
  if (ALIGNER_HAVE_WIDE && aligner::panel_width<> == 4 && aligner::avx2_unavailable_reason().empty()) {
    aligner::set_avx512_enabled(false);
    aligner::set_avx2_enabled(true);
    f("avx2");
  }
}

/// The run-time VNNI tiles take the i8 store (and residual codes) where the CPU has AVX512-VNNI and VBMI; these
/// tests are about the AVX-512 FMA tiles, so they turn them off (int8_vnni.hpp's tiles have tests of their own).
struct vnni_off_guard {
  bool was = aligner::detail::vnni_switch().load() != 0;
  vnni_off_guard() { aligner::set_vnni_enabled(false); }
  ~vnni_off_guard() { aligner::set_vnni_enabled(was); }
};

bool wide_or_note(aligner::storage st = aligner::storage::f32) {
  if (aligner::wide_runs(st)) return true;
  const auto info = aligner::kernel_info();
  std::printf("note: run-time AVX-512 / AVX2 tiles (%s) not tested here: %s; %s\n", aligner::to_string(st),
              info.avx512_wide ? "the CPU has no AVX512-BF16" : info.avx512_wide_reason.c_str(), info.avx2_wide_reason.c_str());
  return false;
}

/// The document as the kernels see it (packed_value: bf16/f16 widened, i8 times its scale).
std::vector<float> as_packed(aligner::storage st, const aligner::aligned_vector<std::uint32_t>& packed, std::size_t m, std::size_t dim) {
  std::vector<float> out(m * dim);
  for (std::size_t j = 0; j != m; ++j)
    for (std::size_t c = 0; c != dim; ++c) out[j * dim + c] = aligner::packed_value(st, packed.data(), aligner_test::W, dim, j, c);
  return out;
}

aligner::aligned_vector<std::uint32_t> pack_w8(aligner::storage st, const std::vector<float>& d, std::size_t m, std::size_t dim) {
  aligner::aligned_vector<std::uint32_t> packed(aligner::packed_words(st, m, dim) + 16);
  aligner::pack_panels(st, {d.data(), m, dim}, packed.data());
  return packed;
}

std::vector<float> rounded_w8(std::vector<float> v) {
  for (auto& x : v) x = aligner::from_bf16(aligner::to_bf16(x));
  return v;
}

/// True when storage st is scored by the run-time AVX-512 tiles here (not by AMX, whose tests are test_amx's).
bool wide_scores(aligner::storage st) {
  if (st == aligner::storage::bf16 && aligner::bf16_on_amx()) return false;
  if (st == aligner::storage::i8 && aligner::i8_on_amx()) return false;
  return aligner::wide_runs(st) || aligner::wide_avx2_runs(st);
}

constexpr aligner::storage row_storages[] = {aligner::storage::f32, aligner::storage::f16, aligner::storage::i8, aligner::storage::bf16};

}  // namespace wide_test

using namespace wide_test;

TEST_CASE("wide: kernel_info and the switch", "[wide]") {
  const auto info = aligner::kernel_info();
  std::printf("avx512_wide: %s\navx2_wide: %s\n", info.avx512_wide ? "yes" : info.avx512_wide_reason.c_str(),
              info.avx2_wide ? "yes" : info.avx2_wide_reason.c_str());
  CHECK((info.avx512_wide || info.avx2_wide) == aligner::wide_runs(aligner::storage::f32));
  CHECK_FALSE((info.avx512_wide && info.avx2_wide));
  CHECK(info.avx2_wide == aligner::wide_avx2_runs(aligner::storage::f32));
  CHECK_FALSE(aligner::wide_runs(aligner::storage::residual));
  // bf16 on the AVX2 tiles wherever AVX512-BF16 does not run (widened in registers, the query in float)
  CHECK(aligner::wide_avx2_runs(aligner::storage::bf16) ==
        (ALIGNER_HAVE_WIDE && aligner::panel_width<> == 4 && aligner::avx2_usable() && !aligner::avx512_bf16_usable()));
  if (aligner::panel_width<> == 16) CHECK(info.avx512_wide_reason.find("panel width is 16") != std::string::npos);
  if (aligner::panel_width<> != 4) {
    CHECK_FALSE(info.avx2_wide);
    CHECK(info.avx2_wide_reason.find("panel width is " + std::to_string(aligner::panel_width<>)) != std::string::npos);
  }
  avx512_switch_guard guard;
  wide_engines_off();
  CHECK_FALSE(aligner::wide_runs(aligner::storage::f32));
  CHECK_FALSE(aligner::kernel_info().avx512_wide);
  CHECK_FALSE(aligner::kernel_info().avx2_wide);
  CHECK(aligner::kernel_info().f32.find("-wide panels") == std::string::npos);
  if (info.avx512_wide) {
    CHECK(aligner::kernel_info().avx512_wide_reason.find("turned off") != std::string::npos);
    aligner::set_avx512_enabled(true);
    CHECK(aligner::kernel_info().f32.find("AVX-512 FMA register tiles over " + std::to_string(aligner::panel_width<>) + "-wide panels") !=
          std::string::npos);
    CHECK(aligner::bf16_query_rounded() == (aligner::cpu().avx512_bf16 || aligner::bf16_on_amx()));
    CHECK(aligner::kernel_info().avx2_wide_reason == (aligner::panel_width<> == 4 ? "the run-time AVX-512 tiles run"
                                                                                   : "the build's panel width is 8 (the run-time AVX2 tiles take width 4)"));
    aligner::set_avx512_enabled(false);
  }
  const bool avx2_here = ALIGNER_HAVE_WIDE && aligner::panel_width<> == 4 && aligner::avx2_unavailable_reason().empty();
  if (avx2_here) {
    CHECK(aligner::kernel_info().avx2_wide_reason.find("turned off") != std::string::npos);
    aligner::set_avx2_enabled(true);  // AVX-512 off: the AVX2 tiles
    const auto a2 = aligner::kernel_info();
    CHECK(a2.avx2_wide);
    CHECK_FALSE(a2.avx512_wide);
    CHECK(aligner::wide_runs(aligner::storage::f32));
    CHECK(aligner::wide_runs(aligner::storage::i8));
    CHECK_FALSE(aligner::wide_runs(aligner::storage::bf16));
    CHECK(a2.f32.find("AVX2 FMA register tiles of 6, 5 and 4 query rows x 2 panels over 4-wide panels") != std::string::npos);
    CHECK(a2.f16.find("AVX2 FMA register tiles") != std::string::npos);
    CHECK(a2.describe().find("\navx2_wide=yes\n") != std::string::npos);
    CHECK(aligner::wide_avx2_runs(aligner::storage::bf16));
    if (!aligner::bf16_on_amx()) CHECK(a2.bf16.find("bf16 widened to float in registers, query in float, AVX2 FMA") != std::string::npos);
    CHECK_FALSE((aligner::bf16_query_rounded() && !aligner::bf16_on_amx()));  // the AVX2 tiles keep the query in float
  } else {
    aligner::set_avx2_enabled(true);
    CHECK_FALSE(aligner::kernel_info().avx2_wide);
  }
}

TEST_CASE("wide: the expanded query forms follow their rule", "[wide]") {
  const std::size_t n = 3;
  for (std::size_t width : {4u, 8u})
    for (std::size_t dim : {1u, 2u, 3u, 4u, 5u, 7u, 9u}) {
      const auto q = aligner_test::random_matrix(n, dim, 5 + dim);
      aligner::aligned_vector<std::uint32_t> f(aligner::wide_query_words(n, dim, width)), b(aligner::wide_bf16_query_words(n, dim, width));
      aligner::query_to_wide({q.data(), n, dim}, f.data(), width);
      aligner::query_to_wide_bf16({q.data(), n, dim}, b.data(), width);
      const std::size_t g = 16 / width, steps = (dim + g - 1) / g, pairs = (dim + 1) / 2, bsteps = (pairs + g - 1) / g;
      CHECK(f.size() == n * steps * 16);
      CHECK(b.size() == n * bsteps * 16);
      for (std::size_t i = 0; i != n; ++i)
        for (std::size_t l = 0; l != 16; ++l) {
          for (std::size_t j = 0; j != steps; ++j) {
            const std::size_t c = g * j + l / width;
            float x;
            std::memcpy(&x, &f[(i * steps + j) * 16 + l], 4);
            CHECK(x == (c < dim ? q[i * dim + c] : 0.f));
          }
          for (std::size_t j = 0; j != bsteps; ++j) {
            const std::size_t c = 2 * (g * j + l / width);  // the pair word's low half
            const std::uint32_t w = b[(i * bsteps + j) * 16 + l];
            CHECK((w & 0xffffu) == (c < dim ? aligner::to_bf16(q[i * dim + c]) : 0u));
            CHECK((w >> 16) == (c + 1 < dim ? aligner::to_bf16(q[i * dim + c + 1]) : 0u));
          }
        }
    }
}

TEST_CASE("wide: row sums of every storage against the double reference and the build's own tiles", "[wide]") {
  if (!wide_or_note()) return;
  vnni_off_guard no_vnni;
  const std::size_t W = aligner_test::W;
  for_each_wide_engine([&](const char* engine) {
  for (aligner::storage st : row_storages) {
    if (!wide_scores(st)) {
      std::printf("note: %s documents are not scored by the run-time %s tiles here\n", aligner::to_string(st), engine);
      continue;
    }
    const bool avx512_on = aligner::detail::avx512_switch().load() != 0, avx2_on = aligner::detail::avx2_switch().load() != 0;
    for (std::size_t dim : {1u, 2u, 3u, 4u, 5u, 15u, 16u, 17u, 31u, 33u, 64u, 100u, 127u, 128u, 130u})
      for (std::size_t n : {1u, 3u, 4u, 5u, 9u})
        for (std::size_t m : {std::size_t(1), W - 1, W, W + 1, 3 * W, 4 * W + 1, 9 * W + 3}) {
          const auto q = aligner_test::random_matrix(n, dim, 100 + dim * 7 + n), d = aligner_test::random_matrix(m, dim, 200 + m + dim);
          const auto w = aligner_test::random_weights(m, m + dim, true);
          const auto packed = pack_w8(st, d, m, dim);
          const auto dv = as_packed(st, packed, m, dim);
          const auto qv = st == aligner::storage::bf16 && aligner::bf16_query_rounded() ? rounded_w8(q) : q;
          for (std::size_t k : {1u, 2u, 3u, 8u, 17u})
            for (bool weighted : {false, true}) {
              const std::size_t budgets[] = {k};
              const float* wp = weighted ? w.data() : nullptr;
              std::vector<double> sum(n), z(n), narrow(n), nz(n), rs(n), rz(n);
              aligner::rows_workspace ws;
              aligner::aligned_row_sums({q.data(), n, dim}, st, packed.data(), m, budgets, wp, sum.data(), z.data(), ws);
              wide_engines_off();
              aligner::aligned_row_sums({q.data(), n, dim}, st, packed.data(), m, budgets, wp, narrow.data(), nz.data(), ws);
              aligner::set_avx512_enabled(avx512_on);
              aligner::set_avx2_enabled(avx2_on);
              aligner::ref::aligned_row_sums({qv.data(), n, dim}, {dv.data(), m, dim}, k, wp, rs.data(), rz.data());
              for (std::size_t i = 0; i != n; ++i) {
                INFO(engine << " " << aligner::to_string(st) << " dim " << dim << " n " << n << " m " << m << " k " << k << " weighted " << weighted << " row " << i);
                const double tol = 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim));
                REQUIRE_THAT(sum[i], WithinAbs(rs[i], tol));
                REQUIRE_THAT(z[i], WithinAbs(rz[i], 1e-5 * std::max(1.0, rz[i])));
                // bf16 with vdpbf16ps rounds the query to bf16; the build's tiles (and the AVX2 ones) keep it in float
                if (st != aligner::storage::bf16 || !aligner::bf16_query_rounded()) REQUIRE_THAT(sum[i], WithinAbs(narrow[i], tol));
              }
            }
        }
  }
  });
}

TEST_CASE("wide: several budgets, documents longer than a span, the next document prefetched", "[wide]") {
  if (!wide_or_note()) return;
  vnni_off_guard no_vnni;
  for_each_wide_engine([&](const char* engine) {
  INFO("engine " << engine);
  const std::size_t dim = 128, n = 7;
  for (aligner::storage st : row_storages) {
    if (!wide_scores(st)) continue;
    for (std::size_t m : {511u, 1023u, 1025u, 2100u}) {
      const auto q = aligner_test::random_matrix(n, dim, 31 + m), d = aligner_test::random_matrix(m, dim, 32 + m);
      const auto nextd = aligner_test::random_matrix(64, dim, 33);
      const auto w = aligner_test::random_weights(m, m + 9, true);
      const auto packed = pack_w8(st, d, m, dim), packed_next = pack_w8(st, nextd, 64, dim);
      const auto dv = as_packed(st, packed, m, dim);
      const auto qv = st == aligner::storage::bf16 && aligner::bf16_query_rounded() ? rounded_w8(q) : q;
      const std::size_t budgets[] = {1, 4, 16, 40};
      std::vector<double> sum(n * 4), z(n * 4);
      aligner::rows_workspace ws;
      aligner::aligned_row_sums({q.data(), n, dim}, st, packed.data(), m, budgets, w.data(), sum.data(), z.data(), ws, {},
                                {packed_next.data(), aligner::packed_words(st, 64, dim) * 4});
      for (std::size_t b = 0; b != 4; ++b) {
        std::vector<double> rs(n), rz(n);
        aligner::ref::aligned_row_sums({qv.data(), n, dim}, {dv.data(), m, dim}, budgets[b], w.data(), rs.data(), rz.data());
        for (std::size_t i = 0; i != n; ++i) {
          INFO(aligner::to_string(st) << " m " << m << " budget " << budgets[b] << " row " << i);
          REQUIRE_THAT(sum[i * 4 + b], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
          REQUIRE_THAT(z[i * 4 + b], WithinAbs(rz[i], 1e-5 * std::max(1.0, rz[i])));
        }
      }
    }
  }
  });
}

TEST_CASE("wide: a prepared query scores as an unprepared one, and explain shows the kernel's values", "[wide]") {
  if (!wide_or_note()) return;
  vnni_off_guard no_vnni;
  for_each_wide_engine([&](const char* engine) {
  INFO("engine " << engine);
  const std::size_t dim = 33, n = 6, m = 41;
  const auto q = aligner_test::random_matrix(n, dim, 71), d = aligner_test::random_matrix(m, dim, 72);
  for (aligner::storage st : row_storages) {
    if (!wide_scores(st)) continue;
    const auto packed = pack_w8(st, d, m, dim);
    const aligner::prepared_query pq({q.data(), n, dim});
    REQUIRE(pq.forms().wide_for(st) != nullptr);
    const std::size_t budgets[] = {3};
    std::vector<double> a(n), az(n), b(n), bz(n);
    aligner::rows_workspace ws;
    aligner::aligned_row_sums({q.data(), n, dim}, st, packed.data(), m, budgets, nullptr, a.data(), az.data(), ws, pq.forms());
    aligner::aligned_row_sums({q.data(), n, dim}, st, packed.data(), m, budgets, nullptr, b.data(), bz.data(), ws);
    for (std::size_t i = 0; i != n; ++i) {
      CHECK(a[i] == b[i]);
      CHECK(az[i] == bz[i]);
    }
    // packed_similarity_rows (explain's S) against the double reference; its row maxima are Top-1's terms exactly.
    const std::size_t stride = aligner::panel_count(m) * aligner_test::W;
    std::vector<float> s(n * stride);
    aligner::packed_similarity_rows({q.data(), n, dim}, st, packed.data(), m, s.data(), stride, pq.forms());
    const auto dv = as_packed(st, packed, m, dim);
    const auto qv = st == aligner::storage::bf16 && aligner::bf16_query_rounded() ? rounded_w8(q) : q;
    const std::size_t top1[] = {1};
    std::vector<double> t1(n), t1z(n);
    aligner::aligned_row_sums({q.data(), n, dim}, st, packed.data(), m, top1, nullptr, t1.data(), t1z.data(), ws, pq.forms());
    for (std::size_t i = 0; i != n; ++i) {
      float best = -INFINITY;
      for (std::size_t j = 0; j != m; ++j) {
        INFO(aligner::to_string(st) << " row " << i << " token " << j);
        REQUIRE_THAT(double(s[i * stride + j]), WithinAbs(aligner::ref::dot(qv.data() + i * dim, dv.data() + j * dim, dim), 1e-5 * std::sqrt(double(dim))));
        best = std::max(best, s[i * stride + j]);
      }
      CHECK(double(best) == t1[i]);
    }
  }
  });
}

TEST_CASE("wide: exact token search in f32 and bf16 against brute force", "[wide]") {
  if (!wide_or_note()) return;
  vnni_off_guard no_vnni;
  for_each_wide_engine([&](const char* engine) {
  INFO("engine " << engine);
  for (aligner::storage st : {aligner::storage::f32, aligner::storage::bf16}) {
    if (!wide_scores(st)) continue;
    for (std::size_t dim : {3u, 17u, 64u}) {
      const std::size_t tokens = 1000 + dim, nq = 11, k = 20;
      const auto t = aligner_test::random_matrix(tokens, dim, 91 + dim), q = aligner_test::random_matrix(nq, dim, 92 + dim);
      const auto packed = pack_w8(st, t, tokens, dim);
      const auto tv = as_packed(st, packed, tokens, dim);
      const auto qv = st == aligner::storage::bf16 && aligner::bf16_query_rounded() ? rounded_w8(q) : q;
      aligner::topk_result out(nq, k);
      aligner::scan_workspace ws;
      if (st == aligner::storage::bf16)
        aligner::token_topk<aligner::storage::bf16>({q.data(), nq, dim}, packed.data(), tokens, k, out, ws);
      else
        aligner::token_topk<aligner::storage::f32>({q.data(), nq, dim}, packed.data(), tokens, k, out, ws);
      for (std::size_t i = 0; i != nq; ++i) {
        std::vector<double> s(tokens);
        for (std::size_t j = 0; j != tokens; ++j) s[j] = aligner::ref::dot(qv.data() + i * dim, tv.data() + j * dim, dim);
        std::vector<double> sorted = s;
        std::sort(sorted.begin(), sorted.end(), std::greater<>());
        for (std::size_t r = 0; r != k; ++r) {
          INFO(aligner::to_string(st) << " dim " << dim << " query " << i << " rank " << r);
          const std::int64_t id = out.ids[i * k + r];
          REQUIRE(id >= 0);
          REQUIRE_THAT(double(out.scores[i * k + r]), WithinAbs(s[std::size_t(id)], 1e-5 * std::sqrt(double(dim))));
          REQUIRE_THAT(double(out.scores[i * k + r]), WithinAbs(sorted[r], 1e-5 * std::sqrt(double(dim))));
        }
      }
    }
  }
  });
}

TEST_CASE("wide: the AVX2 tiles' arithmetic, bit for bit", "[wide]") {
  // Each entry of S on the AVX2 tiles of 4-wide panels: the even components summed in order by fused multiply-adds
  // in float, the odd ones likewise (an odd dimension's last half adds 0 x 0 to the odd sum), the two added, then
  // times the i8 token's scale. bf16 values are widened exactly and the query stays float. Written out here with
  // std::fma against packed_similarity_rows.
  if (aligner::panel_width<> != 4 || !ALIGNER_HAVE_WIDE || !aligner::avx2_unavailable_reason().empty()) {
    std::printf("note: the AVX2 tiles of 4-wide panels do not run here (panel width %zu; %s)\n", aligner::panel_width<>,
                aligner::avx2_unavailable_reason().c_str());
    return;
  }
  vnni_off_guard no_vnni;
  avx512_switch_guard guard;
  const bool amx_was = aligner::detail::amx_switch().load() != 0;
  aligner::set_amx_enabled(false);  // (AMX would take bf16 and i8)
  aligner::set_avx512_enabled(false);
  aligner::set_avx2_enabled(true);
  REQUIRE(aligner::wide_avx2_runs(aligner::storage::f32));
  REQUIRE(aligner::wide_avx2_runs(aligner::storage::bf16));
  struct amx_back {
    bool was;
    ~amx_back() { aligner::set_amx_enabled(was); }
  } amx_restore{amx_was};
  for (aligner::storage st : {aligner::storage::f32, aligner::storage::f16, aligner::storage::i8, aligner::storage::bf16})
    for (std::size_t dim : {1u, 2u, 3u, 7u, 8u, 33u, 100u, 128u})
      for (std::size_t n : {1u, 2u, 3u, 4u, 5u, 6u, 9u})
        for (std::size_t m : {1u, 3u, 4u, 7u, 8u, 13u, 17u, 40u}) {
          const auto q = aligner_test::random_matrix(n, dim, 300 + dim + n), d = aligner_test::random_matrix(m, dim, 400 + m * 3 + dim);
          const auto packed = pack_w8(st, d, m, dim);
          const std::size_t stride = aligner::panel_count(m) * 4;
          std::vector<float> s(n * stride);
          aligner::packed_similarity_rows({q.data(), n, dim}, st, packed.data(), m, s.data(), stride);
          for (std::size_t i = 0; i != n; ++i)
            for (std::size_t j = 0; j != m; ++j) {
              // the panel's values as the tile widens them, before the i8 scale
              float even = 0.f, odd = 0.f, scale = 1.f;
              const std::size_t panel = j / 4, lane = j % 4;
              const std::size_t panel_bytes = st == aligner::storage::f32   ? dim * 16
                                              : st == aligner::storage::f16 ? dim * 8
                                              : st == aligner::storage::i8  ? 16 + dim * 4
                                                                            : (dim + 1) / 2 * 16;
              const auto* base = reinterpret_cast<const unsigned char*>(packed.data()) + panel * panel_bytes;
              if (st == aligner::storage::i8) std::memcpy(&scale, base + lane * 4, 4);
              const unsigned char* rows = base + (st == aligner::storage::i8 ? 16 : 0);
              for (std::size_t c = 0; c != dim; ++c) {
                float x;
                if (st == aligner::storage::f32) std::memcpy(&x, rows + (c * 4 + lane) * 4, 4);
                else if (st == aligner::storage::f16) {
                  std::uint16_t h;
                  std::memcpy(&h, rows + (c * 4 + lane) * 2, 2);
                  x = aligner::from_f16(h);
                } else if (st == aligner::storage::bf16) {  // pair row c / 2: component c in the low (even) or high half
                  std::uint16_t h;
                  std::memcpy(&h, rows + ((c / 2) * 4 + lane) * 4 + (c % 2) * 2, 2);
                  x = aligner::from_bf16(h);
                } else {
                  x = float(static_cast<std::int8_t>(rows[c * 4 + lane]));
                }
                float& acc = c % 2 ? odd : even;
                acc = std::fma(q[i * dim + c], x, acc);
              }
              if (dim % 2) odd = std::fma(0.f, 0.f, odd);
              float want = even + odd;
              if (st == aligner::storage::i8) want *= scale;
              INFO(aligner::to_string(st) << " dim " << dim << " n " << n << " m " << m << " row " << i << " token " << j);
              REQUIRE(s[i * stride + j] == want);
            }
        }
}
