/** @file index_file.hpp
 *  @brief Saving and loading a whole retriever: one checksummed file (io/section_file.hpp), written atomically,
 *  loaded with the token store memory-mapped read-only.
 *
 *  Sections: meta (i64: dim, panel width, documents, has salience, check_finite, doc_prune bits), storage (u8: the
 *  storage's disk tag, kernels/storage.hpp), offsets, panel_offsets, panels (the packed words), salience, token_doc
 *  (each backend vector's first document), token_dedup (u8: identical vectors indexed once; absent in older files:
 *  no), token_prints (i64 pairs), postings_vecs / postings_offs / postings_docs (the further documents of
 *  vectors held by several), removed, backend (the backend's serialize() bytes), backend_type (its type_name, when it has one: loading with
 *  another backend type is refused by name), label. Everything is verified before use (checksums, shapes,
 *  offsets, ids); any problem throws aligner::io_error naming the file. A file saved by a build of another SIMD
 *  width is repacked on load (int8 tokens are re-quantised from their stored values, which can move a scale by an
 *  ulp). */
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../kernels/layout.hpp"
#include "../kernels/storage.hpp"
#include "../pipeline/retriever.hpp"
#include "../storage/token_store.hpp"
#include "section_file.hpp"

// GCC 12 reports a false -Wmaybe-uninitialized in the destructor of load_index's codec shared_ptr (a consumer's
// -Werror build, tests/test_package/strict.cpp, caught it): silenced here as around the kernels.
ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// How load_index reads a file.
struct load_options {
  bool mmap = true;              ///< map the token store read-only (shared between processes) instead of reading it
  std::size_t expected_dim = 0;  ///< when non-zero, a file of another dimension is refused
  /// Residual stores: the codec of a file saved without one (save_index with embed_codec = false, e.g. the segments
  /// of an index directory, which share one). A file that holds a codec must hold this one.
  std::shared_ptr<const residual_codec> codec{};
};

/// Saves the whole retriever (token store, document map, removals, settings, the backend's own bytes) to one file,
/// atomically: a crash leaves the old file or the new one. `label` (optional, <= 4096 bytes) is stored as-is; read
/// it back with read_index_label (e.g. the backend's name, so a tool knows which Backend type to load).
/// `embed_codec` false leaves a residual store's codec out (load it with load_options.codec).
template <serializable_backend Backend>
void save_index(const aligner_retriever<Backend>& retriever, const std::filesystem::path& path, std::string_view label = {},
                bool embed_codec = true) {
  ALIGNER_EXPECTS(label.size() <= 4096, "index label has ", label.size(), " bytes, at most 4096 are allowed");
  const retriever_state<Backend>& s = retriever.state();
  const std::int64_t meta[6] = {std::int64_t(s.store.dim()), std::int64_t(panel_width<>), std::int64_t(s.store.size()),
                                std::int64_t(s.store.has_salience()), std::int64_t(s.params.check_finite),
                                std::bit_cast<std::int64_t>(s.params.doc_prune)};
  const std::vector<std::uint8_t> removed(s.removed.begin(), s.removed.end());
  const std::string backend = s.backend.serialize();
  auto bytes = [](const auto& span) {
    return std::string_view(reinterpret_cast<const char*>(span.data()), span.size() * sizeof(span[0]));
  };
  const std::string_view packed(reinterpret_cast<const char*>(s.store.packed_data()), s.store.packed_elements() * 4);
  const auto salience = s.store.all_salience();
  const std::uint8_t tag[1] = {disk_tag(s.store.precision())};
  std::string_view type;
  if constexpr (named_backend<Backend>) type = Backend::type_name;
  const std::uint8_t dedup[1] = {std::uint8_t(s.tokens.dedup())}, token_index[1] = {std::uint8_t(s.params.token_index)};
  const std::string codec = s.store.codec() && embed_codec ? s.store.codec()->serialize() : std::string();
  const auto more = s.tokens.more();
  const std::vector<std::int64_t> more_offsets(more.offsets.begin(), more.offsets.end());
  const auto prints = s.tokens.fingerprints();
  using io::section_dtype;
  const std::vector<io::section_out> sections = {
      {"meta", section_dtype::i64, {6}, bytes(std::span<const std::int64_t>(meta))},
      {"storage", section_dtype::u8, {1}, bytes(std::span<const std::uint8_t>(tag))},
      {"offsets", section_dtype::i64, {s.store.offsets().size()}, bytes(s.store.offsets())},
      {"panel_offsets", section_dtype::i64, {s.store.panel_offsets().size()}, bytes(s.store.panel_offsets())},
      {"panels", s.store.precision() == storage::f32 ? section_dtype::f32 : section_dtype::u32, {s.store.packed_elements()}, packed},
      {"salience", section_dtype::f32, {salience.size()}, bytes(salience)},
      {"token_doc", section_dtype::u32, {s.tokens.size()}, bytes(s.tokens.first_docs())},
      {"token_dedup", section_dtype::u8, {1}, bytes(std::span<const std::uint8_t>(dedup))},
      {"token_index", section_dtype::u8, {1}, bytes(std::span<const std::uint8_t>(token_index))},
      {"token_prints", section_dtype::i64, {2 * prints.size()}, bytes(prints)},
      {"postings_vecs", section_dtype::u32, {more.vectors.size()}, bytes(std::span<const std::uint32_t>(more.vectors))},
      {"postings_offs", section_dtype::i64, {more_offsets.size()}, bytes(std::span<const std::int64_t>(more_offsets))},
      {"postings_docs", section_dtype::u32, {more.docs.size()}, bytes(std::span<const std::uint32_t>(more.docs))},
      {"removed", section_dtype::u8, {removed.size()}, bytes(std::span<const std::uint8_t>(removed))},
      {"codec", section_dtype::u8, {codec.size()}, std::string_view(codec)},
      {"backend", section_dtype::u8, {backend.size()}, std::string_view(backend)},
      {"backend_type", section_dtype::u8, {type.size()}, type},
      {"label", section_dtype::u8, {label.size()}, label},
  };
  io::atomic_write(path, io::encode_sections(sections));
}

