/** @file faiss.hpp
 *  @brief mips_backend adapter for any FAISS index with the inner-product metric (flat, IVF, HNSW, ...).
 *
 *  Optional: include it only when linking FAISS (Debian: libfaiss-dev, CMake target `faiss`). The adapter owns
 *  the index; ids are FAISS's sequential ids (add, never add_with_ids). An untrained index (IVF) is trained on
 *  the vectors of its first add. Per-search parameters (nprobe, efSearch) may be given as a
 *  faiss::SearchParameters, which keeps `search` free of shared mutable state: FAISS's const search is
 *  thread-safe for these index types. */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>

#include "../core/error.hpp"
#include "../core/types.hpp"
#include "concepts.hpp"

namespace aligner {

class faiss_backend {
 public:
  /// The name index files record, so that loading with another backend type is refused by name.
  static constexpr std::string_view type_name = "faiss_backend";

  /// Takes ownership of an empty index whose metric must be faiss::METRIC_INNER_PRODUCT.
  explicit faiss_backend(std::unique_ptr<faiss::Index> index, std::shared_ptr<const faiss::SearchParameters> search_params = nullptr)
      : index_(std::move(index)), search_params_(std::move(search_params)) {
    ALIGNER_EXPECTS(index_ != nullptr, "faiss_backend needs an index, got nullptr");
    ALIGNER_EXPECTS(index_->metric_type == faiss::METRIC_INNER_PRODUCT,
                    "faiss_backend needs an inner-product index (METRIC_INNER_PRODUCT), got metric ", int(index_->metric_type));
    ALIGNER_EXPECTS(index_->d >= 1, "faiss index dim must be >= 1, got ", index_->d);
  }

  /// An inverted-file index over exact vectors (faiss::IndexIVFFlat, inner product, a flat quantizer) that probes
  /// `nprobe` lists per query vector (kept in the index, so a loaded index probes as many). `nlist` = 0 chooses the
  /// list count when the first add trains it, from that add's vector count n: ivf_lists(n). An IVF index is
  /// trained on its first add, which needs at least nlist vectors.
  static faiss_backend ivf_flat(std::size_t dim, std::size_t nlist = 0, std::size_t nprobe = 32) {
    ALIGNER_EXPECTS(dim >= 1, "faiss ivf dim must be >= 1, got ", dim);
    ALIGNER_EXPECTS(nprobe >= 1, "faiss ivf nprobe must be >= 1, got ", nprobe);
    faiss_backend b(make_ivf(dim, std::max<std::size_t>(nlist, 1), nprobe));
    b.auto_nlist_ = nlist == 0;
    return b;
  }
  /// The list count ivf_flat chooses for n training vectors: 4 sqrt(n) rounded down to a power of two, and at most
  /// n / 39 (FAISS's k-means wants 39 points a centroid), at least 1.
  static std::size_t ivf_lists(std::size_t n) noexcept {
    if (n < 2) return 1;
    std::size_t lists = std::size_t(1) << std::size_t(std::floor(std::log2(4.0 * std::sqrt(double(n)))));
    while (lists > 1 && lists * 39 > n) lists /= 2;
    return lists;
  }

  std::size_t dim() const noexcept { return std::size_t(index_->d); }
  std::size_t size() const noexcept { return std::size_t(index_->ntotal); }
  const faiss::Index& index() const noexcept { return *index_; }
  faiss::Index& index() noexcept { return *index_; }

  /// Appends vectors (ids continue at size()); trains an untrained index on them first.
  void add(matrix_view<float> vectors) { add(vectors, backend_add_options{}); }
  /// The same with options: no finite scan when options.check_finite is false; the vectors go to FAISS in chunks
  /// of 65,536 with progress after each (an IVF index is trained on all of them first; FAISS threads with its own
  /// OpenMP settings, options.threads is not used).
  void add(matrix_view<float> vectors, const backend_add_options& options) {
    if (vectors.rows == 0) return;
    detail::check_backend_add(vectors, dim(), "faiss_backend", options.check_finite);
    const std::vector<float> rows = contiguous(vectors);
    try {
      if (!index_->is_trained) {
        // ivf_flat(dim, 0): the list count comes from the training set's size. The index is trained aside and
        // replaces the placeholder only once training succeeded (a failed add leaves the backend as it was).
        std::unique_ptr<faiss::Index> trained;
        if (auto_nlist_) trained = make_ivf(dim(), ivf_lists(vectors.rows), dynamic_cast<const faiss::IndexIVF&>(*index_).nprobe);
        faiss::Index& target = trained ? *trained : *index_;
        target.train(faiss::Index::idx_t(vectors.rows), rows.data());
        if (trained) index_ = std::move(trained), auto_nlist_ = false;
      }
      constexpr std::size_t chunk = std::size_t(1) << 16;
      for (std::size_t r = 0; r < vectors.rows; r += chunk) {
        const std::size_t n = std::min(chunk, vectors.rows - r);
        index_->add(faiss::Index::idx_t(n), rows.data() + r * dim());
        if (options.progress) options.progress(r + n, vectors.rows);
      }
    } catch (const faiss::FaissException& e) {
      throw invalid_argument(std::string("faiss_backend add: ") + e.what());
    }
  }

