/** @file concepts.hpp
 *  @brief The maximum-inner-product-search (MIPS) backend concept that aligner_retriever plugs into.
 *
 *  A backend holds token vectors under sequential ids (the first added row is id 0, the next add continues at
 *  size()) and answers batched top-k inner-product queries: row-major queries in, a topk_result out (rows x k,
 *  best first, higher score = better, unfilled slots id -1 / score -inf). `search` must be safe to call
 *  concurrently on a const backend (batch search relies on it); `add` is never called concurrently with
 *  anything. Approximate backends may return fewer or different ids than the exact one. */
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "../core/types.hpp"

namespace aligner {

/// Any MIPS engine usable by aligner_retriever.
template <class B>
concept mips_backend = requires(B& backend, const B& const_backend, matrix_view<float> vectors, std::size_t k) {
  { const_backend.dim() } -> std::convertible_to<std::size_t>;
  { const_backend.size() } -> std::convertible_to<std::size_t>;
  { const_backend.search(vectors, k) } -> std::same_as<topk_result>;
  backend.add(vectors);
};

/// What a caller may tell a backend's add besides the vectors (the optional overload `add(vectors, options)`, see
/// configurable_backend). The retriever passes its index_params through it.
struct backend_add_options {
  /// false: the caller has already checked that every value is finite (index_params.check_finite = false, or the
  /// retriever's own check that names the document and token), so the backend does not scan the vectors again.
  bool check_finite = true;
  /// Threads the backend may insert with (0 = one per hardware thread). hnswlib inserts into its graph on several
  /// threads; the graph (and so the approximate results) then depends on the timing. One thread is deterministic.
  unsigned threads = 1;
  /// Called with (vectors inserted so far, vectors of this add), from the inserting threads, one call at a time,
  /// after a few thousand vectors at a time and once at the end. It must not throw.
  std::function<void(std::size_t done, std::size_t total)> progress{};
};

/// A backend whose add also takes backend_add_options (every bundled backend). Others get add(vectors) only.
template <class B>
concept configurable_backend = mips_backend<B> && requires(B& backend, matrix_view<float> vectors, const backend_add_options& options) {
  backend.add(vectors, options);
};

/// A predicate over stored vector ids: the filtered search returns only ids for which it returns true. It may be
/// called from several threads at once (FAISS searches in parallel) and must not throw.
using id_filter = std::function<bool(std::int64_t)>;

/// A backend that can restrict a search to the ids a predicate keeps (the retriever pushes document filters into
/// the token search this way, so a selective filter still finds k hits per query token).
template <class B>
concept filtering_backend = mips_backend<B> && requires(const B& b, matrix_view<float> queries, std::size_t k, const id_filter& keep) {
  { b.search(queries, k, keep) } -> std::same_as<topk_result>;
};

/// A backend that names its type (`static constexpr std::string_view type_name`): index files record it and loading
/// with another backend type is refused by name. Optional for serializable backends.
template <class B>
concept named_backend = requires { { B::type_name } -> std::convertible_to<std::string_view>; };

/// A backend whose search of several rows returns for each row exactly what a search of that row alone returns, the
/// same ids and the same scores bit for bit (declared by `static constexpr bool rows_independent = true`). The
/// retriever's batch searches then put the rows of several queries into one backend search, which reads the index
/// once for all of them instead of once a query. exact_backend declares it (each row's scores are computed alike in
/// any batch); a backend whose arithmetic depends on how many rows come together (FAISS switches to a matrix
/// product at 20 rows) must not.
template <class B>
concept rows_independent_backend = mips_backend<B> && requires { requires B::rows_independent; };

/// A backend the retriever can save and load: its whole state as bytes, and back. `deserialize` must reject
/// malformed bytes with an exception (the retriever's file checksums already catch corruption on disk).
template <class B>
concept serializable_backend = mips_backend<B> && requires(const B& const_backend, std::string_view bytes) {
  { const_backend.serialize() } -> std::same_as<std::string>;
  { B::deserialize(bytes) } -> std::same_as<B>;
};

namespace detail {

/// The argument checks every bundled backend's add() makes (dim match, and no NaN/Inf unless `check_finite` is
/// false); `backend` names it.
inline void check_backend_add(matrix_view<float> vectors, std::size_t dim, const char* backend, bool check_finite = true) {
  ALIGNER_EXPECTS(vectors.cols == dim, backend, " of dim ", dim, " cannot add vectors of dim ", vectors.cols);
  check_matrix(vectors, "vectors", check_finite);
}

/// The argument checks every bundled backend's search() makes (k >= 1, dim match, no NaN/Inf).
inline void check_backend_search(matrix_view<float> queries, std::size_t k, std::size_t dim) {
  ALIGNER_EXPECTS(k >= 1, "search k must be >= 1, got k = ", k);
  ALIGNER_EXPECTS(queries.rows == 0 || queries.cols == dim, "query dim ", queries.cols, " does not match the index dim ", dim);
  check_matrix(queries, "queries", true);
}

}  // namespace detail

/// The documented minimal model of mips_backend (it finds nothing): the smallest thing that compiles.
struct null_backend {
  std::size_t dims = 1, count = 0;
  std::size_t dim() const noexcept { return dims; }
  std::size_t size() const noexcept { return count; }
  void add(matrix_view<float> vectors) noexcept { count += vectors.rows; }
  topk_result search(matrix_view<float> queries, std::size_t k) const { return topk_result(queries.rows, k); }
};
static_assert(mips_backend<null_backend>, "null_backend must model mips_backend");

}  // namespace aligner
