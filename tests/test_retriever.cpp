#include <aligner/aligner.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>

#include "test_common.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <set>

using aligner::alignment;
using aligner::normalization;
using Catch::Matchers::WithinAbs;

namespace {

using corpus = aligner_test::random_corpus;

corpus make_corpus(std::size_t docs, std::size_t max_len, std::size_t dim, std::uint64_t seed) {
  return corpus(docs, max_len, dim, seed);
}

/// Brute force: every non-empty, allowed document scored with the scorer, sorted (score desc, id asc).
std::vector<std::pair<std::int64_t, float>> brute_force(const corpus& c, aligner::matrix_view<float> q, const aligner::score_params& p,
                                                        bool with_salience, bool include_empty, std::size_t top,
                                                        const std::function<bool(std::int64_t)>& allowed = {}) {
  std::vector<std::pair<std::int64_t, float>> all;
  const auto v = c.view();
  for (std::size_t d = 0; d != v.size(); ++d) {
    if (!include_empty && v.length(d) == 0) continue;
    if (allowed && !allowed(std::int64_t(d))) continue;
    aligner::score_params sp = p;
    if (with_salience) sp.doc_salience = std::span<const float>(c.salience).subspan(std::size_t(c.offsets[d]), v.length(d));
    all.emplace_back(std::int64_t(d), aligner::score(q, v.sequence(d), sp));
  }
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); });
  if (all.size() > top) all.resize(top);
  return all;
}

void require_same(const aligner::search_result& got, const std::vector<std::pair<std::int64_t, float>>& want) {
  REQUIRE(got.ids.size() == want.size());
  for (std::size_t r = 0; r != want.size(); ++r) {
    INFO("rank " << r);
    REQUIRE(got.ids[r] == want[r].first);
    REQUIRE(got.scores[r] == want[r].second);
  }
}

}  // namespace

TEST_CASE("exact backend: top-k equals a sort of every inner product", "[oracle]") {
  const std::size_t dim = 24, n = 5000;
  const auto x = aligner_test::random_matrix(n, dim, 1);
  aligner::exact_backend b(dim);
  b.add({x.data(), 1234, dim});  // two adds: ids continue
  b.add({x.data() + 1234 * dim, n - 1234, dim});
  REQUIRE(b.size() == n);
  const auto q = aligner_test::random_matrix(19, dim, 2);
  for (std::size_t k : {1, 7, 100, 6000}) {
    const auto res = b.search({q.data(), 19, dim}, k);
    for (std::size_t i = 0; i != 19; ++i) {
      std::vector<std::pair<double, std::int64_t>> all;
      for (std::size_t t = 0; t != n; ++t) all.emplace_back(aligner::ref::dot(q.data() + i * dim, x.data() + t * dim, dim), t);
      std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
      // Tie-tolerant: rank r holds a vector whose true score equals the r-th best score (float vs double order
      // may swap near-ties), and no id repeats.
      std::set<std::int64_t> seen;
      for (std::size_t r = 0; r != std::min(k, n); ++r) {
        const std::int64_t id = res.ids_of(i)[r];
        REQUIRE(seen.insert(id).second);
        REQUIRE_THAT(aligner::ref::dot(q.data() + i * dim, x.data() + std::size_t(id) * dim, dim), WithinAbs(all[r].first, 1e-5));
        REQUIRE_THAT(res.scores_of(i)[r], WithinAbs(all[r].first, 1e-5));
      }
      for (std::size_t r = n; r < k; ++r) {
        REQUIRE(res.ids_of(i)[r] == -1);
        REQUIRE(res.scores_of(i)[r] == -std::numeric_limits<float>::infinity());
      }
    }
  }
  CHECK_THROWS_AS(b.search({q.data(), 1, dim}, 0), aligner::invalid_argument);
  CHECK_THROWS_WITH(b.search({q.data(), 1, dim - 1}, 3), Catch::Contains("dim 23"));
  CHECK_THROWS_AS(b.add({q.data(), 1, dim - 1}), aligner::invalid_argument);
}

TEST_CASE("exact backend: ties toward the smaller id", "[edge]") {
  aligner::exact_backend b(2);
  const float x[] = {1, 0, 1, 0, 0, 1, 1, 0};
  b.add({x, 4, 2});
  const float q[] = {1, 0};
  const auto res = b.search({q, 1, 2}, 2);
  CHECK(res.ids == std::vector<std::int64_t>{0, 1});
}

TEST_CASE("exact backend: exact ties across chunks and compactions keep the smaller ids", "[oracle]") {
  // Components in {-1, 0, 1}: every inner product is a small integer, exact in float, so ties are everywhere and
  // the order (score desc, id asc) is fully determined. 40k tokens span several scan chunks at every dim here,
  // and k' from 1 to 9000 exercises the threshold, many compactions, and k' larger than one chunk.
  for (std::size_t dim : {3, 8, 37}) {
    const std::size_t n = 40000, rows = 7;
    std::vector<float> x(n * dim), q(rows * dim);
    std::uint64_t state = 12345 + dim;
    auto next = [&] { state = state * 6364136223846793005ull + 1442695040888963407ull; return float(int(state >> 62) % 3 - 1); };
    for (auto& v : x) v = next();
    for (auto& v : q) v = next();
    aligner::exact_backend b(dim);
    b.add({x.data(), n, dim});
    for (std::size_t k : {1, 5, 100, 3000, 9000}) {
      INFO("dim " << dim << " k " << k);
      const auto res = b.search({q.data(), rows, dim}, k);
      for (std::size_t i = 0; i != rows; ++i) {
        std::vector<std::pair<double, std::int64_t>> all;
        for (std::size_t t = 0; t != n; ++t) all.emplace_back(aligner::ref::dot(q.data() + i * dim, x.data() + t * dim, dim), t);
        std::stable_sort(all.begin(), all.end(), [](auto& a, auto& c) { return a.first > c.first; });
        for (std::size_t r = 0; r != k; ++r) {
          REQUIRE(res.ids_of(i)[r] == all[r].second);
          REQUIRE(double(res.scores_of(i)[r]) == all[r].first);
        }
      }
    }
  }
}

TEST_CASE("retriever: exact backend with k' reaching every document equals brute force", "[oracle]") {
  const std::size_t dim = 32;
  const auto c = make_corpus(120, 40, dim, 7);
  const auto queries = make_corpus(4, 12, dim, 99);
  for (double beta : {1.0, 0.3}) {
    for (bool salience : {false, true}) {
      if (beta < 1.0 && !salience) continue;  // pruning needs salience
      aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), {.doc_prune = beta},
                                                           salience ? std::span<const float>(c.salience) : std::span<const float>());
      if (beta < 1.0) REQUIRE(r.indexed_tokens() < std::size_t(c.offsets.back()));
      for (const auto& a : {alignment::top1(), alignment::top_k(3), alignment::top_p(0.1), alignment::dense()})
        for (auto norm : {normalization::mean, normalization::none})
          for (std::size_t q = 0; q != queries.view().size(); ++q) {
            const auto qv = queries.view().sequence(q);
            if (qv.rows == 0) continue;
            aligner::search_params p{.strategy = a, .norm = norm, .candidates_per_token = r.indexed_tokens(), .top = 50};
            INFO("beta " << beta << " salience " << salience << " " << a.name() << " query " << q);
            const auto got = r.search(qv, p);
            require_same(got, brute_force(c, qv, {.strategy = a, .norm = norm}, salience, false, 50));
            CHECK(got.tokens_searched == qv.rows);
            // Exhaustive mode also reaches the empty documents (score 0).
            p.exhaustive = true;
            require_same(r.search(qv, p), brute_force(c, qv, {.strategy = a, .norm = norm}, salience, true, 50));
          }
    }
  }
}

TEST_CASE("retriever: query pruning searches fewer tokens but reranks with all", "[property]") {
  const std::size_t dim = 16;
  const auto c = make_corpus(60, 30, dim, 3);
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view());
  const auto q = aligner_test::random_matrix(10, dim, 5, true);
  const auto uq = aligner_test::random_weights(10, 6);
  const aligner::search_params p{.candidates_per_token = r.indexed_tokens(), .top = 60, .query_prune = 0.5, .query_salience = uq};
  const auto got = r.search({q.data(), 10, dim}, p);
  CHECK(got.tokens_searched == 5);
  CHECK(got.query_tokens_pruned == 5);
  // Every non-empty document is still a candidate (k' reaches all), and scores use all 10 query tokens.
  require_same(got, brute_force(c, {q.data(), 10, dim}, {.query_salience = uq}, false, false, 60));
}

