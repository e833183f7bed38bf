#include <aligner/math/gate_solver.hpp>

#include "test_common.hpp"

#include <algorithm>
#include <numeric>

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;

namespace {

/// Independent double-precision run of the paper's iteration, N steps, written straight from SPEC section 4.
std::vector<double> paper_iteration_double(const std::vector<float>& s, double k, double eps, std::size_t steps) {
  const std::size_t m = s.size();
  std::vector<double> b(m, 0.0);
  double a = 0.0;
  for (std::size_t it = 0; it != steps; ++it) {
    double mx = -1e300;
    for (std::size_t i = 0; i != m; ++i) mx = std::max(mx, (s[i] + b[i]) / eps);
    double sum = 0.0;
    for (std::size_t i = 0; i != m; ++i) sum += std::exp((s[i] + b[i]) / eps - mx);
    a = eps * std::log(k) - eps * (mx + std::log(sum));
    for (std::size_t i = 0; i != m; ++i) b[i] = std::min(-double(s[i]) - a, 0.0);
  }
  std::vector<double> lambda(m);
  for (std::size_t i = 0; i != m; ++i) lambda[i] = std::exp((s[i] + b[i] + a) / eps);
  return lambda;
}

/// Checks the optimality conditions: λ_i = min(1, exp((s_i + a) / ε)) for one a, Σ λ = k, 0 <= λ <= 1.
void check_optimal(const std::vector<float>& s, double k, double eps, const std::vector<float>& lambda) {
  const std::size_t m = s.size();
  double sum = 0.0;
  for (float l : lambda) {
    REQUIRE(l >= 0.f);
    REQUIRE(l <= 1.f);
    sum += l;
  }
  REQUIRE_THAT(sum, WithinAbs(k, 1e-5 * std::max(k, 1.0)));
  // a from the uncapped entries that carry enough mass to determine it well.
  std::vector<double> as;
  for (std::size_t i = 0; i != m; ++i)
    if (lambda[i] > 1e-3f && lambda[i] < 1.f - 1e-3f) as.push_back(eps * std::log(double(lambda[i])) - s[i]);
  if (!as.empty()) {
    std::nth_element(as.begin(), as.begin() + std::ptrdiff_t(as.size() / 2), as.end());
    const double a = as[as.size() / 2];
    for (std::size_t i = 0; i != m; ++i) {
      const double expected = std::min(1.0, std::exp((double(s[i]) + a) / eps));
      REQUIRE_THAT(double(lambda[i]), WithinAbs(expected, 1e-5));
    }
  } else {
    // Hard gate: every capped entry scores at least as high as every uncapped one.
    float lowest_capped = std::numeric_limits<float>::infinity(), highest_free = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i != m; ++i) {
      if (lambda[i] >= 1.f - 1e-3f) lowest_capped = std::min(lowest_capped, s[i]);
      else highest_free = std::max(highest_free, s[i]);
    }
    REQUIRE(lowest_capped >= highest_free);
  }
}

}  // namespace

TEST_CASE("gate: hand-computed solutions", "[golden]") {
  // Reference values from an independent bisection on a (Python, double precision).
  const std::vector<float> s = {1.f, 0.f, -1.f};
  auto l1 = aligner::solve_gate(s, 1.0, 1.0);
  CHECK_THAT(l1[0], WithinAbs(0.665240955774822, 1e-6));
  CHECK_THAT(l1[1], WithinAbs(0.2447284710547977, 1e-6));
  CHECK_THAT(l1[2], WithinAbs(0.09003057317038048, 1e-6));
  auto l2 = aligner::solve_gate(s, 2.0, 1.0);
  CHECK_THAT(l2[0], WithinAbs(1.0, 1e-6));
  CHECK_THAT(l2[1], WithinAbs(0.731058578630005, 1e-6));
  CHECK_THAT(l2[2], WithinAbs(0.2689414213699952, 1e-6));
  const std::vector<float> t = {0.3f, -0.2f, 0.9f, 0.1f, 0.5f};
  const double g3[] = {0.1172177752107434, 0.0007898071567207037, 1.0, 0.015863700808511565, 0.8661287168240255};
  const double g4[] = {0.5665683562691849, 0.20842885028973038, 1.0, 0.3797821266566965, 0.8452206667843882};
  auto l3 = aligner::solve_gate(t, 2.0, 0.1);
  auto l4 = aligner::solve_gate(t, 3.0, 0.5);
  for (int i = 0; i != 5; ++i) {
    CHECK_THAT(l3[i], WithinAbs(g3[i], 1e-6));
    CHECK_THAT(l4[i], WithinAbs(g4[i], 1e-6));
  }
}

