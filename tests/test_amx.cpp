// The AMX-BF16 tile engine against the double reference and against the vector path. Built once per x86 level
// this CPU runs (panel widths 4, 8 and 16: the tiles take the width of the build). Skipped with a note where the CPU,
// the OS or the process permission does not allow AMX.
#include <aligner/backends/exact.hpp>
#include <aligner/kernels/aligned_rows.hpp>
#include <aligner/kernels/amx.hpp>
#include <aligner/kernels/kernel_info.hpp>
#include <aligner/kernels/layout.hpp>
#include <aligner/math/scorer.hpp>
#include <aligner/storage/token_store.hpp>

#include "test_common.hpp"

#include <algorithm>
#include <cmath>

using Catch::Matchers::WithinAbs;

namespace {

/// Restores the AMX switch at scope exit.
struct amx_switch_guard {
  bool was = aligner::detail::amx_switch().load() != 0;
  ~amx_switch_guard() { aligner::set_amx_enabled(was); }
};

bool amx_or_note() {
  if (aligner::amx_bf16_usable()) return true;
  std::printf("note: AMX-BF16 tests skipped: %s\n",
              aligner::amx_bf16_unavailable_reason().empty() ? "turned off (ALIGNER_NO_AMX)" : aligner::amx_bf16_unavailable_reason().c_str());
  return false;
}

std::vector<float> bf16_rounded(std::vector<float> v) {
  for (auto& x : v) x = aligner::from_bf16(aligner::to_bf16(x));
  return v;
}

aligner::aligned_vector<std::uint32_t> pack_bf16(const std::vector<float>& d, std::size_t m, std::size_t dim, std::size_t shift_words = 0) {
  aligner::aligned_vector<std::uint32_t> packed(aligner::packed_words(aligner::storage::bf16, m, dim) + shift_words + 1);
  aligner::pack_panels(aligner::storage::bf16, {d.data(), m, dim}, packed.data() + shift_words);
  return packed;
}

void kernel(const std::vector<float>& q, std::size_t n, std::size_t dim, const void* panels, std::size_t m,
            std::span<const std::size_t> budgets, const float* w, double* sum, double* z, aligner::prefetch_hint next = {}) {
  aligner::rows_workspace ws;
  aligner::aligned_row_sums({q.data(), n, dim}, aligner::storage::bf16, panels, m, budgets, w, sum, z, ws, nullptr, next);
}
}  // namespace

TEST_CASE("amx: what the CPU has and why AMX runs or not", "[amx]") {
  const auto& f = aligner::cpu();
  std::printf("cpu: %s; avx512f %d avx512bw %d avx512_bf16 %d amx_tile %d amx_bf16 %d amx_int8 %d os_avx512 %d os_amx %d\n",
              f.brand.c_str(), f.avx512f, f.avx512bw, f.avx512_bf16, f.amx_tile, f.amx_bf16, f.amx_int8, f.os_avx512, f.os_amx);
  const auto info = aligner::kernel_info();
  std::printf("%s", info.describe().c_str());
  if (aligner::amx_bf16_unavailable_reason().empty()) {
    CHECK(f.amx_tile);
    CHECK(f.amx_bf16);
    CHECK(f.os_amx);
  } else {
    CHECK_FALSE(aligner::amx_bf16_usable());
  }
  const bool runs = aligner::amx_bf16_unavailable_reason().empty();
  amx_switch_guard guard;
  aligner::set_amx_enabled(false);
  CHECK_FALSE(aligner::amx_bf16_usable());
  CHECK(aligner::kernel_info().bf16.find("tdpbf16ps") == std::string::npos);
  // Turned off where it would run; elsewhere the first reason (the CPU's, the system's) is still the one given.
  if (runs)
    CHECK(aligner::kernel_info().bf16.find("turned off") != std::string::npos);
  else
    CHECK(aligner::kernel_info().bf16.find("AMX not used") != std::string::npos);
  aligner::set_amx_enabled(true);
  CHECK(aligner::amx_bf16_usable() == aligner::amx_bf16_unavailable_reason().empty());
  if (aligner::amx_bf16_usable()) CHECK(aligner::kernel_info().bf16.find("AMX-BF16") != std::string::npos);
}