TEST_CASE("retriever: filter, remove, add, explain", "[property]") {
  const std::size_t dim = 16;
  const auto c = make_corpus(50, 20, dim, 11);
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view());
  const auto q = aligner_test::random_matrix(6, dim, 12, true);
  aligner::search_params p{.candidates_per_token = 10000, .top = 100};
  const auto all = r.search({q.data(), 6, dim}, p);
  REQUIRE(all.ids.size() >= 3);
  // Filter: even ids only.
  p.filter = [](std::int64_t id) { return id % 2 == 0; };
  const auto even = r.search({q.data(), 6, dim}, p);
  for (auto id : even.ids) CHECK(id % 2 == 0);
  require_same(even, brute_force(c, {q.data(), 6, dim}, {}, false, false, 100, p.filter));
  p.filter = {};
  // Remove the best document: it is gone, the rest keep their order.
  const std::int64_t best = all.ids[0];
  r.remove(best);
  CHECK(r.is_removed(best));
  CHECK(r.live_size() == 49);
  const auto after = r.search({q.data(), 6, dim}, p);
  CHECK(std::find(after.ids.begin(), after.ids.end(), best) == after.ids.end());
  CHECK(after.ids[0] == all.ids[1]);
  p.exhaustive = true;
  const auto after_ex = r.search({q.data(), 6, dim}, p);
  CHECK(std::find(after_ex.ids.begin(), after_ex.ids.end(), best) == after_ex.ids.end());
  p.exhaustive = false;
  CHECK_THROWS_WITH(r.remove(best), Catch::Contains("already removed"));
  CHECK_THROWS_WITH(r.remove(50), Catch::Contains("unknown document id 50"));
  CHECK_THROWS_AS(r.remove(-1), aligner::invalid_argument);
  // Add a document identical to the query: it must come first.
  const std::int64_t id = r.add(aligner::matrix_view<float>(q.data(), 6, dim));
  CHECK(id == 50);
  const auto with_new = r.search({q.data(), 6, dim}, p);
  CHECK(with_new.ids[0] == 50);
  CHECK_THAT(with_new.scores[0], WithinAbs(1.0, 1e-5));
  // Explain: pairs of the new document are the diagonal.
  const auto e = r.explain({q.data(), 6, dim}, 50);
  REQUIRE(e.pairs.size() == 6);
  for (const auto& pr : e.pairs) CHECK(pr.query_token == pr.doc_token);
  CHECK_THAT(e.score, WithinAbs(with_new.scores[0], 1e-6));
  CHECK_THROWS_AS(r.explain({q.data(), 6, dim}, 99), aligner::invalid_argument);
  // A removed document is never a hit: explaining it is refused by name.
  CHECK_THROWS_WITH(r.explain({q.data(), 6, dim}, best), Catch::Contains("was removed"));
}

TEST_CASE("retriever: batch search equals serial search", "[property]") {
  const std::size_t dim = 16;
  const auto c = make_corpus(200, 30, dim, 21);
  const auto queries = make_corpus(23, 10, dim, 22);
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), {.doc_prune = 0.5}, c.salience);
  const aligner::search_params p{.strategy = alignment::top_k(2), .candidates_per_token = 20, .top = 10};
  for (unsigned threads : {1u, 2u, 4u}) {
    const auto batch = r.search_batch(queries.view(), p, {}, threads);
    REQUIRE(batch.size() == 23);
    for (std::size_t q = 0; q != 23; ++q) {
      const auto one = r.search(queries.view().sequence(q), p);
      REQUIRE(batch[q].ids == one.ids);
      REQUIRE(batch[q].scores == one.scores);
      REQUIRE(batch[q].candidates_scored == one.candidates_scored);
    }
  }
}

TEST_CASE("retriever: one search's rerank on several threads equals one thread bit for bit, every storage", "[property]") {
  // search_params.threads shares a search's candidates out in chunks of at least 16 documents: 700 documents give
  // every thread several chunks, 20 candidates (ndocs) one chunk (scored on the calling thread).
  const std::size_t dim = 24;
  const auto c = make_corpus(700, 40, dim, 41);
  const auto queries = make_corpus(4, 12, dim, 42);
  const alignment grid[] = {alignment::top1(), alignment::top_k(3), alignment::top_p(0.1)};
  for (auto precision : {aligner::storage::f32, aligner::storage::bf16, aligner::storage::i8, aligner::storage::residual}) {
    INFO("storage " << aligner::to_string(precision));
    aligner::index_params ip{.precision = precision};
    ip.residual.centroids = 64;
    aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), ip, c.salience);
    std::vector<aligner::search_params> params = {{.strategy = alignment::top_k(2), .top = 50, .exhaustive = true},
                                                  {.candidates_per_token = 30, .top = 40},
                                                  {.candidates_per_token = 30, .top = 10, .ndocs = 20}};
    if (precision == aligner::storage::residual) params.push_back({.top = 30, .nprobe = 3});
    for (const auto& p : params) {
      for (std::size_t q = 0; q != queries.view().size(); ++q) {
        const auto query = queries.view().sequence(q);
        const auto one = r.search(query, p);
        const auto multi_one = r.search_multi(query, grid, p);
        for (unsigned threads : {2u, 3u, 0u}) {
          INFO("threads " << threads << " nprobe " << p.nprobe << " ndocs " << p.ndocs << " exhaustive " << p.exhaustive);
          aligner::search_params pt = p;
          pt.threads = threads;
          const auto many = r.search(query, pt);
          REQUIRE(many.ids == one.ids);
          REQUIRE(many.scores == one.scores);
          REQUIRE(many.candidates_scored == one.candidates_scored);
          const auto multi = r.search_multi(query, grid, pt);
          for (std::size_t g = 0; g != 3; ++g) {
            REQUIRE(multi[g].ids == multi_one[g].ids);
            REQUIRE(multi[g].scores == multi_one[g].scores);
          }
        }
      }
    }
    // A batch spreads its queries over its own threads: a per-search thread count is refused by name.
    aligner::search_params bad{.threads = 2};
    CHECK_THROWS_WITH(r.search_batch(queries.view(), bad), Catch::Contains("search_params.threads must be 1, got 2"));
    const alignment two[] = {alignment::top1(), alignment::top_k(2)};
    CHECK_THROWS_WITH(r.search_batch_multi(queries.view(), two, bad), Catch::Contains("search_params.threads"));
  }
}

