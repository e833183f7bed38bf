/** @file hnswlib.hpp
 *  @brief mips_backend adapter for hnswlib's HNSW graph in inner-product space.
 *
 *  Optional: include it only when hnswlib is available (Debian: libhnswlib-dev, header-only). Labels are the
 *  sequential token ids; capacity grows by doubling. hnswlib's distance is 1 - q.x, reported here as the score
 *  q.x. `ef_search` (raised to k for each search by hnswlib itself) trades recall for speed. `search` is const
 *  and thread-safe (hnswlib's searchKnn); `add` is not.
 *
 *  Known upstream issue: Debian's hnswlib 0.6.2 prefetches one element past a link list in its SSE path
 *  (hnswalg.h, searchBaseLayer). It is harmless on hardware but AddressSanitizer reports it; sanitizer builds
 *  should define NO_MANUAL_VECTORIZATION (this project's CMake does so under ALIGNER_SANITIZE). */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <hnswlib/hnswlib.h>

#include "../core/error.hpp"
#include "../core/types.hpp"
#include "concepts.hpp"

namespace aligner {

/// Construction parameters of the HNSW graph.
struct hnswlib_params {
  std::size_t m = 16;                ///< graph degree M
  std::size_t ef_construction = 200; ///< candidate list size while building
  std::size_t ef_search = 64;        ///< candidate list size while searching (hnswlib uses max(ef, k))
  std::size_t seed = 100;
};

class hnswlib_backend {
 public:
  explicit hnswlib_backend(std::size_t dim, hnswlib_params params = {}) : dim_(dim), params_(params) {
    ALIGNER_EXPECTS(dim >= 1, "hnswlib_backend dim must be >= 1, got ", dim);
    ALIGNER_EXPECTS(params.m >= 2, "hnswlib M must be >= 2, got ", params.m);
    ALIGNER_EXPECTS(params.ef_search >= 1 && params.ef_construction >= 1, "hnswlib ef values must be >= 1");
    space_ = std::make_unique<hnswlib::InnerProductSpace>(dim);
  }

  std::size_t dim() const noexcept { return dim_; }
  std::size_t size() const noexcept { return size_; }

  void add(matrix_view<float> vectors) {
    if (vectors.rows == 0) return;
    ALIGNER_EXPECTS(vectors.cols == dim_, "hnswlib_backend of dim ", dim_, " cannot add vectors of dim ", vectors.cols);
    detail::check_matrix(vectors, "vectors", true);
    const std::size_t need = size_ + vectors.rows;
    if (!graph_) {
      graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(space_.get(), std::max<std::size_t>(need, 1024), params_.m,
                                                                  params_.ef_construction, params_.seed);
      graph_->setEf(params_.ef_search);
    } else if (need > graph_->max_elements_) {
      graph_->resizeIndex(std::max(need, 2 * graph_->max_elements_));
    }
    std::vector<float> row(dim_);
    for (std::size_t r = 0; r != vectors.rows; ++r) {
      std::copy_n(vectors.row(r), dim_, row.data());
      graph_->addPoint(row.data(), hnswlib::labeltype(size_ + r));
    }
    size_ = need;
  }

  topk_result search(matrix_view<float> queries, std::size_t k) const {
    ALIGNER_EXPECTS(k >= 1, "search k must be >= 1, got k = ", k);
    ALIGNER_EXPECTS(queries.rows == 0 || queries.cols == dim_, "query dim ", queries.cols, " does not match the index dim ", dim_);
    topk_result out(queries.rows, k);
    if (!graph_ || size_ == 0) return out;
    std::vector<float> row(dim_);
    for (std::size_t i = 0; i != queries.rows; ++i) {
      std::copy_n(queries.row(i), dim_, row.data());
      auto found = graph_->searchKnn(row.data(), k);
      // The queue pops the farthest first: fill from the back.
      std::size_t n = found.size();
      while (!found.empty()) {
        --n;
        out.ids[i * k + n] = std::int64_t(found.top().second);
        out.scores[i * k + n] = 1.f - found.top().first;
        found.pop();
      }
    }
    return out;
  }

 private:
  std::size_t dim_;
  hnswlib_params params_;
  std::size_t size_ = 0;
  std::unique_ptr<hnswlib::InnerProductSpace> space_;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph_;
};
static_assert(mips_backend<hnswlib_backend>, "hnswlib_backend must model mips_backend");

}  // namespace aligner
