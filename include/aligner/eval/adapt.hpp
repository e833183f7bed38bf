/** @file adapt.hpp
 *  @brief Few-shot alignment adaptation (SPEC section 7).
 *
 *  A strategy_table holds one metric value per (labelled query, strategy of a grid), typically nDCG@10 of each
 *  query's ranking under each strategy (`aligner adapt` builds one from the runs of `aligner eval`). `adapt` picks the strategy with the best mean over a
 *  set of queries (ties to the earlier strategy of the grid; every strategy's mean is reported). The paper's
 *  protocol (`fold_protocol`) shuffles the queries with a seeded generator, cuts folds of `shots` queries
 *  (a remainder smaller than `shots` forms no fold), adapts on each fold, evaluates the choice on all other
 *  queries, and reports mean ± standard deviation over folds (population standard deviation), next to Top-1's
 *  value on the same held-out sets. Deterministic for a fixed seed (std::mt19937_64 + a Fisher-Yates shuffle
 *  written here, so it does not depend on the standard library's shuffle). */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../math/alignment.hpp"
#include "../core/error.hpp"

namespace aligner {

namespace detail {

/// Fisher-Yates with std::mt19937_64, written here so that an order does not depend on the standard library's
/// std::shuffle (fold protocol, salience training).
inline void seeded_shuffle(std::vector<std::size_t>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[std::size_t(rng() % i)]);
}

}  // namespace detail

/// The paper's grid: Top-k with k in {1, 2, 4, 6, 8}, Top-p with p in {0.5%, 1%, 1.5%, 2%}.
inline std::vector<alignment> paper_grid() {
  return {alignment::top1(),        alignment::top_k(2),      alignment::top_k(4),      alignment::top_k(6),
          alignment::top_k(8),      alignment::top_p(0.005),  alignment::top_p(0.01),   alignment::top_p(0.015),
          alignment::top_p(0.02)};
}

/// Refuses a grid whose last strategy is already in it (`what` names the grid in the message). Called as each
/// strategy is added, so every grid a user spells out names each strategy once.
inline void expect_new_strategy(const std::vector<alignment>& grid, std::string_view what) {
  ALIGNER_EXPECTS(std::find(grid.begin(), grid.end() - 1, grid.back()) == grid.end() - 1,
                  std::string(what) + " names " + grid.back().name() + " twice");
}

/// Parses "paper" or a comma-separated list of strategy names.
inline std::vector<alignment> parse_grid(std::string_view text) {
  if (text == "paper") return paper_grid();
  std::vector<alignment> grid;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    grid.push_back(alignment::parse(text.substr(start, end - start)));
    expect_new_strategy(grid, "strategy grid '" + std::string(text) + "'");
    start = end + 1;
  }
  ALIGNER_EXPECTS(!grid.empty(), "strategy grid is empty");
  return grid;
}

/// values[q * strategies + g]: metric of query q under grid[g].
struct strategy_table {
  std::vector<std::string> query_ids;
  std::vector<alignment> grid;
  std::vector<double> values;

  double at(std::size_t q, std::size_t g) const noexcept { return values[q * grid.size() + g]; }
  /// Mean of strategy g over the given queries (0 for none).
  double mean(std::size_t g, std::span<const std::size_t> queries) const noexcept {
    double total = 0.0;
    for (std::size_t q : queries) total += at(q, g);
    return queries.empty() ? 0.0 : total / double(queries.size());
  }
};

/// Outcome of adapting on a set of queries.
struct adaptation {
  std::vector<double> means;  ///< every strategy's mean metric, in grid order
  std::size_t best = 0;       ///< index into the grid; ties go to the earlier strategy
};