TEST_CASE("retriever: exhaustive batches sweep each document once for a block of queries, equal bit for bit to serial searches",
          "[oracle]") {
  // Queries of 0 to 40 rows (an empty one, and one of 600 rows: longer than a block's 512, reranked alone), every
  // storage, strategies with and without weights, a filter, removed documents, query salience given or not.
  const std::size_t dim = 19;  // a tail after whole panels of pairs and quads
  const auto c = make_corpus(90, 40, dim, 41);
  const auto long_query = aligner_test::random_matrix(600, dim, 43, true);
  auto qs = make_corpus(21, 40, dim, 42);
  std::vector<float> rows;
  std::vector<std::int64_t> offsets{0};
  auto push = [&](aligner::matrix_view<float> q) {
    for (std::size_t i = 0; i != q.rows; ++i) rows.insert(rows.end(), q.row(i), q.row(i) + dim);
    offsets.push_back(offsets.back() + std::int64_t(q.rows));
  };
  for (std::size_t q = 0; q != 21; ++q) {
    if (q == 5) offsets.push_back(offsets.back());  // an empty query
    if (q == 11) push({long_query.data(), 600, dim});
    push(qs.view().sequence(q));
  }
  const aligner::sequence_set_view queries{{rows.data(), rows.size() / dim, dim}, offsets};
  std::vector<float> uq(rows.size() / dim);
  for (std::size_t i = 0; i != uq.size(); ++i) uq[i] = float((i * 7919) % 13) / 12.f;
  const alignment grid[] = {alignment::top1(), alignment::top_k(3), alignment::top_p(0.3), alignment::top_k(40), alignment::dense()};
  for (auto st : {aligner::storage::f32, aligner::storage::bf16, aligner::storage::f16, aligner::storage::i8, aligner::storage::residual}) {
    INFO("storage " << aligner::to_string(st));
    aligner::index_params ip{.precision = st};
    ip.residual.centroids = 16;
    aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), ip, c.salience);
    r.remove(7), r.remove(30);
    for (const auto& strategy : grid)
      for (int variant = 0; variant != 3; ++variant) {
        INFO("strategy " << strategy.name() << ", variant " << variant);
        aligner::search_params p{.strategy = strategy, .norm = variant == 1 ? aligner::normalization::none : aligner::normalization::mean,
                                 .top = 25, .exhaustive = true};
        if (variant == 2) p.filter = [](std::int64_t id) { return id % 3 != 1; };
        const std::span<const float> u = variant == 0 ? std::span<const float>() : std::span<const float>(uq);
        std::vector<aligner::search_result> serial;  // each query searched alone, once for every thread count
        for (std::size_t q = 0; q != queries.size(); ++q) {
          aligner::search_params one_p = p;
          if (!u.empty()) one_p.query_salience = u.subspan(std::size_t(offsets[q]), queries.length(q));
          serial.push_back(r.search(queries.sequence(q), one_p));
        }
        for (unsigned threads : {1u, 2u, 3u}) {
          const auto batch = r.search_batch(queries, p, u, threads);
          REQUIRE(batch.size() == queries.size());
          for (std::size_t q = 0; q != queries.size(); ++q) {
            INFO("query " << q << ", threads " << threads);
            const auto& one = serial[q];
            REQUIRE(batch[q].ids == one.ids);
            REQUIRE(batch[q].scores == one.scores);
            REQUIRE(batch[q].candidates_scored == one.candidates_scored);
            REQUIRE(batch[q].empty_query == one.empty_query);
            REQUIRE(batch[q].reranked_all_allowed == one.reranked_all_allowed);
          }
        }
      }
    CHECK_THROWS_WITH(r.search_batch_multi(queries, {}, {.exhaustive = true}), Catch::Contains("needs at least one strategy"));
    // A block's scores stay within 2^23 floats: fewer queries a block over many documents and strategies.
    CHECK(aligner::detail::stack_members_for(90, 5) == 8);
    CHECK(aligner::detail::stack_members_for(259'000, 6) == 5);
    CHECK(aligner::detail::stack_members_for(3'000'000, 6) == 1);
    CHECK(aligner::detail::stack_members_for(0, 0) == 8);
    const std::vector<aligner::search_params> per(queries.size(), aligner::search_params{.exhaustive = true});
    for (std::size_t most : {1u, 3u, 8u}) {
      const auto blocks = aligner::detail::query_blocks(queries, per, 1, false, most);
      CHECK(blocks.empty() == (most == 1));
      for (const auto& [q0, q1] : blocks) CHECK(q1 - q0 <= most);
    }
    // Several strategies at once, with and without the dense one.
    for (bool with_dense : {false, true}) {
      std::vector<alignment> strategies(std::begin(grid), std::end(grid) - 1);
      if (with_dense) strategies.insert(strategies.begin() + 1, alignment::dense());
      const aligner::search_params p{.top = 12, .exhaustive = true};
      const auto batch = r.search_batch_multi(queries, strategies, p, uq, 2);
      REQUIRE(batch.size() == queries.size());
      for (std::size_t q = 0; q != queries.size(); ++q) {
        aligner::search_params one_p = p;
        one_p.query_salience = std::span<const float>(uq).subspan(std::size_t(offsets[q]), queries.length(q));
        const auto one = r.search_multi(queries.sequence(q), strategies, one_p);
        REQUIRE(batch[q].size() == one.size());
        for (std::size_t g = 0; g != one.size(); ++g) {
          INFO("query " << q << ", strategy " << strategies[g].name());
          REQUIRE(batch[q][g].ids == one[g].ids);
          REQUIRE(batch[q][g].scores == one[g].scores);
        }
      }
    }
  }
}

/// exact_backend counting its searches and the rows they held; declares rows_independent as exact_backend does, or
/// not (then the retriever must search query by query).
template <bool Independent>
struct counting_backend {
  static constexpr bool rows_independent = Independent;
  aligner::exact_backend inner;
  std::shared_ptr<std::atomic<std::size_t>> calls = std::make_shared<std::atomic<std::size_t>>(0);
  std::shared_ptr<std::atomic<std::size_t>> rows = std::make_shared<std::atomic<std::size_t>>(0);
  std::size_t dim() const { return inner.dim(); }
  std::size_t size() const { return inner.size(); }
  void add(aligner::matrix_view<float> v) { inner.add(v); }
  aligner::topk_result search(aligner::matrix_view<float> q, std::size_t k) const {
    ++*calls, *rows += q.rows;
    return inner.search(q, k);
  }
  aligner::topk_result search(aligner::matrix_view<float> q, std::size_t k, const aligner::id_filter& keep) const {
    ++*calls, *rows += q.rows;
    return inner.search(q, k, keep);
  }
};
static_assert(aligner::rows_independent_backend<aligner::exact_backend>);
static_assert(aligner::rows_independent_backend<counting_backend<true>>);
static_assert(!aligner::rows_independent_backend<counting_backend<false>>);

