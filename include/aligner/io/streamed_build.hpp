/** @file streamed_build.hpp
 *  @brief Builds an index directory (io/index_directory.hpp) from token vectors that need not fit in memory:
 *  a memory-mapped `.npy` file (float16 or float32) read chunk by chunk, the codec trained on a sample first.
 *
 *  Peak memory is the training sample, one chunk of float rows, and the segment being encoded (its packed codes),
 *  not the collection: each read of the mapped file drops the pages it read from the process (madvise), so the
 *  resident set never holds the collection. Every finished
 *  segment is committed, so a build that is killed leaves a readable directory of the segments committed so far.
 *  The codes of a document do not depend on the chunking, the segment size or the thread count: a directory built
 *  this way searches exactly like one built by index_directory_writer::add with the same codec. */
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <optional>
#include <thread>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../math/residual_training.hpp"
#include "index_directory.hpp"
#include "npy.hpp"
#include "section_file.hpp"

namespace aligner::io {

/// A 2-d `.npy` array of float32 or float16, memory-mapped read-only; rows are converted to float on request.
class mapped_npy_matrix {
 public:
  /// Maps `path` and validates its header. Throws io_error naming the file.
  explicit mapped_npy_matrix(const std::filesystem::path& path) : file_(file_bytes::open(path, true)), path_(path.string()) {
    header_ = parse_npy_header(std::string_view(file_->data(), file_->size()), path_);
    if (header_.kind != 'f') throw io_error(path_ + ": expected float32 or float16 token vectors, found an integer array");
    if (header_.item_size != 4 && header_.item_size != 2)
      throw io_error(path_ + ": token vectors are read in place, so they must be float32 or float16, not float" +
                     std::to_string(8 * header_.item_size) + " (convert them first, e.g. numpy's astype(np.float32))");
    if (header_.fortran_order && header_.shape.size() == 2 && header_.shape[0] > 1 && header_.shape[1] > 1)
      throw io_error(path_ + ": token vectors are read in place, so they must be in C order, not Fortran order "
                     "(convert them first, e.g. numpy's ascontiguousarray)");
    if (header_.shape.size() != 2) throw io_error(path_ + ": token vectors must be a 2-d array [tokens, dim]");
  }
  std::size_t rows() const noexcept { return header_.shape[0]; }
  std::size_t cols() const noexcept { return header_.shape[1]; }
  /// Bytes per value: 4 (float32) or 2 (float16).
  std::size_t item_size() const noexcept { return header_.item_size; }
  const std::string& path() const noexcept { return path_; }

  /// Rows [first, first + count) as floats into out (count x cols). Throws io_error on a non-finite value.
  void read_rows(std::size_t first, std::size_t count, float* out) const {
    ALIGNER_EXPECTS(first <= rows() && count <= rows() - first, "rows [", first, ", ", first + count, ") of ", rows());
    const std::size_t n = count * cols();
    const char* src = file_->data() + header_.data_offset + first * cols() * item_size();
    if (item_size() == 4) {
      std::memcpy(out, src, n * 4);
    } else {
      for (std::size_t i = 0; i != n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = detail::half_to_float(h);
      }
    }
    for (std::size_t i = 0; i != n; ++i)
      if (!std::isfinite(out[i]))
        throw io_error(path_ + ": non-finite value at token " + std::to_string(first + i / cols()) + ", component " + std::to_string(i % cols()));
    release(src, n * item_size());
  }

 private:
  /// Drops the pages holding [p, p + bytes) from this process (they stay in the page cache: a later read of a
  /// shared boundary page faults it back in), so that reading a collection once through the mapping, in order or
  /// at random, does not grow the resident set to the file's size.
  void release(const char* p, std::size_t bytes) const noexcept {
    if (!file_->mapped() || bytes == 0) return;
    // A read fault maps the pages around it too (Linux "fault-around", 64 KB by default): drop that window as well,
    // clipped to this mapping (whose start is page-aligned and whose end is the file size rounded up to a page):
    // madvise(MADV_DONTNEED) on a neighbouring mapping would discard its memory.
    const auto page = std::uintptr_t(::sysconf(_SC_PAGESIZE)), window = std::max<std::uintptr_t>(page, 65536);
    const auto lo = std::uintptr_t(file_->data()), hi = lo + (file_->size() + page - 1) / page * page;
    const auto begin = std::max(lo, std::uintptr_t(p) / window * window);
    const auto end = std::min(hi, (std::uintptr_t(p) + bytes + window - 1) / window * window);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }

