// The ALIGNER score against hand-computed values and the double reference. Built per x86 level.
#include <aligner/math/explain.hpp>
#include <aligner/math/scorer.hpp>
#include <aligner/storage/token_store.hpp>

#include "test_common.hpp"

using aligner::alignment;
using aligner::normalization;
using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;

namespace {
// Q (3 x 2), D (4 x 2), saliences: values checked against an independent Python computation.
const float Q[] = {1.f, 0.f, 0.f, 1.f, 0.6f, 0.8f};
const float D[] = {1.f, 0.f, 0.5f, 0.5f, 0.f, 2.f, -1.f, 1.f};
const std::vector<float> UQ = {1.f, 0.5f, 2.f}, UD = {2.f, 1.f, 0.5f, 3.f};

double rel_tol(double ref) { return 1e-5 * std::max(1.0, std::abs(ref)); }
}  // namespace

TEST_CASE("scorer: hand-computed example", "[golden]") {
  const aligner::matrix_view<float> q(Q, 3, 2), d(D, 4, 2);
  // {k, mean, none, mean with salience, none with salience}
  const double golden[4][5] = {{1, 1.5333333333333332, 4.6, 1.2615384615384615, 4.1},
                               {2, 1.1333333333333333, 6.8, 0.967741935483871, 7.5},
                               {3, 0.8777777777777778, 7.9, 0.7960784313725491, 10.15},
                               {4, 0.5916666666666667, 7.1, 0.3670329670329671, 8.35}};
  for (const auto& g : golden) {
    const alignment a = alignment::top_k(std::size_t(g[0]));
    INFO("k = " << g[0]);
    CHECK_THAT(aligner::score(q, d, {.strategy = a}), WithinAbs(g[1], 1e-6));
    CHECK_THAT(aligner::score(q, d, {.strategy = a, .norm = normalization::none}), WithinAbs(g[2], 1e-5));
    CHECK_THAT(aligner::score(q, d, {.strategy = a, .query_salience = UQ, .doc_salience = UD}), WithinAbs(g[3], 1e-6));
    CHECK_THAT(aligner::score(q, d, {.strategy = a, .norm = normalization::none, .query_salience = UQ, .doc_salience = UD}),
               WithinAbs(g[4], 1e-5));
    CHECK_THAT(aligner::ref::score(q, d, {.strategy = a, .query_salience = UQ, .doc_salience = UD}), WithinAbs(g[3], 1e-7));  // inputs are floats
  }
  // Top-p with m = 4: p = 0.5 -> 2 tokens per row; p = 0.1 -> max(floor(0.4), 1) = 1.
  CHECK_THAT(aligner::score(q, d, {.strategy = alignment::top_p(0.5)}), WithinAbs(golden[1][1], 1e-6));
  CHECK_THAT(aligner::score(q, d, {.strategy = alignment::top_p(0.1)}), WithinAbs(golden[0][1], 1e-6));
  // Dense: only S_00 = 1; with salience A_00 = 1 * 2, the mean is still S_00.
  CHECK_THAT(aligner::score(q, d, {.strategy = alignment::dense()}), WithinAbs(1.0, 1e-7));
  CHECK_THAT(aligner::score(q, d, {.strategy = alignment::dense(), .norm = normalization::none, .query_salience = UQ,
                                   .doc_salience = UD}), WithinAbs(2.0, 1e-7));
}

TEST_CASE("scorer: Top-1 with normalization none is ColBERT MaxSim", "[oracle]") {
  for (std::size_t dim : {1, 16, 100, 128, 300}) {
    const std::size_t n = 32, m = 77;
    const auto q = aligner_test::random_matrix(n, dim, dim, true), d = aligner_test::random_matrix(m, dim, dim + 5, true);
    double maxsim = 0.0;
    for (std::size_t i = 0; i != n; ++i) {
      double best = -1e300;
      for (std::size_t j = 0; j != m; ++j) {
        double s = 0;
        for (std::size_t c = 0; c != dim; ++c) s += double(q[i * dim + c]) * d[j * dim + c];
        best = std::max(best, s);
      }
      maxsim += best;
    }
    const float got = aligner::score({q.data(), n, dim}, {d.data(), m, dim}, {.norm = normalization::none});
    REQUIRE_THAT(double(got), WithinRel(maxsim, 1e-5));
  }
}

