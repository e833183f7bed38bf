// score, gate and salience: the subcommands over .npy arrays.
#include <aligner/eval/adapt.hpp>
#include <aligner/io/npy.hpp>
#include <aligner/math/gate_solver.hpp>
#include <aligner/math/salience.hpp>
#include <aligner/math/scorer.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"

namespace cli {
namespace {

struct npy_sequences {
  aligner::io::npy_array<float> vectors;
  std::vector<std::int64_t> offsets;
  aligner::sequence_set_view view() const { return {{vectors.values.data(), vectors.shape[0], vectors.shape[1]}, offsets}; }
};

npy_sequences load_sequences(const std::string& vectors_file, const std::string& offsets_file) {
  npy_sequences s;
  s.vectors = aligner::io::load_npy<float>(vectors_file);
  if (s.vectors.shape.size() != 2) throw usage_error(vectors_file + ": expected a 2-d array [tokens, dim]");
  auto off = aligner::io::load_npy<std::int64_t>(offsets_file);
  if (off.shape.size() != 1) throw usage_error(offsets_file + ": expected a 1-d array of offsets");
  s.offsets = std::move(off.values);
  try {
    aligner::detail::check_offsets(s.offsets, s.vectors.shape[0], "offsets");
  } catch (const aligner::invalid_argument& e) {
    throw usage_error(offsets_file + ": " + e.what());
  }
  return s;
}

std::vector<float> load_vector(const std::string& file, std::size_t expected, const char* what) {
  auto v = aligner::io::load_npy<float>(file);
  if (v.values.size() != expected)
    throw usage_error(file + ": " + what + " has " + std::to_string(v.values.size()) + " values, expected " + std::to_string(expected));
  return std::move(v.values);
}

}  // namespace

int run_score(const options& o) {
  for (const char* flag : {"--queries", "--query-offsets", "--docs", "--doc-offsets", "--strategy"}) o.require(flag);
  if (o.strategies.size() != 1) throw usage_error("score takes one --strategy, got " + std::to_string(o.strategies.size()));
  const auto q = load_sequences(o.queries, o.query_offsets);
  const auto d = load_sequences(o.docs, o.doc_offsets);
  std::vector<float> uq, ud;
  if (o.has("--query-salience")) uq = load_vector(o.query_salience, q.vectors.shape[0], "query salience");
  if (o.has("--doc-salience")) ud = load_vector(o.doc_salience, d.vectors.shape[0], "document salience");
  if (q.vectors.shape[0] && d.vectors.shape[0] && q.vectors.shape[1] != d.vectors.shape[1])
    throw usage_error("query dim " + std::to_string(q.vectors.shape[1]) + " differs from document dim " + std::to_string(d.vectors.shape[1]));
  const auto qv = q.view(), dv = d.view();
  std::vector<float> scores(dv.size());
  aligner::score_workspace ws;
  std::string out;
  char line[96];
  for (std::size_t i = 0; i != qv.size(); ++i) {
    aligner::score_params p{.strategy = o.strategies[0], .norm = o.norm};
    if (!uq.empty()) p.query_salience = std::span<const float>(uq).subspan(std::size_t(qv.offsets[i]), qv.length(i));
    // Documents validated once (first query); each query prepared once.
    aligner::score_batch(aligner::prepared_query(qv.sequence(i), p, aligner::storage::f32), dv, scores, ud, i == 0, &ws);
    for (std::size_t j = 0; j != scores.size(); ++j) {
      const int n = std::snprintf(line, sizeof line, "%zu\t%zu\t%.9g\n", i, j, double(scores[j]));
      out.append(line, std::size_t(n));
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int run_gate(const options& o) {
  for (const char* flag : {"--scores", "--k", "--epsilon", "--out"}) o.require(flag);
  if (o.has("--iterations") && o.has("--exact")) throw usage_error("--iterations and --exact exclude each other");
  auto s = aligner::io::load_npy<float>(o.scores);
  if (s.shape.size() > 2) throw usage_error("--scores must be a 1-d or 2-d array");
  const std::size_t rows = s.shape.size() == 2 ? s.shape[0] : 1, cols = s.shape.size() == 2 ? s.shape[1] : s.values.size();
  std::vector<float> lambda(s.values.size());
  for (std::size_t r = 0; r != rows; ++r) {
    const std::span<const float> row(s.values.data() + r * cols, cols);
    if (o.has("--iterations")) {
      // Exactly N steps (tolerance 0: only an exact fixed point stops earlier); convergence is judged afterwards.
      const auto it = aligner::iterate_gate(row, o.k, o.epsilon, {.max_iterations = o.iterations, .tolerance = 0.0});
      std::copy(it.lambda.begin(), it.lambda.end(), lambda.begin() + std::ptrdiff_t(r * cols));
      double total = 0.0;
      for (float l : it.lambda) total += l;
      const double target = std::clamp(o.k, 0.0, double(cols));
      const bool converged = std::abs(total - target) <= 1e-6 * std::max(target, 1.0);
      std::fprintf(stderr, "row %zu: %zu iterations, sum(lambda) = %.9g, %s\n", r, it.iterations, total,
                   converged ? "converged" : "not converged");
    } else {
      aligner::solve_gate(row, o.k, o.epsilon, std::span<float>(lambda).subspan(r * cols, cols));
    }
  }
  aligner::io::save_npy<float>(o.out, lambda, s.shape);
  return 0;
}

int run_salience(const options& o) {
  for (const char* flag : {"--tokens", "--weights", "--bias", "--out"}) o.require(flag);
  if (o.has("--budget") != o.has("--epsilon")) throw usage_error("--budget and --epsilon go together");
  auto x = aligner::io::load_npy<float>(o.tokens);
  if (x.shape.size() != 2) throw usage_error("--tokens must be a 2-d array [tokens, dim]");
  auto w = aligner::io::load_npy<float>(o.weights);
  std::optional<aligner::gate_params> gate;
  if (o.has("--budget")) gate = aligner::gate_params{.alpha = o.budget, .epsilon = o.epsilon};
  const aligner::salience_scorer f(w.values, float(o.bias), gate);
  const auto u = f({x.values.data(), x.shape[0], x.shape[1]});
  aligner::io::save_npy<float>(o.out, u, {x.shape[0]});
  return 0;
}

}  // namespace cli
