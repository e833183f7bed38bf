/** @file retriever.hpp
 *  @brief aligner_retriever<Backend>: ALIGNER retrieval over any MIPS backend (SPEC section 6).
 *
 *  1. Index: every document's kept tokens (salience pruning β^d, pruner.hpp) go into the backend; a 4-byte
 *     token id -> document map remembers where they came from; every token goes into a packed token_store.
 *  2. Search: each kept query token (β^q) asks the backend for its top k' tokens.
 *  3. Gather: hit tokens map to documents; their union (minus removed and filtered documents) are candidates.
 *  4. Rerank: each candidate gets sim(Q, D) over all tokens of both sides (scorer.hpp), the top N are returned,
 *     best first, ties toward the smaller document id. `exhaustive` skips 2-3 and reranks every document.
 *  5. Explain: the aligned pairs behind one document's score.
 *  Document ids are 0-based in insertion order. Thread safety: const members (search, search_multi,
 *  search_batch, explain, save) may run concurrently with each other; add/remove must not overlap anything on
 *  the same retriever. The retriever enforces this without locking the hot path: a search counts itself in and
 *  out, add/remove refuse to start while a search runs and searches refuse to start during add/remove, both
 *  with aligner::concurrency_error. To mutate while serving, guard the retriever with a std::shared_mutex
 *  (searches shared, add/remove exclusive) or swap in a rebuilt retriever. */
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <filesystem>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "alignment.hpp"
#include "backends/concepts.hpp"
#include "core/error.hpp"
#include "core/types.hpp"
#include "pruner.hpp"
#include "salience.hpp"
#include "scorer.hpp"
#include "token_store.hpp"
#include "io/section_file.hpp"

namespace aligner {

/// Settings fixed when documents are indexed.
struct index_params {
  double doc_prune = 1.0;  ///< β^d in (0, 1]: fraction of each document's tokens (by salience) given to the backend
  bool check_finite = true;
  storage precision = storage::f32;  ///< token store precision for the rerank (bf16/f16: half the memory, i8: a quarter)
};

/// Per-call knobs of a search.
struct search_params {
  alignment strategy = alignment::top1();
  normalization norm = normalization::mean;
  std::size_t candidates_per_token = 4000;  ///< k': backend hits per kept query token (>= 1)
  std::size_t top = 1000;                   ///< N: results returned (>= 1)
  bool exhaustive = false;                  ///< rerank every (allowed, not removed) document, no token search
  double query_prune = 1.0;                 ///< β^q in (0, 1]; < 1 needs query_salience
  std::span<const float> query_salience{};  ///< u^q (one per query token) or empty
  bool use_doc_salience = true;             ///< weight pairs with the stored document salience, when there is one
  std::function<bool(std::int64_t)> filter{};  ///< optional: only documents for which it returns true
  std::span<const std::int64_t> allowed_ids{};  ///< optional: only these document ids (each must exist)
  bool check_finite = true;
};

/// The label stored by aligner_retriever::save (empty when none); verifies the whole file like load.
inline std::string read_index_label(const std::filesystem::path& path) {
  const auto file = io::file_bytes::open(path, true);
  const auto sections = io::decode_sections(*file);
  const auto it = sections.find("label");
  if (it == sections.end()) return {};
  return std::string(it->second.data, it->second.bytes);
}

/// How aligner_retriever::load reads a file.
struct load_options {
  bool mmap = true;              ///< map the token store read-only (shared between processes) instead of reading it
  std::size_t expected_dim = 0;  ///< when non-zero, a file of another dimension is refused
};

/// Ranked documents of one query plus diagnostics.
struct search_result {
  std::vector<std::int64_t> ids;  ///< document ids, best first
  std::vector<float> scores;      ///< sim(Q, D) of each
  std::size_t candidates_scored = 0;  ///< documents reranked
  std::size_t tokens_searched = 0;    ///< query tokens sent to the backend
  std::size_t query_tokens_pruned = 0;
  std::size_t backend_hits = 0;       ///< valid token hits returned by the backend
};

template <mips_backend Backend>
class aligner_retriever {
 public:
  /// An empty retriever over `backend` (moved in; it must be empty). `doc_scorer`, when given, computes the
  /// salience of documents added without an explicit one.
  explicit aligner_retriever(Backend backend, index_params params = {},
                             std::optional<salience_scorer> doc_scorer = std::nullopt)
      : backend_(std::move(backend)), params_(params), doc_scorer_(std::move(doc_scorer)), store_(backend_.dim(), params.precision) {
    detail::check_beta(params_.doc_prune, "index_params.doc_prune");
    ALIGNER_EXPECTS(backend_.size() == 0, "the backend must be empty, it holds ", backend_.size(), " vectors");
    if (doc_scorer_)
      ALIGNER_EXPECTS(doc_scorer_->dim() == backend_.dim(), "document salience scorer has dim ", doc_scorer_->dim(),
                      " but the backend has dim ", backend_.dim());
  }

