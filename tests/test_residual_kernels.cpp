// The kernels over residual codes (kernels/residual.hpp, aligned_rows.hpp): the vector decodes against the scalar
// specification, the centroid scores, the VNNI kernel's int8 forms against their rule, and the fused kernel of
// every path this build runs (vector float or bf16, VNNI int8, AMX) against a double computation of its own
// arithmetic. Part of the kernel tests, so it runs once per compiled architecture.
#include <aligner/aligner.hpp>

#include "test_common.hpp"
#include "test_residual_common.hpp"

#include <numeric>
#include <random>

using aligner::alignment;

namespace {

/// The score of similarities S (n x m, row-major, double) under params (strategy, both saliences, normalisation):
/// per row the row budget's best entries (stable: ties toward the smaller j), weighted by the document salience,
/// rows weighted by the query salience; as ref::score does after computing S.
double score_of_similarities(const std::vector<double>& S, std::size_t n, std::size_t m, const aligner::score_params& p) {
  const std::size_t k = p.strategy.row_budget(m);
  double num = 0, z = 0;
  std::vector<std::size_t> order(m);
  for (std::size_t i = 0; i != n; ++i) {
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return S[i * m + a] > S[i * m + b]; });
    const double u = p.query_salience.empty() ? 1.0 : double(p.query_salience[i]);
    for (std::size_t t = 0; t != k; ++t) {
      const double w = p.doc_salience.empty() ? 1.0 : double(p.doc_salience[order[t]]);
      num += u * w * S[i * m + order[t]];
      z += u * w;
    }
  }
  if (p.norm == aligner::normalization::none) return num;
  return z > 0 ? num / z : 0.0;
}

/// `count` W-wide residual panels of `codec` back to back: random code bits (every bit pattern is a valid panel,
/// padding bits included) and random centroid ids.
aligner::aligned_vector<std::uint32_t> random_residual_panels(const aligner::residual_codec& codec, std::size_t W, std::size_t count,
                                                              std::mt19937_64& rng) {
  const std::size_t words = codec.panel_words(W);
  aligner::aligned_vector<std::uint32_t> panels(count * words);
  for (auto& w : panels) w = std::uint32_t(rng());
  for (std::size_t P = 0; P != count; ++P)
    for (std::size_t l = 0; l != W; ++l)
      reinterpret_cast<std::uint16_t*>(panels.data() + P * words)[l] = std::uint16_t(rng() % codec.centroids());
  return panels;
}
}  // namespace

