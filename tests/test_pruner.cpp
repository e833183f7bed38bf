#include <aligner/math/pruner.hpp>

#include "test_common.hpp"

TEST_CASE("pruner: keeps max(1, ceil(beta m)) tokens, ties by lower index, ascending order", "[golden]") {
  const std::vector<float> u = {0.1f, 0.9f, 0.5f, 0.9f, 0.0f};
  CHECK(aligner::prune(u, 0.4) == std::vector<std::uint32_t>{1, 3});  // ceil(2.0) = 2
  CHECK(aligner::prune(u, 0.5) == std::vector<std::uint32_t>{1, 2, 3});  // ceil(2.5) = 3
  CHECK(aligner::prune(u, 0.01) == std::vector<std::uint32_t>{1});  // tie 1 vs 3 -> lower index
  CHECK(aligner::prune(u, 1.0) == std::vector<std::uint32_t>{0, 1, 2, 3, 4});
  CHECK(aligner::prune(std::vector<float>{}, 0.5).empty());
  const std::vector<float> flat(6, 1.f);
  CHECK(aligner::prune(flat, 0.5) == std::vector<std::uint32_t>{0, 1, 2});
  CHECK(aligner::prune_keep_count(10, 0.1) == 1);
  CHECK(aligner::prune_keep_count(11, 0.1) == 2);
  CHECK(aligner::prune_keep_count(0, 0.3) == 0);
}

TEST_CASE("pruner: kept set is the top by salience and never grows the sequence", "[property]") {
  for (std::size_t m : {1, 2, 9, 100, 1000}) {
    const auto u = aligner_test::random_weights(m, m, true);
    for (double beta : {0.05, 0.1, 0.4, 0.5, 0.99, 1.0}) {
      const auto kept = aligner::prune(u, beta);
      REQUIRE(kept.size() == aligner::prune_keep_count(m, beta));
      REQUIRE(kept.size() <= m);
      REQUIRE(std::is_sorted(kept.begin(), kept.end()));
      std::vector<bool> in(m, false);
      for (auto i : kept) in[i] = true;
      float min_kept = 1e30f, max_dropped = -1e30f;
      for (std::size_t i = 0; i != m; ++i) (in[i] ? min_kept : max_dropped) = in[i] ? std::min(min_kept, u[i]) : std::max(max_dropped, u[i]);
      REQUIRE(min_kept >= max_dropped);
    }
  }
}

TEST_CASE("pruner: bad beta or salience throws", "[edge]") {
  const std::vector<float> u = {0.1f, 0.2f};
  CHECK_THROWS_WITH(aligner::prune(u, 0.0), Catch::Contains("beta") && Catch::Contains("0"));
  CHECK_THROWS_AS(aligner::prune(u, 1.01), aligner::invalid_argument);
  CHECK_THROWS_AS(aligner::prune(u, std::nan("")), aligner::invalid_argument);
  const std::vector<float> bad = {0.1f, aligner_test::nan_f()};
  CHECK_THROWS_WITH(aligner::prune(bad, 0.5), Catch::Contains("salience[1]"));
}