TEST_CASE("retriever: token-search batches search a block's rows together, equal bit for bit to serial searches", "[oracle]") {
  // 40 queries of 0 to 14 rows (one empty, one of 70 rows: more than a block's 64, searched alone), the exact
  // backend's three storages, β^q with query salience, a filter, allowed_ids (small: reranked whole; large), removed
  // documents, the ndocs cut, k' of 1 and 7, 1-3 threads, several strategies at once.
  const std::size_t dim = 19;
  const auto c = make_corpus(150, 30, dim, 51);
  const auto long_query = aligner_test::random_matrix(70, dim, 53, true);
  const auto qs = make_corpus(38, 14, dim, 52);
  std::vector<float> rows;
  std::vector<std::int64_t> offsets{0};
  auto push = [&](aligner::matrix_view<float> q) {
    for (std::size_t i = 0; i != q.rows; ++i) rows.insert(rows.end(), q.row(i), q.row(i) + dim);
    offsets.push_back(offsets.back() + std::int64_t(q.rows));
  };
  for (std::size_t q = 0; q != 38; ++q) {
    if (q == 4) offsets.push_back(offsets.back());
    if (q == 20) push({long_query.data(), 70, dim});
    push(qs.view().sequence(q));
  }
  const aligner::sequence_set_view queries{{rows.data(), rows.size() / dim, dim}, offsets};
  std::vector<float> uq(rows.size() / dim);
  for (std::size_t i = 0; i != uq.size(); ++i) uq[i] = float((i * 7919) % 17) / 16.f;
  std::vector<std::int64_t> few{3, 9, 40}, many;
  for (std::int64_t d = 0; d < 150; d += 2) many.push_back(d);
  for (auto token_storage : {aligner::storage::f32, aligner::storage::bf16, aligner::storage::i8}) {
    INFO("token storage " << aligner::to_string(token_storage));
    const aligner::index_params ip{.doc_prune = 0.6, .precision = token_storage == aligner::storage::i8 ? aligner::storage::i8 : aligner::storage::f32};
    aligner::aligner_retriever<counting_backend<true>> r(counting_backend<true>{aligner::exact_backend(dim, token_storage)}, c.view(), ip, c.salience);
    aligner::aligner_retriever<counting_backend<false>> alone(counting_backend<false>{aligner::exact_backend(dim, token_storage)}, c.view(), ip,
                                                              c.salience);
    r.remove(7), r.remove(30), alone.remove(7), alone.remove(30);
    for (int variant = 0; variant != 6; ++variant) {
      INFO("variant " << variant);
      aligner::search_params p{.strategy = variant % 2 ? alignment::top_k(2) : alignment::top1(), .candidates_per_token = variant == 3 ? 1u : 7u,
                               .top = 12};
      std::span<const float> u;
      if (variant == 1 || variant == 4) {
        p.query_prune = 0.5;
        u = uq;
      }
      if (variant == 2) p.filter = [](std::int64_t id) { return id % 3 != 1; };
      if (variant == 3) p.allowed_ids = few;
      if (variant == 4) p.ndocs = 10;
      if (variant == 5) p.allowed_ids = many;
      for (unsigned threads : {1u, 2u, 3u}) {
        INFO("threads " << threads);
        const std::size_t calls0 = *r.backend().calls, rows0 = *r.backend().rows;
        const auto batch = r.search_batch(queries, p, u, threads);
        const std::size_t batch_calls = *r.backend().calls - calls0, batch_rows = *r.backend().rows - rows0;
        const std::size_t alone0 = *alone.backend().calls;
        const auto unstacked = alone.search_batch(queries, p, u, threads);
        const std::size_t alone_calls = *alone.backend().calls - alone0;
        REQUIRE(batch.size() == queries.size());
        const std::size_t calls1 = *r.backend().calls, rows1 = *r.backend().rows;
        std::size_t searched = 0;
        for (std::size_t q = 0; q != queries.size(); ++q) {
          INFO("query " << q);
          aligner::search_params one_p = p;
          if (!u.empty()) one_p.query_salience = u.subspan(std::size_t(offsets[q]), queries.length(q));
          const std::size_t before = *r.backend().calls;
          const auto one = r.search(queries.sequence(q), one_p);
          searched += *r.backend().calls - before;
          for (const auto* got : {&batch[q], &unstacked[q]}) {
            REQUIRE(got->ids == one.ids);
            REQUIRE(got->scores == one.scores);
            REQUIRE(got->candidates_scored == one.candidates_scored);
            REQUIRE(got->tokens_searched == one.tokens_searched);
            REQUIRE(got->query_tokens_pruned == one.query_tokens_pruned);
            REQUIRE(got->backend_hits == one.backend_hits);
            REQUIRE(got->reranked_all_allowed == one.reranked_all_allowed);
            REQUIRE(got->empty_query == one.empty_query);
          }
        }
        // The serial searches asked the backend at most once each, for the same rows as the batch did in all.
        REQUIRE(*r.backend().calls - calls1 == searched);
        REQUIRE(*r.backend().rows - rows1 == batch_rows);
        REQUIRE(alone_calls == searched);  // a backend without rows_independent: query by query
        REQUIRE(batch_calls <= searched);
        if (variant != 3) {  // (three allowed documents: a query that could reach all their tokens reranks them whole)
          // Blocks of up to 64 rows: about (searched rows / 64) calls, and at least one a thread's share.
          REQUIRE(searched > 30);
          REQUIRE(batch_calls <= batch_rows / 32 + 2 * threads + 1);
          REQUIRE(batch_calls < searched / 3);
        }
      }
    }
    // Several strategies at once.
    const alignment strategies[] = {alignment::top1(), alignment::dense(), alignment::top_p(0.3)};
    const aligner::search_params p{.candidates_per_token = 5, .top = 9};
    const auto batch = r.search_batch_multi(queries, strategies, p, uq, 2);
    for (std::size_t q = 0; q != queries.size(); ++q) {
      aligner::search_params one_p = p;
      one_p.query_salience = std::span<const float>(uq).subspan(std::size_t(offsets[q]), queries.length(q));
      const auto one = r.search_multi(queries.sequence(q), strategies, one_p);
      for (std::size_t g = 0; g != one.size(); ++g) {
        INFO("query " << q << ", strategy " << strategies[g].name());
        REQUIRE(batch[q][g].ids == one[g].ids);
        REQUIRE(batch[q][g].scores == one[g].scores);
      }
    }
  }
}

TEST_CASE("retriever: edge cases and bad input leave the index untouched", "[edge]") {
  const std::size_t dim = 8;
  const auto c = make_corpus(20, 10, dim, 31);
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), {}, c.salience);
  const auto q = aligner_test::random_matrix(3, dim, 32);
  // Empty query: empty result, and the result says why (token search, exhaustive, several strategies).
  const auto empty = r.search(aligner::matrix_view<float>(q.data(), 0, dim));
  CHECK(empty.ids.empty());
  CHECK(empty.empty_query);
  CHECK(r.search(aligner::matrix_view<float>(q.data(), 0, dim), {.exhaustive = true}).empty_query);
  const alignment grid[] = {alignment::top1(), alignment::top_k(2)};
  for (const auto& g : r.search_multi(aligner::matrix_view<float>(q.data(), 0, dim), grid)) CHECK(g.empty_query);
  CHECK_FALSE(r.search({q.data(), 3, dim}).empty_query);
  CHECK_THROWS_WITH(r.search({q.data(), 3, dim - 1}), Catch::Contains("query dim 7"));
  CHECK_THROWS_WITH(r.search({q.data(), 3, dim}, {.candidates_per_token = 0}), Catch::Contains("k') must be >= 1, got 0"));
  CHECK_THROWS_WITH(r.search({q.data(), 3, dim}, {.top = 0}), Catch::Contains("top"));
  CHECK_THROWS_WITH(r.search({q.data(), 3, dim}, {.query_prune = 0.5}), Catch::Contains("needs query_salience"));
  CHECK(r.search({q.data(), 0, dim}, {.query_prune = 0.5}).empty_query);  // no rows, so no salience to prune by
  CHECK_THROWS_AS(r.search({q.data(), 3, dim}, {.query_prune = 1.5}), aligner::invalid_argument);
  CHECK_THROWS_AS(r.search({q.data(), 3, dim}, {.strategy = alignment::top_k(0)}), aligner::invalid_argument);
  std::vector<float> bad = q;
  bad[4] = aligner_test::nan_f();
  CHECK_THROWS_WITH(r.search({bad.data(), 3, dim}), Catch::Contains("non-finite"));
  // Bad adds change nothing.
  const std::size_t before = r.size(), tokens = r.indexed_tokens();
  CHECK_THROWS_AS(r.add(aligner::matrix_view<float>(bad.data(), 3, dim), std::vector<float>(3, 1.f)), aligner::invalid_argument);
  const std::vector<std::int64_t> two_docs = {0, 1, 3};  // row 1 is token 0 of the second document
  std::vector<float> bad_row1 = q;
  bad_row1[dim + 4] = aligner_test::nan_f();
  CHECK_THROWS_WITH(r.add(aligner::sequence_set_view{{bad_row1.data(), 3, dim}, two_docs}, std::vector<float>(3, 1.f)),
                    Catch::Contains("document 1 of this add (it would get id 21)") && Catch::Contains("at token 0, component 4"));
  CHECK_THROWS_AS(r.add(aligner::matrix_view<float>(q.data(), 3, dim)), aligner::invalid_argument);  // salience missing
  CHECK_THROWS_AS(r.add(aligner::matrix_view<float>(q.data(), 3, dim), std::vector<float>(2, 1.f)), aligner::invalid_argument);
  const std::vector<std::int64_t> bad_offsets = {0, 2, 1, 3};
  CHECK_THROWS_AS(r.add(aligner::sequence_set_view{{q.data(), 3, dim}, bad_offsets}), aligner::invalid_argument);
  CHECK(r.size() == before);
  CHECK(r.indexed_tokens() == tokens);
  CHECK(r.backend().size() == tokens);
  // Pruning without salience is refused; an empty document is fine.
  CHECK_THROWS_WITH((aligner::aligner_retriever<aligner::exact_backend>(aligner::exact_backend(dim), c.view(), {.doc_prune = 0.5})),
                    Catch::Contains("needs document salience"));
  aligner::aligner_retriever<aligner::exact_backend> plain{aligner::exact_backend(dim)};
  CHECK(plain.search({q.data(), 3, dim}).ids.empty());  // nothing indexed yet
  CHECK(plain.add(aligner::matrix_view<float>(q.data(), 0, dim)) == 0);
  CHECK(plain.search({q.data(), 3, dim}).ids.empty());
  CHECK(plain.search({q.data(), 3, dim}, {.exhaustive = true}).ids == std::vector<std::int64_t>{0});
}

