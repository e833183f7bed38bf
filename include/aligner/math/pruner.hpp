/** @file pruner.hpp
 *  @brief Salience pruning (SPEC section 5): keep the top β fraction of a sequence's tokens by salience.
 *
 *  Keeps max(1, ceil(β · rows)) tokens of a non-empty sequence (none of an empty one), the largest saliences
 *  first, ties toward the lower index; returns the kept indices in their original (ascending) order.
 *  Per sequence, never corpus-wide. Complexity O(rows log rows). Pure functions; thread-safe. */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/types.hpp"

namespace aligner {

namespace detail {
inline void check_beta(double beta, const char* name) {
  ALIGNER_EXPECTS(std::isfinite(beta) && beta > 0.0 && beta <= 1.0, name, " must be in (0, 1], got ", beta);
}
}  // namespace detail

/// Number of tokens a sequence of `rows` keeps under fraction `beta` in (0, 1].
inline std::size_t prune_keep_count(std::size_t rows, double beta) {
  detail::check_beta(beta, "pruning fraction beta");
  if (rows == 0) return 0;
  const double raw = std::ceil(beta * double(rows));
  const std::size_t keep = raw < 1.0 ? 1 : std::size_t(raw);
  return std::min(keep, rows);
}

/// Indices of the kept tokens, ascending. `salience` must be finite (checked).
inline std::vector<std::uint32_t> prune(std::span<const float> salience, double beta) {
  const std::size_t keep = prune_keep_count(salience.size(), beta);
  const std::size_t bad = detail::first_non_finite(salience);
  ALIGNER_EXPECTS(bad == salience.size(), "salience[", bad, "] = ", bad < salience.size() ? salience[bad] : 0.f,
                  " is not finite");
  std::vector<std::uint32_t> order(salience.size());
  std::iota(order.begin(), order.end(), std::uint32_t{0});
  if (keep < order.size()) {
    std::nth_element(order.begin(), order.begin() + std::ptrdiff_t(keep), order.end(),
                     [&](std::uint32_t a, std::uint32_t b) {
                       return ranks_before(salience[a], a, salience[b], b);
                     });
    order.resize(keep);
    std::sort(order.begin(), order.end());
  }
  return order;
}

}  // namespace aligner
