/** @file index_directory.hpp
 *  @brief An index directory of immutable segments, committed atomically (the Lucene/Tantivy shape): a writer
 *  that adds, removes and compacts, and readers that search a snapshot while it does.
 *
 *  Files (every one a checksummed section file, io/section_file.hpp, written by io::atomic_write):
 *  - `MANIFEST`: the commit. Format version, generation, next document id, next file number, dim, storage,
 *    salience flag, the codec (residual stores) and its training settings, and the live segments with their
 *    document and token counts and tombstone files. Replacing it (temporary file + fsync + rename + directory
 *    fsync) is the only way a change becomes visible, so a crash at any moment leaves the last commit.
 *  - `seg-N.aidx`: a segment, a whole retriever file (io/index_file.hpp) of documents without a token index,
 *    loaded memory-mapped read-only. `seg-N.ids`: the global id of each of its documents (ascending) and their
 *    names (optional). Segments are never modified; all segments share the directory's codec.
 *  - `del-N.bin`: a segment's tombstones (its removed documents, ascending local ids), replaced by a new file on
 *    every remove that touches the segment.
 *  - `LOCK`: held (flock) by the one writer; a second writer is refused. Readers take no lock.
 *  Files no commit names (a crashed writer's, or replaced ones) are deleted by the next writer after its commit.
 *  Document ids are global and never reused: segment i's ids all precede segment i+1's. `compact` merges every
 *  segment into one and drops removed documents; ids stay.
 *
 *  Search (index_directory_reader) gives exactly the results of one retriever holding the same documents with the
 *  same removals (ids, scores, order): candidates come from the centroid postings of every segment with one
 *  global ndocs cut, or from every document (exhaustive); scores from the same packed codes. A reader searches
 *  the snapshot it opened (or last refreshed to) while a writer changes the directory; refresh() picks up the
 *  newest commit, reusing the segments it already mapped. */
#pragma once

#include <algorithm>
#include <bit>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "../backends/exact.hpp"
#include "../core/error.hpp"
#include "../core/file.hpp"
#include "../core/parallel.hpp"
#include "../kernels/residual.hpp"
#include "../math/explain.hpp"
#include "../math/pruner.hpp"
#include "../math/scorer.hpp"
#include "../pipeline/retriever.hpp"
#include "index_file.hpp"
#include "section_file.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// The directory format this build writes and reads; a directory of a newer format is refused by name.
inline constexpr std::int64_t directory_format_version = 1;

/// Settings fixed when a directory is created.
struct directory_params {
  storage precision = storage::residual;          ///< how segments store tokens (residual: centroid id + nbits codes)
  std::shared_ptr<const residual_codec> codec{};  ///< residual: the codec; null: trained on the first add's tokens
  residual_params residual{};                     ///< training settings for that codec
  bool check_finite = true;                       ///< refuse NaN/Inf in added documents
};

/// One immutable segment as loaded: its documents (mapped) and their global ids and names.
struct directory_segment {
  std::string name;  ///< e.g. "seg-7"
  std::shared_ptr<const aligner_retriever<exact_backend>> index;
  std::vector<std::int64_t> ids;  ///< global id of each local document, ascending
  std::vector<std::string> names;  ///< empty, or one name per document

  const token_store& store() const noexcept { return index->store(); }
  std::size_t size() const noexcept { return ids.size(); }
};

/// One commit of a directory, as a reader sees it (immutable once built).
struct directory_snapshot {
  std::filesystem::path dir;
  std::uint64_t generation = 0;
  std::int64_t next_id = 0;    ///< ids ever assigned: 0 .. next_id - 1
  std::uint64_t next_file = 1;  ///< the number the next written file gets
  std::size_t dim = 0;
  storage precision = storage::residual;
  int has_salience = -1;  ///< -1: not decided yet (no document added), 0 / 1
  bool check_finite = true;
  residual_params residual{};
  std::shared_ptr<const residual_codec> codec;
  std::vector<std::shared_ptr<const directory_segment>> segments;
  std::vector<std::shared_ptr<const std::vector<std::uint32_t>>> tombstones;  ///< per segment: removed local ids (sorted), or null
  std::vector<std::string> tombstone_files;                                   ///< per segment: file name or ""
  std::vector<std::vector<char>> deleted;  ///< per segment: flag per local document

  std::size_t documents() const noexcept {
    std::size_t n = 0;
    for (const auto& s : segments) n += s->size();
    return n;
  }
  std::size_t live_documents() const noexcept {
    std::size_t n = documents();
    for (const auto& t : tombstones) n -= t ? t->size() : 0;
    return n;
  }
  std::size_t tokens() const noexcept {
    std::size_t n = 0;
    for (const auto& s : segments) n += s->store().tokens();
    return n;
  }
  /// (segment, local id) of a global id present in a segment (removed or not), or nullopt.
  std::optional<std::pair<std::size_t, std::uint32_t>> locate(std::int64_t id) const noexcept {
    auto it = std::upper_bound(segments.begin(), segments.end(), id, [](std::int64_t v, const auto& s) {
      return s->ids.empty() || v < s->ids.front();
    });
    if (it == segments.begin()) return std::nullopt;
    const std::size_t seg = std::size_t(it - segments.begin()) - 1;
    const auto& ids = segments[seg]->ids;
    const auto at = std::lower_bound(ids.begin(), ids.end(), id);
    if (at == ids.end() || *at != id) return std::nullopt;
    return std::pair{seg, std::uint32_t(at - ids.begin())};
  }
  /// True when `id` names a live document.
  bool is_live(std::int64_t id) const noexcept {
    const auto where = locate(id);
    return where && !deleted[where->first][where->second];
  }
};

namespace detail {

inline std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) {
    out += l;
    out += '\n';
  }
  return out;
}

inline std::vector<std::string> split_joined(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\n', start);
    out.emplace_back(text.substr(start, end - start));
    start = end == std::string_view::npos ? text.size() : end + 1;
  }
  return out;
}

template <class T>
std::string_view raw_bytes(std::span<const T> v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)};
}

/// The sections of a small file of the directory, read whole and verified (checksums, version).
struct small_file {
  std::shared_ptr<const io::file_bytes> bytes;
  std::map<std::string, io::section_in> sections;
  std::filesystem::path path;

  explicit small_file(const std::filesystem::path& p) : bytes(io::file_bytes::open(p, false)), path(p) {
    sections = io::decode_sections(*bytes);
  }
  [[noreturn]] void fail(const std::string& what) const { throw io_error(path.string() + ": " + what); }
  const io::section_in& get(const char* name, io::section_dtype dtype) const {
    const auto it = sections.find(name);
    if (it == sections.end()) fail(std::string("missing section ") + name);
    if (it->second.dtype != dtype) fail(std::string("section ") + name + " has the wrong type");
    return it->second;
  }
  std::string_view text(const char* name) const {
    const auto& s = get(name, io::section_dtype::u8);
    return {s.data, s.bytes};
  }
};

