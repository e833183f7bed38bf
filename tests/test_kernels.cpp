// Kernel paths against their scalar references. Built once per x86 level this CPU runs (see CMakeLists.txt).
#include <aligner/backends/exact.hpp>
#include <aligner/kernels/dot.hpp>
#include <aligner/kernels/kernel_info.hpp>
#include <aligner/kernels/aligned_rows.hpp>
#include <aligner/kernels/lane_topk.hpp>
#include <aligner/kernels/layout.hpp>
#include <aligner/kernels/tile.hpp>
#include <aligner/io/collection.hpp>

#include "test_common.hpp"

#include <algorithm>
#include <functional>
#include <set>
#if defined(__F16C__)
#include <immintrin.h>
#endif

using Catch::Matchers::WithinAbs;

namespace {
const std::vector<std::size_t> lengths = {0, 1, W - 1, W, W + 1, 2 * W + 1, 3 * W, 8 * W + 2};

double tol(double ref) { return 64 * 1.2e-7 * std::max(std::abs(ref), 1.0); }

/// Tokens (m x dim, row-major) packed in storage st.
aligner::aligned_vector<std::uint32_t> pack(aligner::storage st, const std::vector<float>& d, std::size_t m, std::size_t dim) {
  aligner::aligned_vector<std::uint32_t> packed(aligner::packed_words(st, m, dim));
  aligner::pack_panels(st, {d.data(), m, dim}, packed.data());
  return packed;
}

/// The kernel under test, with a fresh workspace (or the given one).
void rows(const std::vector<float>& q, std::size_t n, std::size_t dim, aligner::storage st, const void* packed, std::size_t m,
          std::span<const std::size_t> budgets, const float* w, double* sum, double* z, aligner::rows_workspace* ws = nullptr) {
  aligner::rows_workspace local;
  aligner::aligned_row_sums({q.data(), n, dim}, st, packed, m, budgets, w, sum, z, ws ? *ws : local);
}
void rows(const std::vector<float>& q, std::size_t n, std::size_t dim, aligner::storage st, const void* packed, std::size_t m,
          std::size_t k, const float* w, double* sum, double* z) {
  const std::size_t budgets[] = {k};
  rows(q, n, dim, st, packed, m, budgets, w, sum, z);
}
float f32_at(const aligner::aligned_vector<std::uint32_t>& packed, std::size_t dim, std::size_t j, std::size_t c) {
  return aligner::packed_value(aligner::storage::f32, packed.data(), W, dim, j, c);
}
}  // namespace

TEST_CASE("kernels: compiled architecture", "[kernel]") {
  std::printf("kernels compiled for %s (panel width %zu)\n", aligner::compiled_arch_name().c_str(), W);
  CHECK(W == xsimd::batch<float>::size);
}

TEST_CASE("dot: bit-exact on small integers across lengths and misalignment", "[kernel]") {
  for (std::size_t n : {0, 1, 7, 8, 9, 16, 17, 37, 64, 100, 128, 301})
    for (std::size_t shift = 0; shift != W; ++shift) {
      std::vector<float> a(n + W), b(n + W);
      for (std::size_t i = 0; i != a.size(); ++i) a[i] = float(int(i % 13) - 6), b[i] = float(int(i % 7) - 3);
      REQUIRE(double(aligner::dot(a.data() + shift, b.data() + shift, n)) == aligner::ref::dot(a.data() + shift, b.data() + shift, n));
    }
}

TEST_CASE("dot: random floats within 64 eps of the double reference", "[kernel]") {
  for (std::size_t n : {1, 5, 31, 100, 128, 1000}) {
    const auto a = aligner_test::random_matrix(1, n + 3, n), b = aligner_test::random_matrix(1, n + 3, n + 1);
    const double ref = aligner::ref::dot(a.data() + 3, b.data() + 3, n);
    double abs_sum = aligner::ref::dot(a.data() + 3, a.data() + 3, n) + aligner::ref::dot(b.data() + 3, b.data() + 3, n);
    REQUIRE_THAT(double(aligner::dot(a.data() + 3, b.data() + 3, n)), WithinAbs(ref, tol(abs_sum)));
  }
}

TEST_CASE("panels: pack and read back", "[kernel]") {
  for (std::size_t rows : lengths) {
    const std::size_t dim = 5;
    const auto x = aligner_test::random_matrix(rows, dim, rows);
    const auto packed = pack(aligner::storage::f32, x, rows, dim);
    for (std::size_t j = 0; j != rows; ++j)
      for (std::size_t c = 0; c != dim; ++c) REQUIRE(f32_at(packed, dim, j, c) == x[j * dim + c]);
    for (std::size_t j = rows; j != aligner::panel_count(rows) * W; ++j)  // padding lanes are zero
      for (std::size_t c = 0; c != dim; ++c) REQUIRE(f32_at(packed, dim, j, c) == 0.f);
    // Token by token into zeroed panels (as the exact backend appends) gives the same words.
    for (aligner::storage st : aligner::all_storages) {
      const auto whole = pack(st, x, rows, dim);
      aligner::aligned_vector<std::uint32_t> one_by_one(whole.size(), 0u);
      for (std::size_t j = 0; j != rows; ++j) aligner::pack_token(st, x.data() + j * dim, dim, j, one_by_one.data());
      REQUIRE(whole == one_by_one);
    }
  }
}

TEST_CASE("panels: the f32 register transposes equal packing token by token", "[kernel]") {
  // pack_panels packs whole f32 panels by W x W register transposes (a last block of fewer than W components with
  // masked loads on AVX-512): every dim around the block edges, tokens around the panel edges, rows with a stride
  // and an unaligned start, the source ending where its allocation ends (ASan), the output poisoned first, aligned
  // or not.
  const std::size_t dim = GENERATE(1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 128, 130);
  for (std::size_t rows : {std::size_t(1), W - 1, W, W + 1, 2 * W, 3 * W + 5}) {
    for (std::size_t pad : {0, 3})
      for (std::size_t shift : {0, 1}) {
        const std::size_t stride = dim + pad;
        const auto flat = aligner_test::random_matrix(1, rows * stride + shift, rows + dim + pad + shift);
        const aligner::matrix_view<float> x(flat.data() + shift, rows, dim, stride);
        const std::size_t words = aligner::packed_words(aligner::storage::f32, rows, dim);
        aligner::aligned_vector<std::uint32_t> one_by_one(words + W, 0u);
        for (std::size_t j = 0; j != rows; ++j) aligner::pack_token(aligner::storage::f32, x.row(j), dim, j, one_by_one.data());
        std::fill(one_by_one.begin() + std::ptrdiff_t(words), one_by_one.end(), 0xdeadbeefu);  // past the panels: untouched
        for (std::size_t out_shift : {0, 1}) {  // the kernels' 64-byte aligned panels, and a caller's unaligned buffer
          aligner::aligned_vector<std::uint32_t> whole(words + W + out_shift, 0xdeadbeefu);
          aligner::pack_panels(aligner::storage::f32, x, whole.data() + out_shift);
          INFO("dim " << dim << ", rows " << rows << ", stride " << stride << ", shift " << shift << ", output shift " << out_shift);
          REQUIRE(std::equal(one_by_one.begin(), one_by_one.end(), whole.begin() + std::ptrdiff_t(out_shift)));
        }
      }
  }
}