TEST_CASE("scorer: every strategy against the double reference on random data", "[oracle]") {
  const std::size_t dim = GENERATE(1, 2, 7, 100, 128, 300);
  const std::vector<std::size_t> sizes = {1, W - 1, W, W + 1, 2 * W + 3, 100};
  const std::vector<alignment> strategies = {alignment::top1(), alignment::top_k(2), alignment::top_k(4), alignment::top_k(8),
                                             alignment::top_k(16), alignment::top_k(33), alignment::top_p(0.01),
                                             alignment::top_p(0.2), alignment::top_p(1.0), alignment::dense()};
  for (std::size_t n : {std::size_t(1), std::size_t(5), std::size_t(32)})
    for (std::size_t m : sizes) {
      if (m == 0) continue;
      const auto q = aligner_test::random_matrix(n, dim, n * 31 + m), d = aligner_test::random_matrix(m, dim, m * 17 + n);
      const auto uq = aligner_test::random_weights(n, n + 1, true), ud = aligner_test::random_weights(m, m + 2, true);
      for (const auto& a : strategies)
        for (auto norm : {normalization::mean, normalization::none})
          for (bool sal : {false, true}) {
            aligner::score_params p{.strategy = a, .norm = norm};
            if (sal) p.query_salience = uq, p.doc_salience = ud;
            const double ref = aligner::ref::score({q.data(), n, dim}, {d.data(), m, dim}, p);
            const double got = aligner::score({q.data(), n, dim}, {d.data(), m, dim}, p);
            INFO("dim " << dim << " n " << n << " m " << m << " " << a.name() << " " << aligner::to_string(norm) << " salience " << sal);
            REQUIRE_THAT(got, WithinAbs(ref, rel_tol(ref) * std::sqrt(double(dim))));
          }
    }
}

TEST_CASE("scorer: batch over documents stored back to back equals per-document scores", "[oracle]") {
  const std::size_t dim = 64, n = 9;
  const std::vector<std::int64_t> offsets = {0, 5, 5, 21, 22, 60, 60, 200};
  const std::size_t total = 200;
  const auto q = aligner_test::random_matrix(n, dim, 1), d = aligner_test::random_matrix(total, dim, 2);
  const auto ud = aligner_test::random_weights(total, 3);
  const aligner::sequence_set_view docs{{d.data(), total, dim}, offsets};
  for (const auto& a : {alignment::top1(), alignment::top_k(3), alignment::top_p(0.05), alignment::dense()}) {
    const auto scores = aligner::score_batch({q.data(), n, dim}, docs, {.strategy = a, .doc_salience = ud});
    REQUIRE(scores.size() == offsets.size() - 1);
    for (std::size_t k = 0; k + 1 < offsets.size(); ++k) {
      const std::size_t len = std::size_t(offsets[k + 1] - offsets[k]);
      const float single = aligner::score({q.data(), n, dim}, docs.sequence(k),
                                          {.strategy = a, .doc_salience = std::span<const float>(ud).subspan(std::size_t(offsets[k]), len)});
      REQUIRE(scores[k] == single);
      if (len == 0) REQUIRE(scores[k] == 0.f);
    }
  }
}

TEST_CASE("scorer: Z == 0, empty sides and k > m", "[edge]") {
  const aligner::matrix_view<float> q(Q, 3, 2), d(D, 4, 2);
  const std::vector<float> zero_q(3, 0.f), zero_d(4, 0.f);
  CHECK(aligner::score(q, d, {.query_salience = zero_q}) == 0.f);
  CHECK(aligner::score(q, d, {.doc_salience = zero_d}) == 0.f);
  CHECK(aligner::score(q, d, {.norm = normalization::none, .doc_salience = zero_d}) == 0.f);
  CHECK(aligner::score(q, aligner::matrix_view<float>(D, 0, 2)) == 0.f);
  CHECK(aligner::score(aligner::matrix_view<float>(Q, 0, 2), d) == 0.f);
  CHECK(aligner::score(aligner::matrix_view<float>(nullptr, 0, 0), d) == 0.f);
  // k > m aligns every token: the mean over all pairs.
  CHECK_THAT(aligner::score(q, d, {.strategy = alignment::top_k(50)}), WithinAbs(0.5916666666666667, 1e-6));
}

TEST_CASE("scorer: ties break toward the smaller document index", "[edge]") {
  const float q[] = {1.f};
  const float d[] = {1.f, 1.f, 0.f};
  const std::vector<float> ud = {1.f, 3.f, 5.f};
  // Top-1 takes j = 0 (weight 1), not j = 1 (weight 3).
  CHECK(aligner::score({q, 1, 1}, {d, 3, 1}, {.norm = normalization::none, .doc_salience = ud}) == 1.f);
  // Top-2 takes j = 0 and j = 1 over j = 2.
  CHECK(aligner::score({q, 1, 1}, {d, 3, 1}, {.strategy = alignment::top_k(2), .norm = normalization::none, .doc_salience = ud}) == 4.f);
}