/// Concatenates documents of packed stores (same dim, precision, codec, salience) without re-encoding.
class store_concat {
 public:
  explicit store_concat(const token_store& like) : like_(&like) {}
  void append(const token_store& from, std::size_t doc) {
    const std::size_t words = from.packed_elements_for(from.length(doc));
    panel_offsets_.push_back(std::int64_t(words_.size()));
    words_.insert(words_.end(), from.panels(doc), from.panels(doc) + words);
    offsets_.push_back(offsets_.back() + std::int64_t(from.length(doc)));
    const auto sal = from.salience(doc);
    salience_.insert(salience_.end(), sal.begin(), sal.end());
    has_salience_ = from.has_salience();
  }
  token_store finish() {
    auto owned = std::make_shared<aligned_vector<std::uint32_t>>(std::move(words_));
    const std::size_t n = owned->size();
    return token_store::adopt(like_->dim(), like_->precision(), std::move(offsets_), std::move(panel_offsets_), owned->data(), n,
                              std::move(salience_), has_salience_, std::shared_ptr<const void>(owned, owned->data()), like_->codec());
  }

 private:
  const token_store* like_;
  aligned_vector<std::uint32_t> words_;
  std::vector<std::int64_t> offsets_{0}, panel_offsets_;
  std::vector<float> salience_;
  bool has_salience_ = false;
};

/// A segment retriever over a finished store (no token index, nothing removed).
inline aligner_retriever<exact_backend> segment_retriever(token_store store, bool check_finite) {
  retriever_state<exact_backend> state{.backend = exact_backend(store.dim())};
  state.params.precision = store.precision();
  state.params.codec = store.codec();
  if (store.codec()) state.params.residual.nbits = store.codec()->nbits();
  state.params.check_finite = check_finite;
  state.params.token_index = false;
  state.params.dedup_tokens = false;
  state.tokens = token_postings(false);
  state.removed.assign(store.size(), false);
  state.store = std::move(store);
  return aligner_retriever<exact_backend>(std::move(state));
}

inline const std::filesystem::path& manifest_name() {
  static const std::filesystem::path name = "MANIFEST";
  return name;
}

/// Reads and verifies a directory's MANIFEST and every file it names; `reuse` supplies already loaded segments by
/// name. Throws io_error naming the file; a missing file (removed by a writer after a newer commit) is
/// io_error too (the caller retries).
inline std::shared_ptr<const directory_snapshot> read_snapshot(const std::filesystem::path& dir,
                                                               const directory_snapshot* reuse) {
  const small_file m(dir / manifest_name());
  const auto meta = m.get("dirmeta", io::section_dtype::i64).as<std::int64_t>();
  if (meta.size() != 8) m.fail("dirmeta section has " + std::to_string(meta.size()) + " values, expected 8");
  if (meta[0] > directory_format_version)
    m.fail("written by a newer aligner (directory format " + std::to_string(meta[0]) + "; this build reads up to " +
           std::to_string(directory_format_version) + ")");
  if (meta[0] < 1) m.fail("corrupt directory format version " + std::to_string(meta[0]));
  auto snap = std::make_shared<directory_snapshot>();
  snap->dir = dir;
  snap->generation = std::uint64_t(meta[1]);
  snap->next_id = meta[2];
  snap->next_file = std::uint64_t(meta[3]);
  if (meta[4] < 1 || meta[4] > (1 << 20)) m.fail("implausible dim " + std::to_string(meta[4]));
  snap->dim = std::size_t(meta[4]);
  if (!storage_from_disk_tag(std::uint8_t(meta[5]), snap->precision) || meta[5] < 0 || meta[5] > 255) m.fail("corrupt storage tag");
  if (meta[6] < -1 || meta[6] > 1 || meta[7] < 0 || meta[7] > 1 || meta[1] < 0 || meta[2] < 0 || meta[3] < 1) m.fail("corrupt dirmeta section");
  snap->has_salience = int(meta[6]);
  snap->check_finite = meta[7] == 1;
  const auto res = m.get("residual", io::section_dtype::i64).as<std::int64_t>();
  // 6 values: directories written before the anisotropic codes (their codec, if still to be trained, codes to the
  // nearest buckets as it did); 7: the anisotropy's float64 bits last.
  if (res.size() != 6 && res.size() != 7) m.fail("residual section has " + std::to_string(res.size()) + " values, expected 7");
  for (std::int64_t v : res)
    if (v < 0) m.fail("corrupt residual section");
  const double anisotropy = res.size() == 7 ? std::bit_cast<double>(res[6]) : 1.0;
  if (!anisotropy_setting_valid(anisotropy)) m.fail("residual section holds the anisotropy " + std::to_string(anisotropy));
  snap->residual = {.nbits = std::size_t(res[0]), .centroids = std::size_t(res[1]), .sample = std::size_t(res[2]),
                    .iterations = std::size_t(res[3]), .anisotropy = anisotropy, .seed = std::uint64_t(res[4]), .threads = unsigned(res[5])};
  if (const auto codec = m.text("codec"); !codec.empty() && reuse && reuse->codec && reuse->codec->serialize() == codec) {
    snap->codec = reuse->codec;  // one codec object for the segments a refresh reuses and the new ones
  } else if (!codec.empty()) {
    try {
      snap->codec = std::make_shared<const residual_codec>(residual_codec::deserialize(codec));
    } catch (const io_error& e) {
      m.fail(e.what());
    }
    if (snap->codec->dim() != snap->dim) m.fail("codec of dim " + std::to_string(snap->codec->dim()) + " in a directory of dim " + std::to_string(snap->dim));
  }
  if ((snap->codec != nullptr) && snap->precision != storage::residual) m.fail(std::string("a codec in a directory of storage ") + to_string(snap->precision));
  const auto names = split_joined(m.text("segments"));
  const auto tombs = split_joined(m.text("tombstones"));
  const auto stats = m.get("seg_stats", io::section_dtype::i64).as<std::int64_t>();
  if (tombs.size() != names.size() || stats.size() != 2 * names.size())
    m.fail(std::to_string(names.size()) + " segments but " + std::to_string(tombs.size()) + " tombstone entries and " +
           std::to_string(stats.size()) + " statistics");
  if (!names.empty() && snap->precision == storage::residual && !snap->codec) m.fail("segments but no codec");
  for (std::size_t i = 0; i != names.size(); ++i) {
    std::shared_ptr<const directory_segment> seg;
    if (reuse)
      for (const auto& old : reuse->segments)
        if (old->name == names[i]) seg = old;
    if (!seg) {
      auto fresh = std::make_shared<directory_segment>();
      fresh->name = names[i];
      const auto file = dir / (names[i] + ".aidx");
      // Segments hold no codec of their own: every one shares the manifest's (one copy on disk and in memory).
      auto loaded = load_index<exact_backend>(file, {.mmap = true, .expected_dim = snap->dim, .codec = snap->codec});
      const token_store& store = loaded.store();
      if (store.precision() != snap->precision) throw io_error(file.string() + ": segment storage " + std::string(to_string(store.precision())) + " differs from the directory's " + to_string(snap->precision));
      if (loaded.state().removed_count != 0 || loaded.indexed_tokens() != 0) throw io_error(file.string() + ": not a directory segment");
      const small_file ids_file(dir / (names[i] + ".ids"));
      const auto ids = ids_file.get("ids", io::section_dtype::i64).as<std::int64_t>();
      if (ids.size() != store.size()) ids_file.fail(std::to_string(ids.size()) + " ids for a segment of " + std::to_string(store.size()) + " documents");
      for (std::size_t d = 0; d != ids.size(); ++d)
        if (ids[d] < 0 || ids[d] >= snap->next_id || (d && ids[d] <= ids[d - 1])) ids_file.fail("ids must ascend within [0, next id)");
      fresh->ids.assign(ids.begin(), ids.end());
      fresh->names = split_joined(ids_file.text("names"));
      if (!fresh->names.empty() && fresh->names.size() != ids.size()) ids_file.fail(std::to_string(fresh->names.size()) + " names for " + std::to_string(ids.size()) + " documents");
      fresh->index = std::make_shared<const aligner_retriever<exact_backend>>(std::move(loaded));
      seg = std::move(fresh);
    }
    if (std::int64_t(seg->size()) != stats[2 * i] || std::int64_t(seg->store().tokens()) != stats[2 * i + 1])
      m.fail("segment " + names[i] + " holds " + std::to_string(seg->size()) + " documents / " + std::to_string(seg->store().tokens()) +
             " tokens, the manifest says " + std::to_string(stats[2 * i]) + " / " + std::to_string(stats[2 * i + 1]));
    if (i && !seg->ids.empty() && !snap->segments.back()->ids.empty() && seg->ids.front() <= snap->segments.back()->ids.back())
      m.fail("segment " + names[i] + "'s ids overlap the previous segment's");
    std::vector<char> deleted(seg->size(), 0);
    std::shared_ptr<const std::vector<std::uint32_t>> tomb;
    if (!tombs[i].empty()) {
      const small_file t(dir / tombs[i]);
      const auto local = t.get("removed", io::section_dtype::u32).as<std::uint32_t>();
      for (std::size_t k = 0; k != local.size(); ++k)
        if (local[k] >= seg->size() || (k && local[k] <= local[k - 1])) t.fail("removed ids must ascend within the segment");
      for (std::uint32_t l : local) deleted[l] = 1;
      tomb = std::make_shared<const std::vector<std::uint32_t>>(local.begin(), local.end());
    }
    snap->segments.push_back(std::move(seg));
    snap->tombstones.push_back(std::move(tomb));
    snap->tombstone_files.push_back(tombs[i]);
    snap->deleted.push_back(std::move(deleted));
  }
  return snap;
}