TEST_CASE("hadamard rows: every budget, tail and weight mode against the reference", "[kernel]") {
  const std::size_t dim = GENERATE(1, 3, 17, 100, 128);
  const std::size_t n = GENERATE(1, 2, 3, 4, 5, 7, 13);
  for (std::size_t m : lengths) {
    if (m == 0) continue;
    const auto q = aligner_test::random_matrix(n, dim, 1 + n + dim), d = aligner_test::random_matrix(m, dim, 2 + m + dim);
    const auto w = aligner_test::random_weights(m, m, true);
    auto packed = pack(aligner::storage::f32, d, m, dim);
    // Poison the padding lanes: the kernel must never let them into a result.
    const float nan = aligner_test::nan_f();
    for (std::size_t j = m; j != aligner::panel_count(m) * W; ++j)
      for (std::size_t c = 0; c != dim; ++c) std::memcpy(&packed[(j / W) * dim * W + c * W + j % W], &nan, 4);
    for (std::size_t k : {1, 2, 3, 4, 5, 8, 9, 16, 17, 40}) {
      for (bool weighted : {false, true}) {
        std::vector<double> sum(n), z(n), ref_sum(n), ref_z(n);
        rows(q, n, dim, aligner::storage::f32, packed.data(), m, k, weighted ? w.data() : nullptr, sum.data(), z.data());
        aligner::ref::aligned_row_sums({q.data(), n, dim}, {d.data(), m, dim}, k, weighted ? w.data() : nullptr,
                                       ref_sum.data(), ref_z.data());
        for (std::size_t i = 0; i != n; ++i) {
          INFO("dim " << dim << " n " << n << " m " << m << " k " << k << " weighted " << weighted << " row " << i);
          REQUIRE_THAT(sum[i], WithinAbs(ref_sum[i], 1e-5 * std::max(1.0, std::abs(ref_sum[i])) * std::sqrt(double(dim))));
          REQUIRE_THAT(z[i], WithinAbs(ref_z[i], 1e-5 * std::max(1.0, ref_z[i])));
        }
      }
    }
  }
}

TEST_CASE("hadamard rows: exact on small integers with ties (smaller index wins)", "[kernel]") {
  // Small-integer entries make every S exact, so sums must match bit for bit and ties are real ties.
  const std::size_t dim = 4;
  for (std::size_t m : lengths) {
    if (m == 0) continue;
    std::vector<float> q(3 * dim), d(m * dim), w(m);
    for (std::size_t i = 0; i != q.size(); ++i) q[i] = float(int(i % 3) - 1);
    for (std::size_t i = 0; i != d.size(); ++i) d[i] = float(int((i * 7) % 5) - 2);
    for (std::size_t j = 0; j != m; ++j) w[j] = float(j % 4);
    const auto packed = pack(aligner::storage::f32, d, m, dim);
    for (std::size_t k : {1, 2, 4, 7, 16, 20}) {
      std::vector<double> sum(3), z(3), rs(3), rz(3);
      rows(q, 3, dim, aligner::storage::f32, packed.data(), m, k, w.data(), sum.data(), z.data());
      aligner::ref::aligned_row_sums({q.data(), 3, dim}, {d.data(), m, dim}, k, w.data(), rs.data(), rz.data());
      for (std::size_t i = 0; i != 3; ++i) {
        INFO("m " << m << " k " << k << " row " << i);
        REQUIRE(sum[i] == rs[i]);
        REQUIRE(z[i] == rz[i]);
      }
    }
  }
}

TEST_CASE("similarity rows: full S against the reference", "[kernel]") {
  for (std::size_t m : lengths) {
    if (m == 0) continue;
    const std::size_t n = 6, dim = 37;
    const auto q = aligner_test::random_matrix(n, dim, 9), d = aligner_test::random_matrix(m, dim, 10);
    const auto packed = pack(aligner::storage::f32, d, m, dim);
    const std::size_t stride = aligner::panel_count(m) * W;
    std::vector<float> s(n * stride);
    aligner::similarity_rows({q.data(), n, dim}, aligner::storage::f32, packed.data(), m, s.data(), stride);
    for (std::size_t i = 0; i != n; ++i)
      for (std::size_t j = 0; j != m; ++j) {
        const double ref = aligner::ref::dot(q.data() + i * dim, d.data() + j * dim, dim);
        REQUIRE_THAT(double(s[i * stride + j]), WithinAbs(ref, 1e-5 * std::sqrt(double(dim))));
      }
  }
}

TEST_CASE("tiles: every query row block shape gives the bits of a one-row query, in S and in the row sums", "[kernel]") {
  // The sweeps cut a query into blocks of 4 rows (6 and 5 where the AVX2 tiles of 6 x 2 run: six_row_tiles) and a tail
  // of 1 to 3 (there 4 panels a tile: small_row_tile); each block shape has its own tile body (the 6 x 2 and the tail
  // ones in assembly) but the same arithmetic per entry, so a
  // query of n rows must give, row for row, the bits of each row scored alone. Query rows with a stride past their
  // components (the assembly addresses rows by stride), dims with and without a tail of the 4-step loop.
  for (aligner::storage st : {aligner::storage::f32, aligner::storage::f16, aligner::storage::i8, aligner::storage::bf16})
    for (std::size_t dim : {1, 6, 37, 128})
      for (std::size_t m : {std::size_t(1), W + 1, 8 * W + 2}) {
        const auto d = aligner_test::random_matrix(m, dim, 31 + dim, true);
        const auto packed = pack(st, d, m, dim);
        const std::size_t stride = aligner::panel_count(m) * W, q_stride = dim + 3;
        for (std::size_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 20, 32, 37}) {
          const auto q = aligner_test::random_matrix(n, q_stride, 47 + n + dim, false);
          const aligner::matrix_view<float> query(q.data(), n, dim, q_stride);
          std::vector<float> s(n * stride), one(stride);
          aligner::similarity_rows(query, st, packed.data(), m, s.data(), stride);
          const std::size_t budgets[] = {1, 3, 8};
          std::vector<double> sum(n * 3), z(n * 3), sum1(3), z1(3);
          aligner::rows_workspace ws;
          aligner::aligned_row_sums(query, st, packed.data(), m, budgets, nullptr, sum.data(), z.data(), ws);
          for (std::size_t i = 0; i != n; ++i) {
            const aligner::matrix_view<float> row(q.data() + i * q_stride, 1, dim, q_stride);
            aligner::similarity_rows(row, st, packed.data(), m, one.data(), stride);
            aligner::aligned_row_sums(row, st, packed.data(), m, budgets, nullptr, sum1.data(), z1.data(), ws);
            INFO(aligner::to_string(st) << " dim " << dim << " m " << m << " n " << n << " row " << i);
            for (std::size_t j = 0; j != m; ++j) REQUIRE(std::bit_cast<std::uint32_t>(s[i * stride + j]) == std::bit_cast<std::uint32_t>(one[j]));
            for (std::size_t b = 0; b != 3; ++b) REQUIRE(sum[i * 3 + b] == sum1[b]);
          }
        }
      }
}