TEST_CASE("gate: exact solver is optimal across sizes and temperatures", "[property]") {
  const std::size_t m = GENERATE(1, 2, 3, 7, 16, 33, 100, 257, 1000, 2000);
  const double eps = GENERATE(1e-4, 2e-3, 1e-1, 1.0);
  const auto s = aligner_test::random_matrix(1, m, 1000 + m);
  for (double alpha : {0.1, 0.4, 0.5, 0.9}) {
    const double k = std::ceil(alpha * double(m));
    INFO("m = " << m << ", eps = " << eps << ", k = " << k);
    check_optimal(s, k, eps, aligner::solve_gate(s, k, eps));
  }
  // Non-integer budgets are well defined too.
  if (m > 2) check_optimal(s, 1.5, eps, aligner::solve_gate(s, 1.5, eps));
}

TEST_CASE("gate: stable at the paper's temperature and far below it, with scores of magnitude 10", "[edge]") {
  for (double eps : {0.002, 1e-4}) {
    auto s = aligner_test::random_matrix(1, 500, 7);
    for (auto& x : s) x *= 10.f;
    const auto lambda = aligner::solve_gate(s, 200.0, eps);
    for (float l : lambda) REQUIRE(std::isfinite(l));
    check_optimal(s, 200.0, eps, lambda);
    const auto it = aligner::iterate_gate(s, 200.0, eps, {.max_iterations = 50});
    for (float l : it.lambda) REQUIRE(std::isfinite(l));
  }
}

TEST_CASE("gate: epsilon -> 0 gives the hard top-k indicator", "[property]") {
  std::vector<float> s(64);
  for (std::size_t i = 0; i != s.size(); ++i) s[i] = float((i * 37) % 64) * 1e-2f;  // distinct, gaps >= 0.01
  for (double k : {1.0, 5.0, 20.0, 63.0}) {
    const auto lambda = aligner::solve_gate(s, k, 1e-5);
    std::vector<float> sorted = s;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const float threshold = sorted[std::size_t(k) - 1];
    for (std::size_t i = 0; i != s.size(); ++i) REQUIRE_THAT(lambda[i], WithinAbs(s[i] >= threshold ? 1.0 : 0.0, 1e-6));
  }
}

TEST_CASE("gate: budgets outside (0, m), ties, extreme magnitudes", "[edge]") {
  const std::vector<float> s = {0.5f, -2.f, 3.f};
  CHECK(aligner::solve_gate(s, 3.0, 0.1) == std::vector<float>{1.f, 1.f, 1.f});
  CHECK(aligner::solve_gate(s, 7.0, 0.1) == std::vector<float>{1.f, 1.f, 1.f});
  CHECK(aligner::solve_gate(s, 0.0, 0.1) == std::vector<float>{0.f, 0.f, 0.f});
  CHECK(aligner::solve_gate(s, -1.0, 0.1) == std::vector<float>{0.f, 0.f, 0.f});
  CHECK(aligner::solve_gate(std::vector<float>{}, 2.0, 0.1).empty());
  // All-equal scores: mass spreads evenly.
  const std::vector<float> flat(10, 4.f);
  for (float l : aligner::solve_gate(flat, 3.0, 0.002)) CHECK_THAT(l, WithinAbs(0.3, 1e-6));
  // Ties at the boundary: both tied entries get the same value.
  const std::vector<float> tie = {1.f, 1.f, 0.f, -1.f};
  const auto lt = aligner::solve_gate(tie, 1.0, 1e-4);
  CHECK_THAT(lt[0], WithinAbs(0.5, 1e-6));
  CHECK_THAT(lt[1], WithinAbs(0.5, 1e-6));
  // Huge and tiny magnitudes.
  for (float scale : {1e6f, 1e-30f, 1e30f}) {
    std::vector<float> v = aligner_test::random_matrix(1, 50, 3);
    for (auto& x : v) x *= scale;
    const auto l = aligner::solve_gate(v, 10.0, 0.002);
    double sum = 0;
    for (float x : l) {
      REQUIRE(std::isfinite(x));
      sum += x;
    }
    CHECK_THAT(sum, WithinAbs(10.0, 1e-4));
  }
}