/// Opens a snapshot, retrying when a file vanished under a concurrent commit (the writer deletes the files a newer
/// commit replaced): a problem that repeats with the same message is real and thrown.
inline std::shared_ptr<const directory_snapshot> open_snapshot(const std::filesystem::path& dir, const directory_snapshot* reuse) {
  if (!std::filesystem::exists(dir / manifest_name())) throw io_error((dir / manifest_name()).string() + ": not an index directory (no MANIFEST)");
  std::string last;
  for (int attempt = 0; attempt != 64; ++attempt) {
    try {
      return read_snapshot(dir, reuse);
    } catch (const io_error& e) {
      if (last == e.what()) throw;
      last = e.what();
    }
  }
  throw io_error(dir.string() + ": the index directory kept changing during 64 attempts to open it (last: " + last + ")");
}

/// The candidate documents and diagnostics of one search over a snapshot; mirrors aligner_retriever's gather.
struct directory_candidates {
  std::vector<std::vector<std::uint32_t>> local;  ///< per segment, ascending local ids
  std::size_t count() const noexcept {
    std::size_t n = 0;
    for (const auto& l : local) n += l.size();
    return n;
  }
};

}  // namespace detail

/// Searches an index directory: a snapshot of its last commit, refreshed on request. Thread safety: every const
/// member may run concurrently, and refresh() may run concurrently with searches (they finish on the snapshot
/// they started with).
class index_directory_reader {
 public:
  /// Opens the newest commit of `dir`. Throws io_error naming the file on a missing, truncated, corrupt or newer
  /// manifest or segment.
  explicit index_directory_reader(std::filesystem::path dir) : snap_(detail::open_snapshot(dir, nullptr)) {}

  /// Picks up the newest commit (segments already mapped are reused); returns true when it changed.
  bool refresh() {
    const auto current = snapshot();
    auto next = detail::open_snapshot(current->dir, current.get());
    if (next->generation == current->generation) return false;
    const std::lock_guard lock(mutex_);
    snap_ = std::move(next);
    return true;
  }

  /// The snapshot searches use now.
  std::shared_ptr<const directory_snapshot> snapshot() const {
    const std::lock_guard lock(mutex_);
    return snap_;
  }
  std::uint64_t generation() const { return snapshot()->generation; }
  std::size_t dim() const { return snapshot()->dim; }
  std::size_t live_size() const { return snapshot()->live_documents(); }
  /// Ids ever assigned (removed ones included).
  std::size_t size() const { return std::size_t(snapshot()->next_id); }

  /// The name of document `id` ("" when the directory stores no names). Throws for an unknown or removed id.
  std::string name(std::int64_t id) const {
    const auto s = snapshot();
    const auto where = s->locate(id);
    ALIGNER_EXPECTS(where && !s->deleted[where->first][where->second], "index directory: document id ", id, " is not a live document");
    const auto& names = s->segments[where->first]->names;
    return names.empty() ? std::string() : names[where->second];
  }

  /// Searches one query on the current snapshot. Candidates: p.nprobe (residual stores) or p.exhaustive.
  search_result search(matrix_view<float> query, const search_params& p = {}) const {
    const auto s = snapshot();
    validate(*s, query, p);
    return search_on(*s, query, p);
  }

  /// Searches queries stored back to back on `threads` threads (0 = all), all on one snapshot; identical to serial
  /// searches. Exhaustive searches go in blocks of consecutive queries that sweep each document once (as
  /// aligner_retriever::search_batch), with the same results bit for bit.
  std::vector<search_result> search_batch(const sequence_set_view& queries, const search_params& p = {},
                                          std::span<const float> query_salience = {}, unsigned threads = 0) const {
    const auto s = snapshot();
    const auto per = batch_params(*s, queries, p, query_salience, "search_batch");
    auto all = run_batch(*s, queries, per, {}, threads);
    std::vector<search_result> out(queries.size());
    for (std::size_t q = 0; q != queries.size(); ++q) out[q] = std::move(all[q][0]);
    return out;
  }

  /// search_multi for many queries (as search_batch, on one snapshot): result[q][g] equals search_multi of query q
  /// (with its part of `query_salience`) under strategies[g].
  std::vector<std::vector<search_result>> search_batch_multi(const sequence_set_view& queries, std::span<const alignment> strategies,
                                                             const search_params& p = {}, std::span<const float> query_salience = {},
                                                             unsigned threads = 0) const {
    const auto s = snapshot();
    for (const auto& a : strategies) a.validate();
    ALIGNER_EXPECTS(!strategies.empty(), "search_batch_multi needs at least one strategy");
    const auto per = batch_params(*s, queries, p, query_salience, "search_batch_multi");
    return run_batch(*s, queries, per, strategies, threads);
  }

  /// Searches one query under several strategies at once (candidates gathered and S computed once; p.strategy is
  /// ignored); result g equals search() with strategies[g].
  std::vector<search_result> search_multi(matrix_view<float> query, std::span<const alignment> strategies, const search_params& p = {}) const {
    const auto s = snapshot();
    validate(*s, query, p);
    for (const auto& a : strategies) a.validate();
    return multi_on(*s, query, strategies, p);
  }

  /// The aligned pairs behind document `id`'s score (equal to its score in a search with the same parameters).
  explanation explain(matrix_view<float> query, std::int64_t id, const search_params& p = {}) const {
    const auto s = snapshot();
    const auto where = s->locate(id);
    ALIGNER_EXPECTS(where && !s->deleted[where->first][where->second], "explain: document id ", id, " is not a live document");
    validate(*s, query, p, false);
    const prepared_query pq = rerank_query(query, p, p.strategy, p.rerank_query_salience());
    return explain_packed(pq, s->segments[where->first]->store(), where->second, p.use_doc_salience);
  }