TEST_CASE("tiles: the row blocks of a sweep cover every query row once, in order", "[kernel]") {
  auto blocks = [](auto rows_const, auto tails_const, std::size_t n) {
    std::vector<std::pair<std::size_t, std::size_t>> out;  // (first row, rows)
    aligner::for_each_row_block<decltype(rows_const)::value, decltype(tails_const)::value>(
        n, [&]<std::size_t R>(std::size_t i0) { out.emplace_back(i0, R); });
    return out;
  };
  using four = std::integral_constant<std::size_t, 4>;
  using six = std::integral_constant<std::size_t, 6>;
  using yes = std::true_type;
  for (std::size_t n = 0; n != 300; ++n) {
    for (const auto& b : {blocks(four{}, yes{}, n), blocks(six{}, yes{}, n)}) {
      std::size_t next = 0;
      for (const auto& [i0, r] : b) {
        INFO("n " << n << " block at " << i0 << " of " << r);
        REQUIRE(i0 == next);
        REQUIRE(r >= 1);
        REQUIRE(r <= 6);
        next += r;
      }
      REQUIRE(next == n);
    }
    for (const auto& [i0, r] : blocks(four{}, yes{}, n)) REQUIRE((r == 4 || i0 + r == n));
    // Blocks of 6 and 5: never more tiles than blocks of 4, and 1- or 2-row blocks only where n itself is below 3.
    const auto b6 = blocks(six{}, yes{}, n);
    CHECK(b6.size() <= (n + 3) / 4);
    for (const auto& [i0, r] : b6) CHECK((r >= 3 || n < 3));
    if (n >= 20) CHECK(b6.size() == (n + 5) / 6);
  }
  const auto b32 = blocks(six{}, yes{}, 32);
  CHECK(b32 == std::vector<std::pair<std::size_t, std::size_t>>{{0, 6}, {6, 6}, {12, 5}, {17, 5}, {22, 5}, {27, 5}});
  const auto b7 = blocks(std::integral_constant<std::size_t, 8>{}, std::false_type{}, 9);  // without tails: past n
  CHECK(b7 == std::vector<std::pair<std::size_t, std::size_t>>{{0, 8}, {8, 8}});
}

TEST_CASE("tiles: the kernel description names the 6-row tiles where they run", "[kernel]") {
  const std::string f32 = aligner::kernel_info().f32;
  INFO(f32);
  if (aligner::six_row_tiles<aligner::default_arch, aligner::storage::f32> && !aligner::wide_runs(aligner::storage::f32))
    CHECK(f32.find("6 query rows x 2 panels") != std::string::npos);
  else
    CHECK(f32.find("6 query rows") == std::string::npos);
}

TEST_CASE("hadamard rows bf16: against the reference on bf16-rounded inputs", "[kernel]") {
  std::printf("bf16 panels: %s\n", aligner::amx_bf16_usable() ? "AMX-BF16 tiles (query rounded to bf16 too)" : aligner::bf16_query_rounded<>() ? "vdpbf16ps (query rounded to bf16 too)" : "decoded to float");
  auto round = [](std::vector<float> v) {
    for (auto& x : v) x = aligner::from_bf16(aligner::to_bf16(x));
    return v;
  };
  const std::size_t dim = GENERATE(1, 2, 3, 17, 100, 128);
  for (std::size_t m : lengths) {
    if (m == 0) continue;
    const std::size_t n = 5;
    const auto q = aligner_test::random_matrix(n, dim, 3 + m + dim), d = aligner_test::random_matrix(m, dim, 4 + m + dim);
    const auto w = aligner_test::random_weights(m, m + 1, true);
    const auto d16 = round(d);
    const auto qref = aligner::bf16_query_rounded<>() ? round(q) : q;
    const auto packed = pack(aligner::storage::bf16, d, m, dim);
    for (std::size_t j = 0; j != m; ++j)
      for (std::size_t c = 0; c != dim; ++c)
        REQUIRE(aligner::packed_value(aligner::storage::bf16, packed.data(), W, dim, j, c) == d16[j * dim + c]);
    for (std::size_t k : {1, 3, 8, 17}) {
      std::vector<double> sum(n), z(n), rs(n), rz(n);
      rows(q, n, dim, aligner::storage::bf16, packed.data(), m, k, nullptr, sum.data(), z.data());
      aligner::ref::aligned_row_sums({qref.data(), n, dim}, {d16.data(), m, dim}, k, nullptr, rs.data(), rz.data());
      for (std::size_t i = 0; i != n; ++i) {
        INFO("dim " << dim << " m " << m << " k " << k << " row " << i);
        REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
      }
    }
  }
}

