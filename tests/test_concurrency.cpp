// Concurrent searches on a const retriever (also built with ThreadSanitizer in CI), and the enforcement of
// the rule that add/remove never overlap a search.
#include <aligner/aligner.hpp>

#include "test_common.hpp"

#include <atomic>
#include <latch>
#include <thread>

namespace {
struct fixture : aligner_test::random_corpus {
  fixture() : random_corpus(150, 13, 16, 1, false) {}
};
}  // namespace

TEST_CASE("concurrency: many threads searching one const retriever equal serial results", "[property]") {
  const fixture f;
  const aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(f.dim), f.view(), {.doc_prune = 0.5}, f.salience);
  const auto queries = aligner_test::random_matrix(40 * 4, f.dim, 3, true);
  const std::vector<aligner::alignment> strategies = {aligner::alignment::top1(), aligner::alignment::top_k(3), aligner::alignment::top_p(0.2)};
  std::vector<std::vector<aligner::search_result>> serial(40);
  for (std::size_t q = 0; q != 40; ++q)
    serial[q] = r.search_multi({queries.data() + q * 4 * f.dim, 4, f.dim}, strategies, {.candidates_per_token = 25, .top = 15});
  std::atomic<int> mismatches{0};
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t != 8; ++t)
      pool.emplace_back([&, t] {
        for (int round = 0; round != 5; ++round)
          for (std::size_t q = std::size_t(t); q < 40; q += 3) {
            const auto got = r.search_multi({queries.data() + q * 4 * f.dim, 4, f.dim}, strategies, {.candidates_per_token = 25, .top = 15});
            for (std::size_t g = 0; g != strategies.size(); ++g)
              if (got[g].ids != serial[q][g].ids || got[g].scores != serial[q][g].scores) ++mismatches;
          }
      });
  }
  CHECK(mismatches == 0);
  // search_batch with several threads, and the free scoring functions from many threads.
  const std::vector<std::int64_t> qoff = {0, 4, 8, 12, 16};
  const auto batch = r.search_batch({{queries.data(), 16, f.dim}, qoff}, {.top = 10}, {}, 4);
  for (std::size_t q = 0; q != 4; ++q) CHECK(batch[q].ids == r.search({queries.data() + q * 4 * f.dim, 4, f.dim}, {.top = 10}).ids);
}

TEST_CASE("concurrency: add and remove refuse to overlap a running search", "[edge]") {
  const fixture f;
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(f.dim), f.view());
  const auto q = aligner_test::random_matrix(3, f.dim, 4, true);
  std::latch inside(1), release(1);
  std::atomic<bool> first{true};
  std::jthread searcher([&] {
    aligner::search_params p{.exhaustive = true};
    p.filter = [&](std::int64_t) {
      if (first.exchange(false)) {
        inside.count_down();  // the search is now in flight
        release.wait();
      }
      return true;
    };
    (void)r.search({q.data(), 3, f.dim}, p);
  });
  inside.wait();
  CHECK_THROWS_AS(r.remove(0), aligner::concurrency_error);
  CHECK_THROWS_WITH(r.add(aligner::matrix_view<float>(q.data(), 3, f.dim)), Catch::Contains("search(es) are running"));
  CHECK(r.size() == 150);  // nothing changed
  release.count_down();
  searcher.join();
  CHECK_NOTHROW(r.remove(0));  // no search in flight any more
  CHECK(r.is_removed(0));
}