TEST_CASE("amx: row sums against the double reference across dims, rows, lengths, budgets and weights", "[amx]") {
  if (!amx_or_note()) return;
  const std::vector<std::size_t> lengths = {1, W - 1, W, W + 1, 3 * W, 4 * W + 1, 9 * W + 3};
  for (std::size_t dim : {1u, 2u, 3u, 17u, 31u, 32u, 33u, 63u, 64u, 100u, 128u, 130u})
    for (std::size_t n : {1u, 5u, 16u, 17u, 33u})
      for (std::size_t m : lengths) {
        const auto q = aligner_test::random_matrix(n, dim, 100 + dim * 7 + n), d = aligner_test::random_matrix(m, dim, 200 + m + dim);
        const auto w = aligner_test::random_weights(m, m + dim, true);
        const auto q16 = bf16_rounded(q), d16 = bf16_rounded(d);
        const auto packed = pack_bf16(d, m, dim);
        for (std::size_t k : {1u, 2u, 3u, 8u, 17u})
          for (bool weighted : {false, true}) {
            const std::size_t budgets[] = {k};
            const float* wp = weighted ? w.data() : nullptr;
            std::vector<double> sum(n), z(n), rs(n), rz(n);
            kernel(q, n, dim, packed.data(), m, budgets, wp, sum.data(), z.data());
            aligner::ref::aligned_row_sums({q16.data(), n, dim}, {d16.data(), m, dim}, k, wp, rs.data(), rz.data());
            for (std::size_t i = 0; i != n; ++i) {
              INFO("dim " << dim << " n " << n << " m " << m << " k " << k << " weighted " << weighted << " row " << i);
              REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
              REQUIRE_THAT(z[i], WithinAbs(rz[i], 1e-5 * std::max(1.0, rz[i])));
            }
          }
      }
}

TEST_CASE("amx: several budgets in one pass, documents longer than a span, prefetch of the next document", "[amx]") {
  if (!amx_or_note()) return;
  const std::size_t dim = 128, n = 20;
  for (std::size_t m : {1023u, 1024u, 1025u, 2100u}) {
    const auto q = aligner_test::random_matrix(n, dim, 31 + m), d = aligner_test::random_matrix(m, dim, 32 + m);
    const auto nextd = aligner_test::random_matrix(64, dim, 33);
    const auto w = aligner_test::random_weights(m, m + 9, true);
    const auto q16 = bf16_rounded(q), d16 = bf16_rounded(d);
    const auto packed = pack_bf16(d, m, dim), packed_next = pack_bf16(nextd, 64, dim);
    const std::size_t budgets[] = {1, 4, 16, 40};
    std::vector<double> sum(n * 4), z(n * 4);
    kernel(q, n, dim, packed.data(), m, budgets, w.data(), sum.data(), z.data(),
           {packed_next.data(), aligner::packed_words(aligner::storage::bf16, 64, dim) * 4});
    for (std::size_t b = 0; b != 4; ++b) {
      std::vector<double> rs(n), rz(n);
      aligner::ref::aligned_row_sums({q16.data(), n, dim}, {d16.data(), m, dim}, budgets[b], w.data(), rs.data(), rz.data());
      for (std::size_t i = 0; i != n; ++i) {
        INFO("m " << m << " budget " << budgets[b] << " row " << i);
        REQUIRE_THAT(sum[i * 4 + b], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
        REQUIRE_THAT(z[i * 4 + b], WithinAbs(rz[i], 1e-5 * std::max(1.0, rz[i])));
      }
    }
  }
}

TEST_CASE("amx: bit for bit the vector path and the reference where the arithmetic is exact", "[amx]") {
  // Small integers are exact in bfloat16 and every partial sum is an integer below 2^24: both paths, in any order
  // of summation, give the exact value, so AMX, the vector path and the reference agree bit for bit.
  if (!amx_or_note()) return;
  amx_switch_guard guard;
  for (std::size_t dim : {5u, 32u, 48u, 100u, 128u})
    for (std::size_t m : {std::size_t(1), W + 3, 7 * W + 1, std::size_t(300)}) {
      const std::size_t n = 19;
      std::vector<float> q(n * dim), d(m * dim);
      for (std::size_t i = 0; i != q.size(); ++i) q[i] = float(int((i * 7 + 3) % 17) - 8);
      for (std::size_t i = 0; i != d.size(); ++i) d[i] = float(int((i * 5 + dim) % 23) - 11);
      const auto packed = pack_bf16(d, m, dim);
      for (std::size_t k : {1u, 3u, 16u, 20u}) {
        const std::size_t budgets[] = {k};
        std::vector<double> amx_sum(n), amx_z(n), vec_sum(n), vec_z(n), rs(n), rz(n);
        aligner::set_amx_enabled(true);
        kernel(q, n, dim, packed.data(), m, budgets, nullptr, amx_sum.data(), amx_z.data());
        aligner::set_amx_enabled(false);
        kernel(q, n, dim, packed.data(), m, budgets, nullptr, vec_sum.data(), vec_z.data());
        aligner::ref::aligned_row_sums({q.data(), n, dim}, {d.data(), m, dim}, k, nullptr, rs.data(), rz.data());
        for (std::size_t i = 0; i != n; ++i) {
          INFO("dim " << dim << " m " << m << " k " << k << " row " << i);
          REQUIRE(amx_sum[i] == vec_sum[i]);
          REQUIRE(amx_sum[i] == rs[i]);
          REQUIRE(amx_z[i] == rz[i]);
        }
      }
    }
}

TEST_CASE("amx: panels at any offset of a file's bytes, and the query padding never read as data", "[amx]") {
  // Tiles load with no alignment requirement (index files map panels at 4-byte offsets); the 16-row query tiles read
  // zero rows past a short query, whose results are never folded.
  if (!amx_or_note()) return;
  const std::size_t dim = 100, m = 77, n = 3;
  const auto q = aligner_test::random_matrix(n, dim, 5), d = aligner_test::random_matrix(m, dim, 6);
  const auto q16 = bf16_rounded(q), d16 = bf16_rounded(d);
  for (std::size_t shift : {0u, 1u, 3u}) {
    const auto packed = pack_bf16(d, m, dim, shift);
    const std::size_t budgets[] = {2};
    std::vector<double> sum(n), z(n), rs(n), rz(n);
    kernel(q, n, dim, packed.data() + shift, m, budgets, nullptr, sum.data(), z.data());
    aligner::ref::aligned_row_sums({q16.data(), n, dim}, {d16.data(), m, dim}, 2, nullptr, rs.data(), rz.data());
    for (std::size_t i = 0; i != n; ++i) REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-4));
  }
}

