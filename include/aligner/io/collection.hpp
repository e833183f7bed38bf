/** @file collection.hpp
 *  @brief A retrieval collection on disk: BEIR files plus a folder of token vectors, in one of two forms.
 *
 *  Layout (as ../shared/data/scifact): `qrels/<split>.tsv` and a vectors folder that holds either
 *  - the token-id form: `embeddings.npy` [vocab, dim] + `doc_token_ids.npy` + `doc_offsets.npy` + `doc_ids.txt`
 *    (and the same for queries); the vectors of a sequence are embeddings rows of its token ids, or
 *  - the dense form (contextual encoders): `doc_vectors.npy` [tokens, dim] float32/float16 + `doc_offsets.npy`
 *    + `doc_ids.txt` (and the same for queries).
 *  Every array is validated (offsets start at 0, never decrease, end at the token count; ids files have one
 *  line per sequence; token ids lie in [0, vocab)); a problem throws aligner::io_error naming the file. */
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/types.hpp"
#include "npy.hpp"
#include "trec.hpp"

namespace aligner::io {

/// Variable-length sequences of token vectors, owned: tokens (rows x dim, row-major), offsets, string ids.
struct token_sequences {
  std::vector<float> vectors;
  std::size_t dim = 0;
  std::vector<std::int64_t> offsets{0};
  std::vector<std::string> ids;
  std::vector<std::int32_t> token_ids;  ///< vocabulary id of every token (token-id form only; else empty)

  std::size_t size() const noexcept { return offsets.size() - 1; }
  std::size_t tokens() const noexcept { return std::size_t(offsets.back()); }
  sequence_set_view view() const noexcept {
    return {matrix_view<float>(vectors.data(), tokens(), dim), std::span<const std::int64_t>(offsets)};
  }
  matrix_view<float> sequence(std::size_t s) const noexcept { return view().sequence(s); }
};

/// A collection: documents, queries (all of them), and the judgments of one split.
struct collection {
  token_sequences docs, queries;
  qrels judgments;
  std::size_t vocab_size = 0;  ///< rows of embeddings.npy (token-id form), else 0
};

namespace detail {

[[noreturn]] inline void collection_fail(const std::filesystem::path& file, const std::string& what) {
  throw io_error(file.string() + ": " + what);
}

inline std::vector<std::int64_t> load_offsets(const std::filesystem::path& file, std::size_t tokens) {
  auto arr = load_npy<std::int64_t>(file);
  if (arr.shape.size() != 1) collection_fail(file, "offsets must be a 1-d array");
  try {
    aligner::detail::check_offsets(arr.values, tokens, "offsets");
  } catch (const invalid_argument& e) {
    collection_fail(file, e.what());
  }
  return std::move(arr.values);
}

inline std::vector<std::string> load_ids(const std::filesystem::path& file, std::size_t expected) {
  auto ids = read_lines(file);
  while (!ids.empty() && ids.back().empty()) ids.pop_back();
  if (ids.size() != expected)
    collection_fail(file, "has " + std::to_string(ids.size()) + " ids but the offsets describe " + std::to_string(expected) +
                              " sequences");
  return ids;
}

inline token_sequences load_side(const std::filesystem::path& dir, const std::string& side,
                                 const npy_array<float>* embeddings) {
  token_sequences out;
  if (embeddings) {
    const auto ids_file = dir / (side + "_token_ids.npy");
    auto tok = load_npy<std::int32_t>(ids_file);
    if (tok.shape.size() != 1) collection_fail(ids_file, "token ids must be a 1-d array");
    const std::size_t vocab = embeddings->rows(), dim = embeddings->cols();
    out.dim = dim;
    out.offsets = load_offsets(dir / (side + "_offsets.npy"), tok.values.size());
    out.vectors.resize(tok.values.size() * dim);
    for (std::size_t t = 0; t != tok.values.size(); ++t) {
      const std::int32_t id = tok.values[t];
      if (id < 0 || std::size_t(id) >= vocab)
        collection_fail(ids_file, "token id " + std::to_string(id) + " at index " + std::to_string(t) +
                                      " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
      std::copy_n(embeddings->values.data() + std::size_t(id) * dim, dim, out.vectors.data() + t * dim);
    }
    out.token_ids = std::move(tok.values);
  } else {
    const auto vec_file = dir / (side + "_vectors.npy");
    auto vec = load_npy<float>(vec_file);
    if (vec.shape.size() != 2) collection_fail(vec_file, "vectors must be a 2-d array [tokens, dim]");
    out.dim = vec.shape[1];
    out.offsets = load_offsets(dir / (side + "_offsets.npy"), vec.shape[0]);
    out.vectors = std::move(vec.values);
  }
  const std::size_t bad = aligner::detail::first_non_finite(std::span<const float>(out.vectors));
  if (bad != out.vectors.size())
    collection_fail(dir, side + " vectors hold a non-finite value at token " + std::to_string(bad / std::max<std::size_t>(out.dim, 1)));
  out.ids = load_ids(dir / (side + "_ids.txt"), out.offsets.size() - 1);
  return out;
}

}  // namespace detail

/// Loads a collection folder. `vectors` is the vectors subfolder (e.g. "glove100"), `split` the qrels split (empty:
/// no judgments are read, e.g. to index the documents). `documents` false: the documents are not read (docs stays
/// empty; e.g. to search an index of a collection too large for memory).
inline collection load_collection(const std::filesystem::path& dir, const std::string& vectors = "glove100",
                                  const std::string& split = "test", bool documents = true) {
  const auto vdir = dir / vectors;
  if (!std::filesystem::is_directory(vdir)) detail::collection_fail(vdir, "vectors folder not found");
  collection out;
  const auto emb_file = vdir / "embeddings.npy";
  if (std::filesystem::exists(emb_file)) {
    auto emb = load_npy<float>(emb_file);
    if (emb.shape.size() != 2) detail::collection_fail(emb_file, "embeddings must be a 2-d array [vocab, dim]");
    out.vocab_size = emb.shape[0];
    if (documents) out.docs = detail::load_side(vdir, "doc", &emb);
    out.queries = detail::load_side(vdir, "query", &emb);
  } else if (std::filesystem::exists(vdir / "doc_vectors.npy")) {
    if (documents) out.docs = detail::load_side(vdir, "doc", nullptr);
    out.queries = detail::load_side(vdir, "query", nullptr);
  } else {
    detail::collection_fail(vdir, "holds neither embeddings.npy (token-id form) nor doc_vectors.npy (dense form)");
  }
  if (documents && out.docs.dim != out.queries.dim)
    detail::collection_fail(vdir, "document dim " + std::to_string(out.docs.dim) + " differs from query dim " +
                                      std::to_string(out.queries.dim));
  if (split.empty()) return out;
  const auto qrels_file = dir / "qrels" / (split + ".tsv");
  if (!std::filesystem::exists(qrels_file)) detail::collection_fail(qrels_file, "qrels split not found");
  out.judgments = load_qrels(qrels_file);
  return out;
}

}  // namespace aligner::io