TEST_CASE("hadamard rows: documents longer than one L2 span, in f32 and bf16", "[kernel]") {
  // The kernel scores a document in spans of 256 KB; at dim 128 a span is 512 tokens (f32) or 1024 (bf16).
  const std::size_t dim = 128, n = 6;
  for (std::size_t m : {511u, 512u, 513u, 1100u, 2100u}) {
    const auto q = aligner_test::random_matrix(n, dim, 11 + m), d = aligner_test::random_matrix(m, dim, 12 + m);
    const auto w = aligner_test::random_weights(m, m + 3, true);
    const auto packed = pack(aligner::storage::f32, d, m, dim), packed16 = pack(aligner::storage::bf16, d, m, dim);
    std::vector<float> d16 = d, q16 = q;
    for (auto& x : d16) x = aligner::from_bf16(aligner::to_bf16(x));
    if (aligner::bf16_query_rounded<>())
      for (auto& x : q16) x = aligner::from_bf16(aligner::to_bf16(x));
    for (std::size_t k : {1, 4, 16, 17}) {
      for (bool weighted : {false, true}) {
        const std::size_t budgets[] = {k};
        std::vector<double> sum(n), z(n), rs(n), rz(n);
        const float* wp = weighted ? w.data() : nullptr;
        rows(q, n, dim, aligner::storage::f32, packed.data(), m, budgets, wp, sum.data(), z.data());
        aligner::ref::aligned_row_sums({q.data(), n, dim}, {d.data(), m, dim}, k, wp, rs.data(), rz.data());
        for (std::size_t i = 0; i != n; ++i) {
          INFO("f32 m " << m << " k " << k << " weighted " << weighted << " row " << i);
          REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
          REQUIRE_THAT(z[i], WithinAbs(rz[i], 1e-5 * std::max(1.0, rz[i])));
        }
        rows(q, n, dim, aligner::storage::bf16, packed16.data(), m, budgets, wp, sum.data(), z.data());
        aligner::ref::aligned_row_sums({q16.data(), n, dim}, {d16.data(), m, dim}, k, wp, rs.data(), rz.data());
        for (std::size_t i = 0; i != n; ++i) {
          INFO("bf16 m " << m << " k " << k << " weighted " << weighted << " row " << i);
          REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
        }
      }
    }
  }
}

TEST_CASE("hadamard rows bf16: a query changed in place between calls with one workspace is re-converted", "[kernel]") {
  // The workspace holds the bf16 form of the last query it converted; a new query in the same buffer must not reuse it.
  const std::size_t dim = 20, n = 3, m = 40;
  auto q = aligner_test::random_matrix(n, dim, 21);
  const auto d = aligner_test::random_matrix(m, dim, 22);
  const auto packed = pack(aligner::storage::bf16, d, m, dim);
  aligner::rows_workspace ws;
  std::vector<float> d16 = d;
  for (auto& x : d16) x = aligner::from_bf16(aligner::to_bf16(x));
  for (int round = 0; round != 3; ++round) {
    if (round) q[std::size_t(round) * 7] += 3.f;  // same pointer, different contents
    std::vector<float> qr = q;
    if (aligner::bf16_query_rounded<>())
      for (auto& x : qr) x = aligner::from_bf16(aligner::to_bf16(x));
    const std::size_t budgets[] = {2};
    std::vector<double> sum(n), z(n), rs(n), rz(n);
    rows(q, n, dim, aligner::storage::bf16, packed.data(), m, budgets, nullptr, sum.data(), z.data(), &ws);
    aligner::ref::aligned_row_sums({qr.data(), n, dim}, {d16.data(), m, dim}, 2, nullptr, rs.data(), rz.data());
    for (std::size_t i = 0; i != n; ++i) {
      INFO("round " << round << " row " << i);
      REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
    }
  }
}

namespace {
/// Independent binary16 decoding: (-1)^s * (e == 0 ? m * 2^-24 : (1024 + m) * 2^(e - 25)); e == 31: Inf/NaN.
double half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double mag = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 25);
  return s ? -mag : mag;
}
/// Independent int8 dequantisation of one token (the documented rule: scale = max|x| / 127, round half even).
std::vector<float> dequantize_i8(const std::vector<float>& d, std::size_t dim) {
  std::vector<float> out(d.size());
  for (std::size_t j = 0; j * dim < d.size(); ++j) {
    double amax = 0;
    for (std::size_t c = 0; c != dim; ++c) amax = std::max(amax, double(std::fabs(d[j * dim + c])));
    const float scale = float(amax / 127.0);
    for (std::size_t c = 0; c != dim; ++c) {
      const double q = scale > 0 ? std::nearbyint(double(d[j * dim + c]) / double(scale)) : 0.0;
      out[j * dim + c] = float(std::clamp(q, -127.0, 127.0)) * scale;
    }
  }
  return out;
}
}  // namespace

TEST_CASE("float16: every half decodes exactly, rounding picks the nearest half, ties to even", "[kernel]") {
  for (std::uint32_t h = 0; h != 0x10000; ++h) {
    const int e = (h >> 10) & 31;
    const float x = aligner::from_f16(std::uint16_t(h));
    if (e == 31) {
      REQUIRE(((h & 1023) == 0 ? std::isinf(x) : std::isnan(x)));
      continue;
    }
    REQUIRE(double(x) == half_value(std::uint16_t(h)));
    REQUIRE(aligner::to_f16(x) == h);  // round trip
  }
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int> exponent(-30, 17);
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  for (int t = 0; t != 200000; ++t) {
    const double v = std::ldexp(mant(rng), exponent(rng)) * (t % 2 ? -1 : 1);
    const float x = float(v);
    if (!(std::fabs(x) < 65520.f)) {
      REQUIRE(std::isinf(aligner::from_f16(aligner::to_f16(x))));
      continue;
    }
    const std::uint16_t h = aligner::to_f16(x);
    const double got = half_value(h), err = std::fabs(got - double(x));
    // No other half is closer; at a tie the chosen one has an even mantissa.
    for (int delta : {-1, 1}) {
      const std::uint16_t o = std::uint16_t(h + delta);
      if (((o >> 10) & 31) == 31 || ((o ^ h) & 0x8000)) continue;
      const double other = std::fabs(half_value(o) - double(x));
      INFO("x " << x << " h " << h << " neighbour " << o);
      REQUIRE(err <= other);
      if (err == other) REQUIRE((h & 1) == 0);
    }
#if defined(__F16C__)
    REQUIRE(h == _cvtss_sh(x, 0));  // the hardware conversion, round to nearest even
#endif
  }
}

TEST_CASE("float16: the kernels' vector decoding of every half matches the independent decoding", "[kernel]") {
  // storage_traits<f16>::load_row: F16C / AVX-512 conversion where the build has it, else the integer rule on W lanes
  // (the SSE2 build runs the latter); Inf and NaN keep their class and sign, subnormals their exact value.
  using arch = aligner::default_arch;
  constexpr std::size_t width = xsimd::batch<float, arch>::size;
  std::vector<std::uint16_t> halves(0x10000);
  for (std::uint32_t h = 0; h != 0x10000; ++h) halves[h] = std::uint16_t(h);
  for (std::size_t c = 0; c != halves.size() / width; ++c) {
    alignas(64) float got[width];
    aligner::storage_traits<aligner::storage::f16>::load_row<arch>(reinterpret_cast<const unsigned char*>(halves.data()), c).store_aligned(got);
    for (std::size_t l = 0; l != width; ++l) {
      const std::uint16_t h = halves[c * width + l];
      INFO("half 0x" << std::hex << h);
      if (((h >> 10) & 31) == 31) {
        REQUIRE(((h & 1023) == 0 ? std::isinf(got[l]) : std::isnan(got[l])));
        REQUIRE(std::signbit(got[l]) == bool(h & 0x8000));
      } else {
        REQUIRE(double(got[l]) == half_value(h));
        REQUIRE(std::signbit(got[l]) == bool(h & 0x8000));
      }
    }
  }
}