TEST_CASE("residual: the vector decode of a panel equals the scalar specification", "[oracle]") {
  constexpr std::size_t W = aligner::panel_width<>;
  std::mt19937_64 rng(5);
  for (std::size_t dim : {1, 5, 16, 33, 100}) {
    const auto x = aligner_test::clustered_tokens(300, dim, 7, dim + 100);
    for (std::size_t nbits : {1, 2, 4, 8}) {
      const auto codec = aligner_test::trained_codec(x, dim, nbits, 7);
      // Random codes and ids in a panel (every bit pattern is a valid panel).
      aligner::aligned_vector<std::uint32_t> panel(codec->panel_words(W));
      for (auto& w : panel) w = std::uint32_t(rng());
      auto* ids = reinterpret_cast<std::uint16_t*>(panel.data());
      for (std::size_t l = 0; l != W; ++l) ids[l] = std::uint16_t(rng() % codec->centroids());
      std::vector<float> fast(dim * W), slow(dim * W);
      aligner::decode_residual_panel(*codec, panel.data(), fast.data());
      aligner::ref::residual_decode(*codec, panel.data(), W, false, slow.data());
      INFO("dim " << dim << " nbits " << nbits);
      CHECK(fast == slow);
      // The direct bf16 decode (pair tables for nbits 1 and 2, value tables for 4, on AVX-512) equals decode-then-round, word for word.
      aligner::aligned_vector<std::uint32_t> direct((dim + 1) / 2 * W, 0xdeadbeefu), want((dim + 1) / 2 * W);
      for (std::size_t c2 = 0; c2 != (dim + 1) / 2; ++c2)
        for (std::size_t l = 0; l != W; ++l) {
          const std::uint32_t lo = aligner::to_bf16(slow[2 * c2 * W + l]);
          const std::uint32_t hi = 2 * c2 + 1 < dim ? aligner::to_bf16(slow[(2 * c2 + 1) * W + l]) : 0u;
          want[c2 * W + l] = lo | hi << 16;
        }
      if (aligner::decode_residual_panel_bf16(*codec, panel.data(), direct.data())) {
        CHECK(nbits <= 4);
        CHECK(std::equal(direct.begin(), direct.end(), want.begin()));
      } else {
#if defined(__AVX512BW__)
        CHECK((nbits > 4 || W != 16));
#endif
      }
      aligner::aligned_vector<float> staging(dim * W);
      std::copy(fast.begin(), fast.end(), staging.begin());
      aligner::aligned_vector<std::uint32_t> rounded((dim + 1) / 2 * W);
      aligner::float_panel_to_bf16_pairs(staging.data(), dim, rounded.data());
      CHECK(std::equal(rounded.begin(), rounded.end(), want.begin()));
      // The VNNI decode (nbits 1, 2, 4): the codec's int8 values against their rule computed here, the scalar
      // specification against those values, the vector decode against the specification word for word.
      if (nbits > 4) {
        CHECK(codec->value_scales() == nullptr);
        CHECK(codec->quad_tables() == nullptr);
        continue;
      }
      const std::size_t L = codec->levels(), quads = (dim + 3) / 4;
      const auto values = aligner_test::residual_int8_values(*codec);
      for (std::size_t c = 0; c != dim; ++c) {
        REQUIRE(codec->value_scales()[c] == values.scales[c]);
        for (std::size_t b = 0; b != L; ++b) REQUIRE(codec->value_i8(c, b) == values.codes[c * L + b]);
      }
      std::vector<std::uint32_t> spec(quads * W);
      aligner::ref::residual_decode_u8(*codec, panel.data(), W, spec.data());
      for (std::size_t c4 = 0; c4 != quads; ++c4)
        for (std::size_t l = 0; l != W; ++l)
          for (std::size_t j = 0; j != 4; ++j) {
            const std::size_t c = 4 * c4 + j;
            const int want_byte = c < dim ? values.codes[c * L + codec->code_of(panel.data(), W, l, c)] + 128 : 128;
            REQUIRE(int((spec[c4 * W + l] >> (8 * j)) & 0xFFu) == want_byte);
          }
      aligner::aligned_vector<std::uint32_t> u8(quads * W, 0xdeadbeefu);
      if (aligner::decode_residual_panel_u8(*codec, panel.data(), u8.data())) {
        CHECK(std::equal(u8.begin(), u8.end(), spec.begin()));
      } else if (aligner::residual_on_vnni(*codec)) {
#if ALIGNER_HAVE_WIDE_VNNI
        // The run-time VNNI path over 4- and 8-wide panels decodes 16 / W consecutive panels (or fewer, at a
        // document's end) into one 16-token panel: lane P W + l is panel P's lane l, word for word the specification.
        REQUIRE((W == 4 || W == 8));
        const std::size_t per = 16 / W, words = codec->panel_words(W);
        const auto several = random_residual_panels(*codec, W, per, rng);
        for (std::size_t count = 1; count <= per; ++count) {
          aligner::aligned_vector<std::uint32_t> wide(quads * 16, 0xdeadbeefu);
          if (W == 4)
            aligner::detail::decode_residual_panels_u8_wide<4>(codec->quad_tables(), nbits, dim, several.data(), words, count, wide.data());
          else
            aligner::detail::decode_residual_panels_u8_wide<8>(codec->quad_tables(), nbits, dim, several.data(), words, count, wide.data());
          for (std::size_t P = 0; P != count; ++P) {
            aligner::ref::residual_decode_u8(*codec, several.data() + P * words, W, spec.data());
            for (std::size_t c4 = 0; c4 != quads; ++c4)
              for (std::size_t l = 0; l != W; ++l) {
                INFO("count " << count << " panel " << P << " quad " << c4 << " lane " << l);
                REQUIRE(wide[c4 * 16 + P * W + l] == spec[c4 * W + l]);
              }
          }
        }
#else
        FAIL("residual_on_vnni without a VNNI decode for this panel width");
#endif
      }
    }
  }
}

