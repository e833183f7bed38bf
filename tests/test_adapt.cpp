#include <aligner/eval/adapt.hpp>

#include "test_common.hpp"

using Catch::Matchers::WithinAbs;

namespace {
aligner::strategy_table small_table() {
  aligner::strategy_table t;
  t.grid = {aligner::alignment::top1(), aligner::alignment::top_k(2), aligner::alignment::top_p(0.01)};
  // 4 queries x 3 strategies
  t.query_ids = {"a", "b", "c", "d"};
  t.values = {0.5, 0.7, 0.7,   //
              0.5, 0.3, 0.3,   //
              0.2, 0.4, 0.1,   //
              0.9, 0.9, 1.0};
  return t;
}
}  // namespace

TEST_CASE("adapt: best mean wins, ties to the earlier strategy", "[golden]") {
  const auto t = small_table();
  const std::size_t ab[] = {0, 1};
  const auto r = aligner::adapt(t, ab);
  CHECK_THAT(r.means[0], WithinAbs(0.5, 1e-12));
  CHECK_THAT(r.means[1], WithinAbs(0.5, 1e-12));
  CHECK_THAT(r.means[2], WithinAbs(0.5, 1e-12));
  CHECK(r.best == 0);  // three-way tie -> Top-1
  const std::size_t cd[] = {2, 3};
  CHECK(aligner::adapt(t, cd).best == 1);  // 0.65 vs 0.55 vs 0.55
  const std::size_t d[] = {3};
  CHECK(aligner::adapt(t, d).best == 2);
  CHECK_THROWS_AS(aligner::adapt(t, {}), aligner::invalid_argument);
  const std::size_t bad[] = {9};
  CHECK_THROWS_WITH(aligner::adapt(t, bad), Catch::Contains("9"));
}

TEST_CASE("adapt: fold protocol by hand with one-query folds", "[golden]") {
  const auto t = small_table();
  const auto r = aligner::fold_protocol(t, 1, 7);
  REQUIRE(r.folds.size() == 4);
  double total = 0.0;
  for (const auto& f : r.folds) {
    REQUIRE(f.shots.size() == 1);
    const std::size_t q = f.shots[0];
    // The choice is the best strategy on q alone; the held-out value is its mean over the other three.
    CHECK(f.choice.best == aligner::adapt(t, f.shots).best);
    std::vector<std::size_t> rest;
    for (std::size_t o = 0; o != 4; ++o)
      if (o != q) rest.push_back(o);
    CHECK_THAT(f.held_out, WithinAbs(t.mean(f.choice.best, rest), 1e-12));
    CHECK_THAT(f.top1_held_out, WithinAbs(t.mean(0, rest), 1e-12));
    total += f.held_out;
  }
  CHECK_THAT(r.mean, WithinAbs(total / 4, 1e-12));
  // Every query is in exactly one fold.
  std::vector<int> seen(4, 0);
  for (const auto& f : r.folds) ++seen[f.shots[0]];
  CHECK(seen == std::vector<int>{1, 1, 1, 1});
}

TEST_CASE("adapt: deterministic for a seed, remainder forms no fold", "[property]") {
  aligner::strategy_table t;
  t.grid = aligner::paper_grid();
  for (int q = 0; q != 30; ++q) t.query_ids.push_back(std::to_string(q));
  std::mt19937_64 rng(3);
  for (std::size_t i = 0; i != 30 * t.grid.size(); ++i) t.values.push_back(double(rng() % 1000) / 1000.0);
  const auto a = aligner::fold_protocol(t, 8, 42), b = aligner::fold_protocol(t, 8, 42), c = aligner::fold_protocol(t, 8, 43);
  REQUIRE(a.folds.size() == 3);  // 30 = 3 x 8 + 6
  for (std::size_t f = 0; f != 3; ++f) CHECK(a.folds[f].shots == b.folds[f].shots);
  CHECK(a.mean == b.mean);
  bool differs = false;
  for (std::size_t f = 0; f != 3; ++f) differs |= a.folds[f].shots != c.folds[f].shots;
  CHECK(differs);
  CHECK_THROWS_AS(aligner::fold_protocol(t, 0), aligner::invalid_argument);
  CHECK_THROWS_AS(aligner::fold_protocol(t, 30), aligner::invalid_argument);
}

TEST_CASE("adapt: grids parse", "[edge]") {
  CHECK(aligner::paper_grid().size() == 9);
  CHECK(aligner::parse_grid("paper") == aligner::paper_grid());
  const auto g = aligner::parse_grid("top1,topk:4,topp:0.01");
  CHECK(g.size() == 3);
  CHECK(g[1] == aligner::alignment::top_k(4));
  CHECK_THROWS_AS(aligner::parse_grid("top1,,topk:2"), aligner::invalid_argument);
  // A strategy named twice (also as another spelling of the same one) is refused by name.
  CHECK_THROWS_WITH(aligner::parse_grid("top1,topk:4,top1"), Catch::Matchers::Contains("names top1 twice"));
  CHECK_THROWS_AS(aligner::parse_grid("topp:0.01,topp:0.010"), aligner::invalid_argument);
  CHECK(aligner::parse_grid("topk:2,topk:4").size() == 2);
  CHECK_THROWS_AS(aligner::parse_grid("topk:0"), aligner::invalid_argument);
}