 private:
  static void validate(const directory_snapshot& s, matrix_view<float> query, const search_params& p, bool candidates = true) {
    p.strategy.validate();
    ALIGNER_EXPECTS(query.rows == 0 || query.cols == s.dim, "query dim ", query.cols, " does not match the index dim ", s.dim);
    ALIGNER_EXPECTS(p.top >= 1, "search_params.top must be >= 1, got ", p.top);
    if (candidates) {
      ALIGNER_EXPECTS(p.nprobe == 0 || s.precision == storage::residual, "search_params.nprobe = ", p.nprobe,
                      " needs a residual token store; this directory stores ", to_string(s.precision));
      ALIGNER_EXPECTS(p.ndocs == 0 || p.nprobe > 0, "search_params.ndocs = ", p.ndocs, " needs search_params.nprobe > 0");
      ALIGNER_EXPECTS(p.exhaustive || p.nprobe > 0,
                      "an index directory has no token index: search with search_params.nprobe > 0 (centroid postings) or exhaustive");
    }
    detail::check_beta(p.query_prune, "search_params.query_prune");
    ALIGNER_EXPECTS(p.query_prune == 1.0 || query.rows == 0 || !p.query_salience.empty(), "search_params.query_prune = ", p.query_prune,
                    " needs query_salience");  // (an empty query has an empty salience: no result either way)
    detail::check_matrix(query, "query", p.check_finite);
    detail::check_weights(p.query_salience, query.rows, "query_salience");
    for (std::size_t i = 0; i != p.allowed_ids.size(); ++i)
      ALIGNER_EXPECTS(p.allowed_ids[i] >= 0 && p.allowed_ids[i] < s.next_id, "search_params.allowed_ids[", i, "] = ", p.allowed_ids[i],
                      " is not a document id (the directory holds ids 0..", s.next_id - 1, ")");
  }

  /// Candidates of a query over every segment: the same documents aligner_retriever::gather returns for one
  /// retriever holding them (restriction rules, the ndocs cut by (centroid score, global id)).
  static detail::directory_candidates gather(const directory_snapshot& s, matrix_view<float> query, const search_params& p,
                                             search_result& diag) {
    const std::size_t S = s.segments.size();
    detail::directory_candidates out;
    diag.empty_query = query.rows == 0;
    out.local.resize(S);
    if (query.rows == 0 || s.live_documents() == 0) return out;
    const bool restricted = p.filter || !p.allowed_ids.empty();
    std::vector<std::vector<char>> ok;
    std::size_t allowed_tokens = 0, allowed_with_tokens = 0;
    auto consider = [&](std::size_t seg, std::uint32_t d) {
      const auto& sg = *s.segments[seg];
      if (ok[seg][d] || s.deleted[seg][d] || (p.filter && !p.filter(sg.ids[d]))) return;
      ok[seg][d] = 1;
      allowed_tokens += sg.store().length(d);
      allowed_with_tokens += sg.store().length(d) != 0;
    };
    if (restricted) {
      ok.resize(S);
      for (std::size_t g = 0; g != S; ++g) ok[g].assign(s.segments[g]->size(), 0);
      if (!p.allowed_ids.empty()) {
        for (std::int64_t id : p.allowed_ids)
          if (const auto where = s.locate(id)) consider(where->first, where->second);
      } else {
        for (std::size_t g = 0; g != S; ++g)
          for (std::uint32_t d = 0; d != s.segments[g]->size(); ++d) consider(g, d);
      }
    }
    auto returnable = [&](std::size_t g, std::uint32_t d) { return restricted ? ok[g][d] != 0 : !s.deleted[g][d]; };
    auto every_allowed = [&] {
      diag.reranked_all_allowed = true;
      detail::directory_candidates all;
      all.local.resize(S);
      for (std::size_t g = 0; g != S; ++g)
        for (std::uint32_t d = 0; d != s.segments[g]->size(); ++d)
          if (returnable(g, d) && (p.exhaustive || s.segments[g]->store().length(d) != 0)) all.local[g].push_back(d);
      return all;
    };
    if (p.exhaustive) return every_allowed();
    std::vector<float> kept;
    matrix_view<float> rows = query;
    if (p.query_prune < 1.0) {
      const auto keep = prune(p.query_salience, p.query_prune);
      diag.query_tokens_pruned = query.rows - keep.size();
      for (std::uint32_t i : keep) kept.insert(kept.end(), query.row(i), query.row(i) + s.dim);
      rows = matrix_view<float>(kept.data(), keep.size(), s.dim);
    }
    if (restricted && allowed_tokens <= rows.rows * p.candidates_per_token) return every_allowed();
    diag.tokens_searched = rows.rows;
    // Centroid postings of every segment with one global cut: the approximate score of a document is the sum over
    // kept query rows of the best probed centroid it holds, accumulated in row order as in one retriever.
    const residual_codec& codec = *s.codec;
    const std::size_t K = codec.centroids(), stride = centroid_score_stride(codec), probes = std::min(p.nprobe, K);
    std::vector<float> qc(rows.rows * stride), scratch;
    centroid_scores(rows, codec, qc.data(), scratch);
    std::vector<std::vector<std::uint32_t>> order(rows.rows, std::vector<std::uint32_t>(K));
    for (std::size_t i = 0; i != rows.rows; ++i) {
      const float* score = qc.data() + i * stride;
      std::iota(order[i].begin(), order[i].end(), std::uint32_t{0});
      std::partial_sort(order[i].begin(), order[i].begin() + std::ptrdiff_t(probes), order[i].end(),
                        [score](std::uint32_t a, std::uint32_t b) { return ranks_before(score[a], a, score[b], b); });
    }
    struct cand {
      float approx;
      std::int64_t id;
      std::uint32_t seg, local;
    };
    // Each segment's walk is its own (p.threads share the segments out); the candidates are joined in segment order,
    // so the cut below sees the same list whatever the thread count.
    std::vector<std::vector<cand>> per_segment(S);
    parallel_for(S, p.threads, [&](std::size_t g) {
      const auto& sg = *s.segments[g];
      const auto& postings = sg.index->centroid_postings();
      const std::size_t n = sg.size();
      std::vector<float> approx(n, 0.f);
      std::vector<std::uint32_t> last_row(n, std::uint32_t(-1));
      std::vector<char> seen(n, 0);
      std::vector<std::uint32_t> found;
      for (std::size_t i = 0; i != rows.rows; ++i) {
        const float* score = qc.data() + i * stride;
        for (std::size_t t = 0; t != probes; ++t)
          for (std::uint32_t d : postings[order[i][t]]) {
            if (last_row[d] == std::uint32_t(i)) continue;
            last_row[d] = std::uint32_t(i);
            approx[d] += score[order[i][t]] - score[order[i][probes - 1]];
            if (!seen[d]) {
              seen[d] = 1;
              if (returnable(g, d)) found.push_back(d);
            }
          }
      }
      per_segment[g].reserve(found.size());
      for (std::uint32_t d : found) per_segment[g].push_back({approx[d], sg.ids[d], std::uint32_t(g), d});
    });
    std::vector<cand> all;
    for (auto& part : per_segment) all.insert(all.end(), part.begin(), part.end());
    diag.backend_hits = rows.rows * probes;
    if (p.ndocs && all.size() > p.ndocs) {
      std::nth_element(all.begin(), all.begin() + std::ptrdiff_t(p.ndocs), all.end(),
                       [](const cand& a, const cand& b) { return ranks_before(a.approx, a.id, b.approx, b.id); });
      all.resize(p.ndocs);
    }
    for (const cand& c : all) out.local[c.seg].push_back(c.local);
    for (auto& l : out.local) std::sort(l.begin(), l.end());
    if (restricted && out.count() < std::min(p.top, allowed_with_tokens)) return every_allowed();
    return out;
  }

