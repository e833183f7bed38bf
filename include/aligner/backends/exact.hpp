/** @file exact.hpp
 *  @brief Brute-force inner-product backend: exact top-k over every stored token; the retriever's test oracle.
 *
 *  Vectors are packed into float32 panels (or bfloat16 ones, `exact_backend(dim, storage::bf16)`: half the memory,
 *  scanned on AMX-BF16 tiles where the CPU has them, the query rounded to bf16 too, so "exact" is then exact over
 *  the rounded values) as they are added; a search is one token_topk scan
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
  static constexpr std::size_t progress_step = std::size_t(1) << 16;

 public:
  /// The name index files record, so that loading with another backend type is refused by name.
  static constexpr std::string_view type_name = "exact_backend";

  /// An empty index of vectors of dimension `dim` (>= 1), stored in `precision` (storage::f32 or storage::bf16).
  explicit exact_backend(std::size_t dim, storage precision = storage::f32) : dim_(dim), precision_(precision) {
    ALIGNER_EXPECTS(dim >= 1, "exact_backend dim must be >= 1, got ", dim);
    ALIGNER_EXPECTS(precision == storage::f32 || precision == storage::bf16, "exact_backend precision must be f32 or bf16, got ",
                    precision == storage::residual ? "residual" : to_string(precision));
  }

  std::size_t dim() const noexcept { return dim_; }
  storage precision() const noexcept { return precision_; }
  std::size_t size() const noexcept { return size_; }

  /// Appends vectors (ids size() .. size() + rows - 1). Throws on a dim mismatch or NaN/Inf (index unchanged).
  void add(matrix_view<float> vectors) { add(vectors, backend_add_options{}); }
  /// The same with options: no finite scan when options.check_finite is false; progress as vectors are packed
  /// (packing is a copy: one thread).
  void add(matrix_view<float> vectors, const backend_add_options& options) {
    if (vectors.rows == 0) return;
    detail::check_backend_add(vectors, dim_, "exact_backend", options.check_finite);
    panels_.resize(packed_words(precision_, size_ + vectors.rows, dim_), 0u);
    for (std::size_t r = 0; r != vectors.rows; ++r) {
      pack_token(precision_, vectors.row(r), dim_, size_ + r, panels_.data());
      if (options.progress && (r + 1) % progress_step == 0) options.progress(r + 1, vectors.rows);
    }
    size_ += vectors.rows;
    if (options.progress) options.progress(vectors.rows, vectors.rows);
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
    if (precision_ == storage::bf16)
      token_topk<storage::bf16>(queries, panels_.data(), size_, k, out, ws);
    else
      token_topk<storage::f32>(queries, panels_.data(), size_, k, out, ws);
    return out;
  }
  /// Exact top-k among the ids `keep` accepts (filtering_backend): k results whenever k ids are kept.
  topk_result search(matrix_view<float> queries, std::size_t k, const id_filter& keep) const {
    detail::check_backend_search(queries, k, dim_);
    topk_result out(queries.rows, k);
    scan_workspace ws;
    if (precision_ == storage::bf16)
      token_topk<storage::bf16>(queries, panels_.data(), size_, k, out, ws, keep);
    else
      token_topk<storage::f32>(queries, panels_.data(), size_, k, out, ws, keep);
    return out;
  }

  /// The index as bytes: u64 dim, u64 size, then size x dim float32 rows (little-endian, this host's order); a bf16
  /// index sets bit 63 of the dim word and stores bfloat16 rows (2 bytes a value).
  std::string serialize() const {
    const bool half = precision_ == storage::bf16;
    std::string out(16 + size_ * dim_ * (half ? 2 : sizeof(float)), '\0');
    const std::uint64_t header[2] = {dim_ | (half ? bf16_flag : 0), size_};
    std::memcpy(out.data(), header, 16);
    for (std::size_t t = 0; t != size_; ++t)
      for (std::size_t c = 0; c != dim_; ++c) {
        const float x = at(t, c);
        if (half) {
          const std::uint16_t h = to_bf16(x);  // exact: the value is a bf16 already
          std::memcpy(out.data() + 16 + (t * dim_ + c) * 2, &h, 2);
        } else {
          std::memcpy(out.data() + 16 + (t * dim_ + c) * 4, &x, 4);
        }
      }
    return out;
  }
  /// Inverse of serialize; throws aligner::io_error on malformed bytes.
  static exact_backend deserialize(std::string_view bytes) {
    std::uint64_t header[2] = {0, 0};
    if (bytes.size() < 16) throw io_error("exact backend: " + std::to_string(bytes.size()) + " bytes, need at least 16");
    std::memcpy(header, bytes.data(), 16);
    const bool half = (header[0] & bf16_flag) != 0;
    header[0] &= ~bf16_flag;
    const std::size_t value_bytes = half ? 2 : sizeof(float);
    if (header[0] == 0 || header[0] > (1u << 20)) throw io_error("exact backend: implausible dim " + std::to_string(header[0]));
    if (header[1] > (bytes.size() - 16) / value_bytes / header[0] || 16 + header[1] * header[0] * value_bytes != bytes.size())
      throw io_error("exact backend: " + std::to_string(bytes.size()) + " bytes do not hold " + std::to_string(header[1]) +
                     " vectors of dim " + std::to_string(header[0]) + (half ? " in bf16" : ""));
    exact_backend b(header[0], half ? storage::bf16 : storage::f32);
    std::vector<float> rows(header[1] * header[0]);
    if (half) {
      for (std::size_t i = 0; i != rows.size(); ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes.data() + 16 + i * 2, 2);
        rows[i] = from_bf16(h);
      }
    } else if (!rows.empty()) {
      std::memcpy(rows.data(), bytes.data() + 16, rows.size() * sizeof(float));
    }
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
  float at(std::size_t t, std::size_t c) const noexcept { return packed_value(precision_, panels_.data(), panel_width<>, dim_, t, c); }

  static constexpr std::uint64_t bf16_flag = std::uint64_t(1) << 63;
  std::size_t dim_;
  storage precision_ = storage::f32;
  std::size_t size_ = 0;
  aligned_vector<std::uint32_t> panels_;
};
static_assert(serializable_backend<exact_backend> && filtering_backend<exact_backend>,
              "exact_backend must model serializable_backend and filtering_backend");

}  // namespace aligner
