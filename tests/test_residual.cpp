// The residual codec (kernels/residual.hpp, math/residual_training.hpp): every code against the formula, training,
// the retriever, persistence and bad input (the kernels over the codes: test_residual_kernels.cpp).
#include <aligner/aligner.hpp>
#include <aligner/io/index_file.hpp>

#include "test_common.hpp"
#include "test_residual_common.hpp"
#include "test_sections.hpp"

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include <unistd.h>

using aligner::alignment;

namespace {

/// The nearest bucket of residual r in component c: the number of cutoffs <= r, counted here.
std::size_t nearest_bucket(const aligner::residual_codec& codec, std::size_t c, float r) {
  std::size_t bucket = 0;
  for (std::size_t b = 0; b + 1 < codec.levels(); ++b) bucket += codec.cutoffs()[c * (codec.levels() - 1) + b] <= r;
  return bucket;
}

/// |e|^2 + (eta - 1) (u . e)^2 for token x coded as centroid id plus `codes`, in double, written out here.
double score_aware_loss(const aligner::residual_codec& codec, const float* x, std::uint32_t id, const std::vector<std::size_t>& codes,
                        double* parallel = nullptr) {
  double norm = 0, e2 = 0, par = 0;
  for (std::size_t c = 0; c != codec.dim(); ++c) norm += double(x[c]) * x[c];
  for (std::size_t c = 0; c != codec.dim(); ++c) {
    const double e = double(x[c]) - (double(codec.centroid(id)[c]) + double(codec.values()[c * codec.levels() + codes[c]]));
    e2 += e * e;
    par += double(x[c]) * e / std::sqrt(norm);
  }
  if (parallel) *parallel = par;
  return e2 + (codec.anisotropy() - 1) * par * par;
}

}  // namespace

TEST_CASE("residual: every stored code decodes to centroid + value of its bucket, the nearest centroid is chosen", "[oracle]") {
  for (std::size_t dim : {3, 16, 37}) {
    const auto x = aligner_test::clustered_tokens(700, dim, 9, dim);
    for (std::size_t nbits : {1, 2, 4, 8}) {
      INFO("dim " << dim << " nbits " << nbits);
      const auto codec = aligner_test::trained_codec(x, dim, nbits, 12, 1.0);  // nearest buckets (anisotropic codes: the next test)
      REQUIRE(codec->centroids() == 12);
      REQUIRE(codec->anisotropy() == 1.0);
      CHECK(codec->cutoffs().size() == dim * (codec->levels() - 1));
      for (std::size_t c = 0; c != dim; ++c)  // ascending cutoffs
        for (std::size_t b = 0; b + 2 < codec->levels(); ++b) CHECK(codec->cutoffs()[c * (codec->levels() - 1) + b] <= codec->cutoffs()[c * (codec->levels() - 1) + b + 1]);
      aligner::token_store store(dim, aligner::storage::residual, codec);
      const std::int64_t offsets[] = {0, 1, 17, 17, 700};  // lengths 1, 16, 0, 683: tails and an empty one
      store.add(aligner::sequence_set_view{{x.data(), 700, dim}, offsets});
      for (std::size_t s = 0; s != 4; ++s)
        for (std::size_t j = 0; j != store.length(s); ++j) {
          const float* token = x.data() + (std::size_t(offsets[s]) + j) * dim;
          const auto* panel = store.panels(s) + (j / aligner::panel_width<>) * codec->panel_words(aligner::panel_width<>);
          const std::size_t lane = j % aligner::panel_width<>;
          const std::uint32_t id = aligner::residual_codec::centroid_of(panel, lane);
          // Nearest centroid by squared distance in double (float ties aside: the chosen one is within 1e-4).
          double best = 1e300, mine = 0;
          for (std::size_t k = 0; k != codec->centroids(); ++k) {
            double d2 = 0;
            for (std::size_t c = 0; c != dim; ++c) d2 += std::pow(double(token[c]) - codec->centroid(k)[c], 2);
            best = std::min(best, d2);
            if (k == id) mine = d2;
          }
          REQUIRE(mine <= best + 1e-4);
          for (std::size_t c = 0; c != dim; ++c) {
            const float r = token[c] - codec->centroid(id)[c];
            std::size_t bucket = 0;  // the number of cutoffs <= r, counted here
            for (std::size_t b = 0; b + 1 < codec->levels(); ++b) bucket += codec->cutoffs()[c * (codec->levels() - 1) + b] <= r;
            REQUIRE(codec->code_of(panel, aligner::panel_width<>, lane, c) == bucket);
            REQUIRE(store.at(s, j, c) == codec->centroid(id)[c] + codec->values()[c * codec->levels() + bucket]);
          }
        }
      // More bits, smaller error: the mean squared error of the decoded tokens is below the residual's variance.
      double err = 0, var = 0;
      for (std::size_t j = 0; j != store.length(3); ++j)
        for (std::size_t c = 0; c != dim; ++c) {
          const float v = x[(17 + j) * dim + c];
          err += std::pow(double(v) - store.at(3, j, c), 2);
          const std::uint32_t id = aligner::residual_codec::centroid_of(store.panels(3) + (j / aligner::panel_width<>) * codec->panel_words(aligner::panel_width<>), j % aligner::panel_width<>);
          var += std::pow(double(v) - codec->centroid(id)[c], 2);
        }
      CHECK(err < var * (nbits == 1 ? 0.5 : nbits == 2 ? 0.2 : 0.02));
    }
  }
}