  /// Builds from documents stored back to back; `doc_salience` empty or one value per token.
  aligner_retriever(Backend backend, const sequence_set_view& docs, index_params params = {},
                    std::span<const float> doc_salience = {}, std::optional<salience_scorer> doc_scorer = std::nullopt)
      : aligner_retriever(std::move(backend), params, std::move(doc_scorer)) {
    add(docs, doc_salience);
  }

  aligner_retriever(aligner_retriever&& other) noexcept
      : backend_(std::move(other.backend_)), params_(other.params_), doc_scorer_(std::move(other.doc_scorer_)),
        store_(std::move(other.store_)), token_doc_(std::move(other.token_doc_)), removed_(std::move(other.removed_)),
        removed_count_(other.removed_count_) {}
  aligner_retriever& operator=(aligner_retriever&& other) noexcept {
    backend_ = std::move(other.backend_);
    params_ = other.params_;
    doc_scorer_ = std::move(other.doc_scorer_);
    store_ = std::move(other.store_);
    token_doc_ = std::move(other.token_doc_);
    removed_ = std::move(other.removed_);
    removed_count_ = other.removed_count_;
    return *this;
  }
  aligner_retriever(const aligner_retriever& other)
    requires std::copy_constructible<Backend>
      : backend_(other.backend_), params_(other.params_), doc_scorer_(other.doc_scorer_), store_(other.store_),
        token_doc_(other.token_doc_), removed_(other.removed_), removed_count_(other.removed_count_) {}

  std::size_t dim() const noexcept { return backend_.dim(); }
  /// Documents ever added (removed ones included: ids are never reused).
  std::size_t size() const noexcept { return store_.size(); }
  std::size_t live_size() const noexcept { return store_.size() - removed_count_; }
  std::size_t indexed_tokens() const noexcept { return token_doc_.size(); }
  const Backend& backend() const noexcept { return backend_; }
  const token_store& store() const noexcept { return store_; }
  const index_params& params() const noexcept { return params_; }
  bool is_removed(std::int64_t id) const noexcept { return id >= 0 && std::size_t(id) < size() && removed_[std::size_t(id)]; }

