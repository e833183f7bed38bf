// Concurrent searches on a const retriever (also built with ThreadSanitizer in CI), and the enforcement of
// the rule that add/remove never overlap a search.
#include <aligner/aligner.hpp>

#include "test_common.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <latch>
#include <set>
#include <thread>

#if defined(__unix__)
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace {
struct concurrency_fixture : aligner_test::random_corpus {
  concurrency_fixture() : random_corpus(150, 13, 16, 1, false) {}
};
}  // namespace

TEST_CASE("concurrency: many threads searching one const retriever equal serial results", "[property]") {
  const concurrency_fixture f;
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
  const concurrency_fixture f;
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

namespace {
struct custom_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace

TEST_CASE("concurrency: parallel_for forwards the first exception after joining, on any thread count", "[edge]") {
  for (unsigned threads : {0u, 1u, 2u, 4u, 16u}) {
    INFO("threads " << threads);
    std::atomic<std::size_t> ran{0};
    // Every other item takes 1 ms, so the whole loop takes far longer than throwing (slow under ASan, where 1000
    // instant items all finished while item 17's exception unwound): only items in flight may still complete.
    CHECK_THROWS_AS(aligner::parallel_for(1000, threads,
                                          [&](std::size_t i) {
                                            ++ran;
                                            if (i == 17) throw custom_failure("item 17");
                                            std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                          }),
                    custom_failure);
    CHECK(ran < 1000);  // no new items are handed out after the failure (a few may be in flight)
    std::vector<int> hit(300, 0);
    aligner::parallel_for(hit.size(), threads, [&](std::size_t i) { ++hit[i]; });
    CHECK(std::count(hit.begin(), hit.end(), 1) == 300);  // every item exactly once
  }
  CHECK_NOTHROW(aligner::parallel_for(0, 4, [](std::size_t) { throw custom_failure("never called"); }));
}

TEST_CASE("concurrency: parallel_for keeps its threads between loops, shares them, and nests", "[edge]") {
  auto& pool = aligner::detail::worker_pool::instance();
  aligner::parallel_for(64, 4, [](std::size_t) {});
  const std::size_t held = pool.size();
  CHECK(held >= 3);  // three helpers for a loop of four threads
  // Loops of the same size reuse them (no thread per loop), and the work still goes to more than one thread.
  std::mutex m;
  std::set<std::thread::id> seen;
  for (int rep = 0; rep != 200; ++rep) {
    std::vector<int> hit(257, 0);
    aligner::parallel_for(hit.size(), 4, [&](std::size_t i) {
      ++hit[i];
      if (i % 16 == 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // room for the helpers to join
        const std::lock_guard lock(m);
        seen.insert(std::this_thread::get_id());
      }
    });
    REQUIRE(std::count(hit.begin(), hit.end(), 1) == 257);
  }
  CHECK(pool.size() == held);
  CHECK(seen.size() >= 2);
  // A loop inside a loop's body, and loops started from several user threads at once: every item once, no wait on
  // a busy pool (each loop is worked by its caller), and a throw in one loop reaches only its own caller.
  std::atomic<std::size_t> sum{0};
  aligner::parallel_for(8, 4, [&](std::size_t i) {
    aligner::parallel_for(100, 3, [&](std::size_t j) { sum += i * 100 + j; });
  });
  CHECK(sum == 800 * 799 / 2);
  std::vector<std::thread> users;
  std::vector<std::size_t> totals(6, 0);
  std::atomic<int> caught{0};
  for (std::size_t u = 0; u != totals.size(); ++u)
    users.emplace_back([&, u] {
      for (int rep = 0; rep != 50; ++rep) {
        std::atomic<std::size_t> local{0};
        aligner::parallel_for(100, 0, [&](std::size_t i) { local += i; });
        totals[u] += local;
        try {
          aligner::parallel_for(100, 3, [&](std::size_t i) {
            if (i == 7 * u) throw custom_failure("user " + std::to_string(u));
          });
        } catch (const custom_failure& e) {
          if (std::string(e.what()) == "user " + std::to_string(u)) ++caught;
        }
      }
    });
  for (auto& t : users) t.join();
  for (std::size_t u = 0; u != totals.size(); ++u) CHECK(totals[u] == 50 * 4950);
  CHECK(caught == 6 * 50);
  // A loop that asks for more threads than the cap (2^32 - 1 is a valid request) runs every item once on at most
  // max_threads() of them; the pool stays within the cap.
  const unsigned cap = aligner::detail::worker_pool::max_threads();
  CHECK(cap >= 64);
  std::vector<int> many(std::size_t(cap) * 3, 0);
  aligner::parallel_for(many.size(), 0xFFFFFFFFu, [&](std::size_t i) { ++many[i]; });
  CHECK(std::count(many.begin(), many.end(), 1) == std::ptrdiff_t(many.size()));
  CHECK(pool.size() <= cap);
#if defined(__unix__) && !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
  // A forked child has none of the parent's threads: its loops start a pool of their own.
  const pid_t child = fork();
  if (child == 0) {
    std::atomic<std::size_t> n{0};
    aligner::parallel_for(1000, 4, [&](std::size_t) { ++n; });
    _exit(n == 1000 && aligner::detail::worker_pool::instance().size() == 3 ? 0 : 1);
  }
  REQUIRE(child > 0);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
#endif
}

TEST_CASE("concurrency: search_batch rethrows a worker's exception instead of terminating", "[edge]") {
  const concurrency_fixture f;
  aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(f.dim), f.view());
  const auto queries = aligner_test::random_matrix(24, f.dim, 9, true);
  const std::vector<std::int64_t> qoff = {0, 3, 6, 9, 12, 15, 18, 21, 24};
  for (unsigned threads : {1u, 2u, 4u}) {
    INFO("threads " << threads);
    for (bool exhaustive : {true, false}) {
      aligner::search_params p{.candidates_per_token = 10, .top = 5, .exhaustive = exhaustive};
      p.filter = [](std::int64_t id) -> bool { throw custom_failure("filter refused document " + std::to_string(id)); };
      CHECK_THROWS_WITH(r.search_batch({{queries.data(), 24, f.dim}, qoff}, p, {}, threads),
                        Catch::Contains("filter refused document"));
    }
  }
  // Every search counted itself out: the retriever accepts mutations again.
  CHECK_NOTHROW(r.remove(1));
  CHECK_NOTHROW(r.add(aligner::matrix_view<float>(queries.data(), 2, f.dim)));
}