  /// The query (or a stack of queries) as the rerank scores it under p's normalisation, `strategy` and the rows'
  /// rerank salience (p.rerank_query_salience() for one query), prepared without a storage hint.
  static prepared_query rerank_query(matrix_view<float> rows, const search_params& p, const alignment& strategy, std::span<const float> salience) {
    return prepared_query(rows, {.strategy = strategy, .norm = p.norm, .query_salience = salience, .check_finite = false});
  }

  static search_result search_on(const directory_snapshot& s, matrix_view<float> query, const search_params& p) {
    search_result out;
    const auto cands = gather(s, query, p, out);
    rerank_one(s, query, p, cands, out);
    return out;
  }

  /// The rerank of search_on: `cands` (gathered with p) scored and ranked into `out` (holding the gathering's
  /// diagnostics).
  static void rerank_one(const directory_snapshot& s, matrix_view<float> query, const search_params& p,
                         const detail::directory_candidates& cands, search_result& out) {
    const prepared_query pq = rerank_query(query, p, p.strategy, p.rerank_query_salience());
    std::vector<float> scores;
    std::vector<std::int64_t> ids;
    const std::size_t rows[2] = {0, query.rows};
    score_segments(s, cands, pq, rows, {}, p.use_doc_salience, scores, ids, p.threads);
    rank(ids, scores.data(), 1, p.top, out);
  }

  static std::vector<search_result> multi_on(const directory_snapshot& s, matrix_view<float> query, std::span<const alignment> strategies,
                                             const search_params& p) {
    search_result diag;
    const auto cands = gather(s, query, p, diag);
    return rerank_multi(s, query, strategies, p, cands, diag);
  }

  static std::vector<search_result> rerank_multi(const directory_snapshot& s, matrix_view<float> query, std::span<const alignment> strategies,
                                                 const search_params& p, const detail::directory_candidates& cands, const search_result& diag) {
    const prepared_query pq = rerank_query(query, p, {}, p.rerank_query_salience());
    const std::size_t G = strategies.size();
    ALIGNER_EXPECTS(G != 0 || cands.count() == 0, "score_packed_multi needs at least one strategy");  // (as score_packed_multi)
    std::vector<float> scores;
    std::vector<std::int64_t> ids;
    const std::size_t rows[2] = {0, query.rows};
    score_segments(s, cands, pq, rows, strategies, p.use_doc_salience, scores, ids, p.threads);
    std::vector<search_result> out(G, diag);
    for (std::size_t g = 0; g != G; ++g) rank(ids, scores.data() + g, G, p.top, out[g]);
    return out;
  }

  /// Each query's search_params of a batch (p with the query's part of query_salience), validated.
  static std::vector<search_params> batch_params(const directory_snapshot& s, const sequence_set_view& queries, const search_params& p,
                                                 std::span<const float> query_salience, const char* what) {
    detail::check_offsets(queries.offsets, queries.tokens.rows, "query offsets");
    detail::check_weights(query_salience, queries.tokens.rows, "query_salience");
    ALIGNER_EXPECTS(p.query_salience.empty(), what, " takes query salience as its own argument, not in search_params");
    ALIGNER_EXPECTS(p.threads == 1, what, " spreads its queries over its own threads argument: search_params.threads must be 1, got ",
                    p.threads);
    std::vector<search_params> per(queries.size(), p);
    for (std::size_t q = 0; q != queries.size(); ++q) {
      if (!query_salience.empty()) per[q].query_salience = query_salience.subspan(std::size_t(queries.offsets[q]), queries.length(q));
      validate(s, queries.sequence(q), per[q]);
    }
    return per;
  }

  /// The searches of a batch on one snapshot (as aligner_retriever's): result[q] holds one result per strategy
  /// (strategies empty: p.strategy's alone); exhaustive ones in blocks (detail::query_blocks) of queries whose
  /// candidates are the same, scored by score_documents_stacked segment by segment.
  static std::vector<std::vector<search_result>> run_batch(const directory_snapshot& s, const sequence_set_view& queries,
                                                           const std::vector<search_params>& per, std::span<const alignment> strategies,
                                                           unsigned threads) {
    const std::size_t nq = queries.size();
    std::vector<std::vector<search_result>> out(nq);
    const auto blocks = detail::query_blocks(queries, per, threads, false, detail::stack_members_for(s.live_documents(), strategies.size()));
    if (blocks.empty()) {
      parallel_for(nq, threads, [&](std::size_t q) {
        if (strategies.empty())
          out[q] = {search_on(s, queries.sequence(q), per[q])};
        else
          out[q] = multi_on(s, queries.sequence(q), strategies, per[q]);
      });
      return out;
    }
    parallel_for(blocks.size(), threads, [&](std::size_t b) { rerank_block(s, queries, per, strategies, blocks[b].first, blocks[b].second, out); });
    return out;
  }

  /// One block of run_batch: queries q0 .. q1 - 1.
  static void rerank_block(const directory_snapshot& s, const sequence_set_view& queries, const std::vector<search_params>& per,
                           std::span<const alignment> strategies, std::size_t q0, std::size_t q1,
                           std::vector<std::vector<search_result>>& out) {
    const std::size_t count = q1 - q0;
    std::vector<search_result> diag(count);
    std::vector<detail::directory_candidates> cands(count);
    for (std::size_t g = 0; g != count; ++g) cands[g] = gather(s, queries.sequence(q0 + g), per[q0 + g], diag[g]);
    std::size_t most_candidates = 0;
    for (const auto& c : cands) most_candidates = std::max(most_candidates, c.count());
    const auto st = detail::stack_queries_of(
        queries, per, q0, q1, [&](std::size_t g, std::size_t first) { return cands[g].local == cands[first].local; },
        detail::stack_members_for(most_candidates, strategies.size()));
    const auto& members = st.members;
    auto finish_alone = [&](std::size_t g) {
      const std::size_t q = q0 + g;
      if (strategies.empty()) {
        out[q] = {diag[g]};
        rerank_one(s, queries.sequence(q), per[q], cands[g], out[q][0]);
      } else {
        out[q] = rerank_multi(s, queries.sequence(q), strategies, per[q], cands[g], diag[g]);
      }
    };
    if (members.size() < 2) {
      for (std::size_t g = 0; g != count; ++g) finish_alone(g);
      return;
    }
    const search_params& p = per[q0 + members.front()];
    const auto& which = cands[members.front()];
    const std::size_t per_doc = strategies.empty() ? 1 : strategies.size(), m_count = members.size();
    const prepared_query pq = rerank_query(matrix_view<float>(st.rows.data(), st.row_offsets.back(), queries.tokens.cols), p,
                                           strategies.empty() ? p.strategy : alignment{}, st.salience);
    std::vector<float> scores;
    std::vector<std::int64_t> ids;
    score_segments(s, which, pq, st.row_offsets, strategies, p.use_doc_salience, scores, ids);
    for (std::size_t m = 0; m != m_count; ++m) {
      const std::size_t g = members[m], q = q0 + g;
      out[q].assign(per_doc, diag[g]);
      for (std::size_t k = 0; k != per_doc; ++k) rank(ids, scores.data() + m * ids.size() * per_doc + k, per_doc, per[q].top, out[q][k]);
    }
    for (std::size_t g = 0; g != count; ++g)
      if (!st.stacked(g)) finish_alone(g);
  }