TEST_CASE("residual: the 16-token bf16 decode of 4- and 8-wide panels equals decode-then-round, word for word", "[oracle]") {
#if ALIGNER_HAVE_AMX
  constexpr std::size_t W = aligner::panel_width<>;
  if constexpr (W == 4 || W == 8) {
    if (!aligner::avx512_vbmi_usable()) {
      WARN("skipped: the CPU or the OS lacks AVX-512 BW/VL/VBMI (the AMX path of this build's 4- and 8-wide panels decodes with them)");
      return;
    }
    std::mt19937_64 rng(11);
    constexpr std::size_t per = 16 / W;
    for (std::size_t dim : {1, 2, 3, 5, 16, 33, 100, 129}) {
      const auto x = aligner_test::clustered_tokens(300, dim, 7, dim + 200);
      for (std::size_t nbits : {1, 2, 4, 8}) {
        const auto codec = aligner_test::trained_codec(x, dim, nbits, 7);
        CHECK(aligner::residual_bf16_wide_decode(*codec) == (nbits <= 4));
        const std::size_t words = codec->panel_words(W), pairs = (dim + 1) / 2, out_words = pairs * W + 5;
        const auto several = random_residual_panels(*codec, W, per, rng);
        for (std::size_t count = 1; count <= per; ++count) {
          aligner::aligned_vector<std::uint32_t> out(per * out_words, 0xdeadbeefu);
          const bool decoded = aligner::detail::decode_residual_panels_bf16_wide<W>(*codec, several.data(), words, count, out.data(), out_words);
          INFO("dim " << dim << " nbits " << nbits << " count " << count);
          REQUIRE(decoded == (nbits <= 4));
          for (std::size_t P = 0; P != per; ++P) {
            // The specification: the scalar decode, each value rounded to bf16 (to_bf16) and paired.
            std::vector<float> slow(dim * W);
            aligner::ref::residual_decode(*codec, several.data() + P * words, W, false, slow.data());
            for (std::size_t c2 = 0; c2 != out_words / W + 1; ++c2)
              for (std::size_t l = 0; l != W && c2 * W + l < out_words; ++l) {
                const std::uint32_t got = out[P * out_words + c2 * W + l];
                INFO("panel " << P << " pair " << c2 << " lane " << l);
                if (!decoded || P >= count || c2 >= pairs) {
                  REQUIRE(got == 0xdeadbeefu);  // nothing written past the panels asked for, their pairs, or for nbits 8
                  continue;
                }
                const std::uint32_t lo = aligner::to_bf16(slow[2 * c2 * W + l]);
                const std::uint32_t hi = 2 * c2 + 1 < dim ? aligner::to_bf16(slow[(2 * c2 + 1) * W + l]) : 0u;
                REQUIRE(got == (lo | hi << 16));
              }
          }
        }
      }
    }
    return;
  }
#endif
  SUCCEED("this build's AMX path reads 16-wide panels, or AMX is not compiled in: no 16-token decode of narrower panels");
}

TEST_CASE("residual: centroid-major query scores equal the query-major ones, a panel's rows of them are laid out right", "[oracle]") {
  constexpr std::size_t W = aligner::panel_width<>;
  std::mt19937_64 rng(8);
  for (std::size_t dim : {3, 16, 37}) {
    const auto x = aligner_test::clustered_tokens(600, dim, 9, dim + 7);
    const auto codec = aligner_test::trained_codec(x, dim, 2, 40);
    const std::size_t K = codec->centroids();
    for (std::size_t n : {1, 15, 16, 17, 40}) {
      const auto q = aligner_test::random_matrix(n, dim, n + dim, true);
      std::vector<float> by_query(n * aligner::centroid_score_stride(*codec)), scratch;
      aligner::centroid_scores({q.data(), n, dim}, *codec, by_query.data(), scratch);
      const std::size_t rows = aligner::centroid_score_rows(n);
      REQUIRE(rows % W == 0);
      REQUIRE(rows >= n);
      std::vector<float> by_centroid(K * rows, std::nanf(""));
      std::vector<float> by_query_scratch, extended;
      aligner::centroid_scores_by_centroid({q.data(), n, dim}, *codec, by_centroid.data(), by_query_scratch, extended);
      INFO("dim " << dim << " n " << n);
      for (std::size_t k = 0; k != K; ++k)
        for (std::size_t i = 0; i != rows; ++i) {
          if (i < n) {
            // the same float products in the same order: equal bits, and within float rounding of a double dot
            REQUIRE(by_centroid[k * rows + i] == by_query[i * aligner::centroid_score_stride(*codec) + k]);
            double want = 0;
            for (std::size_t c = 0; c != dim; ++c) want += double(q[i * dim + c]) * codec->centroid(k)[c];
            REQUIRE(std::abs(by_centroid[k * rows + i] - want) <= 1e-5 * (1 + std::abs(want)));
          } else {
            REQUIRE(by_centroid[k * rows + i] == 0.f);  // rows past the query
          }
        }
      // A panel's W tokens (random ids, repeats included) as rows: out[i * stride + l] = scores[id_l * rows + i].
      for (std::size_t extra : {0, 3}) {
        const std::size_t stride = (extra + 1) * W;
        std::uint16_t ids[W];
        for (std::size_t l = 0; l != W; ++l) ids[l] = std::uint16_t(l % 5 == 4 ? ids[0] : rng() % K);
        aligner::aligned_vector<float> out(rows * stride + extra * W, -7.f);
        aligner::centroid_rows_of_panel(by_centroid.data(), rows, ids, out.data() + extra * W, stride);
        for (std::size_t i = 0; i != rows; ++i)
          for (std::size_t c = 0; c != stride; ++c) {
            const float got = out[extra * W + i * stride + c];
            if (c < W)
              REQUIRE(got == by_centroid[ids[c] * rows + i]);
            else
              REQUIRE(got == -7.f);  // the rest of the row is left alone
          }
      }
    }
  }
}

