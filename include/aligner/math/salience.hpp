/** @file salience.hpp
 *  @brief Unary salience (SPEC section 3): u_i = λ_i · ReLU(w . x_i + b).
 *
 *  One linear layer to a scalar, then ReLU; queries and documents use separate scorers. λ is 1 without a gate;
 *  with one, λ is the entropy-regularised top-k gate (gate_solver.hpp) applied to s_i = ReLU(w . x_i + b),
 *  with budget k = ceil(α · rows). Complexity O(rows · dim) (+ O(rows log rows) with the gate).
 *  A salience_scorer is immutable after construction and safe to share between threads. */
#pragma once

#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/types.hpp"
#include "../kernels/dot.hpp"
#include "gate_solver.hpp"

namespace aligner {

/// Gate settings of a salience scorer: budget fraction α and temperature ε (the paper trains with α = 0.5 for
/// queries, 0.4 for documents, ε = 0.002). `exact` picks the sort-based solver (default) over the iteration.
struct gate_params {
  double alpha = 0.5;
  double epsilon = 0.002;
  bool exact = true;
  gate_iteration_params iteration{};
};

namespace ref {

/// Scalar specification of ReLU(w . x_i + b) in double.
inline std::vector<double> salience(matrix_view<float> tokens, std::span<const float> weights, double bias) {
  std::vector<double> out(tokens.rows);
  for (std::size_t i = 0; i != tokens.rows; ++i) {
    double acc = bias;
    for (std::size_t c = 0; c != tokens.cols; ++c) acc += double(tokens.row(i)[c]) * double(weights[c]);
    out[i] = acc > 0.0 ? acc : 0.0;
  }
  return out;
}

}  // namespace ref

/// The salience FFN f(x) = ReLU(w . x + b), optionally followed by the top-k gate.
class salience_scorer {
 public:
  /// @param weights w (dim entries, finite); @param bias b (finite); @param gate optional gate.
  /// Throws aligner::invalid_argument on empty or non-finite weights, non-finite bias, or bad gate values.
  salience_scorer(std::vector<float> weights, float bias, std::optional<gate_params> gate = std::nullopt)
      : weights_(std::move(weights)), bias_(bias), gate_(gate) {
    ALIGNER_EXPECTS(!weights_.empty(), "salience weights must not be empty");
    const std::size_t bad = detail::first_non_finite(weights_);
    ALIGNER_EXPECTS(bad == weights_.size(), "salience weights[", bad, "] = ", bad < weights_.size() ? weights_[bad] : 0.f,
                    " is not finite");
    ALIGNER_EXPECTS(std::isfinite(bias_), "salience bias must be finite, got ", bias_);
    if (gate_) {
      ALIGNER_EXPECTS(std::isfinite(gate_->alpha) && gate_->alpha >= 0.0 && gate_->alpha <= 1.0,
                      "gate alpha must be in [0, 1], got ", gate_->alpha);
      ALIGNER_EXPECTS(std::isfinite(gate_->epsilon) && gate_->epsilon > 0.0, "gate epsilon must be finite and > 0, got ",
                      gate_->epsilon);
    }
  }

  std::size_t dim() const noexcept { return weights_.size(); }
  std::span<const float> weights() const noexcept { return weights_; }
  float bias() const noexcept { return bias_; }
  const std::optional<gate_params>& gate() const noexcept { return gate_; }

  /// s_i = ReLU(w . x_i + b) for every row, without the gate. `out` has tokens.rows entries.
  void raw(matrix_view<float> tokens, std::span<float> out, bool check_finite = true) const {
    check(tokens, out, check_finite);
    raw_unchecked(tokens, out);
  }

  /// u = λ ∘ ReLU(X w + b) into `out` (tokens.rows entries); λ = 1 without a gate.
  void compute(matrix_view<float> tokens, std::span<float> out, bool check_finite = true) const {
    check(tokens, out, check_finite);
    if (!gate_) return raw_unchecked(tokens, out);
    std::vector<float> s(tokens.rows);
    raw_unchecked(tokens, s);
    const double budget = gate_budget(gate_->alpha, tokens.rows);
    std::vector<float> lambda = gate_->exact ? solve_gate(s, budget, gate_->epsilon)
                                             : iterate_gate(s, budget, gate_->epsilon, gate_->iteration).lambda;
    for (std::size_t i = 0; i != tokens.rows; ++i) out[i] = lambda[i] * s[i];
  }

  /// u for every row, as a new vector.
  std::vector<float> operator()(matrix_view<float> tokens, bool check_finite = true) const {
    std::vector<float> out(tokens.rows);
    compute(tokens, out, check_finite);
    return out;
  }

  /// u for every token of a sequence set, each sequence gated on its own (budget from its own length).
  std::vector<float> operator()(const sequence_set_view& sequences, bool check_finite = true) const {
    detail::check_offsets(sequences.offsets, sequences.tokens.rows, "offsets");
    detail::check_matrix(sequences.tokens, "tokens", check_finite);
    std::vector<float> out(sequences.tokens.rows);
    for (std::size_t s = 0; s != sequences.size(); ++s)
      compute(sequences.sequence(s), std::span<float>(out).subspan(std::size_t(sequences.offsets[s]), sequences.length(s)),
              false);
    return out;
  }

 private:
  void check(matrix_view<float> tokens, std::span<float> out, bool check_finite) const {
    ALIGNER_EXPECTS(tokens.rows == 0 || tokens.cols == dim(), "salience tokens have dim ", tokens.cols,
                    " but the scorer's weights have dim ", dim());
    ALIGNER_EXPECTS(out.size() == tokens.rows, "salience output has ", out.size(), " entries for ", tokens.rows, " tokens");
    detail::check_matrix(tokens, "salience tokens", check_finite);
  }
  void raw_unchecked(matrix_view<float> tokens, std::span<float> out) const noexcept {
    for (std::size_t i = 0; i != tokens.rows; ++i) {
      const float v = dot(tokens.row(i), weights_.data(), weights_.size()) + bias_;
      out[i] = v > 0.f ? v : 0.f;
    }
  }

  std::vector<float> weights_;
  float bias_;
  std::optional<gate_params> gate_;
};

/// A query head and a document head of the same dim (what salience training learns; io/salience_heads.hpp
/// saves and loads them).
struct salience_heads {
  salience_scorer query;
  salience_scorer doc;

  salience_heads(salience_scorer query_head, salience_scorer doc_head) : query(std::move(query_head)), doc(std::move(doc_head)) {
    ALIGNER_EXPECTS(query.dim() == doc.dim(), "salience heads: the query head has dim ", query.dim(), ", the document head ",
                    doc.dim());
  }
  std::size_t dim() const noexcept { return query.dim(); }
};

}  // namespace aligner
