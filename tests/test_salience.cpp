#include <aligner/math/salience.hpp>

#include "test_common.hpp"

using Catch::Matchers::WithinAbs;

TEST_CASE("salience: ReLU(w.x + b) by hand", "[golden]") {
  const float x[] = {1.f, 2.f, -1.f, 0.5f, 0.f, 0.f};  // 3 tokens, dim 2
  const aligner::salience_scorer f({0.5f, -1.f}, 0.25f);
  const auto u = f({x, 3, 2});
  CHECK_THAT(u[0], WithinAbs(0.0, 1e-7));    // 0.5 - 2 + 0.25 < 0
  CHECK_THAT(u[1], WithinAbs(0.0, 1e-7));    // -0.5 - 0.5 + 0.25 < 0
  CHECK_THAT(u[2], WithinAbs(0.25, 1e-7));
  const aligner::salience_scorer g({1.f, 1.f}, 0.f);
  const auto v = g({x, 3, 2});
  CHECK_THAT(v[0], WithinAbs(3.0, 1e-6));
  CHECK_THAT(v[1], WithinAbs(0.0, 1e-7));
}

TEST_CASE("salience: fast path equals the double reference", "[oracle]") {
  for (std::size_t dim : {1, 3, 8, 17, 100, 128, 300}) {
    const auto x = aligner_test::random_matrix(50, dim, dim);
    const auto w = aligner_test::random_matrix(1, dim, dim + 1);
    const aligner::salience_scorer f(w, 0.1f);
    const auto u = f({x.data(), 50, dim});
    const auto ref = aligner::ref::salience({x.data(), 50, dim}, w, 0.1);
    for (std::size_t i = 0; i != 50; ++i) REQUIRE_THAT(u[i], WithinAbs(ref[i], 1e-5 * std::max(1.0, std::abs(ref[i]))));
  }
}

TEST_CASE("salience: the gate multiplies ReLU scores by the top-k gate of those scores", "[property]") {
  const std::size_t rows = 40, dim = 16;
  const auto x = aligner_test::random_matrix(rows, dim, 11);
  const auto w = aligner_test::random_matrix(1, dim, 12);
  const aligner::salience_scorer plain(w, 0.2f);
  const aligner::salience_scorer gated(w, 0.2f, aligner::gate_params{.alpha = 0.25, .epsilon = 0.01});
  const auto s = plain({x.data(), rows, dim});
  const auto u = gated({x.data(), rows, dim});
  const auto lambda = aligner::solve_gate(s, std::ceil(0.25 * rows), 0.01);
  for (std::size_t i = 0; i != rows; ++i) REQUIRE_THAT(u[i], WithinAbs(lambda[i] * s[i], 1e-6));
  // The iteration variant, run long enough, matches.
  const aligner::salience_scorer iterated(w, 0.2f, aligner::gate_params{.alpha = 0.25, .epsilon = 0.5, .exact = false,
                                                                          .iteration = {.max_iterations = 100000, .tolerance = 1e-10}});
  const aligner::salience_scorer exact(w, 0.2f, aligner::gate_params{.alpha = 0.25, .epsilon = 0.5});
  const auto ui = iterated({x.data(), rows, dim});
  const auto ue = exact({x.data(), rows, dim});
  for (std::size_t i = 0; i != rows; ++i) REQUIRE_THAT(ui[i], WithinAbs(ue[i], 1e-5));
}

TEST_CASE("salience: sequence sets are gated per sequence", "[property]") {
  const std::size_t dim = 8;
  const auto x = aligner_test::random_matrix(30, dim, 3);
  const std::vector<std::int64_t> offsets = {0, 10, 10, 30};
  const aligner::salience_scorer f(aligner_test::random_matrix(1, dim, 4), 0.5f, aligner::gate_params{.alpha = 0.5, .epsilon = 0.1});
  const auto all = f(aligner::sequence_set_view{{x.data(), 30, dim}, offsets});
  const auto first = f({x.data(), 10, dim});
  const auto last = f({x.data() + 10 * dim, 20, dim});
  for (std::size_t i = 0; i != 10; ++i) CHECK(all[i] == first[i]);
  for (std::size_t i = 0; i != 20; ++i) CHECK(all[10 + i] == last[i]);
}

TEST_CASE("salience: bad inputs throw", "[edge]") {
  CHECK_THROWS_AS(aligner::salience_scorer({}, 0.f), aligner::invalid_argument);
  CHECK_THROWS_WITH(aligner::salience_scorer({1.f, aligner_test::nan_f()}, 0.f), Catch::Contains("weights[1]"));
  CHECK_THROWS_WITH(aligner::salience_scorer({1.f}, aligner_test::inf_f()), Catch::Contains("bias"));
  CHECK_THROWS_AS(aligner::salience_scorer({1.f}, 0.f, aligner::gate_params{.alpha = 2.0}), aligner::invalid_argument);
  CHECK_THROWS_AS(aligner::salience_scorer({1.f}, 0.f, aligner::gate_params{.epsilon = 0.0}), aligner::invalid_argument);
  const aligner::salience_scorer f({1.f, 1.f}, 0.f);
  const float x[] = {1.f, 2.f, 3.f};
  CHECK_THROWS_WITH(f({x, 1, 3}), Catch::Contains("dim 3"));
  const float y[] = {1.f, aligner_test::nan_f()};
  CHECK_THROWS_WITH(f({y, 1, 2}), Catch::Contains("non-finite"));
  std::vector<float> out(2, 9.f);
  CHECK_THROWS_AS(f.compute({x, 1, 2}, out), aligner::invalid_argument);  // output size mismatch
  CHECK(out == std::vector<float>{9.f, 9.f});
}