TEST_CASE("gate: rejects bad arguments and leaves the output untouched", "[edge]") {
  const std::vector<float> s = {0.5f, 1.f};
  std::vector<float> out = {7.f, 7.f};
  CHECK_THROWS_AS(aligner::solve_gate(s, 1.0, 0.0, out), aligner::invalid_argument);
  CHECK_THROWS_AS(aligner::solve_gate(s, 1.0, -1.0, out), aligner::invalid_argument);
  CHECK_THROWS_WITH(aligner::solve_gate(s, 1.0, std::nan(""), out), Catch::Contains("epsilon"));
  const std::vector<float> bad = {0.5f, aligner_test::nan_f()};
  CHECK_THROWS_WITH(aligner::solve_gate(bad, 1.0, 0.1, out), Catch::Contains("scores[1]"));
  const std::vector<float> inf = {aligner_test::inf_f(), 0.f};
  CHECK_THROWS_AS(aligner::solve_gate(inf, 1.0, 0.1, out), aligner::invalid_argument);
  CHECK_THROWS_AS(aligner::iterate_gate(inf, 1.0, 0.1), aligner::invalid_argument);
  CHECK_THROWS_AS(aligner::solve_gate(s, std::nan(""), 0.1, out), aligner::invalid_argument);
  std::vector<float> small(1);
  CHECK_THROWS_AS(aligner::solve_gate(s, 1.0, 0.1, small), aligner::invalid_argument);
  CHECK(out == std::vector<float>{7.f, 7.f});
}

TEST_CASE("gate: the paper's iteration equals a double-precision run of the same steps", "[oracle]") {
  const std::size_t m = GENERATE(1, 5, 64, 300);
  const double eps = GENERATE(2e-3, 0.1, 1.0);
  const auto s = aligner_test::random_matrix(1, m, 77 + m);
  const double k = std::ceil(0.4 * double(m));
  for (std::size_t steps : {1, 2, 5, 25}) {
    const auto got = aligner::iterate_gate(s, k, eps, {.max_iterations = steps, .tolerance = 0.0});
    if (k >= double(m)) continue;  // trivial budget: no iteration runs
    REQUIRE((got.iterations == steps || (got.converged && got.iterations < steps)));  // stops early once exact
    const auto expected = paper_iteration_double(s, k, eps, got.iterations);
    for (std::size_t i = 0; i != m; ++i) REQUIRE_THAT(double(got.lambda[i]), WithinAbs(expected[i], 1e-6 * std::max(1.0, expected[i])));
  }
}

TEST_CASE("gate: the iteration run to its tolerance agrees with the exact solver", "[oracle]") {
  const std::size_t m = GENERATE(3, 20, 200);
  const double eps = GENERATE(0.05, 0.1, 1.0);
  const auto s = aligner_test::random_matrix(1, m, 5 + m);
  const double k = std::ceil(0.5 * double(m));
  const auto it = aligner::iterate_gate(s, k, eps, {.max_iterations = 100000, .tolerance = 1e-9});
  const auto exact = aligner::solve_gate(s, k, eps);
  INFO("m = " << m << ", eps = " << eps << ", iterations = " << it.iterations);
  REQUIRE(it.converged);
  for (std::size_t i = 0; i != m; ++i) REQUIRE_THAT(it.lambda[i], WithinAbs(exact[i], 1e-5));
}

TEST_CASE("gate: the iteration reports non-convergence when epsilon is small against the gaps", "[edge]") {
  std::vector<float> s(100);
  for (std::size_t i = 0; i != s.size(); ++i) s[i] = float(i) * 0.1f;  // gaps 0.1 >> eps ln k
  const auto it = aligner::iterate_gate(s, 50.0, 1e-4, {.max_iterations = 20});
  CHECK_FALSE(it.converged);
  CHECK(it.iterations == 20);
  for (float l : it.lambda) {
    CHECK(l >= 0.f);
    CHECK(l <= 1.f);
  }
}

TEST_CASE("gate: budget helper", "[edge]") {
  CHECK(aligner::gate_budget(0.5, 7) == 4.0);
  CHECK(aligner::gate_budget(0.4, 10) == 4.0);
  CHECK(aligner::gate_budget(0.4, 0) == 0.0);
  CHECK_THROWS_AS(aligner::gate_budget(1.5, 3), aligner::invalid_argument);
}