TEST_CASE("residual: the fused kernel equals decode-then-score in double, every strategy, salience, lengths", "[oracle]") {
  // dim 13: a last component quad of one component (partial code bytes at every panel width and nbits).
  const std::size_t dim = GENERATE(24, 13);
  const auto x = aligner_test::clustered_tokens(4000, dim, 20, 77);
  // A build without AVX-512 flags runs the VNNI path at run time where the CPU has AVX512-VNNI and VBMI; with the
  // run-time AVX-512 engines off it takes the vector path. Both are checked.
  const bool run_time_avx512 = GENERATE(true, false);
  struct restore_avx512 {
    bool was = aligner::detail::avx512_switch().load() != 0;
    ~restore_avx512() { aligner::set_avx512_enabled(was); }
  } restore_wide;
  aligner::set_avx512_enabled(run_time_avx512);
  std::printf("residual kernel, dim %zu, run-time AVX-512 %s: %s\n", dim, run_time_avx512 ? "on" : "off", aligner::kernel_info().residual.c_str());
  for (std::size_t nbits : {1, 2, 4, 8}) {
    const auto codec = aligner_test::trained_codec(x, dim, nbits, 32);
    const auto int8 = nbits <= 4 ? aligner_test::residual_int8_values(*codec) : aligner_test::int8_values{};
    // kernel_info names the VNNI tiles exactly when they score this codec's panels (AMX off)
    if (aligner::residual_on_vnni(*codec)) CHECK(aligner::kernel_info().residual.rfind("nbits 1-4: ", 0) == 0);
    if (aligner::residual_on_vnni(*codec)) CHECK(aligner::kernel_info().residual.find("vpdpbusd") != std::string::npos);
    if (!aligner::residual_on_vnni(*codec) && nbits <= 4 && !aligner::bf16_on_amx()) CHECK(aligner::kernel_info().residual.find("vpdpbusd") == std::string::npos);
    // Documents of lengths 0..70 (tails of every size), with salience.
    std::vector<std::int64_t> offsets{0};
    for (std::size_t d = 0; offsets.back() + std::int64_t(d % 71) <= 4000 && d != 90; ++d) offsets.push_back(offsets.back() + std::int64_t(d % 71));
    const std::size_t docs = offsets.size() - 1, tokens = std::size_t(offsets.back());
    const auto ud = aligner_test::random_weights(tokens, 9, true);
    aligner::token_store store(dim, aligner::storage::residual, codec);
    store.add(aligner::sequence_set_view{{x.data(), tokens, dim}, offsets}, ud);
    // The vector path and, where it runs, the AMX path (which rounds query and residuals to bf16) are each checked
    // against a double computation of their own arithmetic. A build of 4- or 8-wide panels gives residual codes to
    // AMX only where the VNNI kernel does not take them (residual_on_amx), so AMX on is run with the run-time VNNI
    // kernel on and off: mode 0 AMX off, 1 AMX on, 2 AMX on and VNNI off.
    for (int mode : {0, 1, 2}) {
    const bool amx = mode != 0;
    if (amx && !aligner::amx_bf16_unavailable_reason().empty()) continue;
    struct restore {
      bool was = aligner::detail::amx_switch().load() != 0, was_vnni = aligner::detail::vnni_switch().load() != 0;
      ~restore() { aligner::set_amx_enabled(was), aligner::set_vnni_enabled(was_vnni); }
    } restore_amx;
    aligner::set_amx_enabled(amx);
    aligner::set_vnni_enabled(mode != 2);
    const bool on_amx = aligner::residual_on_amx(*codec);
    INFO("mode " << mode << ": " << aligner::kernel_info().residual);
    // Which path takes the codes: AMX wherever it runs in a 16-wide build, elsewhere only where VNNI cannot.
    CHECK(on_amx == (amx && (aligner::panel_width<> == 16 || !aligner::residual_vnni_fits(*codec))));
    CHECK(!(on_amx && aligner::residual_on_vnni(*codec)));
    if (on_amx) CHECK(aligner::kernel_info().residual.find("AMX-BF16") != std::string::npos);
    if (on_amx && aligner::panel_width<> != 16 && nbits <= 4) CHECK(aligner::residual_bf16_wide_decode(*codec) == aligner::avx512_vbmi_usable());
    const double rel = 2e-5;
    for (std::size_t n : {1, 3, 4, 9, 21}) {
      const auto q = aligner_test::random_matrix(n, dim, 10 + n, true);
      const auto uq = aligner_test::random_weights(n, 11 + n);
      std::vector<std::int8_t> q8;
      std::vector<float> q8_scales;
      if (nbits <= 4) aligner_test::residual_int8_query(*codec, q, n, q8, q8_scales);
      for (const auto& a : {alignment::top1(), alignment::top_k(3), alignment::top_k(20), alignment::top_p(0.1), alignment::dense()})
        for (bool salience : {false, true}) {
          std::vector<std::uint32_t> which(docs);
          std::iota(which.begin(), which.end(), 0u);
          std::vector<float> got(docs);
          aligner::score_params sp{.strategy = a, .query_salience = salience ? std::span<const float>(uq) : std::span<const float>()};
          aligner::score_packed(aligner::prepared_query({q.data(), n, dim}, sp), store, which, got, salience);
          for (std::size_t d = 0; d != docs; ++d) {
            aligner::score_params rp = sp;
            if (salience) rp.doc_salience = std::span<const float>(ud).subspan(std::size_t(offsets[d]), store.length(d));
            double want = 0;
            // AMX, and the vector path of an AVX512-BF16 build (vdpbf16ps), round query and residuals to bf16; the
            // VNNI path (nbits <= 4 where it is compiled, without AMX) multiplies their int8 forms.
            const bool vnni = aligner::residual_on_vnni(*codec);
            const bool rounded = !vnni && (on_amx || aligner::bf16_rounds_query<>);
            if ((!rounded && !vnni) || a.kind == alignment::kind_t::dense) {  // (dense: q_0 . d_0 in float on every path)
              const auto decoded = store.unpack(d);  // what the codes mean, as floats
              want = aligner::ref::score({q.data(), n, dim}, {decoded.data(), store.length(d), dim}, rp);
            } else {
              const std::size_t m = store.length(d), W = aligner::panel_width<>;
              auto token = [&](std::size_t j, std::size_t c, std::size_t& id) {  // lane j's centroid id and code of c
                const std::uint32_t* panel = store.panels(d) + (j / W) * codec->panel_words(W);
                id = reinterpret_cast<const std::uint16_t*>(panel)[j % W];
                return codec->code_of(panel, W, j % W, c);
              };
              if (vnni) {
                // The VNNI arithmetic: q . centroid in float plus s_i Σ_c q8_ic t_c(code) (the int8 forms, by their rule
                // in test_residual_common.hpp). The integer sum is exact here as in the kernel, so tokens of one
                // centroid whose sums are equal tie exactly in both (and go to the smaller j).
                std::vector<double> S(n * m);
                for (std::size_t i = 0; i != n; ++i)
                  for (std::size_t j = 0; j != m; ++j) {
                    std::int64_t k = 0;
                    double cs = 0;
                    std::size_t id = 0;
                    for (std::size_t c = 0; c != dim; ++c) {
                      const std::size_t code = token(j, c, id);
                      k += std::int64_t(q8[i * dim + c]) * int8.codes[c * codec->levels() + code];
                      cs += double(q[i * dim + c]) * double(codec->centroid(id)[c]);
                    }
                    S[i * m + j] = double(q8_scales[i]) * double(k) + cs;
                  }
                want = score_of_similarities(S, n, m, rp);
              } else {
              // The rounding paths' arithmetic: q . centroid in float plus bf16(q) . bf16(residual), written as one dot
              // product of [q, bf16(q)] with [centroid, bf16(residual)].
              std::vector<float> q2(n * 2 * dim), d2(m * 2 * dim);
              for (std::size_t i = 0; i != n; ++i)
                for (std::size_t c = 0; c != dim; ++c)
                  q2[i * 2 * dim + c] = q[i * dim + c], q2[i * 2 * dim + dim + c] = aligner::from_bf16(aligner::to_bf16(q[i * dim + c]));
              for (std::size_t j = 0; j != m; ++j)
                for (std::size_t c = 0; c != dim; ++c) {
                  std::size_t id = 0;
                  const std::size_t code = token(j, c, id);
                  d2[j * 2 * dim + c] = codec->centroid(id)[c];
                  d2[j * 2 * dim + dim + c] = aligner::from_bf16(aligner::to_bf16(codec->values()[c * codec->levels() + code]));
                }
              want = aligner::ref::score({q2.data(), n, 2 * dim}, {d2.data(), m, 2 * dim}, rp);
              }
            }
            INFO("amx " << amx << " nbits " << nbits << " n " << n << " " << a.name() << " salience " << salience << " doc " << d << " length " << store.length(d));
            REQUIRE(std::abs(double(got[d]) - want) <= rel * (1.0 + std::abs(want)));
          }
          // explain reproduces the kernel's score
          const auto e = aligner::explain_packed(aligner::prepared_query({q.data(), n, dim}, sp), store, 40, salience);
          CHECK(e.score == got[40]);
        }
    }
    }
  }
}