TEST_CASE("residual: assign picks the nearest centroid in double through float and bf16 candidate scans", "[oracle]") {
  // Brute force in double here (ties toward the smaller id) against every candidate scan, for centroid counts below,
  // at and above the candidates, duplicated centroids (exact ties), tokens equal to a centroid, and near ties far
  // below float's resolution of the scan scores (|c|^2 ~ 1e4): only the exact choice among candidates gets those.
  using scan = aligner::residual_codec::centroid_scan;
  std::mt19937_64 rng(41);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (std::size_t dim : {1, 3, 16, 37, 100, 128}) {
    for (std::size_t K : {1, 5, 8, 9, 300}) {
      INFO("dim " << dim << " K " << K);
      std::vector<float> centroids(K * dim);
      for (auto& v : centroids) v = normal(rng);
      if (K >= 5)  // centroid 4 duplicates centroid 2: a token nearest to them must get 2
        std::copy_n(centroids.data() + 2 * dim, dim, centroids.data() + 4 * dim);
      const std::size_t levels = 2;
      const aligner::residual_codec codec(dim, 1, centroids, std::vector<float>(dim, 0.f), std::vector<float>(dim * levels, 0.f));
      const std::size_t n = 700;
      std::vector<float> x(n * dim);
      for (std::size_t t = 0; t != n; ++t)
        for (std::size_t c = 0; c != dim; ++c) {
          const std::size_t near = t % K;
          // a third are a centroid plus small noise, a third exactly a centroid, the rest anywhere
          x[t * dim + c] = t % 3 == 0 ? centroids[near * dim + c] + 0.05f * normal(rng)
                         : t % 3 == 1 ? centroids[near * dim + c]
                                      : 1.5f * normal(rng);
        }
      std::vector<std::uint32_t> want(n);
      for (std::size_t t = 0; t != n; ++t) {
        double best = std::numeric_limits<double>::infinity();
        for (std::size_t k = 0; k != K; ++k) {
          double d2 = 0;
          for (std::size_t c = 0; c != dim; ++c) d2 += std::pow(double(x[t * dim + c]) - double(centroids[k * dim + c]), 2);
          if (d2 < best) best = d2, want[t] = std::uint32_t(k);
        }
      }
      for (scan how : {scan::automatic, scan::f32, scan::bf16}) {
        INFO("scan " << int(how));
        std::vector<std::uint32_t> got(n, 99999);
        aligner::scan_workspace ws;
        codec.assign({x.data(), n, dim}, got.data(), ws, how);
        CHECK(got == want);
      }
    }
  }
  // Near ties: two centroids at distances sqrt(2) * 1e-3 and sqrt(2) * 1.01e-3 of a token of norm 1e2 (scan scores
  // near 5e3, float's step there 5e-4, the gap 2e-8), among 40 far ones; each order of the two in id.
  for (std::size_t dim : {16, 100}) {
    for (bool nearer_first : {true, false}) {
      std::vector<float> token(dim);
      for (auto& v : token) v = normal(rng);
      double norm = 0;
      for (float v : token) norm += double(v) * v;
      for (auto& v : token) v = float(v * 100.0 / std::sqrt(norm));
      std::vector<float> centroids(42 * dim);
      for (std::size_t k = 0; k != 42; ++k)
        for (std::size_t c = 0; c != dim; ++c) centroids[k * dim + c] = token[c] + 3.f * normal(rng);
      std::size_t a = nearer_first ? 17 : 23, b = nearer_first ? 23 : 17;  // a is the nearer
      std::copy(token.begin(), token.end(), centroids.begin() + std::ptrdiff_t(a * dim));
      std::copy(token.begin(), token.end(), centroids.begin() + std::ptrdiff_t(b * dim));
      centroids[a * dim + 0] += 1e-3f, centroids[a * dim + 1] -= 1e-3f;
      centroids[b * dim + 2] += 1.01e-3f, centroids[b * dim + 3] -= 1.01e-3f;
      const aligner::residual_codec codec(dim, 1, centroids, std::vector<float>(dim, 0.f), std::vector<float>(dim * 2, 0.f));
      for (scan how : {scan::automatic, scan::f32, scan::bf16}) {
        INFO("dim " << dim << " nearer first " << nearer_first << " scan " << int(how));
        std::uint32_t got = 99999;
        aligner::scan_workspace ws;
        codec.assign({token.data(), 1, dim}, &got, ws, how);
        CHECK(got == a);
      }
    }
  }
}