TEST_CASE("search_params and index_params: every field in declaration order (designated initialisers stay valid)", "[api]") {
  // Reordering a field breaks users' designated initialisers (issue 18): this stops compiling if the order moves.
  const std::vector<std::int64_t> allowed = {1};
  const std::vector<float> uq = {1.f};
  const aligner::search_params p{.strategy = alignment::top_k(2), .norm = normalization::none, .candidates_per_token = 7, .top = 3,
                                 .exhaustive = false, .nprobe = 0, .ndocs = 0, .query_prune = 1.0, .query_salience = uq,
                                 .use_doc_salience = true, .filter = {}, .allowed_ids = allowed, .check_finite = true,
                                 .use_query_salience = true, .threads = 1};
  CHECK(p.top == 3);
  CHECK(p.candidates_per_token == 7);
  const aligner::index_params ip{.doc_prune = 1.0, .check_finite = true, .precision = aligner::storage::bf16, .codec = {},
                                 .residual = {}, .dedup_tokens = true, .token_index = true, .threads = 1, .progress = {}};
  CHECK(ip.precision == aligner::storage::bf16);
}

namespace {
/// A backend that records what the retriever's add told it (backend_add_options), over an exact backend.
struct recording_backend {
  aligner::exact_backend inner;
  std::vector<aligner::backend_add_options> calls;
  std::size_t dim() const noexcept { return inner.dim(); }
  std::size_t size() const noexcept { return inner.size(); }
  void add(aligner::matrix_view<float> v) { add(v, {}); }
  void add(aligner::matrix_view<float> v, const aligner::backend_add_options& o) {
    calls.push_back(o);
    inner.add(v, o);
  }
  aligner::topk_result search(aligner::matrix_view<float> q, std::size_t k) const { return inner.search(q, k); }
};
static_assert(aligner::configurable_backend<recording_backend>);
}  // namespace

TEST_CASE("retriever: add reports its stages in order, passes its threads to the backend, and checks values once", "[property]") {
  const aligner_test::random_corpus corpus(40, 20, 8, 511, false);
  std::vector<std::string> stages;
  std::vector<aligner::build_progress> events;
  aligner::index_params params{.precision = aligner::storage::residual, .residual = {.centroids = 16}, .threads = 3};
  params.progress = [&](const aligner::build_progress& p) {
    if (stages.empty() || stages.back() != p.stage) stages.emplace_back(p.stage);
    events.push_back(p);
  };
  aligner::aligner_retriever<recording_backend> r(recording_backend{aligner::exact_backend(8), {}}, corpus.view(), params);
  CHECK(stages == std::vector<std::string>{"codec", "token index", "store"});
  // Each stage starts at 0 and ends at its total; the token index counts the vectors given to the backend.
  for (const auto& name : stages) {
    std::vector<aligner::build_progress> of;
    for (const auto& e : events)
      if (e.stage == name) of.push_back(e);
    REQUIRE(of.size() >= 2);
    CHECK(of.front().done == 0);
    CHECK(of.back().done == of.back().total);
    for (std::size_t i = 1; i != of.size(); ++i) CHECK(of[i].done >= of[i - 1].done);
  }
  for (const auto& e : events)
    if (e.stage == "token index") CHECK(e.total == r.backend().size());
  for (const auto& e : events)
    if (e.stage == "store") CHECK(e.total == corpus.view().size());
  // The backend was told the threads and that the values are checked already (the retriever checks them, naming
  // the document and token).
  REQUIRE(r.backend().calls.size() == 1);
  CHECK(r.backend().calls[0].threads == 3);
  CHECK(!r.backend().calls[0].check_finite);
  // A NaN: the retriever's own check refuses it by document and token, before the backend sees anything.
  std::vector<float> bad(8 * 3, 0.5f);
  bad[8 + 2] = aligner_test::nan_f();
  CHECK_THROWS_WITH(r.add({bad.data(), 3, 8}), Catch::Contains("document 0 of this add") && Catch::Contains("at token 1, component 2"));
  CHECK(r.backend().calls.size() == 1);
  // check_finite = false: no scan at all, in the retriever or the backend (the caller vouches for the values).
  aligner::aligner_retriever<aligner::exact_backend> trusting(aligner::exact_backend(8), aligner::index_params{.check_finite = false});
  CHECK_NOTHROW(trusting.add({bad.data(), 3, 8}));
  CHECK(trusting.size() == 1);
  aligner::aligner_retriever<aligner::exact_backend> checking(aligner::exact_backend(8));
  CHECK_THROWS_WITH(checking.add({bad.data(), 3, 8}), Catch::Contains("non-finite"));
  CHECK(checking.size() == 0);
}

TEST_CASE("retriever: salience that only chooses tokens (use_query_salience and use_doc_salience false) leaves scores unweighted",
          "[oracle]") {
  const aligner_test::random_corpus corpus(60, 12, 8, 404, false);
  const aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(8), corpus.view(),
                                                                 aligner::index_params{.doc_prune = 0.3}, corpus.salience);
  const auto q = aligner_test::random_matrix(6, 8, 405, true);
  const auto uq = aligner_test::random_weights(6, 406);
  const aligner::matrix_view<float> query(q.data(), 6, 8);
  const auto chosen = index.search(query, {.candidates_per_token = 5, .top = 60, .query_prune = 0.5, .query_salience = uq,
                                           .use_doc_salience = false, .use_query_salience = false});
  const auto weighted = index.search(query, {.candidates_per_token = 5, .top = 60, .query_prune = 0.5, .query_salience = uq});
  // Same candidates (the kept tokens decide them), unweighted scores.
  REQUIRE(!chosen.ids.empty());
  REQUIRE(chosen.candidates_scored == weighted.candidates_scored);
  for (std::size_t k = 0; k != chosen.ids.size(); ++k)
    REQUIRE_THAT(chosen.scores[k], WithinAbs(aligner::score(query, corpus.view().sequence(std::size_t(chosen.ids[k]))), 1e-5));
  // Exhaustive: identical to a search without any salience.
  const auto all = index.search(query, {.exhaustive = true, .query_salience = uq, .use_doc_salience = false, .use_query_salience = false});
  const auto plain = index.search(query, {.exhaustive = true, .use_doc_salience = false});
  CHECK(all.ids == plain.ids);
  CHECK(all.scores == plain.scores);
}

TEST_CASE("errors: messages end with the header and line only when ALIGNER_ERROR_LOCATIONS is 1", "[edge]") {
  // Release builds (NDEBUG) default to 0: the CLI and the Python package show messages to end users.
  try {
    (void)alignment::parse("top7x");
    FAIL("no exception");
  } catch (const aligner::invalid_argument& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("top7x"));
    CHECK((what.find("alignment.hpp:") != std::string::npos) == bool(ALIGNER_ERROR_LOCATIONS));
  }
#ifdef NDEBUG
  CHECK(ALIGNER_ERROR_LOCATIONS == 0);
#else
  CHECK(ALIGNER_ERROR_LOCATIONS == 1);
#endif
}

TEST_CASE("retriever: salience scorer computes document salience at add", "[property]") {
  const std::size_t dim = 8;
  const auto c = make_corpus(30, 12, dim, 41);
  const aligner::salience_scorer f(aligner_test::random_matrix(1, dim, 42), 0.3f);
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), {.doc_prune = 0.5}, {}, f);
  const auto expected = f(c.view());
  REQUIRE(r.store().has_salience());
  for (std::size_t d = 0; d != r.size(); ++d) {
    const auto s = r.store().salience(d);
    for (std::size_t j = 0; j != s.size(); ++j) REQUIRE(s[j] == expected[std::size_t(c.offsets[d]) + j]);
  }
}

TEST_CASE("token store: round trip and score_store", "[property]") {
  const std::size_t dim = 12;
  const auto c = make_corpus(40, 25, dim, 51);
  const aligner::token_store store(c.view(), c.salience);
  REQUIRE(store.size() == 40);
  for (std::size_t d = 0; d != 40; ++d) {
    const auto back = store.unpack(d);
    REQUIRE(std::equal(back.begin(), back.end(), c.tokens.begin() + c.offsets[d] * std::int64_t(dim)));
  }
  const auto q = aligner_test::random_matrix(5, dim, 52);
  std::vector<float> scores(40);
  aligner::score_store({q.data(), 5, dim}, store, scores, {.strategy = alignment::top_k(2)});
  const auto batch = aligner::score_batch({q.data(), 5, dim}, c.view(), {.strategy = alignment::top_k(2), .doc_salience = c.salience});
  CHECK(scores == batch);
  std::vector<float> two(2, 5.f);
  const std::vector<std::uint32_t> which = {3, 40};
  CHECK_THROWS_WITH(aligner::score_store({q.data(), 5, dim}, store, which, two), Catch::Contains("40"));
  CHECK(two == std::vector<float>(2, 5.f));
}

