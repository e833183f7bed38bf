/** @file idf.hpp
 *  @brief A salience that needs no training: inverse document frequency of token ids, and a least-squares fit
 *  of the salience FFN (w, b) to any per-vector target (for example IDF from the token vectors).
 *
 *  idf(t) = ln(1 + (N - df_t + 0.5) / (df_t + 0.5)), N = number of documents, df_t = documents holding token
 *  id t (the BM25 form: always > 0). Complexity O(total tokens). fit_idf_salience fits the FFN to the IDF of a
 *  seeded sample of document tokens: the salience of IDF for token vectors alone (a start for salience training). */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include <Eigen/Dense>

#include "../core/error.hpp"
#include "../io/collection.hpp"
#include "../math/salience.hpp"

namespace aligner {

/// IDF of every vocabulary id over the documents given by `offsets` (documents + 1 entries) and the `token_ids` of
/// their tokens. Throws when an id is outside [0, vocab_size) or the ids do not match the offsets.
inline std::vector<float> token_idf(std::span<const std::int64_t> offsets, std::span<const std::int32_t> token_ids,
                                    std::size_t vocab_size) {
  ALIGNER_EXPECTS(!offsets.empty() && offsets.front() == 0 && std::size_t(offsets.back()) == token_ids.size(),
                  "token_idf needs token ids (token-id collection form); got ", token_ids.size(), " ids for ",
                  offsets.empty() ? std::int64_t(0) : offsets.back(), " tokens");
  const std::size_t docs = offsets.size() - 1;
  std::vector<std::uint32_t> df(vocab_size, 0), last_doc(vocab_size, std::uint32_t(-1));
  for (std::size_t d = 0; d != docs; ++d) {
    ALIGNER_EXPECTS(offsets[d] <= offsets[d + 1], "token_idf: offsets[", d + 1, "] = ", offsets[d + 1], " is below offsets[", d,
                    "] = ", offsets[d]);
    for (auto t = offsets[d]; t != offsets[d + 1]; ++t) {
      const std::int32_t raw = token_ids[std::size_t(t)];
      ALIGNER_EXPECTS(raw >= 0 && std::size_t(raw) < vocab_size, "token id ", raw, " is outside the vocabulary of ", vocab_size);
      const auto id = std::size_t(raw);
      if (last_doc[id] != d) last_doc[id] = std::uint32_t(d), ++df[id];
    }
  }
  const double n = double(docs);
  std::vector<float> idf(vocab_size);
  for (std::size_t t = 0; t != vocab_size; ++t)
    idf[t] = float(std::log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)));
  return idf;
}

/// IDF of every vocabulary id over the documents (token-id form). Throws when the collection has no token ids.
inline std::vector<float> token_idf(const io::token_sequences& docs, std::size_t vocab_size) {
  ALIGNER_EXPECTS(docs.token_ids.size() == docs.tokens(), "token_idf needs token ids (token-id collection form); got ",
                  docs.token_ids.size(), " ids for ", docs.tokens(), " tokens");
  return token_idf(docs.offsets, docs.token_ids, vocab_size);
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

/// The FFN fitted by ridge least squares (fit_salience, `ridge`) to the IDF (token_idf over the documents, ids
/// below `vocab_size`; 0: the largest id + 1) of a seeded uniform sample of at most `sample` document tokens
/// (without replacement; all when there are fewer). `token_ids` holds one vocabulary id per row of `docs.tokens`;
/// `r_squared` receives the fit's R^2 on the sample. The same inputs and seed give the same heads.
inline salience_scorer fit_idf_salience(const sequence_set_view& docs, std::span<const std::int32_t> token_ids, std::size_t vocab_size = 0,
                                        std::size_t sample = 200000, std::uint64_t seed = 0, double ridge = 1e-3,
                                        double* r_squared = nullptr, std::optional<gate_params> gate = std::nullopt) {
  const std::size_t tokens = docs.tokens.rows, dim = docs.tokens.cols;
  ALIGNER_EXPECTS(tokens > 0, "fit_idf_salience needs at least one document token, got none");
  ALIGNER_EXPECTS(sample > 0, "fit_idf_salience sample must be >= 1, got ", sample);
  ALIGNER_EXPECTS(token_ids.size() == tokens, "fit_idf_salience: ", token_ids.size(), " token ids for ", tokens, " tokens");
  if (vocab_size == 0) vocab_size = std::size_t(std::max<std::int32_t>(0, *std::max_element(token_ids.begin(), token_ids.end()))) + 1;
  const std::vector<float> idf = token_idf(docs.offsets, token_ids, vocab_size);
  const std::size_t n = std::min(tokens, sample);
  std::vector<std::size_t> pick(tokens);
  std::iota(pick.begin(), pick.end(), std::size_t{0});
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i != n; ++i) std::swap(pick[i], pick[i + std::size_t(rng() % (tokens - i))]);
  std::vector<float> x(n * dim), y(n);
  for (std::size_t i = 0; i != n; ++i) {
    std::copy_n(docs.tokens.row(pick[i]), dim, x.data() + i * dim);
    y[i] = idf[std::size_t(token_ids[pick[i]])];
  }
  return fit_salience({x.data(), n, dim}, y, ridge, r_squared, gate);
}

}  // namespace aligner
