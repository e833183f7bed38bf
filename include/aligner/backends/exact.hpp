/** @file exact.hpp
 *  @brief Brute-force inner-product backend: exact top-k over every stored token; the retriever's test oracle.
 *
 *  Vectors are packed into panels (kernels/panels.hpp) as they are added. A search computes S for up to 64
 *  query rows against L2-sized chunks of tokens with the register-blocked SIMD tile kernel (one pass over the
 *  tokens per 64 query rows, the next chunk prefetched between tiles) and keeps each row's candidates behind a
 *  threshold: a SIMD compare rejects W scores at once, survivors are compacted with nth_element.
 *  Ties break toward the smaller id. Complexity O(queries * size * dim). `search` is const and thread-safe. */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <limits>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"
#include "../kernels/hadamard_sum.hpp"
#include "../kernels/panels.hpp"
#include "concepts.hpp"

namespace aligner {

class exact_backend {
 public:
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
    constexpr std::size_t width = panel_width<>;
    panels_.resize(panel_count(size_ + vectors.rows) * dim_ * width, 0.f);
    for (std::size_t r = 0; r != vectors.rows; ++r) {
      const std::size_t t = size_ + r;
      float* dst = panels_.data() + (t / width) * dim_ * width + (t % width);
      for (std::size_t c = 0; c != dim_; ++c) dst[c * width] = vectors.row(r)[c];
    }
    size_ += vectors.rows;
  }

  /// Exact top-k inner products of every query row, best first, ties toward the smaller id; k may exceed size()
  /// (the rest is padded with id -1, score -inf). Throws on a dim mismatch, k == 0 or NaN/Inf queries.
  topk_result search(matrix_view<float> queries, std::size_t k) const {
    detail::check_backend_search(queries, k, dim_);
    topk_result out(queries.rows, k);
    if (size_ == 0 || queries.rows == 0) return out;
    using batch = xsimd::batch<float, default_arch>;
    constexpr std::size_t width = panel_width<>, row_block = 64;
    // Chunks of about 256 KB of panels (L2-resident with their S block); the next chunk is prefetched while the
    // current one's S is scanned, so the token stream from DRAM overlaps with compute.
    const std::size_t chunk = std::max<std::size_t>(4 * width, (std::size_t(256) << 10) / (dim_ * 4) / (4 * width) * (4 * width));
    const std::size_t keep = std::min(k, size_);
    // Per row: candidates that beat the row's threshold, compacted to the best `keep` (score desc, id asc) whenever
    // they reach 2 * keep + chunk; the threshold is then the keep-th score. Amortised O(1) per survivor, and one
    // SIMD compare rejects W scores at once.
    struct row_state {
      std::vector<std::pair<float, std::int64_t>> cand;  // cand[0, size) are the candidates
      std::size_t size = 0;
      float threshold = -std::numeric_limits<float>::infinity();
    };
    auto better = [](const std::pair<float, std::int64_t>& a, const std::pair<float, std::int64_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    auto compact = [&](row_state& st) {
      if (st.size <= keep) return;
      std::nth_element(st.cand.begin(), st.cand.begin() + std::ptrdiff_t(keep - 1), st.cand.begin() + std::ptrdiff_t(st.size), better);
      st.size = keep;
      // The keep-th entry: every later score must beat it strictly (a later equal score has a larger id).
      st.threshold = st.cand[keep - 1].first;
    };
    const std::size_t limit = 2 * keep + chunk;
    thread_local aligned_vector<float> s;
    std::vector<row_state> rows_state(std::min(row_block, queries.rows));
    for (std::size_t r0 = 0; r0 < queries.rows; r0 += row_block) {
      const std::size_t rows = std::min(row_block, queries.rows - r0);
      s.resize(rows * chunk);
      for (auto& st : rows_state) {
        st.cand.resize(limit + width);  // room for a whole batch past the limit (branch-free appends)
        st.size = 0;
        st.threshold = -std::numeric_limits<float>::infinity();
      }
      for (std::size_t t0 = 0; t0 < size_; t0 += chunk) {
        const std::size_t count = std::min(chunk, size_ - t0);
        const prefetch_hint next{panels_.data() + ((t0 + chunk) / width) * dim_ * width,
                                 t0 + chunk < size_ ? panel_count(std::min(chunk, size_ - t0 - chunk)) * dim_ * width * 4 : 0};
        similarity_kernel{}(default_arch{}, queries.middle_rows(r0, rows), panels_.data() + (t0 / width) * dim_ * width, count,
                            s.data(), chunk, next);
        for (std::size_t i = 0; i != rows; ++i) {
          row_state& st = rows_state[i];
          const float* row = s.data() + i * chunk;
          batch thr(st.threshold);
          std::size_t j = 0;
          auto* cand = st.cand.data();
          for (; j + width <= count; j += width) {
            if (!xsimd::any(batch::load_aligned(row + j) > thr)) continue;
            for (std::size_t l = 0; l != width; ++l) {  // branch-free append of the survivors
              cand[st.size] = {row[j + l], std::int64_t(t0 + j + l)};
              st.size += row[j + l] > st.threshold;
            }
            if (st.size >= limit) {
              compact(st);
              thr = batch(st.threshold);
            }
          }
          for (; j != count; ++j) {
            if (row[j] > st.threshold) cand[st.size++] = {row[j], std::int64_t(t0 + j)};
            if (st.size >= limit) compact(st);
          }
        }
      }
      for (std::size_t i = 0; i != rows; ++i) {
        auto& cand = rows_state[i].cand;
        cand.resize(rows_state[i].size);
        if (cand.size() > keep) std::nth_element(cand.begin(), cand.begin() + std::ptrdiff_t(keep), cand.end(), better);
        cand.resize(std::min(cand.size(), keep));
        std::sort(cand.begin(), cand.end(), better);
        for (std::size_t t = 0; t != cand.size(); ++t) {
          out.ids[(r0 + i) * k + t] = cand[t].second;
          out.scores[(r0 + i) * k + t] = cand[t].first;
        }
      }
    }
    return out;
  }

  /// The index as bytes: u64 dim, u64 size, then size x dim float32 rows (little-endian, this host's order).
  std::string serialize() const {
    std::string out(16 + size_ * dim_ * sizeof(float), '\0');
    const std::uint64_t header[2] = {dim_, size_};
    std::memcpy(out.data(), header, 16);
    float* rows = reinterpret_cast<float*>(out.data() + 16);
    for (std::size_t t = 0; t != size_; ++t)
      for (std::size_t c = 0; c != dim_; ++c) rows[t * dim_ + c] = packed_at(panels_.data(), dim_, t, c);
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
    for (std::size_t c = 0; c != dim_; ++c) v[c] = packed_at(panels_.data(), dim_, id, c);
    return v;
  }

 private:
  std::size_t dim_;
  std::size_t size_ = 0;
  aligned_vector<float> panels_;
};
static_assert(serializable_backend<exact_backend>, "exact_backend must model serializable_backend");

}  // namespace aligner