  /// The index as bytes (faiss::write_index). Search parameters are not part of it.
  std::string serialize() const {
    faiss::VectorIOWriter writer;
    faiss::write_index(index_.get(), &writer);
    return std::string(reinterpret_cast<const char*>(writer.data.data()), writer.data.size());
  }
  /// Inverse of serialize (faiss::read_index); FAISS errors become aligner::io_error.
  static faiss_backend deserialize(std::string_view bytes, std::shared_ptr<const faiss::SearchParameters> search_params) {
    faiss::VectorIOReader reader;
    reader.data.assign(reinterpret_cast<const std::uint8_t*>(bytes.data()), reinterpret_cast<const std::uint8_t*>(bytes.data()) + bytes.size());
    std::unique_ptr<faiss::Index> index;
    try {
      index.reset(faiss::read_index(&reader));
    } catch (const faiss::FaissException& e) {
      throw io_error(std::string("faiss backend: ") + e.what());
    }
    try {
      return faiss_backend(std::move(index), std::move(search_params));
    } catch (const invalid_argument& e) {
      throw io_error(std::string("faiss backend: ") + e.what());
    }
  }
  static faiss_backend deserialize(std::string_view bytes) { return deserialize(bytes, nullptr); }

  /// Top-k inner products per query row (FAISS pads missing results with id -1).
  topk_result search(matrix_view<float> queries, std::size_t k) const { return run_search(queries, k, search_params_.get()); }

  /// Top-k among the ids `keep` accepts (filtering_backend), through a faiss::IDSelector in the search parameters (a
  /// copy of the backend's HNSW / IVF parameters, or the index's own settings, with the selector set). An index type
  /// whose FAISS search takes no selector is searched unfiltered (the retriever filters the hits and falls back to
  /// reranking the allowed documents when too few remain).
  topk_result search(matrix_view<float> queries, std::size_t k, const id_filter& keep) const {
    struct selector : faiss::IDSelector {
      const id_filter& keep;
      explicit selector(const id_filter& k) : keep(k) {}
      bool is_member(faiss::Index::idx_t id) const override { return keep(std::int64_t(id)); }
    } sel(keep);
    std::unique_ptr<faiss::SearchParameters> params;
    if (const auto* hnsw = dynamic_cast<const faiss::SearchParametersHNSW*>(search_params_.get())) {
      params = std::make_unique<faiss::SearchParametersHNSW>(*hnsw);
    } else if (const auto* ivf = dynamic_cast<const faiss::SearchParametersIVF*>(search_params_.get())) {
      params = std::make_unique<faiss::SearchParametersIVF>(*ivf);
    } else if (const auto* index = dynamic_cast<const faiss::IndexHNSW*>(index_.get())) {  // FAISS wants its own type
      auto p = std::make_unique<faiss::SearchParametersHNSW>();
      p->efSearch = index->hnsw.efSearch;
      params = std::move(p);
    } else if (const auto* index = dynamic_cast<const faiss::IndexIVF*>(index_.get())) {
      auto p = std::make_unique<faiss::SearchParametersIVF>();
      p->nprobe = index->nprobe;
      params = std::move(p);
    } else {
      params = std::make_unique<faiss::SearchParameters>();
    }
    params->sel = &sel;
    try {
      return run_search(queries, k, params.get());
    } catch (const faiss::FaissException&) {
      return search(queries, k);
    }
  }

 private:
  topk_result run_search(matrix_view<float> queries, std::size_t k, const faiss::SearchParameters* params) const {
    detail::check_backend_search(queries, k, dim());
    topk_result out(queries.rows, k);
    if (queries.rows == 0 || size() == 0) return out;
    const std::vector<float> rows = contiguous(queries);
    std::vector<faiss::Index::idx_t> labels(queries.rows * k);
    index_->search(faiss::Index::idx_t(queries.rows), rows.data(), faiss::Index::idx_t(k), out.scores.data(), labels.data(),
                   params);
    for (std::size_t i = 0; i != labels.size(); ++i) {
      out.ids[i] = labels[i] < 0 ? topk_result::invalid_id : std::int64_t(labels[i]);
      if (labels[i] < 0) out.scores[i] = -std::numeric_limits<float>::infinity();
    }
    return out;
  }

  static std::vector<float> contiguous(matrix_view<float> v) {
    std::vector<float> rows(v.rows * v.cols);
    for (std::size_t r = 0; r != v.rows; ++r) std::copy_n(v.row(r), v.cols, rows.data() + r * v.cols);
    return rows;
  }

  static std::unique_ptr<faiss::Index> make_ivf(std::size_t dim, std::size_t nlist, std::size_t nprobe) {
    auto index = std::make_unique<faiss::IndexIVFFlat>(new faiss::IndexFlatIP(faiss::Index::idx_t(dim)), dim, nlist,
                                                       faiss::METRIC_INNER_PRODUCT);
    index->own_fields = true;  // the index deletes its quantizer
    index->nprobe = nprobe;
    return index;
  }

  std::unique_ptr<faiss::Index> index_;
  std::shared_ptr<const faiss::SearchParameters> search_params_;
  bool auto_nlist_ = false;  ///< ivf_flat(dim, 0) before its first add
};
static_assert(serializable_backend<faiss_backend> && filtering_backend<faiss_backend>,
              "faiss_backend must model serializable_backend and filtering_backend");

}  // namespace aligner
