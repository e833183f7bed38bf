/** @file named_backends.hpp
 *  @brief Token MIPS backends by name ("exact", "exact-bf16", "exact-i8", "faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib"): the one list
 *  that the CLI and the Python package offer, a factory, and a loader that opens a saved index with the backend type
 *  its label names.
 *
 *  Opt-in, not part of the umbrella header. The optional backends are compiled in where the including translation
 *  unit defines ALIGNER_HAVE_FAISS (and links FAISS) or ALIGNER_HAVE_HNSWLIB (hnswlib's headers on the include path).
 *  Include it in one translation unit of a program only: hnswlib's headers define non-inline functions. */
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "../backends/exact.hpp"
#include "../backends/names.hpp"
#include "../core/error.hpp"
#include "index_file.hpp"
#ifdef ALIGNER_HAVE_FAISS
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>

#include "../backends/faiss.hpp"
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
#include "../backends/hnswlib.hpp"
#endif

namespace aligner {

/// Settings of the approximate backends: the graphs (faiss-hnsw, hnswlib) and the inverted file (faiss-ivf).
struct graph_settings {
  std::size_t m = 16;                ///< graph degree
  std::size_t ef_construction = 80;  ///< candidate list while building
  std::size_t ef_search = 128;       ///< candidate list while searching
  std::size_t nlist = 0;             ///< faiss-ivf: inverted lists (0: faiss_backend::ivf_lists of the first add's count)
  std::size_t nprobe = 32;           ///< faiss-ivf: lists probed per query vector
};
/// The same settings under the name that says what they are now.
using backend_settings = graph_settings;

/// Calls fn(backend) with a fresh, empty backend named `name` of dimension `dim` and returns what fn returns.
/// Throws aligner::invalid_argument naming `name` when this build has no such backend.
template <class Fn>
decltype(auto) with_backend(std::string_view name, std::size_t dim, Fn&& fn, graph_settings graph = {}) {
  (void)graph;  // a build without FAISS and hnswlib has no graph to set
  if (name == "exact") return fn(exact_backend(dim));
  if (name == "exact-bf16") return fn(exact_backend(dim, storage::bf16));  // AMX-BF16 where the CPU has it
  if (name == "exact-i8") return fn(exact_backend(dim, storage::i8));      // AMX-INT8 or AVX512-VNNI where the CPU has them
#ifdef ALIGNER_HAVE_FAISS
  if (name == "faiss-flat") return fn(faiss_backend(std::make_unique<faiss::IndexFlatIP>(dim)));
  if (name == "faiss-hnsw") {
    auto index = std::make_unique<faiss::IndexHNSWFlat>(int(dim), int(graph.m), faiss::METRIC_INNER_PRODUCT);
    index->hnsw.efConstruction = int(graph.ef_construction);
    index->hnsw.efSearch = int(graph.ef_search);  // kept in the saved index, so that a loaded one searches the same
    auto params = std::make_shared<faiss::SearchParametersHNSW>();
    params->efSearch = int(graph.ef_search);
    return fn(faiss_backend(std::move(index), params));
  }
  if (name == "faiss-ivf") return fn(faiss_backend::ivf_flat(dim, graph.nlist, graph.nprobe));
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
  if (name == "hnswlib")
    return fn(hnswlib_backend(dim, {.m = graph.m, .ef_construction = graph.ef_construction, .ef_search = graph.ef_search}));
#endif
  ALIGNER_EXPECTS(false, "backend must be one of ", backend_names(), ", got '", name, "'");
  return fn(exact_backend(dim));  // not reached
}

/// Loads the index at `path` with the Backend type its label names (save_index's label: a name of backend_list; an
/// empty label is an exact index) and returns fn(retriever). Throws aligner::io_error naming the file when it was
/// written by a backend this build does not have.
template <class Fn>
decltype(auto) with_saved_index(const std::filesystem::path& path, const load_options& options, Fn&& fn) {
  const std::string kind = read_index_label(path);
  if (kind == "exact" || kind == "exact-bf16" || kind == "exact-i8" || kind.empty()) return fn(load_index<exact_backend>(path, options));
#ifdef ALIGNER_HAVE_FAISS
  if (kind == "faiss-flat" || kind == "faiss-hnsw" || kind == "faiss-ivf") return fn(load_index<faiss_backend>(path, options));
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
  if (kind == "hnswlib") return fn(load_index<hnswlib_backend>(path, options));
#endif
  throw io_error(path.string() + ": index built with backend '" + kind + "', which this build of aligner does not have (" +
                 backend_names(", ") + ")");
}

}  // namespace aligner