TEST_CASE("token store: one pass over S scores a whole grid of strategies", "[oracle]") {
  const std::size_t dim = 20;
  const auto c = make_corpus(60, 90, dim, 61);
  const aligner::token_store store(c.view(), c.salience);
  const std::vector<alignment> grid = {alignment::top1(), alignment::top_k(2), alignment::top_k(4), alignment::top_k(6),
                                       alignment::top_k(8), alignment::top_p(0.005), alignment::top_p(0.02), alignment::top_p(0.3),
                                       alignment::dense(), alignment::top_k(40)};
  std::vector<std::uint32_t> which(store.size());
  std::iota(which.begin(), which.end(), 0u);
  const auto q = aligner_test::random_matrix(7, dim, 62);
  const auto uq = aligner_test::random_weights(7, 63);
  for (bool sal : {false, true}) {
    aligner::score_params p{.norm = sal ? normalization::none : normalization::mean};
    if (sal) p.query_salience = uq;
    std::vector<float> multi(which.size() * grid.size());
    aligner::score_store_multi({q.data(), 7, dim}, store, which, grid, multi, p, sal);
    for (std::size_t g = 0; g != grid.size(); ++g) {
      std::vector<float> single(which.size());
      aligner::score_params one = p;
      one.strategy = grid[g];
      aligner::score_store({q.data(), 7, dim}, store, which, single, one, sal);
      for (std::size_t t = 0; t != which.size(); ++t) {
        INFO(grid[g].name() << " doc " << t << " salience " << sal);
        REQUIRE_THAT(multi[t * grid.size() + g], WithinAbs(single[t], 1e-5 * std::max(1.f, std::abs(single[t]))));
      }
    }
  }
}

TEST_CASE("retriever: search_multi equals one search per strategy", "[oracle]") {
  const std::size_t dim = 16;
  const auto c = make_corpus(80, 40, dim, 71);
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), {.doc_prune = 0.5}, c.salience);
  const std::vector<alignment> grid = {alignment::top1(), alignment::top_k(4), alignment::top_p(0.05), alignment::dense()};
  const auto q = aligner_test::random_matrix(5, dim, 72, true);
  for (bool exhaustive : {false, true}) {
    aligner::search_params p{.candidates_per_token = 15, .top = 25, .exhaustive = exhaustive};
    const auto multi = r.search_multi({q.data(), 5, dim}, grid, p);
    REQUIRE(multi.size() == grid.size());
    for (std::size_t g = 0; g != grid.size(); ++g) {
      p.strategy = grid[g];
      const auto one = r.search({q.data(), 5, dim}, p);
      INFO(grid[g].name());
      REQUIRE(multi[g].ids == one.ids);
      for (std::size_t i = 0; i != one.scores.size(); ++i) REQUIRE_THAT(multi[g].scores[i], WithinAbs(one.scores[i], 1e-6));
      REQUIRE(multi[g].candidates_scored == one.candidates_scored);
    }
  }
}

TEST_CASE("retriever: allowed_ids restricts results, unknown ids are rejected", "[edge]") {
  const std::size_t dim = 8;
  const auto c = make_corpus(30, 10, dim, 81);
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view());
  const auto q = aligner_test::random_matrix(3, dim, 82, true);
  const std::vector<std::int64_t> allowed = {2, 7, 11, 29};
  for (bool exhaustive : {false, true}) {
    const auto res = r.search({q.data(), 3, dim}, {.candidates_per_token = 1000, .exhaustive = exhaustive, .allowed_ids = allowed});
    REQUIRE(!res.ids.empty());
    for (auto id : res.ids) CHECK(std::find(allowed.begin(), allowed.end(), id) != allowed.end());
  }
  const std::vector<std::int64_t> unknown = {3, 30};
  CHECK_THROWS_WITH(r.search({q.data(), 3, dim}, {.allowed_ids = unknown}), Catch::Contains("allowed_ids[1] = 30"));
  const std::vector<std::int64_t> negative = {-2};
  CHECK_THROWS_AS(r.search({q.data(), 3, dim}, {.allowed_ids = negative}), aligner::invalid_argument);
}

namespace {
/// The documents as a store of precision st holds them, computed independently of the packing code:
/// bf16 / f16 rounding to nearest even (f16 checked against F16C in test_kernels), int8 by the documented rule.
std::vector<float> as_stored(std::vector<float> x, std::size_t dim, aligner::storage st) {
  if (st == aligner::storage::bf16)
    for (auto& v : x) v = aligner::from_bf16(aligner::to_bf16(v));
  if (st == aligner::storage::f16)
    for (auto& v : x) v = aligner::from_f16(aligner::to_f16(v));
  if (st == aligner::storage::i8)
    for (std::size_t j = 0; j * dim < x.size(); ++j) {
      double amax = 0;
      for (std::size_t c = 0; c != dim; ++c) amax = std::max(amax, double(std::fabs(x[j * dim + c])));
      const float scale = float(amax / 127.0);
      for (std::size_t c = 0; c != dim; ++c)
        x[j * dim + c] = scale > 0 ? float(std::clamp(std::nearbyint(double(x[j * dim + c]) / double(scale)), -127.0, 127.0)) * scale : 0.f;
    }
  return x;
}
}  // namespace

TEST_CASE("token store bf16, f16, i8: scores equal float scoring of the stored documents", "[oracle]") {
  const std::size_t dim = 24;
  const auto c = make_corpus(50, 30, dim, 91);
  for (aligner::storage st : {aligner::storage::bf16, aligner::storage::f16, aligner::storage::i8}) {
    INFO(aligner::to_string(st));
    const aligner::token_store low(c.view(), c.salience, true, st);
    REQUIRE(low.precision() == st);
    CHECK(low.memory_bytes() < aligner::token_store(c.view(), c.salience).memory_bytes());
    auto stored = c;
    stored.tokens = as_stored(c.tokens, dim, st);
    auto q = aligner_test::random_matrix(6, dim, 92, true);
    if (st == aligner::storage::bf16 && aligner::bf16_query_rounded<>())
      for (auto& x : q) x = aligner::from_bf16(aligner::to_bf16(x));
    if (st == aligner::storage::i8 && (aligner::i8_on_amx<>() || aligner::i8_on_vnni<>())) q = aligner_test::amx_i8_query_values(q, dim);  // the int8 tiles' query values
    for (std::size_t d = 0; d != low.size(); ++d) {
      const auto back = low.unpack(d);
      REQUIRE(std::equal(back.begin(), back.end(), stored.tokens.begin() + c.offsets[d] * std::int64_t(dim)));
    }
    for (const auto& a : {alignment::top1(), alignment::top_k(4), alignment::top_p(0.1), alignment::dense()}) {
      std::vector<float> got(low.size());
      aligner::score_store({q.data(), 6, dim}, low, got, {.strategy = a});
      const auto want = aligner::score_batch({q.data(), 6, dim}, stored.view(), {.strategy = a, .doc_salience = c.salience});
      for (std::size_t d = 0; d != got.size(); ++d) REQUIRE_THAT(got[d], WithinAbs(want[d], 1e-5));
    }
  }
}