  /// Scores the candidates segment by segment for the queries stacked in pq (query g: its rows row_offsets[g] ..
  /// row_offsets[g + 1] - 1; one query: {0, rows}), as score_documents_stacked (strategies empty: the query's own,
  /// one score a document): query g's scores into scores[g * cands.count() * per_doc ...], in the order of `ids`
  /// (their global ids). Residual segments share the snapshot's codec object, so the query's centroid scores are
  /// computed once per codec, not once per segment (13 times at 52M tokens; the saving has not been measured on a
  /// quiet machine yet).
  static void score_segments(const directory_snapshot& s, const detail::directory_candidates& cands, const prepared_query& pq,
                             std::span<const std::size_t> row_offsets, std::span<const alignment> strategies, bool use_doc_salience,
                             std::vector<float>& scores, std::vector<std::int64_t>& ids, unsigned threads = 1) {
    const std::size_t per_doc = std::max<std::size_t>(1, strategies.size()), count = cands.count(), S = cands.local.size();
    for (const auto& a : strategies) a.validate();
    scores.assign((row_offsets.size() - 1) * count * per_doc, 0.f);
    ids.clear();
    ids.reserve(count);
    // First every segment's checks, its place in scores / ids and its residual query form (prepared once per codec, in
    // a workspace of its own, then only read); then the documents in pieces on `threads` threads, pieces of several
    // segments in one loop (cut as detail::split_rerank cuts one store's), each piece on its own workspace. One
    // thread: one piece per segment. The scores are the same either way.
    struct residual_form {
      const residual_codec* codec;
      std::unique_ptr<score_workspace> space;  // holds what `query` points into
      residual_query query;
    };
    std::vector<residual_form> forms;
    std::vector<std::size_t> base(S);
    std::vector<residual_query> rq(S);
    for (std::size_t g = 0; g != S; ++g) {
      const auto& local = cands.local[g];
      base[g] = ids.size();
      if (local.empty()) continue;
      const packed_sequences& store = s.segments[g]->store();
      detail::check_packed_call(pq, store, local, local.size() * per_doc, per_doc);
      if (store.precision == storage::residual) {
        auto f = std::find_if(forms.begin(), forms.end(), [&](const residual_form& e) { return e.codec == store.codec; });
        if (f == forms.end()) {
          auto space = std::make_unique<score_workspace>();
          const residual_query query = detail::prepare_residual_query(pq, store, *space);
          forms.push_back({store.codec, std::move(space), query});
          f = forms.end() - 1;
        }
        rq[g] = f->query;
      }
      for (std::uint32_t d : local) ids.push_back(s.segments[g]->ids[d]);
    }
    struct piece {
      std::size_t g, first, size;
    };
    const detail::rerank_split split = detail::split_rerank(count, threads);
    std::vector<piece> pieces;
    for (std::size_t g = 0; g != S; ++g)
      for (std::size_t first = 0; first < cands.local[g].size(); first += split.chunk)
        pieces.push_back({g, first, std::min(split.chunk, cands.local[g].size() - first)});
    parallel_for(pieces.size(), split.workers, [&](std::size_t i) {
      const piece& pc = pieces[i];
      score_workspace ws;
      detail::score_documents_stacked(pq, row_offsets, strategies, s.segments[pc.g]->store(),
                                      std::span<const std::uint32_t>(cands.local[pc.g]).subspan(pc.first, pc.size),
                                      scores.data() + (base[pc.g] + pc.first) * per_doc, per_doc, count * per_doc, use_doc_salience, ws,
                                      rq[pc.g]);
    });
  }

  /// The top `top` of documents `ids` by score (stride apart in `scores`), ties toward the smaller id.
  static void rank(const std::vector<std::int64_t>& ids, const float* scores, std::size_t stride, std::size_t top, search_result& out) {
    std::vector<std::uint32_t> order(ids.size());
    std::iota(order.begin(), order.end(), std::uint32_t{0});
    top = std::min(top, order.size());
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(top), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      return ranks_before(scores[a * stride], ids[a], scores[b * stride], ids[b]);
    });
    out.ids.resize(top);
    out.scores.resize(top);
    for (std::size_t r = 0; r != top; ++r) {
      out.ids[r] = ids[order[r]];
      out.scores[r] = scores[order[r] * stride];
    }
    out.candidates_scored = ids.size();
  }

  mutable std::mutex mutex_;  ///< guards snap_ (the pointer, not the snapshot: that is immutable)
  std::shared_ptr<const directory_snapshot> snap_;
};

/// The one writer of an index directory: add (a new segment per call), remove (tombstones), compact. Each call is
/// one commit: on success the change is durable and visible to readers that refresh; on any error (bad input,
/// disk full) nothing visible changes and the writer stays usable. Holds the directory's LOCK while it lives.
class index_directory_writer {
 public:
  /// Creates a new directory (or an empty existing folder) for vectors of dimension `dim` and commits it empty.
  /// Throws invalid_argument for bad settings, io_error when `dir` already holds an index or cannot be written.
  static index_directory_writer create(const std::filesystem::path& dir, std::size_t dim, const directory_params& params = {}) {
    ALIGNER_EXPECTS(dim >= 1 && dim <= (1u << 20), "index directory dim must be in [1, 2^20], got ", dim);
    const auto& r = params.residual;
    ALIGNER_EXPECTS(r.nbits == 1 || r.nbits == 2 || r.nbits == 4 || r.nbits == 8, "directory_params.residual.nbits must be 1, 2, 4 or 8, got ",
                    r.nbits);
    ALIGNER_EXPECTS(anisotropy_setting_valid(r.anisotropy), "directory_params.residual.anisotropy must be 0 (default) or in [1, ",
                    residual_codec::max_anisotropy, "], got ", r.anisotropy);
    if (params.codec) {
      ALIGNER_EXPECTS(params.precision == storage::residual, "directory_params.codec is given but the precision is ", to_string(params.precision));
      ALIGNER_EXPECTS(params.codec->dim() == dim, "directory_params.codec has dim ", params.codec->dim(), " but the directory has dim ", dim);
    }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw io_error(dir.string() + ": cannot create the index directory (" + ec.message() + ")");
    index_directory_writer w(dir);
    if (std::filesystem::exists(dir / detail::manifest_name()))
      throw io_error(dir.string() + ": already holds an index directory (open it with index_directory_writer::open)");
    auto snap = std::make_shared<directory_snapshot>();
    snap->dir = dir;
    snap->dim = dim;
    snap->precision = params.precision;
    snap->codec = params.codec;
    snap->residual = params.residual;
    snap->check_finite = params.check_finite;
    w.commit(std::move(snap));
    return w;
  }

