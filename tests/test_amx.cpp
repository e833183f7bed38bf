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
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

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
  if (aligner::amx_emulated) {
    std::printf("note: a test build of the AMX emulator: the tiles run in software whatever the CPU has\n");
    CHECK(aligner::amx_bf16_unavailable_reason() == (f.avx512f ? "" : "the CPU has no AVX-512"));
    // The description names the emulator where its tiles run; without AVX-512 they do not, and it names that reason.
    const std::string reason = aligner::amx_bf16_unavailable_reason();
    CHECK(aligner::kernel_info().describe().find(reason.empty() ? std::string("emulated") : "amx_bf16=no (" + reason + ")") !=
          std::string::npos);
  } else if (aligner::amx_bf16_unavailable_reason().empty()) {
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

TEST_CASE("cpu: the vendor string is CPUID's, and the vector tiles prefetch into L2 exactly on Intel", "[amx]") {
  const std::string& vendor = aligner::cpu().vendor;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  CHECK(vendor.size() == 12);
#endif
  // An independent reading where there is one: Linux's /proc/cpuinfo names the same vendor.
  if (std::FILE* f = std::fopen("/proc/cpuinfo", "r")) {
    char line[256];
    std::string from_os;
    while (from_os.empty() && std::fgets(line, sizeof line, f))
      if (std::strncmp(line, "vendor_id", 9) == 0) {
        std::string s(line);
        const auto colon = s.find(':');
        const auto first = s.find_first_not_of(" \t", colon + 1), last = s.find_last_not_of(" \t\r\n");
        if (colon != std::string::npos && first != std::string::npos) from_os = s.substr(first, last + 1 - first);
      }
    std::fclose(f);
    if (!from_os.empty()) CHECK(vendor == from_os);
  }
  CHECK(aligner::tile_prefetch_to_l2() == (vendor == "GenuineIntel"));
  CHECK(aligner::tile_prefetch().to_l2 == aligner::tile_prefetch_to_l2());
  int calls = 0;
  bool level_l2 = false;
  aligner::tile_prefetch().with_slice([&]<bool L2>(aligner::prefetch_slice<L2>) {
    ++calls;
    level_l2 = L2;
  });
  CHECK(calls == 1);
  CHECK(level_l2 == aligner::tile_prefetch_to_l2());
  CHECK(aligner::kernel_info().prefetch.rfind(aligner::tile_prefetch_to_l2() ? "L2" : "L1", 0) == 0);
}

TEST_CASE("cpu: the L1 data cache size is CPUID's, and the tiles go panel group outer only on Intel where a group fits it", "[amx]") {
  const std::size_t l1d = aligner::cpu().l1d_bytes;
  // An independent reading where there is one: Linux's sysfs lists CPU 0's caches (level, type, size as "48K").
  for (int index = 0; index != 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    auto read = [&](const char* name) {
      std::string out;
      if (std::FILE* f = std::fopen((dir + name).c_str(), "r")) {
        char buf[64] = {};
        if (std::fgets(buf, sizeof buf, f)) out = buf;
        std::fclose(f);
      }
      while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
      return out;
    };
    if (read("level") == "1" && read("type") == "Data") {
      const std::string size = read("size");
      INFO("sysfs L1d size " << size << ", CPUID " << l1d);
      if (!size.empty() && size.back() == 'K' && l1d > 0) CHECK(l1d == std::stoul(size) * 1024);
    }
  }
  const bool intel = aligner::cpu().vendor == "GenuineIntel";
  for (std::size_t group : {std::size_t(4) << 10, std::size_t(16) << 10, std::size_t(32) << 10, std::size_t(36) << 10, std::size_t(64) << 10})
    CHECK(aligner::tile_panel_outer(group) == (intel && l1d > 0 && 4 * group <= 3 * l1d));
  const std::string order = aligner::kernel_info().order;
  CHECK(order.rfind(intel && l1d > 0 ? "panel group outer" : "query row block outer", 0) == 0);
}

TEST_CASE("sweep_tiles: both orders visit every tile once, a row's panels in increasing order and panel 0 first", "[amx]") {
  // Documents of 1 to 3 spans (and a part of one), query rows with and without a row tail, panel groups of 4.
  for (bool panel_outer : {false, true})
    for (std::size_t n : {1, 3, 4, 9, 16, 33})
      for (std::size_t panels : {1, 3, 4, 7, 16, 40}) {
        CAPTURE(panel_outer, n, panels);
        const std::size_t panel_bytes = 8 << 10, span_bytes = 64 << 10;  // spans of 8 panels
        std::vector<char> buffer(panels * panel_bytes);
        std::vector<int> seen(((n + 3) / 4) * panels, 0);
        std::vector<std::size_t> last(n, std::size_t(-1));  // per row: the last panel group visited
        bool ordered = true, first_is_zero = true;
        aligner::tile_prefetch pf;
        aligner::sweep_tiles<4, 4>(buffer.data(), panels, panel_bytes, span_bytes, n, {}, pf,
                                   [&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
                                     CHECK(i0 % 4 == 0);
                                     CHECK(R == std::min<std::size_t>(4, n - i0));
                                     for (std::size_t p = p0; p != p0 + here; ++p) ++seen[i0 / 4 * panels + p];
                                     for (std::size_t r = i0; r != i0 + R; ++r) {
                                       if (last[r] == std::size_t(-1) && p0 != 0) first_is_zero = false;
                                       if (last[r] != std::size_t(-1) && p0 <= last[r]) ordered = false;
                                       last[r] = p0;
                                     }
                                   }, panel_outer);
        CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
        CHECK(ordered);
        CHECK(first_is_zero);
      }
}

TEST_CASE("amx: row sums against the double reference across dims, rows, lengths, budgets and weights", "[amx]") {
  if (!amx_or_note()) return;
  // Panel counts 1, 2, 3, 5, 6, 7 and 10 / 12 (8 + 2, 8 + 4): every tile width of the 8-panel bf16 tiles.
  const std::vector<std::size_t> lengths = {1, W - 1, W, W + 1, 3 * W, 4 * W + 1, 6 * W, 7 * W - 1, 9 * W + 3, 12 * W};
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

TEST_CASE("amx: 32-row tiles (two query blocks against each B load) equal two 16-row tiles bit for bit", "[amx]") {
  // Pairing shares the B tile loads and leaves each accumulator's sequence of tdpbf16ps as it was, so the values
  // are the same bits. Dims whose pairs fill whole k-blocks pair (32, 63, 64, 128); those with a tail (33, 100) and
  // queries of at most 16 rows do not.
  if (!amx_or_note()) return;
  using engine_t = aligner::amx_bf16_engine<aligner::default_arch>;
  using batch = engine_t::batch;
  for (std::size_t dim : {32u, 33u, 63u, 64u, 100u, 128u})
    for (std::size_t n : {5u, 16u, 17u, 32u, 40u}) {
      const std::size_t m = 4 * W + 5;  // a whole group of 4 panels, then a partial one
      const auto q = aligner_test::random_matrix(n, dim, 71 + n), d = aligner_test::random_matrix(m, dim, 72 + dim);
      const auto packed = pack_bf16(d, m, dim);
      std::vector<std::uint32_t> words(aligner::bf16_query_words(n, dim));
      aligner::query_to_bf16_pairs({q.data(), n, dim}, words.data());
      const engine_t engine(packed.data(), m, {q.data(), n, dim}, words.data());
      CAPTURE(dim, n);
      CHECK(engine.rows_paired() == (n > 16 && ((dim + 1) / 2) % 16 == 0));
      if (!engine.rows_paired()) continue;
      aligner::amx_configure(engine.config());
      for (std::size_t i0 = 0; i0 + 32 <= aligner::bf16_query_rows(n); i0 += 32) {
        alignas(64) batch paired[32][4], lo[16][4], hi[16][4];
        engine.tile<32, 4>(i0, 0, paired);
        engine.tile<16, 4>(i0, 0, lo);
        engine.tile<16, 4>(i0 + 16, 0, hi);
        CHECK(std::memcmp(&paired[0][0], &lo[0][0], sizeof lo) == 0);
        CHECK(std::memcmp(&paired[16][0], &hi[0][0], sizeof hi) == 0);
      }
      // And through the sweep: every row's Top-1 and Top-3 as the vector path computes them within bf16 rounding.
      std::vector<double> sum(n), z(n), rs(n), rz(n);
      const auto q16 = bf16_rounded(q), d16 = bf16_rounded(d);
      for (std::size_t k : {1u, 3u}) {
        const std::size_t budgets[] = {k};
        kernel(q, n, dim, packed.data(), m, budgets, nullptr, sum.data(), z.data());
        aligner::ref::aligned_row_sums({q16.data(), n, dim}, {d16.data(), m, dim}, k, nullptr, rs.data(), rz.data());
        for (std::size_t i = 0; i != n; ++i) REQUIRE_THAT(sum[i], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * std::sqrt(double(dim))));
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

namespace {
/// Scores a store of precision `st` (random corpus `seed`) with AMX on and off: every strategy's scores agree within
/// `rel` (relative, at least absolute); `label` must name the kernel in kernel_info() only while AMX is on.
void amx_on_off_agree(aligner::storage st, std::uint64_t seed, double rel, const std::string& label,
                      std::string aligner::kernel_report::*line) {
  amx_switch_guard guard;
  const std::size_t dim = 96;
  const aligner_test::random_corpus set(40, 150, dim, seed);
  aligner::token_store store(dim, st);
  store.add(set.view(), {}, false);
  const auto q = aligner_test::random_matrix(9, dim, seed + 1, true);
  std::vector<std::uint32_t> ids(store.size());
  for (std::size_t i = 0; i != ids.size(); ++i) ids[i] = std::uint32_t(i);
  for (const char* strategy : {"top1", "topk:3", "topp:0.05"}) {
    const aligner::score_params params{.strategy = aligner::alignment::parse(strategy)};
    std::vector<float> on(ids.size()), off(ids.size());
    aligner::set_amx_enabled(true);
    CHECK((aligner::kernel_info().*line).find(label) != std::string::npos);
    aligner::score_store({q.data(), 9, dim}, store.view(), ids, on, params);
    aligner::set_amx_enabled(false);
    CHECK((aligner::kernel_info().*line).find(label) == std::string::npos);
    aligner::score_store({q.data(), 9, dim}, store.view(), ids, off, params);
    for (std::size_t i = 0; i != ids.size(); ++i) {
      INFO(aligner::to_string(st) << " " << strategy << " doc " << i);
      REQUIRE_THAT(double(on[i]), WithinAbs(double(off[i]), rel * std::max(1.0, std::abs(double(off[i])))));
    }
  }
}
}  // namespace

TEST_CASE("amx: a prepared query scores a bf16 store the same with AMX on and off, within bf16 rounding", "[amx]") {
  if (!amx_or_note()) return;
  // AMX rounds the query to bf16 (the vector path of this build may not): relative error about 2^-8.
  amx_on_off_agree(aligner::storage::bf16, 77, 1e-2, "AMX-BF16 tdpbf16ps", &aligner::kernel_report::bf16);
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
  CHECK_THROWS_AS(aligner::exact_backend(dim, aligner::storage::f16), aligner::invalid_argument);
}

// ------------------------------------------------------------------------------------------ AMX-INT8 (i8 store)

namespace {

bool amx_int8_or_note() {
  if (aligner::i8_on_amx<>()) return true;
  std::printf("note: AMX-INT8 tests skipped: %s\n",
              aligner::amx_int8_unavailable_reason().empty() ? "turned off, or the panel width does not fit a tile"
                                                             : aligner::amx_int8_unavailable_reason().c_str());
  return false;
}

/// The i8 store runs on integer tiles with AMX-INT8's arithmetic: AMX-INT8, or vpdpwssd (int8_vnni.hpp).
bool int8_tiles_or_note() {
  if (aligner::i8_on_amx<>() || aligner::i8_on_vnni<>()) return true;
  std::printf("note: int8 tile tests skipped: no AMX-INT8 (%s) and no VNNI path in this build\n",
              aligner::amx_int8_unavailable_reason().empty() ? "turned off, or the panel width does not fit a tile"
                                                             : aligner::amx_int8_unavailable_reason().c_str());
  return false;
}

aligner::aligned_vector<std::uint32_t> pack_i8(const std::vector<float>& d, std::size_t m, std::size_t dim, std::size_t shift_words = 0) {
  aligner::aligned_vector<std::uint32_t> packed(aligner::packed_words(aligner::storage::i8, m, dim) + shift_words + 1);
  aligner::pack_panels(aligner::storage::i8, {d.data(), m, dim}, packed.data() + shift_words);
  return packed;
}

/// The int8 values and scale of token j of a packed i8 document, read back through the storage's decode.
struct i8_token {
  std::vector<int> q;
  float scale = 0.f;
};
i8_token read_i8(const std::uint32_t* packed, std::size_t dim, std::size_t j) {
  const auto* panel = reinterpret_cast<const unsigned char*>(packed + (j / W) * aligner::storage_traits<aligner::storage::i8>::panel_words(dim, W));
  i8_token t;
  std::memcpy(&t.scale, panel + (j % W) * 4, 4);
  for (std::size_t c = 0; c != dim; ++c) t.q.push_back(int(static_cast<std::int8_t>(panel[W * 4 + c * W + j % W])));
  return t;
}

/// Row i of a query's int8 form: the a terms in q, the b terms in low, the combined scale s / F.
struct i8_query_row {
  std::vector<int> q, low;
  float scale = 0.f;
  /// Component c as the kernel multiplies it: a F + b.
  std::int64_t combined(std::size_t c, std::size_t dim) const { return std::int64_t(q[c]) * aligner::i8_query_factor(dim) + low[c]; }
};
i8_query_row read_query_i8(const std::vector<std::uint32_t>& form, std::size_t n, std::size_t dim, std::size_t i) {
  i8_query_row t;
  t.scale = aligner::i8_query_scale(form.data(), n, dim, i);
  const std::size_t quads = (dim + 3) / 4, rows = aligner::bf16_query_rows(n);
  auto byte = [&](std::size_t row, std::size_t c) { return int(static_cast<std::int8_t>((form[row * quads + c / 4] >> (8 * (c % 4))) & 0xffu)); };
  for (std::size_t c = 0; c != dim; ++c) {
    t.q.push_back(byte(i, c));
    t.low.push_back(byte(rows + i, c));
  }
  return t;
}

}  // namespace

TEST_CASE("amx-int8: the query's int8 form: the i8 store's quantisation of each row plus the rounded remainder", "[amx]") {
  CHECK(aligner::i8_query_factor(128) == 254);
  CHECK(aligner::i8_query_factor(522) == 254);
  CHECK(aligner::i8_query_factor(768) == 172);
  CHECK(aligner::i8_query_factor(4096) == 32);
  for (std::size_t dim : {1u, 3u, 4u, 5u, 64u, 100u, 130u, 768u})
    for (std::size_t n : {1u, 16u, 17u}) {
      auto q = aligner_test::random_matrix(n, dim, 300 + dim + n);
      if (n > 1) std::fill(q.begin() + std::ptrdiff_t(dim), q.begin() + std::ptrdiff_t(2 * dim), 0.f);  // an all-zero row
      std::vector<std::uint32_t> form(aligner::i8_query_words(n, dim), 0xdeadbeefu);
      aligner::query_to_i8_quads({q.data(), n, dim}, form.data());
      const auto packed = pack_i8(q, n, dim);  // the same rows as i8 tokens: the reference quantisation of the a terms
      const double factor = aligner::i8_query_factor(dim);
      for (std::size_t i = 0; i != n; ++i) {
        const auto want = read_i8(packed.data(), dim, i);
        const auto got = read_query_i8(form, n, dim, i);
        INFO("dim " << dim << " n " << n << " row " << i);
        REQUIRE(got.scale == float(double(want.scale) / factor));
        REQUIRE(got.q == want.q);
        double amax = 0;
        for (std::size_t c = 0; c != dim; ++c) amax = std::max(amax, double(std::fabs(q[i * dim + c])));
        for (std::size_t c = 0; c != dim; ++c) {
          // The remainder, rounded at F steps; and the two terms together within s / (2F) of the float value (plus the
          // float rounding of the scale s / F).
          const double x = want.scale > 0 ? double(q[i * dim + c]) / double(want.scale) : 0.0;
          REQUIRE(got.low[c] == int(std::nearbyint((x - want.q[c]) * factor)));
          REQUIRE(std::abs(got.low[c]) <= 127);
          REQUIRE_THAT(double(got.combined(c, dim)) * double(got.scale), WithinAbs(double(q[i * dim + c]), amax / 127.0 / factor * 0.5001 + 2.4e-7 * std::fabs(q[i * dim + c]) + 1e-12));
        }
      }
      // Padding: the quads past dim in a row's last word, and the rows up to 16 (both terms), are zero (scales too).
      const std::size_t quads = (dim + 3) / 4, rows = aligner::bf16_query_rows(n);
      for (std::size_t i = 0; i != n; ++i)
        if (dim % 4) {
          REQUIRE((form[i * quads + quads - 1] >> (8 * (dim % 4))) == 0u);
          REQUIRE((form[(rows + i) * quads + quads - 1] >> (8 * (dim % 4))) == 0u);
        }
      for (std::size_t i = n; i != rows; ++i) {
        for (std::size_t w = 0; w != quads; ++w) REQUIRE(form[i * quads + w] == 0u);
        for (std::size_t w = 0; w != quads; ++w) REQUIRE(form[(rows + i) * quads + w] == 0u);
        REQUIRE(aligner::i8_query_scale(form.data(), n, dim, i) == 0.f);
      }
    }
}

TEST_CASE("amx-int8: the VBMI re-layout of int8 panels equals the byte-by-byte one, any width, dim and offset", "[amx]") {
  if (!aligner::i8_relayout_vbmi()) {
    std::printf("note: VBMI re-layout test skipped: the CPU has no AVX512-VBMI (the byte-by-byte one runs)\n");
    return;
  }
#if ALIGNER_HAVE_AMX
  std::mt19937 gen(5);
  for (std::size_t width : {4u, 8u, 16u})
    for (std::size_t dim = 1; dim <= 133; ++dim)
      for (std::size_t offset : {0u, 1u, 3u}) {
        std::vector<unsigned char> bytes(dim * width + offset + 64);
        for (auto& b : bytes) b = static_cast<unsigned char>(gen());
        const std::size_t words = (dim + 3) / 4 * width;
        std::vector<std::uint32_t> fast(words + 16, 0xabababab), slow(words + 16, 0xabababab);
        aligner::detail::relayout_i8_quads_vbmi(bytes.data() + offset, dim, width, fast.data());
        aligner::detail::relayout_i8_quads_scalar(bytes.data() + offset, dim, width, slow.data());
        INFO("width " << width << " dim " << dim << " offset " << offset);
        REQUIRE(fast == slow);  // the words past the panel are untouched too
      }
#endif
}

TEST_CASE("int8 tiles: S bit for bit the scalar formula (exact integer sums of both terms, then the two scales)", "[amx]") {
  if (!int8_tiles_or_note()) return;
  for (std::size_t dim : {1u, 3u, 4u, 17u, 63u, 64u, 65u, 100u, 128u, 130u, 300u, 768u, 1100u})
    for (std::size_t n : {1u, 5u, 16u, 17u, 33u})
      for (std::size_t m : {std::size_t(1), W - 1, W + 1, 4 * W + 1, 9 * W + 3, std::size_t(300)}) {
        if (dim > 300 && (n != 17 || m > 4 * W + 1)) continue;  // wide rows (F < 254; sums past 2^24): fewer shapes
        const auto q = aligner_test::random_matrix(n, dim, 400 + dim + n), d = aligner_test::random_matrix(m, dim, 500 + m + dim);
        const auto packed = pack_i8(d, m, dim);
        std::vector<std::uint32_t> form(aligner::i8_query_words(n, dim));
        aligner::query_to_i8_quads({q.data(), n, dim}, form.data());
        const std::size_t stride = aligner::panel_count<>(m) * W;
        std::vector<float> s(n * stride, -1.f);
        aligner::packed_similarity_rows({q.data(), n, dim}, aligner::storage::i8, packed.data(), m, s.data(), stride);
        for (std::size_t i = 0; i != n; ++i) {
          const auto qi = read_query_i8(form, n, dim, i);
          for (std::size_t j = 0; j != m; ++j) {
            const auto dj = read_i8(packed.data(), dim, j);
            std::int64_t dot = 0;
            for (std::size_t c = 0; c != dim; ++c) dot += qi.combined(c, dim) * dj.q[c];
            float want = float(dot);
            want = want * dj.scale;
            want = want * qi.scale;
            INFO("dim " << dim << " n " << n << " m " << m << " i " << i << " j " << j);
            REQUIRE(s[i * stride + j] == want);
          }
        }
      }
}

TEST_CASE("int8 tiles: row sums against the double reference of the quantised operands, budgets, weights, long documents", "[amx]") {
  if (!int8_tiles_or_note()) return;
  for (std::size_t dim : {3u, 32u, 100u, 128u})
    for (std::size_t n : {1u, 17u, 32u})
      for (std::size_t m : {std::size_t(1), W + 1, 9 * W + 3, std::size_t(300), std::size_t(2100)}) {
        const auto q = aligner_test::random_matrix(n, dim, 600 + dim + n), d = aligner_test::random_matrix(m, dim, 700 + m + dim);
        const auto w = aligner_test::random_weights(m, m + dim, true);
        const auto packed = pack_i8(d, m, dim), next = pack_i8(d, std::min<std::size_t>(m, 64), dim);
        const auto qd = aligner_test::amx_i8_query_values(q, dim);  // the values the kernel multiplies
        std::vector<float> dd(m * dim);
        for (std::size_t j = 0; j != m; ++j) {
          const auto t = read_i8(packed.data(), dim, j);
          for (std::size_t c = 0; c != dim; ++c) dd[j * dim + c] = float(double(t.q[c]) * double(t.scale));
        }
        const std::size_t budgets[] = {1, 3, 8, 17};
        for (bool weighted : {false, true}) {
          const float* wp = weighted ? w.data() : nullptr;
          aligner::rows_workspace ws;
          std::vector<double> sum(n * 4), z(n * 4);
          aligner::aligned_row_sums({q.data(), n, dim}, aligner::storage::i8, packed.data(), m, budgets, wp, sum.data(), z.data(), ws,
                                    {}, {next.data(), aligner::packed_words(aligner::storage::i8, std::min<std::size_t>(m, 64), dim) * 4});
          for (std::size_t b = 0; b != 4; ++b) {
            std::vector<double> rs(n), rz(n);
            aligner::ref::aligned_row_sums({qd.data(), n, dim}, {dd.data(), m, dim}, budgets[b], wp, rs.data(), rz.data());
            for (std::size_t i = 0; i != n; ++i) {
              INFO("dim " << dim << " n " << n << " m " << m << " budget " << budgets[b] << " weighted " << weighted << " row " << i);
              REQUIRE_THAT(sum[i * 4 + b], WithinAbs(rs[i], 1e-5 * std::max(1.0, std::abs(rs[i])) * double(budgets[b])));
              REQUIRE_THAT(z[i * 4 + b], WithinAbs(rz[i], 1e-5 * std::max(1.0, rz[i])));
            }
          }
        }
      }
}

TEST_CASE("amx-int8: an i8 store scores the same with AMX-INT8 on and off, within the query's remainder", "[amx]") {
  if (!amx_int8_or_note()) return;
  // Unit rows in two int8 terms: each component moves by at most 1 / (127 * 2 * 254).
  amx_on_off_agree(aligner::storage::i8, 79, 1e-4, "AMX-INT8 tdpbssd", &aligner::kernel_report::i8);
}

TEST_CASE("int8 vnni: the 16-bit query form holds a F + b of the int8 form, the widened panels equal the byte-by-byte ones", "[amx]") {
  for (std::size_t dim : {1u, 2u, 3u, 5u, 64u, 100u, 131u, 768u})
    for (std::size_t n : {1u, 3u, 17u}) {
      auto q = aligner_test::random_matrix(n, dim, 800 + dim + n);
      if (n > 1) std::fill(q.begin() + std::ptrdiff_t(dim), q.begin() + std::ptrdiff_t(2 * dim), 0.f);  // an all-zero row
      std::vector<std::uint32_t> quads(aligner::i8_query_words(n, dim)), pairs(aligner::i16_query_words(n, dim), 0xdeadbeefu);
      aligner::query_to_i8_quads({q.data(), n, dim}, quads.data());
      aligner::query_to_i16_pairs({q.data(), n, dim}, pairs.data());
      const std::size_t words = (dim + 1) / 2;
      for (std::size_t i = 0; i != n; ++i) {
        const auto row = read_query_i8(quads, n, dim, i);
        INFO("dim " << dim << " n " << n << " row " << i);
        for (std::size_t c = 0; c != 2 * words; ++c) {
          const auto half = std::int16_t(std::uint16_t(pairs[i * words + c / 2] >> (16 * (c % 2))));
          REQUIRE(std::int64_t(half) == (c < dim ? row.combined(c, dim) : 0));
        }
        float scale;
        std::memcpy(&scale, pairs.data() + n * words + i, 4);
        REQUIRE(scale == row.scale);
      }
    }
  std::mt19937 gen(9);
  for (std::size_t dim = 1; dim <= 133; ++dim)
    for (std::size_t offset : {0u, 1u, 3u}) {
      std::vector<unsigned char> bytes(dim * 16 + offset + 64);
      for (auto& b : bytes) b = static_cast<unsigned char>(gen());
      const std::size_t words = (dim + 1) / 2 * 16;
      aligner::aligned_vector<std::uint32_t> fast(words + 16, 0xabababab);
      std::vector<std::uint32_t> slow(words + 16, 0xabababab);
      aligner::ref::relayout_i8_pairs(bytes.data() + offset, dim, 16, slow.data());
      for (std::size_t c2 = 0; c2 != (dim + 1) / 2; ++c2)  // the specification, against the bytes
        for (std::size_t l = 0; l != 16; ++l)
          for (std::size_t h = 0; h != 2; ++h) {
            const std::size_t c = 2 * c2 + h;
            const int want = c < dim ? int(std::int8_t(bytes[offset + c * 16 + l])) : 0;
            REQUIRE(int(std::int16_t(std::uint16_t(slow[c2 * 16 + l] >> (16 * h)))) == want);
          }
      if (!aligner::relayout_i8_pairs(bytes.data() + offset, dim, fast.data())) {
        CHECK((!aligner::i8_on_vnni<>() || aligner::panel_width<> != 16));  // 4- and 8-wide panels: below
        continue;
      }
      INFO("dim " << dim << " offset " << offset);
      REQUIRE(std::equal(slow.begin(), slow.end(), fast.begin()));  // the words past the panel are untouched too
    }
#if ALIGNER_HAVE_WIDE_VNNI
  // The run-time path over 4- and 8-wide panels: 16 / W consecutive int8 panels (W scales, then dim rows of W
  // bytes) re-laid into one 16-token panel, lane P W + l from panel P's lane l, for 1 .. 16 / W panels, as
  // ref::relayout_i8_pairs lays out each panel; their scales copied after, 0 for missing panels.
  if (aligner::i8_on_vnni<>() && aligner::panel_width<> != 16) {
    constexpr std::size_t W = aligner::panel_width<>, per = 16 / W;
    for (std::size_t dim = 1; dim <= 133; ++dim) {
      const std::size_t panel_bytes = 4 * W + (dim * W + 3) / 4 * 4;
      std::vector<unsigned char> bytes(per * panel_bytes);
      for (auto& b : bytes) b = static_cast<unsigned char>(gen());
      for (std::size_t count = 1; count <= per; ++count) {
        const std::size_t words = (dim + 1) / 2 * 16;
        aligner::aligned_vector<std::uint32_t> wide(words + 16, 0xabababab);
        float scales[16];
        aligner::detail::relayout_i8_pairs_wide<W>(bytes.data(), panel_bytes, dim, count, wide.data(), scales);
        for (std::size_t P = 0; P != per; ++P) {
          std::vector<std::uint32_t> slow((dim + 1) / 2 * W);
          aligner::ref::relayout_i8_pairs(bytes.data() + P * panel_bytes + 4 * W, dim, W, slow.data());
          for (std::size_t l = 0; l != W; ++l) {
            INFO("dim " << dim << " count " << count << " panel " << P << " lane " << l);
            float scale;
            std::memcpy(&scale, bytes.data() + P * panel_bytes + 4 * l, 4);
            if (P < count) REQUIRE(std::memcmp(&scales[P * W + l], &scale, 4) == 0);
            else REQUIRE(scales[P * W + l] == 0.f);
            for (std::size_t c2 = 0; c2 != (dim + 1) / 2; ++c2)
              REQUIRE(wide[c2 * 16 + P * W + l] == (P < count ? slow[c2 * W + l] : 0u));
          }
        }
        for (std::size_t t = words; t != words + 16; ++t) REQUIRE(wide[t] == 0xababababu);  // nothing past the panel
      }
    }
  }
#endif
}
