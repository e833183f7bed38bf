/** @file exact.hpp
 *  @brief Brute-force inner-product backend: exact top-k over every stored token; the retriever's test oracle.
 *
 *  Vectors are packed into float32 panels as they are added, or in a compact storage:
 *  - bfloat16 (`exact_backend(dim, storage::bf16)`): half the memory, scanned on AMX-BF16 tiles where the CPU has
 *    them, the query rounded to bf16 too, so "exact" is then exact over the rounded values;
 *  - int8 with a float scale per vector (`exact_backend(dim, storage::i8)`, the rerank store's i8 rule): a quarter of
 *    the memory plus 4 bytes a vector, scanned on AMX-INT8 tiles where the CPU has them (the query in two int8
 *    terms, about 16 bits), on AVX512-VNNI tiles (its 16-bit form) or on the vector tiles (the float query), so
 *    "exact" is exact over the quantised vectors, up to that rounding of the query.
 *  A search is one token_topk scan
 *  (kernels/token_scan.hpp): register tiles of S compared with each row's running k-th best, survivors compacted by
 *  a bucket select. Ties break toward the smaller id. Complexity O(queries * size * dim). `search` is const and
 *  thread-safe (each call has its own scratch, or pass a scan_workspace per thread). */
#pragma once

#include <cmath>
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
  /// A row's hits do not depend on the other rows searched with it (rows_independent_backend): every S value is
  /// computed from its own row and token alone (a row's quantised forms are the row's), and a row's top k is exact
  /// with ties toward the smaller id, whatever the sweep's row blocks.
  static constexpr bool rows_independent = true;

  /// An empty index of vectors of dimension `dim` (>= 1), stored in `precision` (storage::f32, bf16 or i8).
  explicit exact_backend(std::size_t dim, storage precision = storage::f32) : dim_(dim), precision_(precision) {
    ALIGNER_EXPECTS(dim >= 1, "exact_backend dim must be >= 1, got ", dim);
    ALIGNER_EXPECTS(precision == storage::f32 || precision == storage::bf16 || precision == storage::i8,
                    "exact_backend precision must be f32, bf16 or i8, got ", precision == storage::residual ? "residual" : to_string(precision));
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
    scan(queries, k, out, ws, nullptr);
    return out;
  }
  /// Exact top-k among the ids `keep` accepts (filtering_backend): k results whenever k ids are kept.
  topk_result search(matrix_view<float> queries, std::size_t k, const id_filter& keep) const {
    detail::check_backend_search(queries, k, dim_);
    topk_result out(queries.rows, k);
    scan_workspace ws;
    scan(queries, k, out, ws, keep);
    return out;
  }

  /// The index as bytes: u64 dim, u64 size, then size x dim float32 rows (little-endian, this host's order). A bf16
  /// index sets bit 63 of the dim word and stores bfloat16 rows (2 bytes a value); an i8 index sets bit 62 and stores
  /// each vector as its float32 scale and dim int8 values (value = int8 * scale).
  std::string serialize() const {
    const std::size_t row_bytes = stored_row_bytes(precision_, dim_);
    std::string out(16 + size_ * row_bytes, '\0');
    const std::uint64_t header[2] = {dim_ | (precision_ == storage::bf16 ? bf16_flag : precision_ == storage::i8 ? i8_flag : 0), size_};
    std::memcpy(out.data(), header, 16);
    const auto* base = reinterpret_cast<const unsigned char*>(panels_.data());
    for (std::size_t t = 0; t != size_; ++t) {
      char* row = out.data() + 16 + t * row_bytes;
      if (precision_ == storage::i8) {  // the scale and the int8 values as stored
        std::memcpy(row, base + i8_scale_at(t), 4);
        for (std::size_t c = 0; c != dim_; ++c) row[4 + c] = char(base[i8_value_at(t, c)]);
        continue;
      }
      for (std::size_t c = 0; c != dim_; ++c) {
        const float x = at(t, c);
        if (precision_ == storage::bf16) {
          const std::uint16_t h = to_bf16(x);  // exact: the value is a bf16 already
          std::memcpy(row + c * 2, &h, 2);
        } else {
          std::memcpy(row + c * 4, &x, 4);
        }
      }
    }
    return out;
  }
  /// Inverse of serialize; throws aligner::io_error on malformed bytes (an i8 scale that is negative or not finite
  /// included).
  static exact_backend deserialize(std::string_view bytes) {
    std::uint64_t header[2] = {0, 0};
    if (bytes.size() < 16) throw io_error("exact backend: " + std::to_string(bytes.size()) + " bytes, need at least 16");
    std::memcpy(header, bytes.data(), 16);
    if ((header[0] & bf16_flag) && (header[0] & i8_flag)) throw io_error("exact backend: the dim word names both bf16 and i8");
    const storage precision = (header[0] & bf16_flag) ? storage::bf16 : (header[0] & i8_flag) ? storage::i8 : storage::f32;
    header[0] &= ~(bf16_flag | i8_flag);
    if (header[0] == 0 || header[0] > (1u << 20)) throw io_error("exact backend: implausible dim " + std::to_string(header[0]));
    const std::size_t row_bytes = stored_row_bytes(precision, header[0]);
    if (header[1] > (bytes.size() - 16) / row_bytes || 16 + header[1] * row_bytes != bytes.size())
      throw io_error("exact backend: " + std::to_string(bytes.size()) + " bytes do not hold " + std::to_string(header[1]) +
                     " vectors of dim " + std::to_string(header[0]) + (precision == storage::f32 ? "" : std::string(" in ") + to_string(precision)));
    exact_backend b(header[0], precision);
    const std::size_t dim = header[0], n = header[1];
    if (precision == storage::i8) {  // placed as stored: quantising the decoded values again could move a value
      b.panels_.resize(packed_words(storage::i8, n, dim), 0u);
      auto* base = reinterpret_cast<unsigned char*>(b.panels_.data());
      for (std::size_t t = 0; t != n; ++t) {
        const char* row = bytes.data() + 16 + t * row_bytes;
        float scale;
        std::memcpy(&scale, row, 4);
        if (!(scale >= 0.f) || !std::isfinite(scale))
          throw io_error("exact backend: vector " + std::to_string(t) + " has the int8 scale " + std::to_string(scale));
        std::memcpy(base + b.i8_scale_at(t), &scale, 4);
        for (std::size_t c = 0; c != dim; ++c) {
          if (row[4 + c] == char(-128)) throw io_error("exact backend: vector " + std::to_string(t) + " holds the int8 value -128");
          base[b.i8_value_at(t, c)] = static_cast<unsigned char>(row[4 + c]);
        }
      }
      b.size_ = n;
      return b;
    }
    std::vector<float> rows(n * dim);
    if (precision == storage::bf16) {
      for (std::size_t i = 0; i != rows.size(); ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes.data() + 16 + i * 2, 2);
        rows[i] = from_bf16(h);
      }
    } else if (!rows.empty()) {
      std::memcpy(rows.data(), bytes.data() + 16, rows.size() * sizeof(float));
    }
    try {
      b.add({rows.data(), n, dim});
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

  /// Byte offsets in an i8 index's panels of vector t's scale (its lane of the panel's header) and of its component c
  /// (storage_traits<storage::i8>'s layout: W scales, then byte (c, l) at 4 W + c W + l).
  std::size_t i8_scale_at(std::size_t t) const noexcept { return t / panel_width<> * i8_panel_bytes() + t % panel_width<> * 4; }
  std::size_t i8_value_at(std::size_t t, std::size_t c) const noexcept {
    constexpr std::size_t width = panel_width<>;
    return t / width * i8_panel_bytes() + storage_traits<storage::i8>::header_words(width) * 4 + c * width + t % width;
  }
  std::size_t i8_panel_bytes() const noexcept { return storage_traits<storage::i8>::panel_words(dim_, panel_width<>) * 4; }
  /// Bytes of one vector in serialize's form.
  static std::size_t stored_row_bytes(storage precision, std::size_t dim) noexcept {
    return precision == storage::bf16 ? 2 * dim : precision == storage::i8 ? 4 + dim : 4 * dim;
  }
  /// The scan of token_topk over this index's storage.
  template <class Accept>
  void scan(matrix_view<float> queries, std::size_t k, topk_result& out, scan_workspace& ws, const Accept& keep) const {
    if (precision_ == storage::bf16)
      token_topk<storage::bf16>(queries, panels_.data(), size_, k, out, ws, keep);
    else if (precision_ == storage::i8)
      token_topk<storage::i8>(queries, panels_.data(), size_, k, out, ws, keep);
    else
      token_topk<storage::f32>(queries, panels_.data(), size_, k, out, ws, keep);
  }

  static constexpr std::uint64_t bf16_flag = std::uint64_t(1) << 63, i8_flag = std::uint64_t(1) << 62;
  std::size_t dim_;
  storage precision_ = storage::f32;
  std::size_t size_ = 0;
  aligned_vector<std::uint32_t> panels_;
};
static_assert(serializable_backend<exact_backend> && filtering_backend<exact_backend>,
              "exact_backend must model serializable_backend and filtering_backend");

}  // namespace aligner