/// Picks the best strategy on `queries` (indices into the table) among the first `choices` strategies of the
/// grid (all by default; later columns, e.g. a baseline, get their means reported but are never chosen).
/// Throws on an empty set, a bad index or choices == 0.
inline adaptation adapt(const strategy_table& table, std::span<const std::size_t> queries,
                        std::size_t choices = std::size_t(-1)) {
  ALIGNER_EXPECTS(!queries.empty(), "adaptation needs at least one labelled query");
  ALIGNER_EXPECTS(!table.grid.empty(), "adaptation needs a non-empty strategy grid");
  ALIGNER_EXPECTS(choices >= 1, "adaptation needs at least one strategy to choose from");
  ALIGNER_EXPECTS(table.values.size() == table.query_ids.size() * table.grid.size(), "strategy table holds ",
                  table.values.size(), " values for ", table.query_ids.size(), " queries x ", table.grid.size(), " strategies");
  for (std::size_t q : queries)
    ALIGNER_EXPECTS(q < table.query_ids.size(), "adaptation query index ", q, " is outside the table of ", table.query_ids.size());
  choices = std::min(choices, table.grid.size());
  adaptation out;
  out.means.resize(table.grid.size());
  for (std::size_t g = 0; g != table.grid.size(); ++g) {
    out.means[g] = table.mean(g, queries);
    if (g < choices && out.means[g] > out.means[out.best]) out.best = g;  // strict: ties keep the earlier strategy
  }
  return out;
}

/// One fold of the protocol.
struct fold_result {
  std::vector<std::size_t> shots;  ///< the fold's labelled queries (table indices)
  adaptation choice;               ///< what adapting on them picked
  double held_out = 0.0;           ///< the chosen strategy's mean over every other query
  double top1_held_out = 0.0;      ///< Top-1's (grid index `baseline`) mean over the same queries
};

struct fold_protocol_result {
  std::vector<fold_result> folds;
  double mean = 0.0, stddev = 0.0;            ///< adapted strategy over folds
  double top1_mean = 0.0, top1_stddev = 0.0;  ///< baseline strategy over the same folds
};

/// Runs the paper's protocol: folds of `shots` labelled queries, adapt on each (among the first `choices`
/// strategies), evaluate on the rest. `baseline` is the grid index reported next to the adapted value (Top-1
/// in the paper's grid; it may be a column outside the choices).
inline fold_protocol_result fold_protocol(const strategy_table& table, std::size_t shots = 8, std::uint64_t seed = 0,
                                          std::size_t baseline = 0, std::size_t choices = std::size_t(-1)) {
  const std::size_t n = table.query_ids.size();
  ALIGNER_EXPECTS(shots >= 1, "shots must be >= 1, got ", shots);
  ALIGNER_EXPECTS(n > shots, "the fold protocol needs more than ", shots, " labelled queries, got ", n);
  ALIGNER_EXPECTS(baseline < table.grid.size(), "baseline index ", baseline, " is outside the grid of ", table.grid.size());
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i != n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  detail::seeded_shuffle(order, rng);
  fold_protocol_result out;
  std::vector<bool> in_fold(n);
  for (std::size_t f = 0; (f + 1) * shots <= n; ++f) {
    fold_result fold;
    fold.shots.assign(order.begin() + std::ptrdiff_t(f * shots), order.begin() + std::ptrdiff_t((f + 1) * shots));
    fold.choice = adapt(table, fold.shots, choices);
    std::fill(in_fold.begin(), in_fold.end(), false);
    for (std::size_t q : fold.shots) in_fold[q] = true;
    std::vector<std::size_t> rest;
    for (std::size_t q = 0; q != n; ++q)
      if (!in_fold[q]) rest.push_back(q);
    fold.held_out = table.mean(fold.choice.best, rest);
    fold.top1_held_out = table.mean(baseline, rest);
    out.folds.push_back(std::move(fold));
  }
  auto stats = [&](auto value, double& mean, double& sd) {
    double total = 0.0, sq = 0.0;
    for (const auto& f : out.folds) total += value(f);
    mean = total / double(out.folds.size());
    for (const auto& f : out.folds) sq += (value(f) - mean) * (value(f) - mean);
    sd = std::sqrt(sq / double(out.folds.size()));
  };
  stats([](const fold_result& f) { return f.held_out; }, out.mean, out.stddev);
  stats([](const fold_result& f) { return f.top1_held_out; }, out.top1_mean, out.top1_stddev);
  return out;
}

}  // namespace aligner
