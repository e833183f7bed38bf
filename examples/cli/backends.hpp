// The token MIPS backends the tool builds and loads: a factory and an index loader per name of registry.hpp.
// Include it in one translation unit only: hnswlib's headers define non-inline functions.
#pragma once

#include <aligner/backends/exact.hpp>
#include <aligner/io/index_file.hpp>
#ifdef ALIGNER_HAVE_FAISS
#include <aligner/backends/faiss.hpp>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
#include <aligner/backends/hnswlib.hpp>
#endif

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "options.hpp"
#include "registry.hpp"

namespace cli {

/// Calls fn(backend) with a fresh backend named `name` (validated by the flag handler).
template <class Fn>
void with_backend(std::string_view name, std::size_t dim, Fn&& fn) {
  if (name == "exact") return fn(aligner::exact_backend(dim));
  if (name == "exact-bf16") return fn(aligner::exact_backend(dim, aligner::storage::bf16));  // AMX-BF16 where the CPU has it
#ifdef ALIGNER_HAVE_FAISS
  if (name == "faiss-flat") return fn(aligner::faiss_backend(std::make_unique<faiss::IndexFlatIP>(dim)));
  if (name == "faiss-hnsw") {
    auto index = std::make_unique<faiss::IndexHNSWFlat>(int(dim), 16, faiss::METRIC_INNER_PRODUCT);
    index->hnsw.efConstruction = 80;
    auto params = std::make_shared<faiss::SearchParametersHNSW>();
    params->efSearch = 128;
    return fn(aligner::faiss_backend(std::move(index), params));
  }
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
  if (name == "hnswlib") return fn(aligner::hnswlib_backend(dim, {.ef_construction = 80, .ef_search = 128}));
#endif
  throw usage_error("--backend must be one of " + backend_names() + ", got '" + std::string(name) + "'");
}

/// Loads the index at `path` with the backend type its label names and calls fn(retriever).
template <class Fn>
void with_saved_index(const std::filesystem::path& path, const aligner::load_options& options, Fn&& fn) {
  const std::string kind = aligner::read_index_label(path);
  if (kind == "exact" || kind == "exact-bf16" || kind.empty()) return fn(aligner::load_index<aligner::exact_backend>(path, options));
#ifdef ALIGNER_HAVE_FAISS
  if (kind == "faiss-flat" || kind == "faiss-hnsw") return fn(aligner::load_index<aligner::faiss_backend>(path, options));
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
  if (kind == "hnswlib") return fn(aligner::load_index<aligner::hnswlib_backend>(path, options));
#endif
  throw usage_error(path.string() + ": index built with backend '" + kind + "', which this build of aligner does not have");
}

}  // namespace cli