TEST_CASE("hadamard rows f16 and i8: against the reference on the stored (rounded / dequantised) documents", "[kernel]") {
  const std::size_t dim = GENERATE(1, 3, 4, 17, 100, 128);
  for (aligner::storage st : {aligner::storage::f16, aligner::storage::i8}) {
    for (std::size_t m : lengths) {
      if (m == 0) continue;
      const std::size_t n = 5;
      const auto q = aligner_test::random_matrix(n, dim, 30 + m + dim), d = aligner_test::random_matrix(m, dim, 31 + m + dim);
      const auto w = aligner_test::random_weights(m, m + 2, true);
      std::vector<float> stored = d;
      if (st == aligner::storage::f16)
        for (auto& x : stored) x = float(half_value(aligner::to_f16(x)));
      else
        stored = dequantize_i8(d, dim);
      const auto packed = pack(st, d, m, dim);
      for (std::size_t j = 0; j != m; ++j)
        for (std::size_t c = 0; c != dim; ++c)
          REQUIRE(aligner::packed_value(st, packed.data(), W, dim, j, c) == stored[j * dim + c]);
      for (std::size_t k : {1, 3, 8, 17}) {
        for (bool weighted : {false, true}) {
          const std::size_t budgets[] = {k};
          std::vector<double> sum(n), z(n), rs(n), rz(n);
          const float* wp = weighted ? w.data() : nullptr;
          rows(q, n, dim, st, packed.data(), m, budgets, wp, sum.data(), z.data());
          // On AMX-INT8 the query is held in two int8 terms (amx.hpp): the reference multiplies what the kernel multiplies.
          const auto qr = st == aligner::storage::i8 && (aligner::i8_on_amx<>() || aligner::i8_on_vnni<>()) ? aligner_test::amx_i8_query_values(q, dim) : q;
          aligner::ref::aligned_row_sums({qr.data(), n, dim}, {stored.data(), m, dim}, k, wp, rs.data(), rz.data());
          for (std::size_t i = 0; i != n; ++i) {
            INFO(aligner::to_string(st) << " dim " << dim << " m " << m << " k " << k << " weighted " << weighted << " row " << i);
            REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
            REQUIRE_THAT(z[i], WithinAbs(rz[i], 1e-5 * std::max(1.0, rz[i])));
          }
        }
      }
    }
  }
}

TEST_CASE("int8 panels: all-zero tokens, extremes and the scale rule", "[kernel]") {
  const std::size_t dim = 5, m = 3;
  const std::vector<float> d = {0, 0, 0, 0, 0,  1, -1, 0.5f, 0.25f, 0.004f,  -300, 299, 1e-3f, 2.4f, -2.6f};
  const auto packed = pack(aligner::storage::i8, d, m, dim);
  const auto want = dequantize_i8(d, dim);
  for (std::size_t j = 0; j != m; ++j)
    for (std::size_t c = 0; c != dim; ++c)
      CHECK(aligner::packed_value(aligner::storage::i8, packed.data(), W, dim, j, c) == want[j * dim + c]);
  // The largest magnitude of a token is stored exactly up to the scale's rounding: q = +-127.
  CHECK(aligner::packed_value(aligner::storage::i8, packed.data(), W, dim, 2, 0) == -127.f * float(300.0 / 127.0));
  CHECK(aligner::packed_value(aligner::storage::i8, packed.data(), W, dim, 0, 3) == 0.f);
}

TEST_CASE("mask_bits: lane l of a comparison is bit l", "[kernel]") {
  using batch = xsimd::batch<float>;
  alignas(64) float lane[W];
  for (std::uint64_t pattern : {std::uint64_t(0), std::uint64_t(1), std::uint64_t(0b1010), (std::uint64_t(1) << W) - 1,
                                std::uint64_t(1) << (W - 1), std::uint64_t(0x5a5a) & ((std::uint64_t(1) << W) - 1)}) {
    for (std::size_t l = 0; l != W; ++l) lane[l] = (pattern >> l) & 1 ? 2.f : -1.f;
    CHECK(aligner::detail::mask_bits(batch::load_aligned(lane) > batch(0.f)) == pattern);
  }
}

namespace exact_topk_check {
/// Every query row's top-k from the backend (k = 1, 3, n, n + 5, 2500) against a stable sort of the double inner
/// products of x (the stored values exactly): the same ids in the same order, scores within rel * |score| (0: equal),
/// padding past n as id -1 / score -inf.
inline void stable_sort_order(const aligner::exact_backend& b, const std::vector<float>& x, const std::vector<float>& q,
                              std::size_t rows, double rel, std::string_view label) {
  const std::size_t dim = b.dim(), n = b.size();
  std::vector<std::vector<std::pair<double, std::int64_t>>> sorted(rows);
  for (std::size_t i = 0; i != rows; ++i) {
    auto& all = sorted[i];
    for (std::size_t t = 0; t != n; ++t) all.emplace_back(aligner::ref::dot(q.data() + i * dim, x.data() + t * dim, dim), t);
    std::stable_sort(all.begin(), all.end(), [](auto& a, auto& c) { return a.first > c.first; });
  }
  for (std::size_t k : {std::size_t(1), std::size_t(3), std::size_t(8), std::size_t(16), std::size_t(17), n, n + 5, std::size_t(2500)}) {
    INFO(label << " dim " << dim << " n " << n << " k " << k);
    const auto res = b.search({q.data(), rows, dim}, k);
    // Checked in plain code, then one assertion per row with the first difference (an assertion per entry was a
    // third of this check's time: millions of them at k = 2500).
    for (std::size_t i = 0; i != rows; ++i) {
      const auto& all = sorted[i];
      std::size_t wrong = k;
      for (std::size_t r = 0; r != k && wrong == k; ++r) {
        const std::int64_t id = res.ids_of(i)[r];
        const double score = double(res.scores_of(i)[r]);
        const bool ok = r < n ? id == all[r].second && (rel == 0.0 ? score == all[r].first : std::abs(score - all[r].first) <= rel * std::abs(all[r].first))
                              : id == -1 && score == -double(std::numeric_limits<float>::infinity());
        if (!ok) wrong = r;
      }
      if (wrong != k) {
        INFO("row " << i << " rank " << wrong << ": id " << res.ids_of(i)[wrong] << " score " << res.scores_of(i)[wrong] << ", expected id "
                    << (wrong < n ? all[wrong].second : -1) << " score " << (wrong < n ? all[wrong].first : -std::numeric_limits<double>::infinity()));
        REQUIRE(wrong == k);
      }
    }
  }
}
}  // namespace exact_topk_check