  std::shared_ptr<const file_bytes> file_;
  std::string path_;
  npy_header header_;
};

/// Settings of a streamed build.
struct build_options {
  std::size_t segment_tokens = std::size_t(1) << 22;  ///< tokens per committed segment (a document is never split)
  std::size_t chunk_tokens = std::size_t(1) << 18;    ///< tokens read and encoded at a time
  unsigned threads = 1;                                ///< encoding threads (0 = all cores); also the codec training's, unless set there
  /// Tokens drawn (seeded, uniformly) from the whole collection to train the codec: 0 = residual_params' default
  /// sample (max(64 K, 65536)); the number of centroids defaults to PLAID's rule for the whole collection's size.
  std::size_t training_tokens = 0;
  /// Called once before the first chunk (after the codec's training) with (0, tokens in all), then after every
  /// chunk with (tokens encoded, tokens in all).
  std::function<void(std::size_t, std::size_t)> progress{};
};

/// What a streamed build did.
struct build_report {
  std::size_t documents = 0, tokens = 0, segments = 0;
  std::size_t centroids = 0;  ///< of the codec (residual stores)
  double train_seconds = 0, encode_seconds = 0;
};

/// Reads `count` token rows starting at `first` as floats into `out` (count x dim).
using row_reader = std::function<void(std::size_t first, std::size_t count, float* out)>;

/// Builds a new index directory at `dir` from `tokens` rows of dimension `dim` read through `read`, split into
/// documents by `offsets` (documents + 1 values from 0 to tokens), named by `names` (empty or one per document).
/// Throws invalid_argument for bad settings or offsets, io_error for file problems; a failure after the first
/// commit leaves the directory with the segments committed so far.
inline build_report build_directory(const std::filesystem::path& dir, std::size_t dim, std::size_t tokens, const row_reader& read,
                                    std::span<const std::int64_t> offsets, std::span<const std::string> names,
                                    directory_params params = {}, const build_options& opt = {}) {
  aligner::detail::check_offsets(offsets, tokens, "document offsets");
  const std::size_t docs = offsets.size() - 1;
  ALIGNER_EXPECTS(names.empty() || names.size() == docs, names.size(), " document names for ", docs, " documents");
  ALIGNER_EXPECTS(opt.segment_tokens >= 1, "build_options.segment_tokens must be >= 1");
  ALIGNER_EXPECTS(opt.chunk_tokens >= 1, "build_options.chunk_tokens must be >= 1");
  const unsigned threads = opt.threads ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  build_report report;
  report.documents = docs;
  report.tokens = tokens;
  ALIGNER_EXPECTS(tokens > 0 || params.precision != storage::residual || params.codec,
                  "a residual build without a codec needs tokens to train one (the collection has none)");
  auto writer = index_directory_writer::create(dir, dim, params);
  using clock = std::chrono::steady_clock;
  if (params.precision == storage::residual && !params.codec && tokens) {
    const auto t0 = clock::now();
    residual_params rp = params.residual;
    if (rp.centroids == 0) rp.centroids = default_centroids(tokens);
    if (rp.threads == 1 && threads != 1) rp.threads = threads;
    const std::size_t want = std::min(tokens, opt.training_tokens ? opt.training_tokens : (rp.sample ? rp.sample : std::max<std::size_t>(64 * rp.centroids, 65536)));
    rp.sample = want;
    // A seeded uniform sample of token positions, read in ascending order (sequential on the mapped file).
    std::vector<std::size_t> picks;
    if (want == tokens) {
      picks.resize(tokens);
      std::iota(picks.begin(), picks.end(), std::size_t{0});
    } else {
      std::mt19937_64 rng(rp.seed ^ 0x5eedf00dull);
      std::vector<char> taken(tokens, 0);  // one byte a token: 52 MB for 52M tokens, freed after sampling
      while (picks.size() != want) {
        const std::size_t t = std::size_t(rng() % tokens);
        if (!taken[t]) {
          taken[t] = 1;
          picks.push_back(t);
        }
      }
      std::sort(picks.begin(), picks.end());
    }
    std::vector<float> sample(picks.size() * dim);
    for (std::size_t i = 0; i != picks.size(); ++i) read(picks[i], 1, sample.data() + i * dim);
    writer.set_codec(std::make_shared<const residual_codec>(train_residual_codec({sample.data(), picks.size(), dim}, rp)));
    report.train_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  }
  if (writer.codec()) report.centroids = writer.codec()->centroids();
  if (opt.progress) opt.progress(0, tokens);
  const auto t1 = clock::now();
  const token_store like(dim, params.precision, writer.codec());
  std::optional<aligner::detail::store_concat> segment;
  std::size_t segment_first_doc = 0, segment_tokens = 0, done_tokens = 0;
  auto flush = [&](std::size_t end_doc) {
    if (!segment) return;
    writer.add_store(segment->finish(), names.empty() ? names : names.subspan(segment_first_doc, end_doc - segment_first_doc));
    ++report.segments;
    segment.reset();
    segment_first_doc = end_doc;
    segment_tokens = 0;
  };
  std::vector<float> rows;
  for (std::size_t d = 0; d < docs;) {
    // One chunk: whole documents up to chunk_tokens (at least one document), within the current segment.
    std::size_t end = d, chunk = 0;
    while (end < docs) {
      const std::size_t len = std::size_t(offsets[end + 1] - offsets[end]);
      if (end > d && (chunk + len > opt.chunk_tokens || segment_tokens + chunk + len > opt.segment_tokens)) break;
      chunk += len;
      ++end;
    }
    const std::size_t first_token = std::size_t(offsets[d]);
    rows.resize(chunk * dim);
    if (chunk) read(first_token, chunk, rows.data());
    // Encoded in parallel by document ranges, each into its own store, then appended in order.
    const std::size_t parts = std::min<std::size_t>(threads, end - d);
    std::vector<token_store> encoded(parts);
    parallel_for(parts, threads, [&](std::size_t part) {
      const std::size_t a = d + (end - d) * part / parts, b = d + (end - d) * (part + 1) / parts;
      std::vector<std::int64_t> local(b - a + 1);
      for (std::size_t i = a; i <= b; ++i) local[i - a] = offsets[i] - offsets[a];
      const std::size_t t0 = std::size_t(offsets[a]) - first_token;
      token_store store(dim, params.precision, writer.codec());
      store.add(sequence_set_view{{rows.data() + t0 * dim, std::size_t(local.back()), dim}, local}, {}, params.check_finite);
      encoded[part] = std::move(store);
    });
    if (!segment) segment.emplace(like);
    for (const auto& store : encoded)
      for (std::size_t i = 0; i != store.size(); ++i) segment->append(store, i);
    segment_tokens += chunk;
    done_tokens += chunk;
    d = end;
    if (segment_tokens >= opt.segment_tokens || d == docs) flush(d);
    if (opt.progress) opt.progress(done_tokens, tokens);
  }
  report.encode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return report;
}

namespace detail {

/// The build of `tokens` rows of the mapped file `m` from row `first_row` on (read and released through it).
inline build_report build_from_rows(const std::filesystem::path& dir, const mapped_npy_matrix& m, std::size_t first_row, std::size_t tokens,
                                    std::span<const std::int64_t> offsets, std::span<const std::string> names, const directory_params& params,
                                    const build_options& opt) {
  return build_directory(
      dir, m.cols(), tokens, [&](std::size_t first, std::size_t count, float* out) { m.read_rows(first_row + first, count, out); }, offsets,
      names, params, opt);
}

}  // namespace detail

/// Builds a new index directory from a `.npy` file of token vectors (float32 or float16, memory-mapped) split
/// into documents by `offsets`.
inline build_report build_directory(const std::filesystem::path& dir, const std::filesystem::path& vectors_npy,
                                    std::span<const std::int64_t> offsets, std::span<const std::string> names,
                                    const directory_params& params = {}, const build_options& opt = {}) {
  const mapped_npy_matrix m(vectors_npy);
  return detail::build_from_rows(dir, m, 0, m.rows(), offsets, names, params, opt);
}

/// The same from one contiguous range of the file's rows, [first_row, first_row + offsets.back()): a part of a
/// larger collection (a shard of it), read and released from the mapping as the whole file's build reads it, so
/// that the process's resident set never holds the range's pages. `offsets` start at 0 for the range's first row.
inline build_report build_directory(const std::filesystem::path& dir, const std::filesystem::path& vectors_npy, std::size_t first_row,
                                    std::span<const std::int64_t> offsets, std::span<const std::string> names,
                                    const directory_params& params = {}, const build_options& opt = {}) {
  const mapped_npy_matrix m(vectors_npy);
  ALIGNER_EXPECTS(!offsets.empty(), "document offsets must hold documents + 1 values; got none");
  ALIGNER_EXPECTS(first_row <= m.rows() && offsets.back() >= 0 && std::size_t(offsets.back()) <= m.rows() - first_row, "rows [", first_row,
                  ", ", first_row, " + ", offsets.back(), ") of ", m.path(), ", which holds ", m.rows(), " rows");
  return detail::build_from_rows(dir, m, first_row, std::size_t(offsets.back()), offsets, names, params, opt);
}

}  // namespace aligner::io