TEST_CASE("residual: anisotropic codes follow the greedy specification and lower the score-aware loss", "[oracle]") {
  // The specification, recomputed from scratch here: from the nearest buckets, up to 8 times, the single move of one
  // component to a neighbouring bucket with the lowest loss (first in component order, down before up, on ties) is
  // made if it lowers the loss. The encoder updates u . e incrementally; a near tie may then go the other way, so a
  // differing code must have the same loss within 1e-9 and be rare.
  for (std::size_t dim : {16, 37, 100}) {
    auto x = aligner_test::clustered_tokens(600, dim, 7, dim + 5);
    for (std::size_t t = 0; t != 600; ++t) {  // unit tokens, as contextual encoders give
      double n = 0;
      for (std::size_t c = 0; c != dim; ++c) n += double(x[t * dim + c]) * x[t * dim + c];
      for (std::size_t c = 0; c != dim; ++c) x[t * dim + c] = float(x[t * dim + c] / std::sqrt(n));
    }
    for (std::size_t nbits : {1, 2, 4, 8})
      for (double eta : {0.0, 4.0, 1e6}) {
        INFO("dim " << dim << " nbits " << nbits << " eta " << eta);
        const auto codec = aligner_test::trained_codec(x, dim, nbits, 10, eta);
        REQUIRE(codec->anisotropy() == (eta == 0 ? aligner::default_anisotropy(dim) : eta));
        aligner::token_store store(dim, aligner::storage::residual, codec);
        store.add(aligner::sequence_set_view{{x.data(), 600, dim}, std::vector<std::int64_t>{0, 600}});
        double par_shaped = 0, par_nearest = 0, err_shaped = 0, err_nearest = 0;
        std::size_t differ = 0;
        for (std::size_t j = 0; j != 600; ++j) {
          const float* token = x.data() + j * dim;
          const auto* panel = store.panels(0) + (j / aligner::panel_width<>) * codec->panel_words(aligner::panel_width<>);
          const std::size_t lane = j % aligner::panel_width<>;
          const std::uint32_t id = aligner::residual_codec::centroid_of(panel, lane);
          std::vector<std::size_t> got(dim), nearest(dim);
          std::size_t moved = 0;
          for (std::size_t c = 0; c != dim; ++c) {
            got[c] = codec->code_of(panel, aligner::panel_width<>, lane, c);
            nearest[c] = nearest_bucket(*codec, c, token[c] - codec->centroid(id)[c]);
            moved += got[c] > nearest[c] ? got[c] - nearest[c] : nearest[c] - got[c];
            REQUIRE(store.at(0, j, c) == codec->centroid(id)[c] + codec->values()[c * codec->levels() + got[c]]);
          }
          double p1 = 0, p0 = 0;
          const double shaped = score_aware_loss(*codec, token, id, got, &p1), plain = score_aware_loss(*codec, token, id, nearest, &p0);
          REQUIRE(shaped <= plain + 1e-12);
          REQUIRE(moved <= aligner::residual_codec::anisotropic_moves);
          CHECK(codec->anisotropic_loss(token, panel, aligner::panel_width<>, lane) == Approx(shaped).epsilon(1e-9).margin(1e-15));
          std::vector<std::size_t> spec = nearest;
          double spec_loss = plain;
          for (std::size_t move = 0; move != 8 && codec->anisotropy() > 1; ++move) {
            double best = spec_loss;
            std::vector<std::size_t> best_codes;
            for (std::size_t c = 0; c != dim; ++c)
              for (int d : {-1, 1}) {
                if ((d < 0 && spec[c] == 0) || (d > 0 && spec[c] + 1 == codec->levels())) continue;
                auto next = spec;
                next[c] = std::size_t(long(spec[c]) + d);
                if (const double l = score_aware_loss(*codec, token, id, next); l < best) {
                  best = l;
                  best_codes = next;
                }
              }
            if (best_codes.empty()) break;
            spec = best_codes;
            spec_loss = best;
          }
          if (spec != got) {
            ++differ;
            REQUIRE(shaped == Approx(spec_loss).epsilon(1e-9).margin(1e-12));
          }
          par_shaped += p1 * p1;
          par_nearest += p0 * p0;
          for (std::size_t c = 0; c != dim; ++c) {
            const double base = double(token[c]) - codec->centroid(id)[c];
            err_shaped += std::pow(base - codec->values()[c * codec->levels() + got[c]], 2);
            err_nearest += std::pow(base - codec->values()[c * codec->levels() + nearest[c]], 2);
          }
        }
        CHECK(differ <= 6);
        // The error along the tokens shrinks; at the default eta the whole error grows by little.
        if (codec->anisotropy() >= 4 && nbits <= 4) CHECK(par_shaped < 0.5 * par_nearest);
        if (eta == 0) CHECK(err_shaped <= 1.25 * err_nearest + 1e-12);
        UNSCOPED_INFO("differ " << differ << " error ratio " << err_shaped / err_nearest << " parallel ratio " << par_shaped / par_nearest);
      }
  }
}