TEST_CASE("exact backend (this architecture): top-k equals a stable sort, exact ties, padding never returned", "[kernel]") {
  // Small integers: exact scores, ties everywhere; sizes around panel and span boundaries, several row blocks. The
  // values are exact in bfloat16 too, so the bf16 backend (AMX where it runs) must give the same bits.
  for (aligner::storage st : {aligner::storage::f32, aligner::storage::bf16})
  for (std::size_t dim : {1, 5, 16, 33}) {
    for (std::size_t n : {std::size_t(1), W - 1, 3 * W + 1, std::size_t(20000)}) {
      std::vector<float> x(n * dim);
      const std::size_t rows = 70;  // more than one block of 64 rows
      std::vector<float> q(rows * dim);
      for (std::size_t i = 0; i != x.size(); ++i) x[i] = float(int((i * 7 + i / 3) % 5) - 2);
      for (std::size_t i = 0; i != q.size(); ++i) q[i] = float(int((i * 11 + 3) % 7) - 3);
      aligner::exact_backend b(dim, st);
      b.add({x.data(), n, dim});
      exact_topk_check::stable_sort_order(b, x, q, rows, 0.0, aligner::to_string(st));
    }
  }
}

TEST_CASE("exact backend i8 (this architecture): vectors at int8 scale 1 give the exact top-k, ties and padding included", "[kernel]") {
  // Integer components in [-127, 127] with one of them +-127 in every vector and every query row: the int8 rule
  // stores them exactly (scale 1) and the query's int8 terms are exact too (AMX-INT8, VNNI and the float query
  // alike). The int8 paths scale the exact integer sum S by F and then by the float s / F, a monotone rounding that
  // moves S by at most 2^-23 |S| and keeps distinct integers distinct while 254 |S| < 2^24 (here |S| <= 40,132):
  // the order must be the stable sort's, ties included, as for f32. dim 64 fills whole AMX k-blocks (the paired tiles).
  for (std::size_t dim : {1, 5, 16, 33, 64}) {
    for (std::size_t n : {std::size_t(1), W - 1, 3 * W + 1, std::size_t(20000)}) {
      const std::size_t rows = 70;  // more than one block of 64 rows, and of 16 (AMX)
      auto integers = [&](std::size_t count, std::uint64_t seed, std::size_t levels) {
        std::vector<float> v(count * dim);
        for (std::size_t i = 0; i != v.size(); ++i) {
          seed = seed * 6364136223846793005ull + 1442695040888963407ull;
          v[i] = float(std::int64_t((seed >> 33) % (2 * levels + 1)) - std::int64_t(levels));
        }
        for (std::size_t t = 0; t != count; ++t) v[t * dim + t % dim] = (t / dim) % 2 ? 127.f : -127.f;
        return v;
      };
      const auto x = integers(n, 5 + dim, 3), q = integers(rows, 9 + dim, 127);  // few levels in x: many ties
      aligner::exact_backend b(dim, aligner::storage::i8);
      b.add({x.data(), n, dim});
      for (std::size_t t = 0; t != std::min<std::size_t>(n, 40); ++t) CHECK(b.vector(t) == std::vector<float>(x.begin() + std::ptrdiff_t(t * dim), x.begin() + std::ptrdiff_t((t + 1) * dim)));
      exact_topk_check::stable_sort_order(b, x, q, rows, 2.4e-7, "i8");
    }
  }
}

