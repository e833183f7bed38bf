/** @file exact.hpp
 *  @brief Brute-force inner-product backend: exact top-k over every stored token; the retriever's test oracle.
 *
 *  Vectors are packed into float32 panels (kernels/layout.hpp) as they are added; a search is one token_topk scan
 *  (kernels/token_scan.hpp): register tiles of S compared with each row's running k-th best, survivors compacted by
 *  a bucket select. Ties break toward the smaller id. Complexity O(queries * size * dim). `search` is const and
 *  thread-safe (each call has its own scratch, or pass a scan_workspace per thread). */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"
#include "../kernels/layout.hpp"
#include "../kernels/token_scan.hpp"
#include "concepts.hpp"

namespace aligner {

class exact_backend {
 public:
  /// The name index files record, so that loading with another backend type is refused by name.
  static constexpr std::string_view type_name = "exact_backend";

  /// An empty index of vectors of dimension `dim` (>= 1).
  explicit exact_backend(std::size_t dim) : dim_(dim) {
    ALIGNER_EXPECTS(dim >= 1, "exact_backend dim must be >= 1, got ", dim);
  }

  std::size_t dim() const noexcept { return dim_; }
  std::size_t size() const noexcept { return size_; }

  /// Appends vectors (ids size() .. size() + rows - 1). Throws on a dim mismatch or NaN/Inf (index unchanged).
  void add(matrix_view<float> vectors) {
    if (vectors.rows == 0) return;
    detail::check_backend_add(vectors, dim_, "exact_backend");
    panels_.resize(packed_words(storage::f32, size_ + vectors.rows, dim_), 0u);
    for (std::size_t r = 0; r != vectors.rows; ++r) pack_token(storage::f32, vectors.row(r), dim_, size_ + r, panels_.data());
    size_ += vectors.rows;
  }

  /// Exact top-k inner products of every query row, best first, ties toward the smaller id; k may exceed size()
  /// (the rest is padded with id -1, score -inf). Throws on a dim mismatch, k == 0 or NaN/Inf queries.
  topk_result search(matrix_view<float> queries, std::size_t k) const {
    scan_workspace ws;
    return search(queries, k, ws);
  }
  /// The same with caller-owned scratch (one per thread), reused across calls.
  topk_result search(matrix_view<float> queries, std::size_t k, scan_workspace& ws) const {
    detail::check_backend_search(queries, k, dim_);
    topk_result out(queries.rows, k);
    token_topk<storage::f32>(queries, panels_.data(), size_, k, out, ws);
    return out;
  }
  /// Exact top-k among the ids `keep` accepts (filtering_backend): k results whenever k ids are kept.
  topk_result search(matrix_view<float> queries, std::size_t k, const id_filter& keep) const {
    detail::check_backend_search(queries, k, dim_);
    topk_result out(queries.rows, k);
    scan_workspace ws;
    token_topk<storage::f32>(queries, panels_.data(), size_, k, out, ws, keep);
    return out;
  }

  /// The index as bytes: u64 dim, u64 size, then size x dim float32 rows (little-endian, this host's order).
  std::string serialize() const {
    std::string out(16 + size_ * dim_ * sizeof(float), '\0');
    const std::uint64_t header[2] = {dim_, size_};
    std::memcpy(out.data(), header, 16);
    float* rows = reinterpret_cast<float*>(out.data() + 16);
    for (std::size_t t = 0; t != size_; ++t)
      for (std::size_t c = 0; c != dim_; ++c) rows[t * dim_ + c] = at(t, c);
    return out;
  }
  /// Inverse of serialize; throws aligner::io_error on malformed bytes.
  static exact_backend deserialize(std::string_view bytes) {
    std::uint64_t header[2] = {0, 0};
    if (bytes.size() < 16) throw io_error("exact backend: " + std::to_string(bytes.size()) + " bytes, need at least 16");
    std::memcpy(header, bytes.data(), 16);
    if (header[0] == 0 || header[0] > (1u << 20)) throw io_error("exact backend: implausible dim " + std::to_string(header[0]));
    if (header[1] > (bytes.size() - 16) / sizeof(float) / header[0] || 16 + header[1] * header[0] * sizeof(float) != bytes.size())
      throw io_error("exact backend: " + std::to_string(bytes.size()) + " bytes do not hold " + std::to_string(header[1]) +
                     " vectors of dim " + std::to_string(header[0]));
    exact_backend b(header[0]);
    std::vector<float> rows(header[1] * header[0]);
    if (!rows.empty()) std::memcpy(rows.data(), bytes.data() + 16, rows.size() * sizeof(float));
    try {
      b.add({rows.data(), header[1], header[0]});
    } catch (const invalid_argument& e) {
      throw io_error(std::string("exact backend: ") + e.what());
    }
    return b;
  }

  /// Vector `id` (copied out of its panel).
  std::vector<float> vector(std::size_t id) const {
    ALIGNER_EXPECTS(id < size_, "vector id ", id, " is outside the index of ", size_);
    std::vector<float> v(dim_);
    for (std::size_t c = 0; c != dim_; ++c) v[c] = at(id, c);
    return v;
  }

 private:
  float at(std::size_t t, std::size_t c) const noexcept { return packed_value(storage::f32, panels_.data(), panel_width<>, dim_, t, c); }

  std::size_t dim_;
  std::size_t size_ = 0;
  aligned_vector<std::uint32_t> panels_;
};
static_assert(serializable_backend<exact_backend> && filtering_backend<exact_backend>,
              "exact_backend must model serializable_backend and filtering_backend");

}  // namespace aligner