TEST_CASE("token store f16: values outside the float16 range are refused, the store unchanged", "[edge]") {
  aligner::token_store s(3, aligner::storage::f16);
  const std::vector<float> ok = {65504.f, -65519.f, 1e-8f}, big = {1.f, 70000.f, 0.f};
  s.add(aligner::matrix_view<float>(ok.data(), 1, 3));
  CHECK(s.at(0, 0, 0) == 65504.f);
  CHECK(s.at(0, 0, 1) == -65504.f);
  CHECK_THROWS_WITH(s.add(aligner::matrix_view<float>(big.data(), 1, 3)), Catch::Contains("tokens[0][1] = 70000") && Catch::Contains("float16"));
  CHECK(s.size() == 1);
  const std::vector<std::int64_t> offsets = {0, 1, 2};
  std::vector<float> both = ok;
  both.insert(both.end(), big.begin(), big.end());
  CHECK_THROWS_AS(s.add(aligner::sequence_set_view{{both.data(), 2, 3}, offsets}), aligner::invalid_argument);
  CHECK(s.size() == 1);
  CHECK(s.tokens() == 1);
}

TEST_CASE("storage precisions on real SciFact vectors: kernels against the double reference (skipped when absent)", "[oracle]") {
  const auto dir = aligner_test::shared_dataset("scifact");
  if (dir.empty()) return;
  const auto coll = aligner::io::load_collection(dir);
  const std::size_t dim = coll.docs.dim, docs = 120;
  const auto view = coll.docs.view();
  const std::int64_t end = view.offsets[docs];
  std::vector<float> tokens(view.tokens.data, view.tokens.data + end * std::int64_t(dim));
  const std::vector<std::int64_t> offsets(view.offsets.begin(), view.offsets.begin() + docs + 1);
  for (aligner::storage st : {aligner::storage::f32, aligner::storage::bf16, aligner::storage::f16, aligner::storage::i8}) {
    const aligner::token_store store(aligner::sequence_set_view{{tokens.data(), std::size_t(end), dim}, offsets}, {}, true, st);
    const auto stored = as_stored(tokens, dim, st);
    for (std::size_t qi = 0; qi != 12; ++qi) {
      auto qs = coll.queries.sequence(qi);
      std::vector<float> q(qs.data, qs.data + qs.rows * dim);
      if (st == aligner::storage::bf16 && aligner::bf16_query_rounded<>())
        for (auto& x : q) x = aligner::from_bf16(aligner::to_bf16(x));
      if (st == aligner::storage::i8 && (aligner::i8_on_amx<>() || aligner::i8_on_vnni<>())) q = aligner_test::amx_i8_query_values(q, dim);  // the int8 tiles' query values
      for (const auto& a : {alignment::top1(), alignment::top_k(2), alignment::top_k(8), alignment::top_p(0.02)}) {
        std::vector<float> got(docs);
        aligner::score_store(qs, store, got, {.strategy = a});
        for (std::size_t d = 0; d != docs; ++d) {
          const aligner::matrix_view<float> doc(stored.data() + offsets[d] * std::int64_t(dim), std::size_t(offsets[d + 1] - offsets[d]), dim);
          const double want = aligner::ref::score({q.data(), qs.rows, dim}, doc, {.strategy = a});
          INFO(aligner::to_string(st) << " query " << qi << " doc " << d << " " << a.name());
          REQUIRE_THAT(double(got[d]), WithinAbs(want, 1e-5 * std::max(1.0, std::abs(want))));
        }
      }
    }
  }
}

TEST_CASE("retriever bf16, f16, i8: ranking on Cranfield matches float32", "[oracle]") {
  // nDCG@10 within 0.001 for the 16-bit formats, 0.005 for int8 (the targets of issue 5).
  const auto coll = aligner::io::load_collection(aligner_test::cranfield_dir());
  aligner::aligner_retriever<aligner::exact_backend> r32(aligner::exact_backend(coll.docs.dim), coll.docs.view());
  const aligner::search_params p{.top = 100, .exhaustive = true};
  // Four exhaustive rankings of all 225 queries take about 40 s here, and over ten minutes (the ctest timeout) under
  // AddressSanitizer, whose job is memory errors, not this statistic:
  // there the first 12 queries are ranked (4 min 39 s with 40).
#if defined(__SANITIZE_ADDRESS__)
  const std::size_t queries = std::min<std::size_t>(12, coll.queries.size());
  std::printf("note: AddressSanitizer build, ranking %zu of %zu Cranfield queries\n", queries, coll.queries.size());
#else
  const std::size_t queries = coll.queries.size();
#endif
  aligner::io::run run32;
  for (std::size_t q = 0; q != queries; ++q) {
    const auto a = r32.search(coll.queries.sequence(q), p);
    for (std::size_t i = 0; i != a.ids.size(); ++i) run32[coll.queries.ids[q]].push_back({coll.docs.ids[a.ids[i]], a.scores[i]});
  }
  const double n32 = aligner::ndcg_at(10, run32, coll.judgments).mean;
  for (aligner::storage st : {aligner::storage::bf16, aligner::storage::f16, aligner::storage::i8}) {
    aligner::aligner_retriever<aligner::exact_backend> low(aligner::exact_backend(coll.docs.dim), coll.docs.view(), {.precision = st});
    aligner::io::run run;
    for (std::size_t q = 0; q != queries; ++q) {
      const auto b = low.search(coll.queries.sequence(q), p);
      for (std::size_t i = 0; i != b.ids.size(); ++i) run[coll.queries.ids[q]].push_back({coll.docs.ids[b.ids[i]], b.scores[i]});
    }
    const double n = aligner::ndcg_at(10, run, coll.judgments).mean;
    std::printf("Cranfield nDCG@10: float32 %.4f, %s %.4f\n", n32, aligner::to_string(st), n);
    // Over 12 queries one swapped document moves the mean by more than the full-set tolerances (seen: 0.003, 0.006).
    const double sample_slack = queries < coll.queries.size() ? 0.02 : 0.0;
    CHECK(std::abs(n32 - n) <= (st == aligner::storage::i8 ? 0.005 : 0.001) + sample_slack);
  }
}

TEST_CASE("retriever: a document over 2^24 - 1 tokens is refused at add (load would refuse the saved file)", "[edge]") {
  const std::size_t too_long = aligner::max_sequence_tokens + 1;
  const std::vector<float> tokens(too_long, 0.5f);  // dim 1
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(1));
  const std::int64_t offsets[] = {0, 1, std::int64_t(too_long), std::int64_t(too_long)};  // 1, 2^24 - 1 (the most), 0 tokens
  CHECK_NOTHROW(r.add(aligner::sequence_set_view{{tokens.data(), too_long, 1}, offsets}));
  CHECK(r.size() == 3);
  CHECK_THROWS_WITH(r.add(aligner::matrix_view<float>(tokens.data(), too_long, 1)), Catch::Contains("at most 2^24 - 1"));
  CHECK(r.size() == 3);  // nothing changed: not the store, not the backend
  CHECK(r.indexed_tokens() == 1);    // every token is the same vector: indexed once ...
  CHECK(r.indexed_postings() == 2);  // ... with documents 0 and 1 in its posting list
  CHECK(r.backend().size() == 1);
  aligner::token_store store(1);
  CHECK_THROWS_WITH(store.add(aligner::matrix_view<float>(tokens.data(), too_long, 1)), Catch::Contains("at most 2^24 - 1"));
  CHECK(store.size() == 0);
}

TEST_CASE("retriever: a value the store's precision cannot hold is refused before the backend sees it", "[edge]") {
  const std::size_t dim = 4;
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), {.precision = aligner::storage::f16});
  const std::vector<float> ok(2 * dim, 0.25f);
  r.add(aligner::matrix_view<float>(ok.data(), 2, dim));
  std::vector<float> big = ok;
  big[5] = 1e6f;  // beyond float16
  CHECK_THROWS_WITH(r.add(aligner::matrix_view<float>(big.data(), 2, dim)), Catch::Contains("float16 range"));
  CHECK(r.size() == 1);
  CHECK(r.indexed_tokens() == 1);  // the backend is unchanged too (two equal tokens: one vector)
  CHECK(r.backend().size() == 1);
}