TEST_CASE("exact backend i8 (this architecture): real-valued vectors against the double reference on the stored values", "[kernel]") {
  // The returned scores are the query's dot products with the quantised vectors, up to the query's own rounding on
  // the int8 paths (two int8 terms: at most max|q| / (127 * 508) a component); the ids a top-k of them up to that.
  for (std::size_t dim : {3, 64, 100, 130}) {
    const std::size_t n = 3000 + dim, rows = 37, k = 25;
    const auto x = aligner_test::random_matrix(n, dim, 91 + dim, true), q = aligner_test::random_matrix(rows, dim, 92 + dim, false);
    aligner::exact_backend b(dim, aligner::storage::i8);
    b.add({x.data(), n, dim});
    std::vector<float> stored(n * dim);
    double abs_sum_max = 0;
    for (std::size_t t = 0; t != n; ++t) {
      const auto v = b.vector(t);
      std::copy(v.begin(), v.end(), stored.begin() + std::ptrdiff_t(t * dim));
      double sum = 0;
      for (std::size_t c = 0; c != dim; ++c) {
        CHECK(std::abs(double(v[c]) - double(x[t * dim + c])) <= double(aligner::i8_scale(x.data() + t * dim, dim)) * 0.5001);
        sum += std::abs(double(v[c]));
      }
      abs_sum_max = std::max(abs_sum_max, sum);
    }
    for (int filtered = 0; filtered != 2; ++filtered) {
      const aligner::id_filter odd = [](std::int64_t id) { return id % 2 == 1; };
      const auto res = filtered ? b.search({q.data(), rows, dim}, k, odd) : b.search({q.data(), rows, dim}, k);
      for (std::size_t i = 0; i != rows; ++i) {
        double qmax = 0;
        for (std::size_t c = 0; c != dim; ++c) qmax = std::max(qmax, std::abs(double(q[i * dim + c])));
        const double tol = 1e-4 * qmax * abs_sum_max + 1e-5;
        std::vector<double> ref(n), eligible;
        for (std::size_t t = 0; t != n; ++t) {
          ref[t] = aligner::ref::dot(q.data() + i * dim, stored.data() + t * dim, dim);
          if (!filtered || t % 2 == 1) eligible.push_back(ref[t]);
        }
        std::sort(eligible.begin(), eligible.end(), std::greater<>());
        std::vector<std::int64_t> seen;
        for (std::size_t r = 0; r != k; ++r) {
          const auto id = res.ids_of(i)[r];
          INFO("dim " << dim << " filtered " << filtered << " row " << i << " rank " << r);
          REQUIRE(id >= 0);
          REQUIRE(std::size_t(id) < n);
          if (filtered) REQUIRE(id % 2 == 1);
          REQUIRE_THAT(double(res.scores_of(i)[r]), WithinAbs(ref[std::size_t(id)], tol));
          REQUIRE(ref[std::size_t(id)] >= eligible[k - 1] - 2 * tol);
          if (r > 0) REQUIRE(res.scores_of(i)[r] <= res.scores_of(i)[r - 1]);
          seen.push_back(id);
        }
        std::sort(seen.begin(), seen.end());
        REQUIRE(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
      }
    }
  }
}

TEST_CASE("exact backend i8: bytes round-trip exactly and malformed bytes are refused", "[kernel]") {
  const std::size_t dim = 37, n = 2 * W + 3;
  auto x = aligner_test::random_matrix(n, dim, 17, false);
  std::fill(x.begin() + 5 * dim, x.begin() + 6 * dim, 0.f);  // an all-zero vector: scale 0
  aligner::exact_backend b(dim, aligner::storage::i8);
  b.add({x.data(), n, dim});
  const std::string bytes = b.serialize();
  REQUIRE(bytes.size() == 16 + n * (4 + dim));
  const auto back = aligner::exact_backend::deserialize(bytes);
  CHECK(back.precision() == aligner::storage::i8);
  CHECK(back.size() == n);
  CHECK(back.serialize() == bytes);
  for (std::size_t t = 0; t != n; ++t) CHECK(back.vector(t) == b.vector(t));
  const auto q = aligner_test::random_matrix(5, dim, 18, false);
  const auto a = b.search({q.data(), 5, dim}, 7), c = back.search({q.data(), 5, dim}, 7);
  CHECK(a.ids == c.ids);
  CHECK(a.scores == c.scores);
  // The stored form: the scale, then the int8 values of the encode rule.
  float scale;
  std::memcpy(&scale, bytes.data() + 16, 4);
  CHECK(scale == aligner::i8_scale(x.data(), dim));
  CHECK(std::int8_t(bytes[16 + 4]) == std::int8_t(std::nearbyint(double(x[0]) / double(scale))));
  auto broken = [&](std::size_t at, const void* what, std::size_t len) {
    std::string copy = bytes;
    std::memcpy(copy.data() + at, what, len);
    return copy;
  };
  const float negative = -1.f, nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const char minus128 = char(-128);
  CHECK_THROWS_WITH(aligner::exact_backend::deserialize(broken(16 + (4 + dim), &negative, 4)), Catch::Contains("vector 1") && Catch::Contains("scale"));
  CHECK_THROWS_AS(aligner::exact_backend::deserialize(broken(16, &nan, 4)), aligner::io_error);
  CHECK_THROWS_AS(aligner::exact_backend::deserialize(broken(16, &inf, 4)), aligner::io_error);
  CHECK_THROWS_WITH(aligner::exact_backend::deserialize(broken(16 + 4 + 3, &minus128, 1)), Catch::Contains("-128"));
  CHECK_THROWS_AS(aligner::exact_backend::deserialize(bytes.substr(0, bytes.size() - 1)), aligner::io_error);
  CHECK_THROWS_AS(aligner::exact_backend::deserialize(bytes + "x"), aligner::io_error);
  const std::uint64_t both = dim | (std::uint64_t(3) << 62);
  CHECK_THROWS_WITH(aligner::exact_backend::deserialize(broken(0, &both, 8)), Catch::Contains("both"));
  CHECK_THROWS_WITH(aligner::exact_backend(dim, aligner::storage::f16), Catch::Contains("f32, bf16 or i8") && Catch::Contains("f16"));
}

TEST_CASE("exact backend (this architecture): a few extreme scores do not coarsen the selection", "[kernel]") {
  // One huge (or hugely negative) score stretches the candidates' score range, so nearly all of them share one
  // bucket of the compaction's bucket select: the threshold must still be the exact k-th best.
  std::vector<float> x(30000);
  std::uint64_t state = 7;
  for (auto& v : x) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = float(state >> 40) / float(1 << 24);  // uniform [0, 1), exact in float
  }
  for (float outlier : {1e6f, -1e6f, 3e38f}) {
    x[5] = outlier;
    x[17000] = -outlier;
    aligner::exact_backend b(1);
    b.add({x.data(), x.size(), 1});
    const float q[] = {1.f, 0.5f};
    std::vector<std::pair<double, std::int64_t>> all;
    for (float qv : q) {
      all.clear();
      for (std::size_t t = 0; t != x.size(); ++t) all.emplace_back(double(qv) * double(x[t]), t);
      std::stable_sort(all.begin(), all.end(), [](auto& a, auto& c) { return a.first > c.first; });
      for (std::size_t k : {1, 50, 700, 4000}) {
        INFO("outlier " << outlier << " q " << qv << " k " << k);
        const auto res = b.search({&qv, 1, 1}, k);
        for (std::size_t r = 0; r != k; ++r) {
          REQUIRE(res.ids[r] == all[r].second);
          REQUIRE(double(res.scores[r]) == all[r].first);
        }
      }
    }
  }
}

TEST_CASE("exact backend (this architecture): SciFact token vectors against the double reference (skipped when absent)", "[kernel]") {
  const auto dir = aligner_test::shared_dataset("scifact");
  if (dir.empty()) return;
  const auto coll = aligner::io::load_collection(dir);
  const std::size_t dim = coll.docs.dim, n = 60000, rows = 40;
  const auto docs = coll.docs.view();
  REQUIRE(std::size_t(docs.offsets.back()) >= n);
  aligner::exact_backend b(dim);
  b.add(docs.tokens.middle_rows(0, n));
  const auto queries = coll.queries.view().tokens.middle_rows(0, rows);
  std::vector<std::vector<double>> exact(rows), sorted(rows);
  for (std::size_t i = 0; i != rows; ++i) {
    exact[i].resize(n);
    for (std::size_t t = 0; t != n; ++t) exact[i][t] = aligner::ref::dot(queries.row(i), docs.tokens.row(t), dim);
    sorted[i] = exact[i];
    std::sort(sorted[i].begin(), sorted[i].end(), std::greater<>());
  }
  for (std::size_t k : {1, 10, 1000}) {
    const auto res = b.search(queries, k);
    for (std::size_t i = 0; i != rows; ++i) {
      const auto& all = exact[i];
      const auto& want = sorted[i];
      // GloVe repeats a word's vector, so exact ties are common: rank r must hold a token whose true score is the
      // r-th best (within float rounding), ids must not repeat, and equal float scores must come in id order.
      std::set<std::int64_t> seen;
      for (std::size_t r = 0; r != k; ++r) {
        INFO("k " << k << " row " << i << " rank " << r);
        const std::int64_t id = res.ids_of(i)[r];
        REQUIRE(seen.insert(id).second);
        REQUIRE_THAT(all[std::size_t(id)], WithinAbs(want[r], 1e-5));
        REQUIRE_THAT(double(res.scores_of(i)[r]), WithinAbs(want[r], 1e-5));
        if (r > 0 && res.scores_of(i)[r] == res.scores_of(i)[r - 1]) REQUIRE(res.ids_of(i)[r - 1] < id);
      }
    }
  }
}