  /// Opens an existing directory for writing (verifies it as a reader does). A second writer is refused.
  static index_directory_writer open(const std::filesystem::path& dir) {
    // Checked before the LOCK is taken, so that opening a folder that holds no index leaves no LOCK file in it.
    if (!std::filesystem::exists(dir / detail::manifest_name()))
      throw io_error((dir / detail::manifest_name()).string() + ": not an index directory (no MANIFEST)");
    index_directory_writer w(dir);
    w.snap_ = detail::open_snapshot(dir, nullptr);
    w.collect_garbage();
    return w;
  }

  index_directory_writer(index_directory_writer&& o) noexcept : dir_(std::move(o.dir_)), lock_fd_(std::exchange(o.lock_fd_, -1)), snap_(std::move(o.snap_)) {}
  index_directory_writer& operator=(index_directory_writer&&) = delete;
  index_directory_writer(const index_directory_writer&) = delete;
  ~index_directory_writer() {
    if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
  }

  /// The last commit.
  const directory_snapshot& snapshot() const noexcept { return *snap_; }
  std::uint64_t generation() const noexcept { return snap_->generation; }
  const std::shared_ptr<const residual_codec>& codec() const noexcept { return snap_->codec; }

  /// Sets the codec of an empty residual directory that has none yet (e.g. one trained on a sample before a
  /// streamed build); commits it.
  void set_codec(std::shared_ptr<const residual_codec> codec) {
    ALIGNER_EXPECTS(codec != nullptr, "set_codec: the codec is null");
    ALIGNER_EXPECTS(snap_->precision == storage::residual, "set_codec: the directory stores ", to_string(snap_->precision));
    ALIGNER_EXPECTS(!snap_->codec, "set_codec: the directory already has a codec");
    ALIGNER_EXPECTS(codec->dim() == snap_->dim, "set_codec: the codec has dim ", codec->dim(), " but the directory has dim ", snap_->dim);
    auto next = std::make_shared<directory_snapshot>(*snap_);
    next->codec = std::move(codec);
    commit(std::move(next));
  }

  /// Adds documents stored back to back as one new segment and commits; returns the id of the first. `salience`:
  /// empty or one value per token; `names`: empty or one per document (no newline). All or nothing.
  std::int64_t add(const sequence_set_view& docs, std::span<const float> salience = {}, std::span<const std::string> names = {}) {
    detail::check_offsets(docs.offsets, docs.tokens.rows, "document offsets");
    ALIGNER_EXPECTS(docs.tokens.rows == 0 || docs.tokens.cols == snap_->dim, "documents have dim ", docs.tokens.cols,
                    " but the directory has dim ", snap_->dim);
    detail::check_matrix(docs.tokens, "document tokens", snap_->check_finite);
    detail::check_weights(salience, docs.tokens.rows, "salience");
    std::shared_ptr<const residual_codec> codec = snap_->codec;
    if (snap_->precision == storage::residual && !codec) {
      ALIGNER_EXPECTS(docs.tokens.rows > 0, "the first add to a residual index directory without a codec needs tokens to train one");
      codec = std::make_shared<const residual_codec>(train_residual_codec(docs.tokens, snap_->residual));
    }
    token_store store(snap_->dim, snap_->precision, codec);
    store.add(docs, salience, false);
    return add_store(std::move(store), names);
  }

  /// Adds an already packed store (same dim, precision and codec as the directory) as one new segment and commits.
  std::int64_t add_store(token_store store, std::span<const std::string> names = {}) {
    ALIGNER_EXPECTS(store.dim() == snap_->dim, "store dim ", store.dim(), " differs from the directory dim ", snap_->dim);
    ALIGNER_EXPECTS(store.precision() == snap_->precision, "store precision ", to_string(store.precision()), " differs from the directory's ",
                    to_string(snap_->precision));
    ALIGNER_EXPECTS(!snap_->codec || store.codec() == snap_->codec || store.codec()->serialize() == snap_->codec->serialize(),
                    "the store's codec differs from the directory's");
    ALIGNER_EXPECTS(names.empty() || names.size() == store.size(), names.size(), " names for ", store.size(), " documents");
    for (std::size_t i = 0; i != names.size(); ++i)
      ALIGNER_EXPECTS(names[i].find('\n') == std::string::npos && names[i].find('\r') == std::string::npos, "document name ", i,
                      " holds a line break");
    if (store.size() == 0) return snap_->next_id;
    ALIGNER_EXPECTS(snap_->has_salience < 0 || (snap_->has_salience == 1) == store.has_salience(), "the directory's documents ",
                    snap_->has_salience == 1 ? "have" : "have no", " salience; added documents must match");
    const bool named = !names.empty();
    ALIGNER_EXPECTS(snap_->segments.empty() || named == !snap_->segments.front()->names.empty(), "the directory's documents ",
                    named ? "have no" : "have", " names; added documents must match");
    ALIGNER_EXPECTS(snap_->next_id + std::int64_t(store.size()) < std::int64_t(std::numeric_limits<std::uint32_t>::max()), "too many documents");
    auto next = std::make_shared<directory_snapshot>(*snap_);
    if (!next->codec) next->codec = store.codec();
    next->has_salience = store.has_salience() ? 1 : 0;
    auto seg = std::make_shared<directory_segment>();
    seg->name = "seg-" + std::to_string(next->next_file++);
    seg->ids.resize(store.size());
    std::iota(seg->ids.begin(), seg->ids.end(), next->next_id);
    seg->names.assign(names.begin(), names.end());
    next->next_id += std::int64_t(store.size());
    seg->index = std::make_shared<const aligner_retriever<exact_backend>>(detail::segment_retriever(std::move(store), snap_->check_finite));
    next->segments.push_back(seg);
    next->tombstones.push_back(nullptr);
    next->tombstone_files.push_back("");
    next->deleted.emplace_back(seg->size(), 0);
    const std::int64_t first = seg->ids.front();
    transaction([&] { write_segment(*seg); }, std::move(next));
    return first;
  }