TEST_CASE("scorer: strided views", "[edge]") {
  std::vector<float> wide(5 * 10);
  const auto base = aligner_test::random_matrix(5, 8, 4);
  for (std::size_t r = 0; r != 5; ++r) std::copy_n(base.data() + r * 8, 8, wide.data() + r * 10);
  const aligner::matrix_view<float> strided(wide.data(), 5, 8, 10), packed(base.data(), 5, 8);
  CHECK(aligner::score(strided, strided) == aligner::score(packed, packed));
  aligner::row_matrix_f em = Eigen::Map<const aligner::row_matrix_f>(base.data(), 5, 8);
  CHECK(aligner::score(em, em) == aligner::score(packed, packed));
}

TEST_CASE("scorer: explain lists the pairs that make the score", "[property]") {
  const std::size_t dim = 20, n = 6, m = 41;
  const auto q = aligner_test::random_matrix(n, dim, 12), d = aligner_test::random_matrix(m, dim, 13);
  const auto uq = aligner_test::random_weights(n, 1), ud = aligner_test::random_weights(m, 2);
  for (const auto& a : {alignment::top1(), alignment::top_k(3), alignment::top_p(0.1), alignment::dense()}) {
    const aligner::score_params p{.strategy = a, .query_salience = uq, .doc_salience = ud};
    const auto e = aligner::explain({q.data(), n, dim}, {d.data(), m, dim}, p);
    const std::size_t rows = a.kind == alignment::kind_t::dense ? 1 : n;
    REQUIRE(e.pairs.size() == rows * a.row_budget(m));
    for (const auto& pr : e.pairs) {
      REQUIRE(pr.query_token < n);
      REQUIRE(pr.doc_token < m);
      REQUIRE_THAT(pr.similarity, WithinAbs(aligner::ref::dot(q.data() + pr.query_token * dim, d.data() + pr.doc_token * dim, dim), 1e-5));
      REQUIRE_THAT(pr.weight, WithinAbs(double(uq[pr.query_token]) * ud[pr.doc_token], 1e-6));
    }
    // The same float engine as score (explain of two matrices compiles only it): the same score, bit for bit.
    REQUIRE(e.score == aligner::score({q.data(), n, dim}, {d.data(), m, dim}, p));
  }
}

TEST_CASE("scorer: bad input throws and names the argument", "[edge]") {
  const aligner::matrix_view<float> q(Q, 3, 2), d(D, 4, 2);
  const float nan_doc[] = {1.f, 0.f, aligner_test::nan_f(), 1.f};
  const float inf_query[] = {aligner_test::inf_f(), 0.f};
  CHECK_THROWS_WITH(aligner::score(q, {nan_doc, 2, 2}), Catch::Contains("document tokens") && Catch::Contains("nan"));
  CHECK_THROWS_WITH(aligner::score({inf_query, 1, 2}, d), Catch::Contains("query") && Catch::Contains("inf"));
  CHECK_NOTHROW(aligner::score(q, {nan_doc, 2, 2}, {.check_finite = false, }) );
  CHECK_THROWS_WITH(aligner::score(q, {D, 2, 4}), Catch::Contains("dim 2") && Catch::Contains("dim 4"));
  CHECK_THROWS_WITH(aligner::score(q, d, {.strategy = alignment::top_k(0)}), Catch::Contains("k = 0"));
  CHECK_THROWS_WITH(aligner::score(q, d, {.strategy = alignment::top_p(0.0)}), Catch::Contains("p = 0"));
  const std::vector<float> short_uq = {1.f};
  CHECK_THROWS_WITH(aligner::score(q, d, {.query_salience = short_uq}), Catch::Contains("query_salience"));
  const std::vector<float> negative_ud = {1.f, -1.f, 1.f, 1.f};
  CHECK_THROWS_WITH(aligner::score(q, d, {.doc_salience = negative_ud}), Catch::Contains("doc_salience[1]"));
  const std::vector<float> nan_ud = {1.f, aligner_test::nan_f(), 1.f, 1.f};
  CHECK_THROWS_AS(aligner::score(q, d, {.doc_salience = nan_ud}), aligner::invalid_argument);
  // Batch: bad offsets and output size; nothing written.
  const std::vector<std::int64_t> bad_offsets = {0, 3, 2, 4};
  std::vector<float> out(3, 42.f);
  CHECK_THROWS_WITH(aligner::score_batch(q, {d, bad_offsets}, out), Catch::Contains("decreases"));
  const std::vector<std::int64_t> short_offsets = {0, 3};
  CHECK_THROWS_WITH(aligner::score_batch(q, {d, short_offsets}, out), Catch::Contains("ends at 3"));
  const std::vector<std::int64_t> good = {0, 1, 2, 4};
  std::vector<float> small(2, 42.f);
  CHECK_THROWS_AS(aligner::score_batch(q, {d, good}, small), aligner::invalid_argument);
  CHECK(out == std::vector<float>(3, 42.f));
  CHECK(small == std::vector<float>(2, 42.f));
}