TEST_CASE("lane top-k: merge_lanes_rows (rows packed into one batch) equals merge_lanes row by row", "[kernel]") {
  using lanes = aligner::lane_topk<aligner::default_arch>;
  using batch = lanes::batch;
  std::mt19937_64 rng(91);
  std::uniform_int_distribution<int> small(-5, 5);  // exact ties across lanes and rows
  auto check = [&]<std::size_t K, bool Indexed>(std::size_t rows, std::size_t folds) {
    aligner::aligned_vector<float> states(rows * K * W, -std::numeric_limits<float>::infinity()), ids(rows * K * W, 0.f);
    float next_id = 0;
    for (std::size_t i = 0; i != rows; ++i)
      for (std::size_t f = 0; f != folds; ++f) {
        batch s[1], id[1];
        alignas(64) float sv[W], iv[W];
        for (std::size_t l = 0; l != W; ++l) sv[l] = float(small(rng)), iv[l] = next_id++;
        s[0] = batch::load_aligned(sv);
        id[0] = batch::load_aligned(iv);
        lanes::fold<K, Indexed, 1>(s, id, states.data() + i * K * W, Indexed ? ids.data() + i * K * W : nullptr);
      }
    const std::size_t stride = (rows + W - 1) / W * W + W;  // a wider stride than needed: untouched past rows
    std::vector<float> out_v(K * stride, 1234.f), out_id(K * stride, 1234.f);
    lanes::merge_lanes_rows<K, Indexed>(states.data(), Indexed ? ids.data() : nullptr, rows, out_v.data(),
                                        Indexed ? out_id.data() : nullptr, stride);
    std::vector<std::pair<float, float>> want(K);
    for (std::size_t i = 0; i != rows; ++i) {
      lanes::merge_lanes<K, Indexed>(states.data() + i * K * W, Indexed ? ids.data() + i * K * W : nullptr, want.data(), K);
      for (std::size_t k = 0; k != K; ++k) {
        INFO("K " << K << " indexed " << Indexed << " rows " << rows << " folds " << folds << " row " << i << " rank " << k);
        REQUIRE(out_v[k * stride + i] == want[k].first);
        if (Indexed) REQUIRE(out_id[k * stride + i] == want[k].second);
      }
    }
    for (std::size_t k = 0; k != K; ++k)
      for (std::size_t i = (rows + W - 1) / W * W; i != stride; ++i) REQUIRE(out_v[k * stride + i] == 1234.f);
  };
  for (std::size_t rows : {std::size_t(1), std::size_t(3), W, W + 1, 2 * W + 5})
    for (std::size_t folds : {1, 3, 20}) {
      [&]<std::size_t... K>(std::index_sequence<K...>) {
        ((check.template operator()<(std::size_t(1) << K), true>(rows, folds),
          check.template operator()<(std::size_t(1) << K), false>(rows, folds)),
         ...);
      }(std::make_index_sequence<5>{});
    }
}

TEST_CASE("lane top-k: fold + merge_lanes equal std::sort (value desc, index asc), with and without indices", "[kernel]") {
  using lanes = aligner::lane_topk<aligner::default_arch>;
  using batch = lanes::batch;
  std::mt19937_64 rng(77);
  std::uniform_int_distribution<int> small(-6, 6);  // many exact ties
  auto check = [&]<std::size_t K, bool Indexed, std::size_t V>(std::size_t folds, bool fresh_first) {
    alignas(64) float states[K * W], ids[K * W];
    // A fresh first fold must not read the state: fill it with NaN (which would win no comparison it entered).
    std::fill(states, states + K * W, fresh_first ? std::numeric_limits<float>::quiet_NaN() : -std::numeric_limits<float>::infinity());
    std::fill(ids, ids + K * W, fresh_first ? 999.f : 0.f);
    std::vector<std::pair<float, float>> all;
    float next_id = 0;
    for (std::size_t f = 0; f != folds; ++f) {
      batch s[V], id[V];
      for (std::size_t v = 0; v != V; ++v) {
        alignas(64) float sv[W], iv[W];
        for (std::size_t l = 0; l != W; ++l) {
          sv[l] = float(small(rng));
          iv[l] = next_id++;
          all.emplace_back(sv[l], iv[l]);
        }
        s[v] = batch::load_aligned(sv);
        id[v] = batch::load_aligned(iv);
      }
      if (fresh_first && f == 0)
        lanes::fold<K, Indexed, V, true>(s, id, states, Indexed ? ids : nullptr);
      else
        lanes::fold<K, Indexed, V>(s, id, states, Indexed ? ids : nullptr);
    }
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return aligner::ranks_before(a.first, a.second, b.first, b.second); });
    const std::size_t kk = std::min(K, all.size());
    std::vector<std::pair<float, float>> got(kk);
    lanes::merge_lanes<K, Indexed>(states, Indexed ? ids : nullptr, got.data(), kk);
    for (std::size_t t = 0; t != kk; ++t) {
      INFO("K " << K << " V " << V << " indexed " << Indexed << " folds " << folds << " fresh " << fresh_first << " rank " << t);
      REQUIRE(got[t].first == all[t].first);
      if (Indexed) REQUIRE(got[t].second == all[t].second);
    }
  };
  for (bool fresh : {false, true})
    for (std::size_t folds : {1, 2, 5, 40}) {
      [&]<std::size_t... K>(std::index_sequence<K...>) {
        ((check.template operator()<(std::size_t(1) << K), true, 1>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), false, 1>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), true, 3>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), true, 4>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), false, 2>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), false, 4>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), true, 5>(folds, fresh),  // the AMX-BF16 tiles of 5-8 panels
          check.template operator()<(std::size_t(1) << K), true, 8>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), false, 7>(folds, fresh),
          check.template operator()<(std::size_t(1) << K), false, 8>(folds, fresh)),
         ...);
      }(std::make_index_sequence<5>{});
    }
}