TEST_CASE("residual: anisotropic codes score a token's near neighbours closer to float than nearest buckets do", "[property]") {
  // Scores q . x' for queries q near x (cosine about 0.8-0.95): the coding error's part along x is what shifts them.
  const std::size_t dim = 64, n = 2000;
  auto x = aligner_test::clustered_tokens(n, dim, 40, 77);
  auto noise = aligner_test::random_matrix(n, dim, 78);
  auto unit = [&](float* v) {
    double s = 0;
    for (std::size_t c = 0; c != dim; ++c) s += double(v[c]) * v[c];
    for (std::size_t c = 0; c != dim; ++c) v[c] = float(v[c] / std::sqrt(s));
  };
  for (std::size_t t = 0; t != n; ++t) unit(x.data() + t * dim);
  std::vector<float> q(x);
  for (std::size_t t = 0; t != n; ++t) {
    for (std::size_t c = 0; c != dim; ++c) q[t * dim + c] += 0.06f * noise[t * dim + c];
    unit(q.data() + t * dim);
  }
  for (std::size_t nbits : {1, 2, 4}) {
    INFO("nbits " << nbits);
    double err[2] = {0, 0};
    for (int shaped = 0; shaped != 2; ++shaped) {
      const auto codec = aligner_test::trained_codec(x, dim, nbits, 32, shaped ? 0.0 : 1.0);
      aligner::token_store store(dim, aligner::storage::residual, codec);
      store.add(aligner::sequence_set_view{{x.data(), n, dim}, std::vector<std::int64_t>{0, std::int64_t(n)}});
      for (std::size_t t = 0; t != n; ++t) {
        double exact = 0, coded = 0;
        for (std::size_t c = 0; c != dim; ++c) {
          exact += double(q[t * dim + c]) * x[t * dim + c];
          coded += double(q[t * dim + c]) * store.at(0, t, c);
        }
        err[shaped] += (exact - coded) * (exact - coded);
      }
    }
    CHECK(err[1] < 0.7 * err[0]);
  }
}