  /// Adds documents; returns the id of the first. Salience: `doc_salience` (one per token), else the doc
  /// scorer's, else none (then β^d must be 1). All or nothing: on error nothing changes.
  std::int64_t add(const sequence_set_view& docs, std::span<const float> doc_salience = {}) {
    const writer_guard guard(*this, "add");
    detail::check_offsets(docs.offsets, docs.tokens.rows, "document offsets");
    ALIGNER_EXPECTS(docs.tokens.rows == 0 || docs.tokens.cols == dim(), "documents have dim ", docs.tokens.cols,
                    " but the retriever has dim ", dim());
    detail::check_matrix(docs.tokens, "document tokens", params_.check_finite);
    ALIGNER_EXPECTS(size() + docs.size() < std::size_t(std::numeric_limits<std::uint32_t>::max()), "too many documents");
    std::vector<float> computed;
    if (doc_salience.empty() && doc_scorer_ && docs.tokens.rows) {
      computed = (*doc_scorer_)(docs, false);
      doc_salience = computed;
    }
    detail::check_weights(doc_salience, docs.tokens.rows, "doc_salience");
    const bool with_salience = !doc_salience.empty();
    ALIGNER_EXPECTS(with_salience || params_.doc_prune == 1.0, "index_params.doc_prune = ", params_.doc_prune,
                    " needs document salience (pass doc_salience or a salience scorer)");
    if (store_.size() > 0 && docs.size() > 0)
      ALIGNER_EXPECTS(with_salience == store_.has_salience(), "the retriever's documents ",
                      store_.has_salience() ? "have" : "have no", " salience; added documents must match");
    // Kept tokens, gathered contiguously for the backend.
    std::vector<float> kept;
    std::vector<std::uint32_t> kept_doc;
    const std::size_t first = size();
    for (std::size_t d = 0; d != docs.size(); ++d) {
      const matrix_view<float> doc = docs.sequence(d);
      auto take = [&](std::size_t j) {
        kept.insert(kept.end(), doc.row(j), doc.row(j) + dim());
        kept_doc.push_back(std::uint32_t(first + d));
      };
      if (params_.doc_prune >= 1.0 || doc.rows == 0) {
        for (std::size_t j = 0; j != doc.rows; ++j) take(j);
      } else {
        for (std::uint32_t j : prune(doc_salience.subspan(std::size_t(docs.offsets[d]), doc.rows), params_.doc_prune)) take(j);
      }
    }
    // Every input is validated above; the backend goes first (an adapter may still reject), then the store,
    // whose add cannot fail on validated input (only on allocation).
    backend_.add(matrix_view<float>(kept.data(), kept_doc.size(), dim()));
    store_.add(docs, doc_salience, false);
    token_doc_.insert(token_doc_.end(), kept_doc.begin(), kept_doc.end());
    removed_.resize(store_.size(), false);
    return std::int64_t(first);
  }

  /// Adds one document (a token matrix), returning its id.
  std::int64_t add(matrix_view<float> doc, std::span<const float> doc_salience = {}) {
    const std::int64_t offsets[] = {0, std::int64_t(doc.rows)};
    return add(sequence_set_view{doc, offsets}, doc_salience);
  }

  /// Removes a document: it is never returned again (its tokens may stay in the backend; hits are dropped).
  /// Throws for an unknown or already removed id.
  void remove(std::int64_t id) {
    const writer_guard guard(*this, "remove");
    ALIGNER_EXPECTS(id >= 0 && std::size_t(id) < size(), "remove: unknown document id ", id, " (the retriever holds ids 0..",
                    std::int64_t(size()) - 1, ")");
    ALIGNER_EXPECTS(!removed_[std::size_t(id)], "remove: document id ", id, " is already removed");
    removed_[std::size_t(id)] = true;
    ++removed_count_;
  }

  /// Searches one query (row-major token matrix).
  search_result search(matrix_view<float> query, const search_params& p = {}) const {
    validate(query, p);
    return search_unchecked(query, p);
  }