TEST_CASE("scorer: prepared_query and score_batch over it reject bad input by name", "[edge]") {
  const std::size_t dim = 4;
  const auto q = aligner_test::random_matrix(3, dim, 5), d = aligner_test::random_matrix(6, dim, 6);
  const std::vector<float> ud(6, 1.f);
  CHECK_THROWS_WITH(aligner::prepared_query({q.data(), 3, dim}, {.doc_salience = ud}), Catch::Contains("doc_salience"));
  auto bad = q;
  bad[5] = aligner_test::nan_f();
  CHECK_THROWS_WITH(aligner::prepared_query({bad.data(), 3, dim}), Catch::Contains("query holds a non-finite value"));
  const std::vector<float> short_salience(2, 1.f);
  CHECK_THROWS_WITH(aligner::prepared_query({q.data(), 3, dim}, {.query_salience = short_salience}), Catch::Contains("query_salience"));
  const aligner::prepared_query pq({q.data(), 3, dim});
  const std::int64_t offsets[] = {0, 2, 6};
  std::vector<float> out(2, -7.f);
  const auto wrong_dim = aligner_test::random_matrix(6, dim + 1, 7);
  CHECK_THROWS_WITH(aligner::score_batch(pq, {{wrong_dim.data(), 6, dim + 1}, offsets}, out), Catch::Contains("does not match"));
  CHECK_THROWS_WITH(aligner::score_batch(pq, {{d.data(), 6, dim}, offsets}, out, short_salience), Catch::Contains("doc_salience"));
  CHECK(out == std::vector<float>(2, -7.f));  // nothing written
  aligner::score_batch(pq, {{d.data(), 6, dim}, offsets}, out, ud);
  CHECK_THAT(out[1], WithinAbs(aligner::ref::score({q.data(), 3, dim}, {d.data() + 2 * dim, 4, dim}), 1e-5));
}

TEST_CASE("scorer: a query prepared for one storage scores every storage the same, bit for bit", "[property]") {
  // prepared_query(q, p, st) holds only the forms st's kernels read; a store of another storage converts its own per
  // call. Either way the kernels see the same operands, so every score is the same float.
  const std::size_t dim = 48;
  const aligner_test::random_corpus set(30, 70, dim, 17);
  const auto q = aligner_test::random_matrix(9, dim, 18, true);
  const aligner::score_params p{.strategy = alignment::parse("topk:3")};
  const aligner::storage all[] = {aligner::storage::f32, aligner::storage::bf16, aligner::storage::f16, aligner::storage::i8};
  for (aligner::storage st : all) {
    aligner::token_store store(dim, st);
    store.add(set.view(), {}, false);
    std::vector<std::uint32_t> ids(store.size());
    for (std::size_t i = 0; i != ids.size(); ++i) ids[i] = std::uint32_t(i);
    std::vector<float> want(ids.size());
    aligner::score_packed(aligner::prepared_query({q.data(), 9, dim}, p), store.view(), ids, want);
    for (aligner::storage prepared_for : all) {
      INFO("store " << aligner::to_string(st) << ", query prepared for " << aligner::to_string(prepared_for));
      const aligner::prepared_query pq({q.data(), 9, dim}, p, prepared_for);
      const aligner::prepared_query copy = pq;  // a copy prepares the same forms
      CHECK((pq.bf16_pairs() == nullptr) == (copy.bf16_pairs() == nullptr));
      CHECK((pq.i8_quads() == nullptr) == (copy.i8_quads() == nullptr));
      CHECK((pq.i16_pairs() == nullptr) == (copy.i16_pairs() == nullptr));
      CHECK((pq.wide() == nullptr) == (copy.wide() == nullptr));
      if (prepared_for != aligner::storage::i8) CHECK(pq.i8_quads() == nullptr);
      if (prepared_for != aligner::storage::i8) CHECK(pq.i16_pairs() == nullptr);
      for (const auto* query : {&pq, &copy}) {
        std::vector<float> got(ids.size(), -1.f);
        aligner::score_packed(*query, store.view(), ids, got);
        CHECK(got == want);
      }
      std::vector<float> via_store(ids.size());
      aligner::score_store({q.data(), 9, dim}, store.view(), ids, via_store, p);
      CHECK(via_store == want);
    }
  }
}