TEST_CASE("retriever: explain with the search's parameters returns each hit's own score, every strategy and storage", "[oracle]") {
  const std::size_t dim = 24;
  const auto c = make_corpus(80, 40, dim, 41);
  const auto q = aligner_test::random_matrix(7, dim, 42, true);
  const auto uq = aligner_test::random_weights(7, 43);
  for (aligner::storage st : aligner::all_storages) {
    const aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), c.view(), {.precision = st}, c.salience);
    for (const auto& a : {alignment::top1(), alignment::top_k(3), alignment::top_k(20), alignment::top_p(0.1), alignment::dense()})
      for (auto norm : {aligner::normalization::mean, aligner::normalization::none}) {
        const aligner::search_params p{.strategy = a, .norm = norm, .top = 5, .exhaustive = true, .query_salience = uq};
        const auto hits = r.search({q.data(), 7, dim}, p);
        REQUIRE(!hits.ids.empty());
        for (std::size_t h = 0; h != hits.ids.size(); ++h) {
          INFO(aligner::to_string(st) << " " << a.name() << " " << aligner::to_string(norm) << " hit " << h);
          const auto e = r.explain({q.data(), 7, dim}, hits.ids[h], p);
          CHECK(e.score == hits.scores[h]);
          const double from_pairs = norm == aligner::normalization::none ? e.numerator : e.numerator / e.z;
          CHECK_THAT(from_pairs, WithinAbs(double(e.score), 1e-5 * std::max(1.0, std::abs(double(e.score)))));
        }
      }
  }
}

TEST_CASE("token store: a set whose first sequence is empty keeps its salience", "[edge]") {
  // Found by the residual tests: the first (empty) sequence used to decide "no salience" and the rest was dropped.
  const std::size_t dim = 4;
  const auto x = aligner_test::random_matrix(3, dim, 1, true);
  const std::int64_t offsets[] = {0, 0, 3};
  const std::vector<float> ud = {0.f, 1.f, 2.f};
  aligner::token_store store(dim);
  store.add(aligner::sequence_set_view{{x.data(), 3, dim}, offsets}, ud);
  CHECK(store.has_salience());
  REQUIRE(store.salience(1).size() == 3);
  CHECK(store.salience(1)[2] == 2.f);
  // and the scorer uses it: the best token has weight 0, so Top-1's Z is 0 and the score 0
  const std::vector<float> q(x.begin(), x.begin() + dim);  // token 0 itself: the best match, weight 0
  float s = -1.f;
  const std::uint32_t which[] = {1};
  aligner::score_store({q.data(), 1, dim}, store, which, {&s, 1});
  CHECK(s == 0.f);
}

TEST_CASE("token_store: adding documents one at a time grows the panels geometrically, not per add", "[property]") {
  // Reserving exactly what each add needed reallocated (and copied) the whole store on every add: adding SciFact's
  // documents one at a time, or loading a file of another panel width (which adds document by document), took
  // minutes. Counted here as reallocations, not time.
  aligner::token_store store(8);
  const auto x = aligner_test::random_matrix(3, 8, 77);
  std::size_t moves = 0;
  const std::uint32_t* last = nullptr;
  for (int d = 0; d != 2000; ++d) {
    store.add(aligner::matrix_view<float>(x.data(), 3, 8));
    if (store.packed_data() != last) ++moves, last = store.packed_data();
  }
  CHECK(store.size() == 2000);
  CHECK(moves < 40);  // about log_1.5(2000) = 19; one per add before the fix
}

TEST_CASE("retriever: ndocs cuts the token search's candidates by their hits' similarities, as a brute force of the hits",
          "[oracle]") {
  // Documents drawn from a vocabulary of 50 vectors, so identical vectors sit in many documents (one index entry each).
  const std::size_t dim = 8, vocab = 50;
  const auto words = aligner_test::random_matrix(vocab, dim, 17);
  std::mt19937_64 rng(5);
  std::vector<float> x;
  std::vector<std::int64_t> offsets{0};
  std::vector<std::size_t> word_of;
  for (std::size_t d = 0; d != 90; ++d) {
    const std::size_t len = d % 7 == 3 ? 0 : 1 + rng() % 12;
    for (std::size_t j = 0; j != len; ++j) {
      const std::size_t w = rng() % vocab;
      word_of.push_back(w);
      x.insert(x.end(), words.begin() + std::ptrdiff_t(w * dim), words.begin() + std::ptrdiff_t((w + 1) * dim));
    }
    offsets.push_back(std::int64_t(word_of.size()));
  }
  const aligner::sequence_set_view docs{{x.data(), word_of.size(), dim}, offsets};
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(dim), docs);
  // The backend's vector ids: distinct vectors in order of first occurrence; each reaches every document holding it.
  std::vector<std::size_t> first_word;
  std::vector<std::set<std::uint32_t>> holders;
  std::map<std::size_t, std::size_t> id_of_word;
  for (std::size_t d = 0; d + 1 != offsets.size(); ++d)
    for (auto t = offsets[d]; t != offsets[d + 1]; ++t) {
      const std::size_t w = word_of[std::size_t(t)];
      if (!id_of_word.count(w)) {
        id_of_word[w] = holders.size();
        holders.emplace_back();
      }
      holders[id_of_word[w]].insert(std::uint32_t(d));
    }
  REQUIRE(r.indexed_tokens() == holders.size());
  const auto q = aligner_test::random_matrix(6, dim, 23);
  const aligner::matrix_view<float> qv{q.data(), 6, dim};
  auto brute = [&](std::size_t k, std::size_t ndocs, const std::function<bool(std::uint32_t)>& ok) {
    const auto hits = r.backend().search(qv, k);
    std::map<std::uint32_t, double> approx;
    for (std::size_t i = 0; i != 6; ++i) {
      double low = 0;
      for (std::size_t t = 0; t != k; ++t)
        if (hits.ids[i * k + t] >= 0) low = hits.scores[i * k + t];
      std::map<std::uint32_t, double> best;  // hits come best first: a document's first is its best
      for (std::size_t t = 0; t != k; ++t)
        if (hits.ids[i * k + t] >= 0)
          for (std::uint32_t d : holders[std::size_t(hits.ids[i * k + t])]) best.try_emplace(d, double(hits.scores[i * k + t]) - low);
      for (auto [d, g] : best) approx[d] += g;  // missing rows add 0 (their lowest hit, relative)
    }
    std::vector<std::pair<double, std::uint32_t>> ranked;
    for (auto [d, s] : approx)
      if (ok(d)) ranked.emplace_back(-s, d);
    std::sort(ranked.begin(), ranked.end());
    if (ndocs && ranked.size() > ndocs) ranked.resize(ndocs);
    std::set<std::int64_t> out;
    for (auto [s, d] : ranked) out.insert(d);
    return out;
  };
  auto ids_of = [](const aligner::search_result& res) { return std::set<std::int64_t>(res.ids.begin(), res.ids.end()); };
  for (std::size_t k : {1, 3, 10, 50})
    for (std::size_t ndocs : {0, 1, 5, 20, 1000}) {
      INFO("k' " << k << " ndocs " << ndocs);
      const auto res = r.search(qv, {.candidates_per_token = k, .top = 1000, .ndocs = ndocs});
      const auto want = brute(k, ndocs, [](std::uint32_t) { return true; });
      CHECK(res.candidates_scored == want.size());
      CHECK(ids_of(res) == want);
      // The cut keeps the candidates' exact scores: the result is the uncut search's, restricted to the kept ones.
      const auto uncut = r.search(qv, {.candidates_per_token = k, .top = 1000});
      std::vector<std::int64_t> restricted;
      for (auto id : uncut.ids)
        if (want.count(id)) restricted.push_back(id);
      CHECK(res.ids == restricted);
    }
  // Filtered and removed documents are never candidates: the cut ranks the returnable ones only.
  auto odd = [](std::uint32_t d) { return d % 2 == 1; };
  const auto filtered = r.search(qv, {.candidates_per_token = 10, .top = 8, .ndocs = 8, .filter = [](std::int64_t d) { return d % 2 == 1; }});
  CHECK(ids_of(filtered) == brute(10, 8, odd));
  const auto before = brute(10, 6, [](std::uint32_t) { return true; });
  r.remove(*before.begin());
  const auto removed = *before.begin();
  CHECK(ids_of(r.search(qv, {.candidates_per_token = 10, .top = 1000, .ndocs = 6})) ==
        brute(10, 6, [&](std::uint32_t d) { return d != removed; }));
  // An exhaustive search reranks every document; with ndocs it still does.
  CHECK(r.search(qv, {.top = 1000, .exhaustive = true, .ndocs = 3}).candidates_scored == r.size() - 1);
}