  /// Searches many queries stored back to back on `threads` threads (0 = hardware concurrency); results are
  /// identical to serial searches. `query_salience`: empty or one value per token of the whole set (it
  /// replaces p.query_salience per query).
  std::vector<search_result> search_batch(const sequence_set_view& queries, const search_params& p = {},
                                          std::span<const float> query_salience = {}, unsigned threads = 0) const {
    detail::check_offsets(queries.offsets, queries.tokens.rows, "query offsets");
    detail::check_weights(query_salience, queries.tokens.rows, "query_salience");
    ALIGNER_EXPECTS(p.query_salience.empty(), "search_batch takes query salience as its own argument, not in search_params");
    std::vector<search_params> per(queries.size(), p);
    for (std::size_t q = 0; q != queries.size(); ++q) {
      if (!query_salience.empty())
        per[q].query_salience = query_salience.subspan(std::size_t(queries.offsets[q]), queries.length(q));
      validate(queries.sequence(q), per[q]);
    }
    std::vector<search_result> out(queries.size());
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    threads = unsigned(std::min<std::size_t>(threads, queries.size()));
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t q; (q = next.fetch_add(1)) < queries.size();) out[q] = search_unchecked(queries.sequence(q), per[q]);
    };
    if (threads <= 1) {
      work();
    } else {
      std::vector<std::jthread> pool;
      for (unsigned t = 0; t != threads; ++t) pool.emplace_back(work);
    }
    return out;
  }

  /// Searches one query under several strategies at once: candidates are gathered once (with p's k', β^q,
  /// filter) and every candidate's S is computed once; result g ranks the candidates under strategies[g]
  /// (p.strategy is ignored). Equal to separate searches with each strategy.
  std::vector<search_result> search_multi(matrix_view<float> query, std::span<const alignment> strategies,
                                          const search_params& p = {}) const {
    validate(query, p);
    for (const auto& a : strategies) a.validate();
    return search_unchecked_multi(query, strategies, p);
  }

  /// Saves the whole retriever (token store, document map, removals, settings, the backend's own bytes) to
  /// one file in the format of io/section_file.hpp, atomically: a crash leaves the old file or the new one.
  /// `label` (optional, <= 4096 bytes) is stored as-is; read it back with read_index_label (e.g. the backend's
  /// name, so a tool knows which Backend type to load).
  void save(const std::filesystem::path& path, std::string_view label = {}) const
    requires serializable_backend<Backend>
  {
    ALIGNER_EXPECTS(label.size() <= 4096, "index label has ", label.size(), " bytes, at most 4096 are allowed");
    const std::int64_t meta[6] = {std::int64_t(dim()), std::int64_t(panel_width<>), std::int64_t(size()),
                                  std::int64_t(store_.has_salience()), std::int64_t(params_.check_finite),
                                  std::bit_cast<std::int64_t>(params_.doc_prune)};
    std::vector<std::uint8_t> removed(removed_.begin(), removed_.end());
    const std::string backend = backend_.serialize();
    auto bytes = [](const auto& span) {
      return std::string_view(reinterpret_cast<const char*>(span.data()), span.size() * sizeof(span[0]));
    };
    const std::string_view packed(static_cast<const char*>(store_.packed_data()), store_.packed_elements() * 4);
    const auto salience = store_.all_salience();
    const std::uint8_t precision[1] = {std::uint8_t(store_.precision())};  // 0 f32, 1 bf16, 2 f16, 3 i8
    using io::section_dtype;
    const std::vector<io::section_out> sections = {
        {"meta", section_dtype::i64, {6}, bytes(std::span<const std::int64_t>(meta))},
        {"storage", section_dtype::u8, {1}, bytes(std::span<const std::uint8_t>(precision))},
        {"offsets", section_dtype::i64, {store_.offsets().size()}, bytes(store_.offsets())},
        {"panel_offsets", section_dtype::i64, {store_.panel_offsets().size()}, bytes(store_.panel_offsets())},
        {"panels", store_.precision() == storage::f32 ? section_dtype::f32 : section_dtype::u32, {store_.packed_elements()}, packed},
        {"salience", section_dtype::f32, {salience.size()}, bytes(salience)},
        {"token_doc", section_dtype::u32, {token_doc_.size()}, bytes(token_doc_)},
        {"removed", section_dtype::u8, {removed.size()}, bytes(removed)},
        {"backend", section_dtype::u8, {backend.size()}, std::string_view(backend)},
        {"label", section_dtype::u8, {label.size()}, label},
    };
    io::atomic_write(path, io::encode_sections(sections));
  }

  /// Loads a retriever saved by save(); `make_backend(bytes)` rebuilds the backend (default
  /// Backend::deserialize). Everything is verified before use (checksums, shapes, offsets, ids); any problem
  /// throws aligner::io_error naming the file.
  template <class MakeBackend>
  static aligner_retriever load(const std::filesystem::path& path, load_options options, MakeBackend&& make_backend) {
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
    index_params params{.doc_prune = std::bit_cast<double>(meta[5]), .check_finite = meta[4] == 1};
    if (!(params.doc_prune > 0.0 && params.doc_prune <= 1.0)) fail("corrupt pruning fraction");
    const bool has_salience = meta[3] == 1;
    storage precision = storage::f32;
    if (sections.count("storage")) {
      const auto st = get("storage", io::section_dtype::u8).template as<std::uint8_t>();
      if (st.size() != 1 || st[0] > std::uint8_t(storage::i8)) fail("corrupt storage section");
      precision = storage(st[0]);
    }
    params.precision = precision;
    const auto offsets_in = get("offsets", io::section_dtype::i64).template as<std::int64_t>();
    const auto panel_offsets_in = get("panel_offsets", io::section_dtype::i64).template as<std::int64_t>();
    const auto& packed = get("panels", precision == storage::f32 ? io::section_dtype::f32 : io::section_dtype::u32);
    const std::size_t packed_elements = packed.bytes / 4;
    const auto salience_in = get("salience", io::section_dtype::f32).template as<float>();
    const auto token_doc = get("token_doc", io::section_dtype::u32).template as<std::uint32_t>();
    const auto removed_in = get("removed", io::section_dtype::u8).template as<std::uint8_t>();
    const auto& backend_bytes = get("backend", io::section_dtype::u8);
    if (offsets_in.size() != std::size_t(docs) + 1 || panel_offsets_in.size() != std::size_t(docs) || removed_in.size() != std::size_t(docs))
      fail("document count " + std::to_string(docs) + " does not match the offsets, panel offsets or removal flags");
    std::vector<std::int64_t> offsets(offsets_in.begin(), offsets_in.end());
    try {
      detail::check_offsets(offsets, std::size_t(offsets.empty() ? 0 : offsets.back()), "offsets");
    } catch (const invalid_argument& e) {
      fail(e.what());
    }
    // Every document within the store's limit: also keeps every size computed from the lengths from overflowing.
    for (std::size_t d = 0; d + 1 < offsets.size(); ++d)
      if (offsets[d + 1] - offsets[d] >= (std::int64_t(1) << 24))
        fail("document " + std::to_string(d) + " has " + std::to_string(offsets[d + 1] - offsets[d]) +
             " tokens; at most 2^24 - 1 are supported");
    const std::size_t tokens = std::size_t(offsets.back());
    if (has_salience ? salience_in.size() != tokens : !salience_in.empty()) fail("salience section does not match the tokens");
    for (std::size_t i = 0; i != salience_in.size(); ++i)
      if (!(salience_in[i] >= 0.f) || !std::isfinite(salience_in[i])) fail("salience value " + std::to_string(i) + " is invalid");
    for (std::uint32_t d : token_doc)
      if (d >= std::uint32_t(docs)) fail("token map names document " + std::to_string(d) + " of " + std::to_string(docs));
    for (std::uint8_t r : removed_in)
      if (r > 1) fail("removal flags must be 0 or 1");
    // The token store: adopt the mapped panels when the layout is this build's, else copy or repack.
    token_store store{std::size_t(dim), precision};
    std::vector<float> salience(salience_in.begin(), salience_in.end());
    std::vector<std::int64_t> panel_offsets(panel_offsets_in.begin(), panel_offsets_in.end());
    try {
      if (std::size_t(width) == panel_width<> && file->mapped()) {
        store = token_store::adopt(std::size_t(dim), precision, offsets, panel_offsets, packed.data, packed_elements, salience,
                                   has_salience, std::shared_ptr<const void>(file, file.get()));
      } else if (std::size_t(width) == panel_width<>) {
        // Read into memory: the packed words are copied as they are (bit-identical, also for int8 scales).
        auto copy = std::make_shared<aligned_vector<std::uint32_t>>(packed_elements);
        if (packed_elements) std::memcpy(copy->data(), packed.data, packed_elements * 4);
        store = token_store::adopt(std::size_t(dim), precision, offsets, panel_offsets, copy->data(), packed_elements, salience,
                                   has_salience, std::shared_ptr<const void>(copy, copy->data()));
        store.detach();
      } else {
        // Saved by a build with another SIMD width: repack document by document (int8 tokens are re-quantised
        // from their stored values, which can move a scale by an ulp).
        const std::size_t w = std::size_t(width), d = std::size_t(dim), words_per_panel = panel_words(precision, d, w);
        std::int64_t expect = 0;
        for (std::size_t doc = 0; doc != std::size_t(docs); ++doc) {
          if (panel_offsets[doc] != expect) fail("panel offsets do not match the saved panel width");
          const std::size_t len = std::size_t(offsets[doc + 1] - offsets[doc]);
          expect += std::int64_t((len + w - 1) / w * words_per_panel);
        }
        if (std::size_t(expect) != packed_elements) fail("panels section does not match the offsets");
        std::vector<float> rows;
        for (std::size_t doc = 0; doc != std::size_t(docs); ++doc) {
          const std::size_t len = std::size_t(offsets[doc + 1] - offsets[doc]);
          rows.assign(len * d, 0.f);
          const std::size_t base = std::size_t(panel_offsets[doc]);
          for (std::size_t j = 0; j != len; ++j)
            for (std::size_t c = 0; c != d; ++c) rows[j * d + c] = packed_value(precision, packed.data + 4 * base, w, d, j, c);
          store.add(matrix_view<float>(rows.data(), len, d),
                    has_salience ? std::span<const float>(salience).subspan(std::size_t(offsets[doc]), len) : std::span<const float>(), false);
        }
      }
    } catch (const invalid_argument& e) {
      fail(e.what());
    }
    Backend backend = make_backend(std::string_view(backend_bytes.data, backend_bytes.bytes));
    if (backend.dim() != std::size_t(dim)) fail("backend dim " + std::to_string(backend.dim()) + " differs from the index dim");
    if (backend.size() != token_doc.size())
      fail("backend holds " + std::to_string(backend.size()) + " vectors but the token map has " + std::to_string(token_doc.size()));
    aligner_retriever r(loaded_tag{}, std::move(backend), params);
    r.store_ = std::move(store);
    r.token_doc_.assign(token_doc.begin(), token_doc.end());
    r.removed_.assign(removed_in.begin(), removed_in.end());
    r.removed_count_ = std::size_t(std::count(removed_in.begin(), removed_in.end(), std::uint8_t(1)));
    return r;
  }

  static aligner_retriever load(const std::filesystem::path& path, load_options options = {})
    requires serializable_backend<Backend>
  {
    return load(path, options, [](std::string_view bytes) { return Backend::deserialize(bytes); });
  }

  /// The aligned pairs behind document `id`'s score for `query` under p's strategy, normalisation and salience.
  explanation explain(matrix_view<float> query, std::int64_t id, const search_params& p = {}) const {
    ALIGNER_EXPECTS(id >= 0 && std::size_t(id) < size(), "explain: unknown document id ", id);
    validate(query, p);
    const auto doc = store_.unpack(std::size_t(id));
    score_params sp{.strategy = p.strategy, .norm = p.norm, .query_salience = p.query_salience, .check_finite = false};
    if (p.use_doc_salience && store_.has_salience()) sp.doc_salience = store_.salience(std::size_t(id));
    return aligner::explain(query, matrix_view<float>(doc.data(), store_.length(std::size_t(id)), dim()), sp);
  }

 private:
  /// Counts a search in flight; refuses to start while a mutation runs (see the file comment).
  class reader_guard {
   public:
    explicit reader_guard(const aligner_retriever& r) : r_(r) {
      r_.readers_.fetch_add(1, std::memory_order_seq_cst);
      if (r_.writing_.load(std::memory_order_seq_cst)) {
        r_.readers_.fetch_sub(1, std::memory_order_seq_cst);
        throw concurrency_error("aligner_retriever: search called while add/remove is running on the same retriever");
      }
    }
    ~reader_guard() { r_.readers_.fetch_sub(1, std::memory_order_seq_cst); }
    reader_guard(const reader_guard&) = delete;
    reader_guard& operator=(const reader_guard&) = delete;

   private:
    const aligner_retriever& r_;
  };
  /// Marks a mutation; refuses to start while searches run.
  class writer_guard {
   public:
    explicit writer_guard(aligner_retriever& r, const char* what) : r_(r) {
      if (r_.writing_.exchange(true, std::memory_order_seq_cst))
        throw concurrency_error(std::string("aligner_retriever: ") + what + " called while another add/remove is running");
      if (const int n = r_.readers_.load(std::memory_order_seq_cst); n != 0) {
        r_.writing_.store(false, std::memory_order_seq_cst);
        throw concurrency_error(std::string("aligner_retriever: ") + what + " called while " + std::to_string(n) +
                                " search(es) are running on the same retriever");
      }
    }
    ~writer_guard() { r_.writing_.store(false, std::memory_order_seq_cst); }
    writer_guard(const writer_guard&) = delete;
    writer_guard& operator=(const writer_guard&) = delete;

   private:
    aligner_retriever& r_;
  };

  struct loaded_tag {};
  aligner_retriever(loaded_tag, Backend backend, index_params params)
      : backend_(std::move(backend)), params_(params), store_(backend_.dim(), params.precision) {}

  void validate(matrix_view<float> query, const search_params& p) const {
    p.strategy.validate();
    ALIGNER_EXPECTS(query.rows == 0 || query.cols == dim(), "query dim ", query.cols, " does not match the index dim ", dim());
    ALIGNER_EXPECTS(p.top >= 1, "search_params.top must be >= 1, got ", p.top);
    ALIGNER_EXPECTS(p.exhaustive || p.candidates_per_token >= 1, "search_params.candidates_per_token (k') must be >= 1, got ",
                    p.candidates_per_token);
    detail::check_beta(p.query_prune, "search_params.query_prune");
    ALIGNER_EXPECTS(p.query_prune == 1.0 || !p.query_salience.empty(), "search_params.query_prune = ", p.query_prune,
                    " needs query_salience");
    detail::check_matrix(query, "query", p.check_finite);
    detail::check_weights(p.query_salience, query.rows, "query_salience");
    for (std::size_t i = 0; i != p.allowed_ids.size(); ++i)
      ALIGNER_EXPECTS(p.allowed_ids[i] >= 0 && std::size_t(p.allowed_ids[i]) < size(), "search_params.allowed_ids[", i, "] = ",
                      p.allowed_ids[i], " is not a document id (the retriever holds ids 0..", std::int64_t(size()) - 1, ")");
  }

  /// Candidate documents of a query (sorted ids) and the diagnostics of gathering them.
  std::vector<std::uint32_t> gather(matrix_view<float> query, const search_params& p, search_result& diag) const {
    std::vector<std::uint32_t> candidates;
    if (query.rows == 0 || live_size() == 0) return candidates;
    std::vector<bool> listed;
    if (!p.allowed_ids.empty()) {
      listed.assign(size(), false);
      for (std::int64_t id : p.allowed_ids) listed[std::size_t(id)] = true;
    }
    auto allowed = [&](std::size_t d) {
      return !removed_[d] && (listed.empty() || listed[d]) && (!p.filter || p.filter(std::int64_t(d)));
    };
    if (p.exhaustive) {
      for (std::size_t d = 0; d != size(); ++d)
        if (allowed(d)) candidates.push_back(std::uint32_t(d));
      return candidates;
    }
    // Kept query tokens, contiguous.
    std::vector<float> kept;
    const float* search_rows = nullptr;
    std::size_t search_count = query.rows;
    if (p.query_prune < 1.0) {
      const auto keep = prune(p.query_salience, p.query_prune);
      diag.query_tokens_pruned = query.rows - keep.size();
      for (std::uint32_t i : keep) kept.insert(kept.end(), query.row(i), query.row(i) + dim());
      search_rows = kept.data();
      search_count = keep.size();
    } else if (query.stride_elems != dim()) {
      for (std::size_t i = 0; i != query.rows; ++i) kept.insert(kept.end(), query.row(i), query.row(i) + dim());
      search_rows = kept.data();
    } else {
      search_rows = query.data;
    }
    diag.tokens_searched = search_count;
    if (backend_.size() == 0) return candidates;
    const topk_result hits = backend_.search(matrix_view<float>(search_rows, search_count, dim()), p.candidates_per_token);
    for (std::int64_t id : hits.ids) {
      if (id < 0 || std::size_t(id) >= token_doc_.size()) continue;
      ++diag.backend_hits;
      candidates.push_back(token_doc_[std::size_t(id)]);
    }
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    std::erase_if(candidates, [&](std::uint32_t d) { return !allowed(d); });
    return candidates;
  }

  /// The top p.top of candidates by score (stride apart in `scores`), ties toward the smaller id.
  static void rank(const std::vector<std::uint32_t>& candidates, const float* scores, std::size_t stride, std::size_t top,
                   search_result& out) {
    std::vector<std::uint32_t> order(candidates.size());
    std::iota(order.begin(), order.end(), std::uint32_t{0});
    top = std::min(top, order.size());
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(top), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      const float sa = scores[a * stride], sb = scores[b * stride];
      return sa > sb || (sa == sb && candidates[a] < candidates[b]);
    });
    out.ids.resize(top);
    out.scores.resize(top);
    for (std::size_t r = 0; r != top; ++r) {
      out.ids[r] = candidates[order[r]];
      out.scores[r] = scores[order[r] * stride];
    }
    out.candidates_scored = candidates.size();
  }

  search_result search_unchecked(matrix_view<float> query, const search_params& p) const {
    const reader_guard guard(*this);
    search_result out;
    const auto candidates = gather(query, p, out);
    std::vector<float> scores(candidates.size());
    score_params sp{.strategy = p.strategy, .norm = p.norm, .query_salience = p.query_salience, .check_finite = false};
    score_store(query, store_, candidates, scores, sp, p.use_doc_salience);
    rank(candidates, scores.data(), 1, p.top, out);
    return out;
  }

  std::vector<search_result> search_unchecked_multi(matrix_view<float> query, std::span<const alignment> strategies,
                                                    const search_params& p) const {
    const reader_guard guard(*this);
    search_result diag;
    const auto candidates = gather(query, p, diag);
    std::vector<float> scores(candidates.size() * strategies.size());
    score_params sp{.norm = p.norm, .query_salience = p.query_salience, .check_finite = false};
    score_store_multi(query, store_, candidates, strategies, scores, sp, p.use_doc_salience);
    std::vector<search_result> out(strategies.size(), diag);
    for (std::size_t g = 0; g != strategies.size(); ++g) rank(candidates, scores.data() + g, strategies.size(), p.top, out[g]);
    return out;
  }

  Backend backend_;
  index_params params_;
  std::optional<salience_scorer> doc_scorer_;
  token_store store_;
  std::vector<std::uint32_t> token_doc_;  ///< backend token id -> document id (4 bytes per indexed token)
  std::vector<bool> removed_;
  std::size_t removed_count_ = 0;
  mutable std::atomic<int> readers_{0};
  std::atomic<bool> writing_{false};
};

}  // namespace aligner
