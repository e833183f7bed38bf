/** @file types.hpp
 *  @brief Vocabulary types: row-major views of token matrices, sequences stored back to back, top-k results.
 *
 *  Layout, stated once for the whole library: every matrix is row-major, one token per row, element (r, c) at
 *  `data[r * stride_elems + c]`. Views never own memory; the caller keeps the data alive for the call (or, for
 *  objects that hold a view, for the object's lifetime, as each such type says). */
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include <Eigen/Core>

#include "error.hpp"

namespace aligner {

/// Row-major float matrix as Eigen sees it (used by the Eigen::Ref overloads).
using row_matrix_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Non-owning row-major view: element (r, c) is data[r * stride_elems + c].
template <class T>
struct matrix_view {
  const T* data = nullptr;
  std::size_t rows = 0, cols = 0, stride_elems = 0;

  constexpr matrix_view() = default;
  constexpr matrix_view(const T* data_, std::size_t rows_, std::size_t cols_) noexcept
      : data(data_), rows(rows_), cols(cols_), stride_elems(cols_) {}
  constexpr matrix_view(const T* data_, std::size_t rows_, std::size_t cols_, std::size_t stride) noexcept
      : data(data_), rows(rows_), cols(cols_), stride_elems(stride) {}
  /// View of a row-major Eigen matrix (or block of one); the matrix must outlive the view.
  template <class Derived>
    requires(std::same_as<typename Derived::Scalar, T> && bool(Derived::IsRowMajor))
  matrix_view(const Eigen::DenseBase<Derived>& m) noexcept  // NOLINT(google-explicit-constructor)
      : data(m.derived().data()), rows(std::size_t(m.rows())), cols(std::size_t(m.cols())),
        stride_elems(std::size_t(m.derived().outerStride())) {}

  const T* row(std::size_t r) const noexcept { return data + r * stride_elems; }
  /// Rows [first, first + count) as a view of the same data.
  matrix_view middle_rows(std::size_t first, std::size_t count) const noexcept {
    return {data + first * stride_elems, count, cols, stride_elems};
  }
  bool empty() const noexcept { return rows == 0; }
};

/// Many variable-length sequences of token vectors stored back to back: sequence s is rows
/// [offsets[s], offsets[s+1]) of `tokens`. offsets has sequences + 1 entries, starts at 0, never decreases,
/// and ends at tokens.rows. A sequence may be empty.
struct sequence_set_view {
  matrix_view<float> tokens;
  std::span<const std::int64_t> offsets;

  std::size_t size() const noexcept { return offsets.empty() ? 0 : offsets.size() - 1; }
  std::size_t length(std::size_t s) const noexcept { return std::size_t(offsets[s + 1] - offsets[s]); }
  matrix_view<float> sequence(std::size_t s) const noexcept {
    return tokens.middle_rows(std::size_t(offsets[s]), length(s));
  }
};

/// Batched top-k result, struct-of-arrays, row-major rows x k, best first.
/// Unfilled slots hold id = invalid_id and score = -inf.
struct topk_result {
  static constexpr std::int64_t invalid_id = -1;
  std::size_t rows = 0, k = 0;
  std::vector<std::int64_t> ids;
  std::vector<float> scores;