  /// Removes documents (all or nothing: every id must be live and listed once) and commits.
  void remove(std::span<const std::int64_t> ids) {
    std::map<std::size_t, std::vector<std::uint32_t>> by_segment;
    std::vector<std::int64_t> sorted(ids.begin(), ids.end());
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i != sorted.size(); ++i) {
      const std::int64_t id = sorted[i];
      ALIGNER_EXPECTS(id >= 0 && id < snap_->next_id, "remove: unknown document id ", id, " (the directory holds ids 0..", snap_->next_id - 1, ")");
      ALIGNER_EXPECTS(i == 0 || sorted[i - 1] != id, "remove: document id ", id, " is listed twice");
      const auto where = snap_->locate(id);
      ALIGNER_EXPECTS(where && !snap_->deleted[where->first][where->second], "remove: document id ", id, " is already removed");
      by_segment[where->first].push_back(where->second);
    }
    if (by_segment.empty()) return;
    auto next = std::make_shared<directory_snapshot>(*snap_);
    std::vector<std::pair<std::string, std::string>> files;  // name, bytes
    for (auto& [g, local] : by_segment) {
      std::vector<std::uint32_t> all = snap_->tombstones[g] ? *snap_->tombstones[g] : std::vector<std::uint32_t>();
      all.insert(all.end(), local.begin(), local.end());
      std::sort(all.begin(), all.end());
      const std::string file = "del-" + std::to_string(next->next_file++) + ".bin";
      const std::vector<io::section_out> sections = {
          {"removed", io::section_dtype::u32, {all.size()}, detail::raw_bytes(std::span<const std::uint32_t>(all))}};
      files.emplace_back(file, io::encode_sections(sections));
      for (std::uint32_t l : local) next->deleted[g][l] = 1;
      next->tombstones[g] = std::make_shared<const std::vector<std::uint32_t>>(std::move(all));
      next->tombstone_files[g] = file;
    }
    transaction([&] {
      for (const auto& [name, bytes] : files) write_file(name, bytes);
    }, std::move(next));
  }
  void remove(std::int64_t id) { remove(std::span<const std::int64_t>(&id, 1)); }

  /// Merges every segment into one without its removed documents (codes copied, never re-encoded; ids kept) and
  /// commits. The merged segment is built in memory (the live documents' packed codes).
  void compact() {
    if (snap_->segments.size() <= 1 && snap_->live_documents() == snap_->documents()) return;
    auto next = std::make_shared<directory_snapshot>(*snap_);
    next->segments.clear();
    next->tombstones.clear();
    next->tombstone_files.clear();
    next->deleted.clear();
    std::shared_ptr<directory_segment> seg;
    if (snap_->live_documents() != 0) {
      detail::store_concat merged(snap_->segments.front()->store());
      seg = std::make_shared<directory_segment>();
      seg->name = "seg-" + std::to_string(next->next_file++);
      for (std::size_t g = 0; g != snap_->segments.size(); ++g) {
        const auto& sg = *snap_->segments[g];
        for (std::uint32_t d = 0; d != sg.size(); ++d) {
          if (snap_->deleted[g][d]) continue;
          merged.append(sg.store(), d);
          seg->ids.push_back(sg.ids[d]);
          if (!sg.names.empty()) seg->names.push_back(sg.names[d]);
        }
      }
      seg->index = std::make_shared<const aligner_retriever<exact_backend>>(detail::segment_retriever(merged.finish(), snap_->check_finite));
      next->segments.push_back(seg);
      next->tombstones.push_back(nullptr);
      next->tombstone_files.push_back("");
      next->deleted.emplace_back(seg->size(), 0);
    }
    transaction([&] {
      if (seg) write_segment(*seg);
    }, std::move(next));
  }

 private:
  explicit index_directory_writer(std::filesystem::path dir) : dir_(std::move(dir)) {
    const auto lock = dir_ / "LOCK";
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd_ < 0) throw io_error(lock.string() + ": cannot open the lock file (" + std::strerror(errno) + ")");
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw io_error(lock.string() + (err == EWOULDBLOCK ? ": another writer holds this index directory"
                                                         : ": cannot lock (" + std::string(std::strerror(err)) + ")"));
    }
  }

  void write_file(const std::string& name, std::string_view bytes) {
    written_.push_back(name);
    io::atomic_write(dir_ / name, bytes);
  }

  void write_segment(const directory_segment& seg) {
    save_index(*seg.index, dir_ / (seg.name + ".aidx"), "aligner index directory segment", false);
    written_.push_back(seg.name + ".aidx");
    const std::string names = detail::join_lines(seg.names);
    const std::vector<io::section_out> sections = {
        {"ids", io::section_dtype::i64, {seg.ids.size()}, detail::raw_bytes(std::span<const std::int64_t>(seg.ids))},
        {"names", io::section_dtype::u8, {names.size()}, names}};
    write_file(seg.name + ".ids", io::encode_sections(sections));
  }

  /// Writes the files of a change (`write`), then commits `next`. On any failure the files written for it are
  /// deleted (best effort; the next writer's garbage collection catches the rest) and the previous commit stays.
  template <class Write>
  void transaction(Write&& write, std::shared_ptr<directory_snapshot> next) {
    written_.clear();
    try {
      write();
      commit(std::move(next));
    } catch (...) {
      for (const auto& f : written_) {
        std::error_code ec;
        std::filesystem::remove(dir_ / f, ec);
      }
      written_.clear();
      throw;
    }
  }

  /// Writes the manifest of `next` (generation + 1) atomically: the commit.
  void commit(std::shared_ptr<directory_snapshot> next) {
    next->generation = snap_ ? snap_->generation + 1 : 1;
    const std::int64_t meta[8] = {directory_format_version, std::int64_t(next->generation), next->next_id, std::int64_t(next->next_file),
                                  std::int64_t(next->dim), disk_tag(next->precision), next->has_salience, next->check_finite ? 1 : 0};
    const auto& r = next->residual;
    // The anisotropy travels as the bits of its float64 (0 or at least 1: never negative as an int64).
    const std::int64_t res[7] = {std::int64_t(r.nbits), std::int64_t(r.centroids), std::int64_t(r.sample), std::int64_t(r.iterations),
                                 std::int64_t(r.seed),  std::int64_t(r.threads),   std::bit_cast<std::int64_t>(r.anisotropy)};
    const std::string codec = next->codec ? next->codec->serialize() : std::string();
    std::vector<std::string> names;
    std::vector<std::int64_t> stats;
    for (const auto& s : next->segments) {
      names.push_back(s->name);
      stats.push_back(std::int64_t(s->size()));
      stats.push_back(std::int64_t(s->store().tokens()));
    }
    const std::string seg_text = detail::join_lines(names), tomb_text = detail::join_lines(next->tombstone_files);
    const std::vector<io::section_out> sections = {
        {"dirmeta", io::section_dtype::i64, {8}, detail::raw_bytes(std::span<const std::int64_t>(meta))},
        {"residual", io::section_dtype::i64, {7}, detail::raw_bytes(std::span<const std::int64_t>(res))},
        {"codec", io::section_dtype::u8, {codec.size()}, codec},
        {"segments", io::section_dtype::u8, {seg_text.size()}, seg_text},
        {"tombstones", io::section_dtype::u8, {tomb_text.size()}, tomb_text},
        {"seg_stats", io::section_dtype::i64, {stats.size()}, detail::raw_bytes(std::span<const std::int64_t>(stats))}};
    io::atomic_write(dir_ / detail::manifest_name(), io::encode_sections(sections));
    written_.clear();
    snap_ = std::move(next);
    collect_garbage();
  }

  /// Deletes the directory's files that the last commit does not name (replaced segments and tombstones, a
  /// crashed writer's leftovers, temporary files). Best effort: a failure here loses nothing.
  void collect_garbage() noexcept {
    try {
      std::vector<std::string> keep = {detail::manifest_name().string(), "LOCK"};
      for (std::size_t g = 0; g != snap_->segments.size(); ++g) {
        keep.push_back(snap_->segments[g]->name + ".aidx");
        keep.push_back(snap_->segments[g]->name + ".ids");
        if (!snap_->tombstone_files[g].empty()) keep.push_back(snap_->tombstone_files[g]);
      }
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
        const std::string name = entry.path().filename().string();
        const bool ours = name.rfind("seg-", 0) == 0 || name.rfind("del-", 0) == 0 || name.rfind(".seg-", 0) == 0 ||
                          name.rfind(".del-", 0) == 0 || name.rfind(".MANIFEST.tmp.", 0) == 0;
        if (ours && std::find(keep.begin(), keep.end(), name) == keep.end()) std::filesystem::remove(entry.path(), ec);
      }
    } catch (...) {
    }
  }

  std::filesystem::path dir_;
  int lock_fd_ = -1;
  std::shared_ptr<const directory_snapshot> snap_;
  std::vector<std::string> written_;  ///< files written for the commit in progress
};

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
