/** @file exact.hpp
 *  @brief Brute-force inner-product backend: exact top-k over every stored token; the retriever's test oracle.
 *
 *  Vectors are packed into panels (kernels/panels.hpp) as they are added. A search sweeps every token once per 64
 *  query rows with the rerank kernel's register-blocked SIMD tiles (L2-sized spans, the next span prefetched) and
 *  tests each tile of S against its rows' current k-th best in registers: S never goes to memory, only survivors
 *  are appended, and each row's survivors are compacted (bucket select) to the best k when they reach 2k + 1024.
 *  Ties break toward the smaller id. Complexity O(queries * size * dim). `search` is const and thread-safe. */
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
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
    using impl_t = detail::hadamard_impl<default_arch>;
    using batch = impl_t::batch;
    constexpr std::size_t width = impl_t::width, row_block = 64;
    const std::size_t keep = std::min(k, size_);
    // Per row: the candidates that beat the row's threshold, compacted to the best `keep` (score desc, id asc)
    // whenever they reach `limit`; the threshold is then the keep-th score. Amortised O(1) per survivor.
    const std::size_t limit = 2 * keep + 1024;  // 3k + 1024 and 6k + 1024 measured no faster
    using entry = std::pair<float, std::int64_t>;
    auto better = [](const entry& a, const entry& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    struct row_state {
      std::vector<entry> cand;  // cand[0, size) are the candidates; room for one tile's appends past the limit
      std::size_t size = 0;
      float threshold = -std::numeric_limits<float>::infinity();
    };
    // Compaction keeps the best `keep` (score desc, id asc) by a bucket select: one pass finds the score range, one
    // counts the scores in 1024 equal buckets of it, the bucket holding the keep-th score is found from the top,
    // everything above it is kept (a branch-free filter) and only that bucket's entries are ordered (nth_element).
    // The bucket index is a monotone function of the score, so "above" is exact and ties share a bucket.
    // (nth_element over all candidates was 3-5x slower at k' = 4000.)
    thread_local std::vector<std::uint16_t> bucket_of;
    thread_local std::vector<entry> boundary;
    auto compact = [&](row_state& st) {
      entry* c = st.cand.data();
      const std::size_t size = st.size;
      float lo = c[0].first, hi = lo;
      for (std::size_t i = 1; i != size; ++i) {
        lo = std::min(lo, c[i].first);
        hi = std::max(hi, c[i].first);
      }
      constexpr std::size_t buckets = 1024;
      const float scale = float(buckets) / (hi - lo);
      if (!(hi > lo) || !(scale > 0.f) || !std::isfinite(scale)) {  // all equal, or a range beyond float
        std::nth_element(st.cand.begin(), st.cand.begin() + std::ptrdiff_t(keep - 1), st.cand.begin() + std::ptrdiff_t(size), better);
        st.size = keep;
        st.threshold = c[keep - 1].first;
        return;
      }
      std::uint32_t hist[buckets] = {};
      bucket_of.resize(size);
      for (std::size_t i = 0; i != size; ++i) {
        const std::size_t b = std::min(buckets - 1, std::size_t((c[i].first - lo) * scale));
        bucket_of[i] = std::uint16_t(b);
        ++hist[b];
      }
      std::size_t above = 0, edge = buckets;  // above = entries in buckets > edge, fewer than keep
      while (edge-- != 0 && above + hist[edge] < keep) above += hist[edge];
      boundary.clear();
      std::size_t kept = 0;
      for (std::size_t i = 0; i != size; ++i) {
        const entry e = c[i];
        if (bucket_of[i] == edge) boundary.push_back(e);
        c[kept] = e;  // kept <= i: in place
        kept += bucket_of[i] > edge;
      }
      const std::size_t need = keep - above;  // 1 <= need <= boundary.size()
      std::nth_element(boundary.begin(), boundary.begin() + std::ptrdiff_t(need - 1), boundary.end(), better);
      std::copy_n(boundary.begin(), need, c + kept);
      st.size = keep;
      // The keep-th best score. Tokens reach a row in increasing id order, so a later score equal to it loses:
      // later candidates must beat the threshold strictly.
      st.threshold = boundary[need - 1].first;
    };
    thread_local std::vector<row_state> rows_state;
    if (rows_state.size() < std::min(row_block, queries.rows)) rows_state.resize(std::min(row_block, queries.rows));
    for (std::size_t r0 = 0; r0 < queries.rows; r0 += row_block) {
      const std::size_t rows = std::min(row_block, queries.rows - r0);
      for (std::size_t i = 0; i != rows; ++i) {
        rows_state[i].cand.resize(limit + impl_t::block_panels * width);
        rows_state[i].size = 0;
        rows_state[i].threshold = -std::numeric_limits<float>::infinity();
      }
      // One sweep over every token per block of rows: L2-sized spans, each scored by all row blocks of 4, the next
      // span prefetched meanwhile. Each S tile is tested against its rows' thresholds in registers; only tiles
      // with a survivor touch memory.
      const impl_t impl{panels_.data(), dim_, size_, panel_count(size_), queries.middle_rows(r0, rows)};
      impl.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) {
        impl_t::with_panels(here, [&]<std::size_t V>(std::integral_constant<std::size_t, V>) {
          batch acc[R][V];
          impl.template tile<R, V>(i0, p0, acc);
          for (std::size_t r = 0; r != R; ++r) {
            row_state& st = rows_state[i0 + r];
            const batch threshold(st.threshold);
            for (std::size_t v = 0; v != V; ++v) {
              const batch s = impl.mask_tail(acc[r][v], p0 + v);  // padding lanes: -inf, never a candidate
              std::uint64_t survivors = detail::mask_bits(s > threshold);
              if (survivors == 0) continue;
              alignas(64) float lane[width];
              s.store_aligned(lane);
              entry* cand = st.cand.data();
              const std::int64_t first = std::int64_t((p0 + v) * width);
              for (; survivors != 0; survivors &= survivors - 1) {  // lanes in increasing order: ids stay sorted
                const int l = std::countr_zero(survivors);
                cand[st.size++] = {lane[l], first + l};
              }
            }
            if (st.size >= limit) compact(st);
          }
        });
      });
      for (std::size_t i = 0; i != rows; ++i) {
        auto& st = rows_state[i];
        if (st.size > keep) compact(st);
        const auto first = st.cand.begin(), mid = first + std::ptrdiff_t(st.size);
        std::sort(first, mid, better);  // (sorting packed 64-bit keys instead saved 1% at k' = 4000: not kept)
        for (auto it = first; it != mid; ++it) {
          out.ids[(r0 + i) * k + std::size_t(it - first)] = it->second;
          out.scores[(r0 + i) * k + std::size_t(it - first)] = it->first;
        }
      }
    }
    if (limit > (std::size_t(1) << 16))  // do not keep a large k's buffers alive in this thread
      for (auto& st : rows_state) std::vector<entry>().swap(st.cand);
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