/// The label stored by save_index (empty when none). Verifies the header, the section table and the label's own
/// checksum, not the other payloads (load_index verifies those), so that a tool choosing the Backend type by the
/// label does not read a large file twice.
inline std::string read_index_label(const std::filesystem::path& path) {
  const auto file = io::file_bytes::open(path, true);
  const auto sections = io::decode_sections(*file, false);
  const auto it = sections.find("label");
  if (it == sections.end()) return {};
  if (io::crc32c(it->second.data, it->second.bytes) != it->second.crc) throw io_error(path.string() + ": section label checksum mismatch (corrupt)");
  return std::string(it->second.data, it->second.bytes);
}

namespace detail {

/// The token store of an index file: the mapped panels adopted when the layout is this build's, else copied (read
/// into memory) or repacked (another panel width).
inline token_store load_token_store(const std::shared_ptr<const io::file_bytes>& file, std::size_t dim, std::size_t width,
                                    storage precision, std::vector<std::int64_t> offsets, std::vector<std::int64_t> panel_offsets,
                                    const io::section_in& packed, std::vector<float> salience, bool has_salience,
                                    std::shared_ptr<const residual_codec> codec = {}) {
  const std::size_t words = packed.bytes / 4;
  if (width == panel_width<> && file->mapped())
    return token_store::adopt(dim, precision, std::move(offsets), std::move(panel_offsets), packed.data, words, std::move(salience),
                              has_salience, std::shared_ptr<const void>(file, file.get()), codec);
  if (width == panel_width<>) {  // read: the words are copied as they are (bit-identical, also for int8 scales)
    auto copy = std::make_shared<aligned_vector<std::uint32_t>>(words);
    if (words) std::memcpy(copy->data(), packed.data, words * 4);
    auto store = token_store::adopt(dim, precision, std::move(offsets), std::move(panel_offsets), copy->data(), words,
                                    std::move(salience), has_salience, std::shared_ptr<const void>(copy, copy->data()), codec);
    store.detach();
    return store;
  }
  const std::size_t per_panel = codec ? codec->panel_words(width) : panel_words(precision, dim, width), docs = panel_offsets.size();
  std::int64_t expect = 0;
  for (std::size_t d = 0; d != docs; ++d) {
    ALIGNER_EXPECTS(panel_offsets[d] == expect, "panel offset ", d, " does not match the saved panel width ", width);
    expect += std::int64_t((std::size_t(offsets[d + 1] - offsets[d]) + width - 1) / width * per_panel);
  }
  ALIGNER_EXPECTS(std::size_t(expect) == words, "the panels section does not match the offsets");
  if (codec) {  // residual codes move lane by lane into this build's panels, never re-encoded
    const std::size_t here = panel_width<>, here_words = codec->panel_words(here);
    auto repacked = std::make_shared<aligned_vector<std::uint32_t>>();
    std::vector<std::int64_t> new_panel_offsets;
    for (std::size_t d = 0; d != docs; ++d) {
      const std::size_t len = std::size_t(offsets[d + 1] - offsets[d]), at = repacked->size();
      new_panel_offsets.push_back(std::int64_t(at));
      repacked->resize(at + (len + here - 1) / here * here_words, 0u);
      const char* src = packed.data + 4 * std::size_t(panel_offsets[d]);
      for (std::size_t j = 0; j != len; ++j)
        codec->copy_lane(src + (j / width) * per_panel * 4, width, j % width, repacked->data() + at + (j / here) * here_words, here, j % here);
    }
    auto store = token_store::adopt(dim, precision, std::move(offsets), std::move(new_panel_offsets), repacked->data(), repacked->size(),
                                    std::move(salience), has_salience, std::shared_ptr<const void>(repacked, repacked->data()), codec);
    store.detach();
    return store;
  }
  token_store store(dim, precision);
  std::vector<float> rows;
  for (std::size_t d = 0; d != docs; ++d) {
    const std::size_t len = std::size_t(offsets[d + 1] - offsets[d]);
    rows.assign(len * dim, 0.f);
    for (std::size_t j = 0; j != len; ++j)
      for (std::size_t c = 0; c != dim; ++c)
        rows[j * dim + c] = packed_value(precision, packed.data + 4 * std::size_t(panel_offsets[d]), width, dim, j, c);
    store.add(matrix_view<float>(rows.data(), len, dim),
              has_salience ? std::span<const float>(salience).subspan(std::size_t(offsets[d]), len) : std::span<const float>(), false);
  }
  return store;
}

}  // namespace detail