TEST_CASE("residual: a retriever trains its codec on the first add, ranks like float on clustered data, saves and loads", "[property]") {
  const std::size_t dim = 16;
  const auto x = aligner_test::clustered_tokens(3000, dim, 25, 5);
  std::vector<std::int64_t> offsets;
  for (std::int64_t o = 0; o <= 3000; o += 20) offsets.push_back(o);
  const aligner::sequence_set_view docs{{x.data(), 3000, dim}, offsets};
  aligner::aligner_retriever<aligner::exact_backend> f32(aligner::exact_backend(dim), docs);
  aligner::aligner_retriever<aligner::exact_backend> res(aligner::exact_backend(dim),
                                                         aligner::index_params{.precision = aligner::storage::residual,
                                                                               .residual = {.nbits = 4, .centroids = 64}});
  CHECK(res.params().codec == nullptr);
  res.add(docs);
  REQUIRE(res.params().codec != nullptr);
  CHECK(res.params().codec->centroids() == 64);
  CHECK(res.store().precision() == aligner::storage::residual);
  CHECK(res.store().memory_bytes() < f32.store().memory_bytes() / 4);
  const auto q = aligner_test::random_matrix(6, dim, 8, true);
  const aligner::search_params p{.top = 10, .exhaustive = true};
  const auto a = f32.search({q.data(), 6, dim}, p), b = res.search({q.data(), 6, dim}, p);
  std::size_t common = 0;
  for (auto id : b.ids) common += std::count(a.ids.begin(), a.ids.end(), id);
  CHECK(common >= 8);
  // search hit scores = explain = score_packed over the store
  const auto e = res.explain({q.data(), 6, dim}, b.ids[0], p);
  CHECK(e.score == b.scores[0]);
  // remove + filter work on residual stores too
  res.remove(b.ids[0]);
  const auto c = res.search({q.data(), 6, dim}, {.top = 9, .exhaustive = true});
  CHECK(std::vector<std::int64_t>(b.ids.begin() + 1, b.ids.end()) == c.ids);
  // persistence: mapped and read, identical results; a later add encodes with the loaded codec
  const auto path = std::filesystem::temp_directory_path() / ("aligner_residual_" + std::to_string(::getpid()) + ".idx");
  aligner::save_index(res, path);
  for (bool mmap : {true, false}) {
    auto back = aligner::load_index<aligner::exact_backend>(path, {.mmap = mmap});
    REQUIRE(back.params().precision == aligner::storage::residual);
    CHECK(*back.params().codec == *res.params().codec);
    const auto d = back.search({q.data(), 6, dim}, {.top = 9, .exhaustive = true});
    CHECK(d.ids == c.ids);
    CHECK(d.scores == c.scores);
    back.add(aligner::matrix_view<float>(x.data(), 20, dim));
    CHECK(back.store().unpack(back.size() - 1) == back.store().unpack(0));  // same tokens, same codes
  }
  // a corrupt or truncated codec section is refused by name
  const auto file = aligner::io::file_bytes::open(path, false);
  const auto sections = aligner::io::decode_sections(*file);
  aligner_test::forge_section(path, sections, "codec", [](std::string& b) { b.resize(b.size() - 4); });
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("residual codec") && Catch::Contains("truncated"));
  aligner_test::forge_section(path, sections, "codec", [](std::string& b) {
    const std::uint64_t other_dim = 8;
    std::memcpy(b.data(), &other_dim, 8);
  });
  CHECK_THROWS_AS(aligner::load_index<aligner::exact_backend>(path), aligner::io_error);
  aligner_test::forge_section(path, sections, "codec", [](std::string& b) {
    const float nan = aligner_test::nan_f();
    std::memcpy(b.data() + 24, &nan, 4);
  });
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("centroid"));
  std::filesystem::remove(path);
}