  topk_result() = default;
  topk_result(std::size_t rows_, std::size_t k_) { reset(rows_, k_); }
  /// rows_ x k_ empty slots (id -1, score -inf), in the buffers already held.
  void reset(std::size_t rows_, std::size_t k_) {
    rows = rows_;
    k = k_;
    ids.assign(rows_ * k_, invalid_id);
    scores.assign(rows_ * k_, -std::numeric_limits<float>::infinity());
  }
  std::span<const std::int64_t> ids_of(std::size_t r) const { return {ids.data() + r * k, k}; }
  std::span<const float> scores_of(std::size_t r) const { return {scores.data() + r * k, k}; }
  std::span<std::int64_t> ids_of(std::size_t r) { return {ids.data() + r * k, k}; }
  std::span<float> scores_of(std::size_t r) { return {scores.data() + r * k, k}; }
};

/// The most tokens one sequence (document or query) may hold: token indices inside a sequence are kept in 24 bits
/// (the kernels carry them exactly in float lanes).
inline constexpr std::size_t max_sequence_tokens = (std::size_t{1} << 24) - 1;

/// The order of every ranked list the library returns: higher score first, equal scores by smaller id.
template <class Score, class Id>
constexpr bool ranks_before(Score score_a, Id id_a, Score score_b, Id id_b) noexcept {
  return score_a > score_b || (score_a == score_b && id_a < id_b);
}

namespace detail {

/// True when all n values are finite: a test of the exponent bits (all ones = Inf or NaN) that the compiler
/// vectorises, about 10x faster than a loop over std::isfinite; the library is never built with -ffast-math.
inline bool all_finite(const float* p, std::size_t n) noexcept {
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i != n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, p + i, 4);
    bad |= std::uint32_t((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

/// Index of the first non-finite value in a view, or rows * cols when all are finite.
inline std::size_t first_non_finite(matrix_view<float> m) noexcept {
  for (std::size_t r = 0; r != m.rows; ++r) {
    const float* row = m.row(r);
    if (!all_finite(row, m.cols))
      for (std::size_t c = 0; c != m.cols; ++c)
        if (!std::isfinite(row[c])) return r * m.cols + c;
  }
  return m.rows * m.cols;
}

inline std::size_t first_non_finite(std::span<const float> v) noexcept {
  if (all_finite(v.data(), v.size())) return v.size();
  for (std::size_t i = 0; i != v.size(); ++i)
    if (!std::isfinite(v[i])) return i;
  return v.size();
}

/// Validates a matrix view argument at a public boundary: non-null data when non-empty, stride >= cols,
/// optionally all finite. `name` is the argument's name for the message.
inline void check_matrix(matrix_view<float> m, const char* name, bool check_finite) {
  ALIGNER_EXPECTS(m.rows == 0 || m.cols == 0 || m.data != nullptr, name, " has ", m.rows, " rows but no data");
  ALIGNER_EXPECTS(m.rows <= 1 || m.stride_elems >= m.cols, name, ".stride_elems = ", m.stride_elems,
                  " is smaller than its cols = ", m.cols);
  if (check_finite) {
    const std::size_t bad = first_non_finite(m);
    ALIGNER_EXPECTS(bad == m.rows * m.cols, name, " holds a non-finite value ", m.row(bad / m.cols)[bad % m.cols],
                    " at row ", bad / m.cols, ", column ", bad % m.cols);
  }
}

/// Validates an optional per-token weight vector (salience): empty, or `rows` finite values >= 0.
inline void check_weights(std::span<const float> w, std::size_t rows, const char* name) {
  if (w.empty()) return;
  ALIGNER_EXPECTS(w.size() == rows, name, " has ", w.size(), " entries but the sequence has ", rows, " tokens");
  for (std::size_t i = 0; i != w.size(); ++i)
    ALIGNER_EXPECTS(std::isfinite(w[i]) && w[i] >= 0.f, name, "[", i, "] = ", w[i],
                    " is not a finite value >= 0");
}

/// Validates the length of one sequence against max_sequence_tokens; `what` names it ("document", "query").
inline void check_sequence_length(std::size_t rows, const char* what) {
  ALIGNER_EXPECTS(rows <= max_sequence_tokens, what, " has ", rows, " tokens; at most 2^24 - 1 = ", max_sequence_tokens,
                  " are supported");
}

/// Validates offsets of a sequence set over `rows` tokens: sequences + 1 entries, starting at 0, never decreasing,
/// ending at `rows`, and no sequence longer than max_sequence_tokens (the one rule every reader and writer uses).
inline void check_offsets(std::span<const std::int64_t> offsets, std::size_t rows, const char* name) {
  ALIGNER_EXPECTS(!offsets.empty(), name, " is empty: it needs sequences + 1 entries, starting at 0");
  ALIGNER_EXPECTS(offsets.front() == 0, name, "[0] = ", offsets.front(), ", expected 0");
  for (std::size_t i = 1; i != offsets.size(); ++i) {
    ALIGNER_EXPECTS(offsets[i] >= offsets[i - 1], name, " decreases at index ", i, ": ", offsets[i - 1], " then ",
                    offsets[i]);
    ALIGNER_EXPECTS(std::uint64_t(offsets[i] - offsets[i - 1]) <= max_sequence_tokens, name, ": sequence ", i - 1, " has ",
                    offsets[i] - offsets[i - 1], " tokens; at most 2^24 - 1 = ", max_sequence_tokens, " are supported");
  }
  ALIGNER_EXPECTS(std::uint64_t(offsets.back()) == rows, name, " ends at ", offsets.back(), " but there are ", rows,
                  " token rows");
}

}  // namespace detail
}  // namespace aligner