/// Loads a retriever saved by save_index; `make_backend(bytes)` rebuilds the backend (default Backend::deserialize).
template <mips_backend Backend, class MakeBackend>
aligner_retriever<Backend> load_index(const std::filesystem::path& path, load_options options, MakeBackend&& make_backend) {
  auto file = io::file_bytes::open(path, options.mmap);
  const auto sections = io::decode_sections(*file);
  auto fail = [&](const std::string& what) -> void { throw io_error(path.string() + ": " + what); };
  auto get = [&](const char* name, io::section_dtype dtype) -> const io::section_in& {
    const auto it = sections.find(name);
    if (it == sections.end()) fail(std::string("missing section ") + name);
    if (it->second.dtype != dtype || it->second.shape.size() != 1) fail(std::string("section ") + name + " has the wrong type");
    return it->second;
  };
  const auto meta = get("meta", io::section_dtype::i64).template as<std::int64_t>();
  if (meta.size() != 6) fail("meta section has " + std::to_string(meta.size()) + " values, expected 6");
  const std::int64_t dim = meta[0], width = meta[1], docs = meta[2];
  if (dim < 1 || dim > (1 << 20)) fail("implausible dim " + std::to_string(dim));
  if (options.expected_dim && std::size_t(dim) != options.expected_dim)
    fail("index dim " + std::to_string(dim) + " does not match the expected dim " + std::to_string(options.expected_dim));
  if (width != 4 && width != 8 && width != 16 && width != 32) fail("unsupported panel width " + std::to_string(width));
  if (docs < 0 || meta[3] < 0 || meta[3] > 1 || meta[4] < 0 || meta[4] > 1) fail("corrupt meta section");
  if (const auto it = sections.find("backend_type"); it != sections.end()) {  // files before it have none
    const std::string_view written(it->second.data, it->second.bytes);
    if constexpr (named_backend<Backend>)
      if (!written.empty() && written != Backend::type_name)
        fail("was written by " + std::string(written) + ", not " + std::string(Backend::type_name));
  }
  const auto& backend_bytes = get("backend", io::section_dtype::u8);
  retriever_state<Backend> state{.backend = make_backend(std::string_view(backend_bytes.data, backend_bytes.bytes))};
  state.params = {.doc_prune = std::bit_cast<double>(meta[5]), .check_finite = meta[4] == 1};
  if (!(state.params.doc_prune > 0.0 && state.params.doc_prune <= 1.0)) fail("corrupt pruning fraction");
  const bool has_salience = meta[3] == 1;
  if (sections.count("storage")) {  // files before the f16/i8 stores have none: float32
    const auto tag = get("storage", io::section_dtype::u8).template as<std::uint8_t>();
    if (tag.size() != 1 || !storage_from_disk_tag(tag[0], state.params.precision)) fail("corrupt storage section");
  }
  const auto offsets = get("offsets", io::section_dtype::i64).template as<std::int64_t>();
  const auto panel_offsets = get("panel_offsets", io::section_dtype::i64).template as<std::int64_t>();
  const auto& packed = get("panels", state.params.precision == storage::f32 ? io::section_dtype::f32 : io::section_dtype::u32);
  const auto salience = get("salience", io::section_dtype::f32).template as<float>();
  const auto token_doc = get("token_doc", io::section_dtype::u32).template as<std::uint32_t>();
  const auto removed = get("removed", io::section_dtype::u8).template as<std::uint8_t>();
  std::shared_ptr<const residual_codec> codec;
  if (state.params.precision == storage::residual) {
    const auto& bytes = get("codec", io::section_dtype::u8);
    if (bytes.bytes == 0 && options.codec) {
      codec = options.codec;
    } else {
      if (bytes.bytes == 0) fail("holds no codec (it was saved to share one: load it with load_options.codec)");
      try {
        codec = std::make_shared<const residual_codec>(residual_codec::deserialize(std::string_view(bytes.data, bytes.bytes)));
      } catch (const io_error& e) {
        fail(e.what());
      }
      if (options.codec && options.codec->serialize() != codec->serialize()) fail("holds another codec than load_options.codec");
    }
    if (codec->dim() != std::size_t(dim)) fail("residual codec of dim " + std::to_string(codec->dim()) + " in an index of dim " + std::to_string(dim));
    state.params.codec = codec;
    state.params.residual.nbits = codec->nbits();
  }
  if (offsets.size() != std::size_t(docs) + 1 || panel_offsets.size() != std::size_t(docs) || removed.size() != std::size_t(docs))
    fail("document count " + std::to_string(docs) + " does not match the offsets, panel offsets or removal flags");
  for (std::uint8_t r : removed)
    if (r > 1) fail("removal flags must be 0 or 1");
  for (std::size_t i = 0; i != salience.size(); ++i)
    if (!(salience[i] >= 0.f) || !std::isfinite(salience[i])) fail("salience value " + std::to_string(i) + " is invalid");
  try {
    // check_offsets bounds every document by max_sequence_tokens before any size is computed from the lengths.
    detail::check_offsets(offsets, offsets.empty() ? 0 : std::size_t(offsets.back()), "offsets");
    if (has_salience ? salience.size() != std::size_t(offsets.back()) : !salience.empty()) fail("salience section does not match the tokens");
    state.store = detail::load_token_store(file, std::size_t(dim), std::size_t(width), state.params.precision,
                                           {offsets.begin(), offsets.end()}, {panel_offsets.begin(), panel_offsets.end()}, packed,
                                           {salience.begin(), salience.end()}, has_salience, codec);
    if (sections.count("token_index")) {  // files before it always have a token index
      const auto flag = get("token_index", io::section_dtype::u8).template as<std::uint8_t>();
      if (flag.size() != 1 || flag[0] > 1) fail("corrupt token_index section");
      state.params.token_index = flag[0] == 1;
    }
    bool dedup = false;  // files before deduplication hold one vector per indexed token
    std::span<const vector_fingerprint> prints;
    std::vector<std::uint32_t> more_vectors, more_docs;
    std::vector<std::uint64_t> more_offsets{0};
    if (sections.count("token_dedup")) {
      const auto flag = get("token_dedup", io::section_dtype::u8).template as<std::uint8_t>();
      if (flag.size() != 1 || flag[0] > 1) fail("corrupt token_dedup section");
      dedup = flag[0] == 1;
      const auto& fp = get("token_prints", io::section_dtype::i64);
      if (fp.bytes % sizeof(vector_fingerprint) != 0) fail("token_prints section has an odd number of values");
      std::vector<vector_fingerprint> copy(fp.bytes / sizeof(vector_fingerprint));
      if (!copy.empty()) std::memcpy(copy.data(), fp.data, fp.bytes);
      const auto mv = get("postings_vecs", io::section_dtype::u32).template as<std::uint32_t>();
      const auto mo = get("postings_offs", io::section_dtype::i64).template as<std::int64_t>();
      const auto md = get("postings_docs", io::section_dtype::u32).template as<std::uint32_t>();
      for (std::int64_t o : mo)
        if (o < 0) fail("negative posting offset");
      more_vectors.assign(mv.begin(), mv.end());
      more_offsets.assign(mo.begin(), mo.end());
      more_docs.assign(md.begin(), md.end());
      if (more_offsets.empty()) fail("postings_offs section is empty");
      state.params.dedup_tokens = dedup;
      state.tokens = token_postings::from_arrays(dedup, token_doc, copy, more_vectors, more_offsets, more_docs, std::size_t(docs));
    } else {
      state.params.dedup_tokens = false;
      state.tokens = token_postings::from_arrays(false, token_doc, prints, more_vectors, more_offsets, more_docs, std::size_t(docs));
    }
    state.removed.assign(removed.begin(), removed.end());
    state.removed_count = std::size_t(std::count(removed.begin(), removed.end(), std::uint8_t(1)));
    return aligner_retriever<Backend>(std::move(state));
  } catch (const invalid_argument& e) {
    throw io_error(path.string() + ": " + e.what());
  }
}

/// Loads a retriever saved by save_index with Backend::deserialize.
template <serializable_backend Backend>
aligner_retriever<Backend> load_index(const std::filesystem::path& path, load_options options = {}) {
  return load_index<Backend>(path, options, [](std::string_view bytes) { return Backend::deserialize(bytes); });
}

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
