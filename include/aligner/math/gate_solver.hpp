/** @file gate_solver.hpp
 *  @brief Entropy-regularised top-k gate (SPEC section 4): the λ that solves
 *
 *      maximise  s . λ + ε H(λ),   H(λ) = -Σ λ_i ln λ_i,   subject to  Σ λ_i = k,  0 <= λ_i <= 1.
 *
 *  The solution is λ_i = min(1, exp((s_i + a*) / ε)) for the one a* with Σ λ_i = k. `solve_gate` finds a*
 *  exactly by sorting (O(m log m)); `iterate_gate` runs the paper's coordinate iteration
 *  (a' = ε ln k - ε LSE((s + b)/ε), b' = min(-s - a', 0)), which converges slowly when ε is small against
 *  the gaps between scores, so it reports whether it reached its tolerance. Everything is computed in
 *  double and in the log domain (ε = 0.002 makes exp(s/ε) overflow float). Library rules: k >= m gives
 *  λ = 1, k <= 0 gives λ = 0, ε <= 0 or non-finite scores are rejected. Pure functions; thread-safe. */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/types.hpp"

namespace aligner {

/// Options of the paper's iteration.
struct gate_iteration_params {
  std::size_t max_iterations = 10000;  ///< cap on a/b updates
  double tolerance = 1e-6;             ///< stop when |Σ λ - k| <= tolerance * max(k, 1)
};

/// Outcome of the paper's iteration.
struct gate_iteration_result {
  std::vector<float> lambda;  ///< λ from the last a and b
  std::size_t iterations = 0; ///< a/b updates performed
  bool converged = false;     ///< |Σ λ - k| <= tolerance * max(k, 1) was reached within max_iterations
  double a = 0.0;             ///< final dual variable a
};

namespace detail {

inline void check_gate_args(std::span<const float> scores, double k, double epsilon) {
  ALIGNER_EXPECTS(std::isfinite(epsilon) && epsilon > 0.0, "gate temperature epsilon must be finite and > 0, got ",
                  epsilon);
  ALIGNER_EXPECTS(!std::isnan(k), "gate budget k must not be NaN");
  const std::size_t bad = first_non_finite(scores);
  ALIGNER_EXPECTS(bad == scores.size(), "gate scores[", bad, "] = ", bad < scores.size() ? scores[bad] : 0.f,
                  " is not finite");
}

/// log(exp(x) + exp(y)) without overflow; -inf is the neutral element.
inline double log_add_exp(double x, double y) noexcept {
  if (x == -std::numeric_limits<double>::infinity()) return y;
  if (y == -std::numeric_limits<double>::infinity()) return x;
  const double hi = std::max(x, y), lo = std::min(x, y);
  return hi + std::log1p(std::exp(lo - hi));
}

/// Trivial budgets: fills `out` and returns true when k <= 0 or k >= m.
inline bool gate_trivial(std::size_t m, double k, std::span<float> out) noexcept {
  if (k <= 0.0) { std::fill(out.begin(), out.begin() + std::ptrdiff_t(m), 0.f); return true; }
  if (k >= double(m)) { std::fill(out.begin(), out.begin() + std::ptrdiff_t(m), 1.f); return true; }
  return false;
}

}  // namespace detail

namespace detail {

/// The solution in a form that keeps its precision at any magnitude: λ_i = min(1, exp((s_i - pivot) / ε + offset)),
/// i.e. a* = ε · offset - pivot. Requires 0 < k < m, ε > 0, finite scores.
struct gate_solution {
  double pivot = 0.0;
  double offset = 0.0;
};

template <class Score>
gate_solution solve_gate_pivot(std::span<const Score> scores, double k, double epsilon) {
  const std::size_t m = scores.size();
  std::vector<double> t(scores.begin(), scores.end());
  std::sort(t.begin(), t.end(), std::greater<>());
  // rel[r] = ln Σ_{i >= r} exp((t_i - t_r) / ε): the suffix log-sum-exp relative to its own largest entry, built
  // from differences of scores so that nothing of magnitude |s| / ε is ever formed.
  std::vector<double> rel(m, 0.0);
  for (std::size_t r = m - 1; r-- > 0;) rel[r] = log_add_exp(0.0, rel[r + 1] + (t[r + 1] - t[r]) / epsilon);
  // r = entries capped at 1 (the r largest). With a_r making the uncapped rest sum to k - r, the first r whose
  // largest uncapped entry t_r stays <= 1 is the solution: t_r + a_r <= 0  <=>  ln(k - r) <= rel[r].
  std::size_t r = 0;
  while (double(r + 1) < k && std::log(k - double(r)) > rel[r]) ++r;
  return {t[r], std::log(k - double(r)) - rel[r]};
}

}  // namespace detail

/// Exact solver: writes λ (scores.size() values) to `lambda`. Throws aligner::invalid_argument for ε <= 0,
/// NaN k, non-finite scores or a size mismatch; `lambda` is untouched then.
inline void solve_gate(std::span<const float> scores, double k, double epsilon, std::span<float> lambda) {
  detail::check_gate_args(scores, k, epsilon);
  ALIGNER_EXPECTS(lambda.size() == scores.size(), "gate output has ", lambda.size(), " entries, scores have ",
                  scores.size());
  const std::size_t m = scores.size();
  if (detail::gate_trivial(m, k, lambda)) return;
  const auto sol = detail::solve_gate_pivot(scores, k, epsilon);
  for (std::size_t i = 0; i != m; ++i)
    lambda[i] = float(std::exp(std::min(0.0, (double(scores[i]) - sol.pivot) / epsilon + sol.offset)));
}

/// Exact solver returning a new vector.
inline std::vector<float> solve_gate(std::span<const float> scores, double k, double epsilon) {
  std::vector<float> lambda(scores.size());
  solve_gate(scores, k, epsilon, lambda);
  return lambda;
}

/// The paper's iteration, in the log domain: a and every b_i start at 0; one iteration is the a update then
/// the b update; λ_i = exp((s_i + b_i + a) / ε) from the last a and b. Stops at the tolerance or the cap.
inline gate_iteration_result iterate_gate(std::span<const float> scores, double k, double epsilon,
                                          const gate_iteration_params& params = {}) {
  detail::check_gate_args(scores, k, epsilon);
  ALIGNER_EXPECTS(std::isfinite(params.tolerance) && params.tolerance >= 0.0,
                  "gate iteration tolerance must be finite and >= 0, got ", params.tolerance);
  const std::size_t m = scores.size();
  gate_iteration_result out;
  out.lambda.resize(m);
  if (detail::gate_trivial(m, k, out.lambda)) {
    out.converged = true;
    return out;
  }
  std::vector<double> b(m, 0.0);
  double a = 0.0;
  const double log_k = std::log(k), target_tol = params.tolerance * std::max(k, 1.0);
  auto lambda_sum = [&] {
    double lse = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i != m; ++i) lse = detail::log_add_exp(lse, (double(scores[i]) + b[i] + a) / epsilon);
    return std::exp(lse);
  };
  while (out.iterations < params.max_iterations) {
    double lse = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i != m; ++i) lse = detail::log_add_exp(lse, (double(scores[i]) + b[i]) / epsilon);
    a = epsilon * log_k - epsilon * lse;
    for (std::size_t i = 0; i != m; ++i) b[i] = std::min(-double(scores[i]) - a, 0.0);
    ++out.iterations;
    if (std::abs(lambda_sum() - k) <= target_tol) {
      out.converged = true;
      break;
    }
  }
  for (std::size_t i = 0; i != m; ++i) out.lambda[i] = float(std::exp((double(scores[i]) + b[i] + a) / epsilon));
  out.a = a;
  return out;
}

/// Budget of the gate for a sequence of `rows` tokens: ceil(alpha * rows) (SPEC section 3).
inline double gate_budget(double alpha, std::size_t rows) {
  ALIGNER_EXPECTS(std::isfinite(alpha) && alpha >= 0.0 && alpha <= 1.0, "gate budget fraction alpha must be in [0, 1], got ",
                  alpha);
  return std::ceil(alpha * double(rows));
}

}  // namespace aligner