TEST_CASE("residual: bad input is refused by name and changes nothing", "[edge]") {
  const std::size_t dim = 8;
  const auto x = aligner_test::clustered_tokens(100, dim, 4, 1);
  const aligner::matrix_view<float> tokens(x.data(), 100, dim);
  CHECK_THROWS_WITH(aligner::train_residual_codec(tokens, {.nbits = 3}), Catch::Contains("nbits must be 1, 2, 4 or 8, got 3"));
  CHECK_THROWS_WITH(aligner::train_residual_codec(tokens, {.centroids = 101}), Catch::Contains("centroids = 101"));
  CHECK_THROWS_WITH(aligner::train_residual_codec(tokens, {.centroids = 70000}), Catch::Contains("centroids = 70000"));
  CHECK_THROWS_AS(aligner::train_residual_codec(aligner::matrix_view<float>(x.data(), 0, dim)), aligner::invalid_argument);
  // Duplicates: more centroids than distinct vectors is refused, the default stays below their count.
  std::vector<float> dup;
  for (int i = 0; i != 50; ++i) dup.insert(dup.end(), x.begin(), x.begin() + 3 * dim);
  CHECK_THROWS_WITH(aligner::train_residual_codec({dup.data(), 150, dim}, {.centroids = 4}), Catch::Contains("distinct"));
  CHECK(aligner::train_residual_codec({dup.data(), 150, dim}).centroids() == 3);
  // A retriever whose codec cannot be trained stays empty.
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim),
                                                       aligner::index_params{.precision = aligner::storage::residual,
                                                                             .residual = {.centroids = 500}});
  CHECK_THROWS_WITH(r.add(tokens), Catch::Contains("centroids = 500"));
  CHECK(r.size() == 0);
  CHECK(r.backend().size() == 0);
  CHECK(r.params().codec == nullptr);
  CHECK_THROWS_WITH((aligner::aligner_retriever<aligner::exact_backend>(
                        aligner::exact_backend(dim), aligner::index_params{.precision = aligner::storage::residual, .residual = {.nbits = 5}})),
                    Catch::Contains("nbits must be 1, 2, 4 or 8, got 5"));
  // A codec of another dimension.
  const auto codec = aligner_test::trained_codec(x, dim, 2, 4);
  CHECK_THROWS_WITH((aligner::aligner_retriever<aligner::exact_backend>(
                        aligner::exact_backend(dim + 1), aligner::index_params{.precision = aligner::storage::residual, .codec = codec})),
                    Catch::Contains("codec has dim 8"));
  CHECK_THROWS_WITH(aligner::token_store(dim + 1, aligner::storage::residual, codec), Catch::Contains("codec has dim 8"));
  // Codec bytes: truncated, padded, bad header.
  const std::string bytes = codec->serialize();
  CHECK(aligner::residual_codec::deserialize(bytes) == *codec);
  // The anisotropy: kept as a float64 after the values when it is not 1; a codec with 1 keeps the older layout.
  const std::size_t base = 24 + 4 * (4 * dim + 3 * dim + 4 * dim);
  REQUIRE(codec->anisotropy() == Approx(aligner::default_anisotropy(dim)));
  CHECK(bytes.size() == base + 8);
  const auto nearest = aligner_test::trained_codec(x, dim, 2, 4, 1.0);
  CHECK(nearest->serialize().size() == base);
  CHECK(aligner::residual_codec::deserialize(nearest->serialize()).anisotropy() == 1.0);
  for (double eta : {1.0, 0.5, std::nan(""), 2e6}) {
    std::string odd = bytes;
    std::memcpy(odd.data() + base, &eta, 8);
    CHECK_THROWS_WITH(aligner::residual_codec::deserialize(odd), Catch::Contains("implausible anisotropy"));
  }
  CHECK_THROWS_WITH(aligner::train_residual_codec(tokens, {.anisotropy = 0.5}), Catch::Contains("anisotropy must be 0 (default) or in [1, "));
  CHECK_THROWS_WITH(aligner::train_residual_codec(tokens, {.anisotropy = std::nan("")}), Catch::Contains("got nan"));
  CHECK_THROWS_WITH(aligner::residual_codec(dim, 1, std::vector<float>(dim), std::vector<float>(dim), std::vector<float>(2 * dim), 0.9),
                    Catch::Contains("anisotropy must be in [1, "));
  CHECK_THROWS_WITH(aligner::residual_codec::deserialize(bytes.substr(0, bytes.size() - 1)), Catch::Contains("truncated"));
  CHECK_THROWS_WITH(aligner::residual_codec::deserialize(bytes + "x"), Catch::Contains("truncated or padded"));
  std::string bad = bytes;
  const std::uint64_t three = 3;
  std::memcpy(bad.data() + 8, &three, 8);
  CHECK_THROWS_WITH(aligner::residual_codec::deserialize(bad), Catch::Contains("nbits 3"));
  std::string unsorted = bytes;  // cutoffs out of order
  const std::size_t cut0 = 24 + 4 * (4 * dim);
  float a, b;
  std::memcpy(&a, unsorted.data() + cut0, 4);
  std::memcpy(&b, unsorted.data() + cut0 + 4, 4);
  if (a != b) {
    std::memcpy(unsorted.data() + cut0, &b, 4);
    std::memcpy(unsorted.data() + cut0 + 4, &a, 4);
    CHECK_THROWS_WITH(aligner::residual_codec::deserialize(unsorted), Catch::Contains("ascending"));
  }
}