TEST_CASE("residual: the VNNI query form follows the int8 rule: bytes, scales, the bias that cancels the unsigned offset", "[oracle]") {
  for (std::size_t dim : {1, 3, 4, 5, 37, 128}) {
    const auto x = aligner_test::clustered_tokens(400, dim, 5, dim + 21);
    for (std::size_t nbits : {1, 2, 4}) {
      const auto codec = aligner_test::trained_codec(x, dim, nbits, 8);
      const std::size_t n = 6, words = (dim + 3) / 4;
      auto q = aligner_test::random_matrix(n, dim, dim + nbits, true);
      std::fill(q.begin() + dim, q.begin() + 2 * dim, 0.f);  // row 1: zeros (scale 0, every code 0)
      std::fill(q.begin() + 2 * dim, q.begin() + 3 * dim, 0.f);
      q[2 * dim + dim / 2] = -3.5f;  // row 2: one component
      std::vector<std::int8_t> codes;
      std::vector<float> scales;
      aligner_test::residual_int8_query(*codec, q, n, codes, scales);
      aligner::residual_i8_query form;
      form.bias.assign(1, 99);  // stale contents are replaced
      aligner::residual_query_to_i8({q.data(), n, dim}, *codec, form);
      INFO("dim " << dim << " nbits " << nbits);
      REQUIRE(form.quads.size() == n * words);
      REQUIRE(form.scales.size() == n);
      REQUIRE(form.bias.size() == n);
      CHECK(scales[1] == 0.f);
      for (std::size_t i = 0; i != n; ++i) {
        REQUIRE(form.scales[i] == scales[i]);
        std::int64_t sum = 0;
        for (std::size_t c = 0; c != 4 * words; ++c) {
          const auto byte = std::int8_t(std::uint8_t(form.quads[i * words + c / 4] >> (8 * (c % 4))));
          REQUIRE(int(byte) == (c < dim ? int(codes[i * dim + c]) : 0));
          sum += byte;
        }
        REQUIRE(form.bias[i] == -128 * sum);
      }
      CHECK(std::abs(int(codes[2 * dim + dim / 2])) == 127);  // a row's largest component takes the full range
    }
  }
}
