/** @file idf.hpp
 *  @brief A salience that needs no training: inverse document frequency of token ids, and a least-squares fit
 *  of the salience FFN (w, b) to any per-vector target (for example IDF from the token vectors).
 *
 *  idf(t) = ln(1 + (N - df_t + 0.5) / (df_t + 0.5)), N = number of documents, df_t = documents holding token
 *  id t (the BM25 form: always > 0). Complexity O(total tokens). */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include <Eigen/Dense>

#include "../core/error.hpp"
#include "../io/collection.hpp"
#include "../math/salience.hpp"

namespace aligner {

/// IDF of every vocabulary id over the documents (token-id form). Throws when the collection has no token ids.
inline std::vector<float> token_idf(const io::token_sequences& docs, std::size_t vocab_size) {
  ALIGNER_EXPECTS(docs.token_ids.size() == docs.tokens(), "token_idf needs token ids (token-id collection form); got ",
                  docs.token_ids.size(), " ids for ", docs.tokens(), " tokens");
  std::vector<std::uint32_t> df(vocab_size, 0), last_doc(vocab_size, std::uint32_t(-1));
  for (std::size_t d = 0; d != docs.size(); ++d)
    for (auto t = docs.offsets[d]; t != docs.offsets[d + 1]; ++t) {
      const auto id = std::size_t(docs.token_ids[std::size_t(t)]);
      ALIGNER_EXPECTS(id < vocab_size, "token id ", id, " is outside the vocabulary of ", vocab_size);
      if (last_doc[id] != d) last_doc[id] = std::uint32_t(d), ++df[id];
    }
  const double n = double(docs.size());
  std::vector<float> idf(vocab_size);
  for (std::size_t t = 0; t != vocab_size; ++t)
    idf[t] = float(std::log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)));
  return idf;
}

/// Per-token salience of a sequence set from a per-vocabulary-id table (e.g. token_idf).
inline std::vector<float> lookup_salience(const io::token_sequences& seqs, std::span<const float> table) {
  ALIGNER_EXPECTS(seqs.token_ids.size() == seqs.tokens(), "lookup_salience needs token ids (token-id collection form)");
  std::vector<float> out(seqs.token_ids.size());
  for (std::size_t t = 0; t != out.size(); ++t) {
    const auto id = std::size_t(seqs.token_ids[t]);
    ALIGNER_EXPECTS(id < table.size(), "token id ", id, " is outside the salience table of ", table.size());
    out[t] = table[id];
  }
  return out;
}

/// Ridge least-squares fit of w . x + b to `targets` (one per row of `vectors`), regularisation `ridge` >= 0
/// on w. Returns the salience scorer (ReLU applied at scoring) and optionally the fit's R^2.
inline salience_scorer fit_salience(matrix_view<float> vectors, std::span<const float> targets, double ridge = 1e-3,
                                    double* r_squared = nullptr, std::optional<gate_params> gate = std::nullopt) {
  ALIGNER_EXPECTS(vectors.rows == targets.size(), "fit_salience: ", vectors.rows, " vectors but ", targets.size(), " targets");
  ALIGNER_EXPECTS(vectors.rows > 0 && vectors.cols > 0, "fit_salience needs at least one vector of dim >= 1");
  ALIGNER_EXPECTS(std::isfinite(ridge) && ridge >= 0.0, "fit_salience ridge must be finite and >= 0, got ", ridge);
  detail::check_matrix(vectors, "fit_salience vectors", true);
  const std::size_t dim = vectors.cols;
  Eigen::MatrixXd x(vectors.rows, dim + 1);
  Eigen::VectorXd y(vectors.rows);
  for (std::size_t r = 0; r != vectors.rows; ++r) {
    for (std::size_t c = 0; c != dim; ++c) x(Eigen::Index(r), Eigen::Index(c)) = vectors.row(r)[c];
    x(Eigen::Index(r), Eigen::Index(dim)) = 1.0;
    y(Eigen::Index(r)) = targets[r];
  }
  Eigen::MatrixXd gram = x.transpose() * x;
  for (std::size_t c = 0; c != dim; ++c) gram(Eigen::Index(c), Eigen::Index(c)) += ridge * double(vectors.rows);
  const Eigen::VectorXd beta = gram.ldlt().solve(x.transpose() * y);
  if (r_squared) {
    const Eigen::VectorXd residual = y - x * beta;
    const double mean = y.mean();
    const double total = (y.array() - mean).square().sum();
    *r_squared = total > 0.0 ? 1.0 - residual.squaredNorm() / total : 1.0;
  }
  std::vector<float> w(dim);
  for (std::size_t c = 0; c != dim; ++c) w[c] = float(beta(Eigen::Index(c)));
  return salience_scorer(std::move(w), float(beta(Eigen::Index(dim))), gate);
}

}  // namespace aligner