TEST_CASE("residual: training is deterministic for a seed and independent of the thread count", "[property]") {
  const std::size_t dim = 12;
  const auto x = aligner_test::clustered_tokens(5000, dim, 30, 2);
  const aligner::matrix_view<float> t(x.data(), 5000, dim);
  const auto a = aligner::train_residual_codec(t, {.nbits = 2, .centroids = 40, .seed = 9, .threads = 1});
  const auto b = aligner::train_residual_codec(t, {.nbits = 2, .centroids = 40, .seed = 9, .threads = 2});
  CHECK(a == b);
  CHECK(aligner::default_centroids(1000000) == 8192);
  CHECK(aligner::default_centroids(52000000) == 65536);
  CHECK(aligner::default_centroids(10) == 10);
}

TEST_CASE("residual: centroid-posting candidates equal a brute-force probe of the codes, ndocs cut included", "[oracle]") {
  const std::size_t dim = 16;
  const auto x = aligner_test::clustered_tokens(3000, dim, 40, 12);
  std::vector<std::int64_t> offsets{0};
  for (std::size_t d = 0; offsets.back() < 3000; ++d) offsets.push_back(std::min<std::int64_t>(3000, offsets.back() + std::int64_t(d % 37)));
  const aligner::sequence_set_view docs{{x.data(), 3000, dim}, offsets};
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim),
                                                       aligner::index_params{.precision = aligner::storage::residual,
                                                                             .residual = {.nbits = 2, .centroids = 48}, .token_index = false});
  r.add(docs);
  CHECK(r.backend().size() == 0);  // codes only
  const auto& codec = *r.params().codec;
  const auto q = aligner_test::random_matrix(5, dim, 13, true);
  // Brute force: each query row's nprobe best centroids (double scores), documents holding one, and the centroid-only
  // score (per row, the best probed centroid the document holds, or, when it holds none, the lowest probed score).
  auto brute = [&](std::size_t nprobe, std::size_t ndocs, const std::function<bool(std::size_t)>& ok) {
    std::vector<std::map<std::size_t, double>> per_row;
    std::vector<double> lowest;
    for (std::size_t i = 0; i != 5; ++i) {
      std::vector<std::pair<float, std::uint32_t>> by;
      for (std::uint32_t k = 0; k != codec.centroids(); ++k) {
        float s = 0.f;  // the kernel's float order is not needed: the scores are far apart
        for (std::size_t c = 0; c != dim; ++c) s += q[i * dim + c] * codec.centroid(k)[c];
        by.emplace_back(-s, k);
      }
      std::sort(by.begin(), by.end());
      std::map<std::size_t, double> best;
      for (std::size_t t = 0; t != nprobe; ++t)
        for (std::size_t d = 0; d != r.size(); ++d)
          for (std::size_t j = 0; j != r.store().length(d); ++j)
            if (aligner::residual_codec::centroid_of(r.store().panels(d) + (j / aligner::panel_width<>) * codec.panel_words(aligner::panel_width<>),
                                                     j % aligner::panel_width<>) == by[t].second && !best.count(d))
              best[d] = -double(by[t].first);
      per_row.push_back(best);
      lowest.push_back(-double(by[nprobe - 1].first));
    }
    std::map<std::size_t, double> approx;
    for (const auto& best : per_row)
      for (auto [d, s] : best) approx[d] = 0;
    for (auto& [d, total] : approx)
      for (std::size_t i = 0; i != 5; ++i) total += per_row[i].count(d) ? per_row[i].at(d) : lowest[i];
    std::vector<std::pair<double, std::size_t>> ranked;
    for (auto [d, s] : approx)
      if (ok(d)) ranked.emplace_back(-s, d);
    std::sort(ranked.begin(), ranked.end());
    if (ndocs && ranked.size() > ndocs) ranked.resize(ndocs);
    std::set<std::int64_t> out;
    for (auto [s, d] : ranked) out.insert(std::int64_t(d));
    return out;
  };
  for (std::size_t nprobe : {1, 3, 48})
    for (std::size_t ndocs : {0, 10}) {
      INFO("nprobe " << nprobe << " ndocs " << ndocs);
      const auto res = r.search({q.data(), 5, dim}, {.top = 1000, .nprobe = nprobe, .ndocs = ndocs});
      const auto want = brute(nprobe, ndocs, [](std::size_t) { return true; });
      CHECK(res.candidates_scored == want.size());
      CHECK(std::set<std::int64_t>(res.ids.begin(), res.ids.end()) == want);
      CHECK(res.backend_hits == 5 * nprobe);
    }
  // Probing every centroid finds every non-empty document: the exhaustive ranking.
  const auto all = r.search({q.data(), 5, dim}, {.top = 30, .nprobe = codec.centroids()});
  const auto ex = r.search({q.data(), 5, dim}, {.top = 30, .exhaustive = true});
  CHECK(all.ids == ex.ids);
  CHECK(all.scores == ex.scores);
  // Removed and filtered documents are never candidates; a short filtered result falls back to every allowed one.
  r.remove(ex.ids[0]);
  const auto after = r.search({q.data(), 5, dim}, {.top = 29, .nprobe = codec.centroids()});
  CHECK(std::vector<std::int64_t>(ex.ids.begin() + 1, ex.ids.end()) == after.ids);
  const auto odd = r.search({q.data(), 5, dim}, {.top = 5, .nprobe = 1, .filter = [](std::int64_t d) { return d % 2 == 1; }});
  CHECK(odd.ids.size() == 5);
  for (auto id : odd.ids) CHECK(id % 2 == 1);
  // Searching without candidates of either kind is refused by name.
  CHECK_THROWS_WITH(r.search({q.data(), 5, dim}, {.candidates_per_token = 10}), Catch::Contains("no token index"));
  CHECK_THROWS_WITH(r.search({q.data(), 5, dim}, {.ndocs = 5}), Catch::Contains("no token index"));  // ndocs cuts either kind
  const aligner::aligner_retriever<aligner::exact_backend> plain(aligner::exact_backend(dim), docs);
  CHECK_THROWS_WITH(plain.search({q.data(), 5, dim}, {.nprobe = 2}), Catch::Contains("nprobe = 2 needs a residual token store"));
  // A codes-only index saves and loads as one, postings rebuilt from the codes.
  const auto path = std::filesystem::temp_directory_path() / ("aligner_postings_res_" + std::to_string(::getpid()) + ".idx");
  aligner::save_index(r, path);
  const auto back = aligner::load_index<aligner::exact_backend>(path);
  CHECK(!back.params().token_index);
  const aligner::search_params p{.top = 20, .nprobe = 3, .ndocs = 15};
  const auto a = r.search({q.data(), 5, dim}, p), b = back.search({q.data(), 5, dim}, p);
  CHECK(a.ids == b.ids);
  CHECK(a.scores == b.scores);
  std::filesystem::remove(path);
}

TEST_CASE("residual: a file whose codes name a centroid the codec lacks is refused (valid checksums)", "[edge]") {
  const std::size_t dim = 8;
  const auto x = aligner_test::clustered_tokens(200, dim, 5, 3);
  const std::int64_t offsets[] = {0, 100, 200};
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim),
                                                       aligner::index_params{.precision = aligner::storage::residual,
                                                                             .residual = {.centroids = 6}});
  r.add(aligner::sequence_set_view{{x.data(), 200, dim}, offsets});
  const auto path = std::filesystem::temp_directory_path() / ("aligner_residual_ids_" + std::to_string(::getpid()) + ".idx");
  aligner::save_index(r, path);
  const auto file = aligner::io::file_bytes::open(path, false);
  const auto sections = aligner::io::decode_sections(*file);
  aligner_test::forge_section(path, sections, "panels", [](std::string& b) {
    const std::uint16_t bad = 6;  // lane 1 of panel 0 names centroid 6 of 6
    std::memcpy(b.data() + 2, &bad, 2);
  });
  for (bool mmap : {true, false})
    CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path, {.mmap = mmap}), Catch::Contains("names centroid 6 of 6"));
  std::filesystem::remove(path);
}