TEST_CASE("amx: a prepared query scores a bf16 store the same with AMX on and off, within bf16 rounding", "[amx]") {
  if (!amx_or_note()) return;
  amx_switch_guard guard;
  const std::size_t dim = 96;
  const aligner_test::random_corpus set(40, 150, dim, 77);
  aligner::token_store store(dim, aligner::storage::bf16);
  store.add(set.view(), {}, false);
  const auto q = aligner_test::random_matrix(9, dim, 78, true);
  std::vector<std::uint32_t> ids(store.size());
  for (std::size_t i = 0; i != ids.size(); ++i) ids[i] = std::uint32_t(i);
  for (const char* strategy : {"top1", "topk:3", "topp:0.05"}) {
    const aligner::score_params params{.strategy = aligner::alignment::parse(strategy)};
    std::vector<float> on(ids.size()), off(ids.size());
    aligner::set_amx_enabled(true);
    aligner::score_store({q.data(), 9, dim}, store.view(), ids, on, params);
    aligner::set_amx_enabled(false);
    aligner::score_store({q.data(), 9, dim}, store.view(), ids, off, params);
    for (std::size_t i = 0; i != ids.size(); ++i) {
      INFO(strategy << " doc " << i);
      // AMX rounds the query to bf16 (the vector path of this build may not): relative error about 2^-8.
      REQUIRE_THAT(double(on[i]), WithinAbs(double(off[i]), 1e-2 * std::max(1.0, std::abs(double(off[i])))));
    }
  }
}

TEST_CASE("amx: the bf16 exact backend's top-k against the double reference on rounded values, and its bytes", "[amx]") {
  // Runs on AMX where it can, on the vector bf16 path otherwise: either way the returned scores are the rounded
  // values' dot products (to float accuracy) and the returned ids are a top-k of them (up to that accuracy).
  const std::size_t dim = 100, n = 3000, rows = 37, k = 25;
  const auto x = aligner_test::random_matrix(n, dim, 91, true), q = aligner_test::random_matrix(rows, dim, 92, true);
  const auto x16 = bf16_rounded(x);
  const auto q16 = aligner::bf16_query_rounded<>() ? bf16_rounded(q) : q;
  aligner::exact_backend b(dim, aligner::storage::bf16);
  b.add({x.data(), n, dim});
  const auto res = b.search({q.data(), rows, dim}, k);
  for (std::size_t i = 0; i != rows; ++i) {
    std::vector<double> ref(n);
    for (std::size_t t = 0; t != n; ++t) ref[t] = aligner::ref::dot(q16.data() + i * dim, x16.data() + t * dim, dim);
    std::vector<double> sorted = ref;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (std::size_t r = 0; r != k; ++r) {
      const auto id = res.ids_of(i)[r];
      REQUIRE(id >= 0);
      INFO("row " << i << " rank " << r);
      REQUIRE_THAT(double(res.scores_of(i)[r]), WithinAbs(ref[std::size_t(id)], 1e-5));
      REQUIRE(ref[std::size_t(id)] >= sorted[k - 1] - 1e-5);
    }
  }
  // Bytes: half the f32 payload, a round trip gives the same searches; an f32 reader's flag check refuses nothing
  // silently (the dim word carries the precision).
  const std::string bytes = b.serialize();
  CHECK(bytes.size() == 16 + n * dim * 2);
  const auto back = aligner::exact_backend::deserialize(bytes);
  CHECK(back.precision() == aligner::storage::bf16);
  const auto again = back.search({q.data(), rows, dim}, k);
  CHECK(again.ids == res.ids);
  CHECK(again.scores == res.scores);
  CHECK_THROWS_AS(aligner::exact_backend::deserialize(bytes.substr(0, bytes.size() - 2)), aligner::io_error);
  CHECK_THROWS_AS(aligner::exact_backend(dim, aligner::storage::i8), aligner::invalid_argument);
}
