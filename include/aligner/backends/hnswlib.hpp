/** @file hnswlib.hpp
 *  @brief mips_backend adapter for hnswlib's HNSW graph in inner-product space.
 *
 *  Optional: include it only when hnswlib is available (Debian: libhnswlib-dev, header-only). Labels are the
 *  sequential token ids; capacity grows by doubling. hnswlib's distance is 1 - q.x, reported here as the score
 *  q.x. `ef_search` (raised to k for each search by hnswlib itself) trades recall for speed. `search` is const
 *  and thread-safe (hnswlib's searchKnn); `add` is not called concurrently with anything, and inserts on the
 *  threads its backend_add_options ask for.
 *
 *  Known upstream issue: Debian's hnswlib 0.6.2 prefetches one element past a link list in its SSE path
 *  (hnswalg.h, searchBaseLayer). It is harmless on hardware but AddressSanitizer reports it; sanitizer builds
 *  should define NO_MANUAL_VECTORIZATION (this project's CMake does so under ALIGNER_SANITIZE). */
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <cerrno>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <hnswlib/hnswlib.h>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
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
  /// The name index files record, so that loading with another backend type is refused by name.
  static constexpr std::string_view type_name = "hnswlib_backend";

  explicit hnswlib_backend(std::size_t dim, hnswlib_params params = {}) : dim_(dim), params_(params) {
    ALIGNER_EXPECTS(dim >= 1, "hnswlib_backend dim must be >= 1, got ", dim);
    ALIGNER_EXPECTS(params.m >= 2, "hnswlib M must be >= 2, got ", params.m);
    ALIGNER_EXPECTS(params.ef_search >= 1 && params.ef_construction >= 1, "hnswlib ef values must be >= 1");
    space_ = std::make_unique<hnswlib::InnerProductSpace>(dim);
  }

  std::size_t dim() const noexcept { return dim_; }
  std::size_t size() const noexcept { return size_; }

  void add(matrix_view<float> vectors) { add(vectors, backend_add_options{}); }
  /// The same with options: no finite scan when options.check_finite is false; insertion on options.threads
  /// threads (hnswlib's addPoint is thread-safe; the graph then depends on the timing, one thread is
  /// deterministic); progress every few thousand vectors. An exception from hnswlib on one thread stops the
  /// others and reaches the caller (the vectors inserted by then stay: hnswlib cannot take them out).
  void add(matrix_view<float> vectors, const backend_add_options& options) {
    if (vectors.rows == 0) return;
    detail::check_backend_add(vectors, dim_, "hnswlib_backend", options.check_finite);
    const std::size_t need = size_ + vectors.rows;
    if (!graph_) {
      graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(space_.get(), std::max<std::size_t>(need, 1024), params_.m,
                                                                  params_.ef_construction, params_.seed);
      graph_->setEf(params_.ef_search);
    } else if (need > graph_->max_elements_) {
      graph_->resizeIndex(std::max(need, 2 * graph_->max_elements_));
    }
    constexpr std::size_t block = 1024;  // rows a thread takes at a time
    const std::size_t blocks = (vectors.rows + block - 1) / block;
    std::atomic<std::size_t> done{0};
    std::mutex report;
    parallel_for(blocks, options.threads, [&](std::size_t b) {
      const std::size_t end = std::min(vectors.rows, (b + 1) * block);
      for (std::size_t r = b * block; r != end; ++r) graph_->addPoint(vectors.row(r), hnswlib::labeltype(size_ + r));
      const std::size_t now = done.fetch_add(end - b * block) + (end - b * block);
      if (options.progress) {
        const std::lock_guard lock(report);
        options.progress(now, vectors.rows);
      }
    });
    size_ = need;
  }

  /// The graph as bytes: u64 dim, u64 size, u64 M, ef_construction, ef_search, seed, then hnswlib's saveIndex
  /// image (hnswlib 0.6.2 saves only to paths: written to an anonymous in-memory file, never to the disk).
  std::string serialize() const {
    std::string out(48, '\0');
    const std::uint64_t header[6] = {dim_, size_, params_.m, params_.ef_construction, params_.ef_search, params_.seed};
    std::memcpy(out.data(), header, 48);
    if (graph_) {
      const memory_file image;
      try {
        graph_->saveIndex(image.path());
      } catch (const std::exception& e) {
        throw io_error(std::string("hnswlib backend: saving the graph failed: ") + e.what());
      }
      out += image.read();
    }
    return out;
  }
  /// Inverse of serialize; throws aligner::io_error on malformed bytes.
  static hnswlib_backend deserialize(std::string_view bytes) {
    if (bytes.size() < 48) throw io_error("hnswlib backend: " + std::to_string(bytes.size()) + " bytes, need at least 48");
    std::uint64_t h[6];
    std::memcpy(h, bytes.data(), 48);
    if (h[0] == 0 || h[0] > (1u << 20) || h[2] < 2 || h[2] > 4096 || h[3] == 0 || h[4] == 0)
      throw io_error("hnswlib backend: implausible parameters");
    hnswlib_backend b(h[0], {.m = h[2], .ef_construction = h[3], .ef_search = h[4], .seed = h[5]});
    if (h[1] == 0) {
      if (bytes.size() != 48) throw io_error("hnswlib backend: bytes after an empty graph");
      return b;
    }
    const memory_file image(bytes.substr(48));
    try {
      b.graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(b.space_.get(), image.path(), false, h[1]);
    } catch (const std::exception& e) {
      throw io_error(std::string("hnswlib backend: ") + e.what());
    }
    if (b.graph_->cur_element_count != h[1]) throw io_error("hnswlib backend: graph holds a different number of vectors");
    b.graph_->setEf(h[4]);
    b.size_ = h[1];
    return b;
  }

  topk_result search(matrix_view<float> queries, std::size_t k) const {
    detail::check_backend_search(queries, k, dim_);
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
  /// An anonymous file in memory (Linux memfd_create) that libraries which only take paths can open as
  /// /proc/self/fd/N; closed (and freed) on destruction. Every failure is an aligner::io_error.
  class memory_file {
   public:
    explicit memory_file(std::string_view bytes = {}) : fd_(::memfd_create("aligner_hnswlib", MFD_CLOEXEC)) {
      if (fd_ < 0) throw io_error(std::string("hnswlib backend: memfd_create failed (") + std::strerror(errno) + ")");
      for (std::size_t done = 0; done < bytes.size();) {
        const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("write");
        done += std::size_t(n);
      }
    }
    ~memory_file() { ::close(fd_); }
    memory_file(const memory_file&) = delete;
    memory_file& operator=(const memory_file&) = delete;

    std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }
    std::string read() const {
      struct stat st {};
      if (::fstat(fd_, &st) != 0) fail("stat");
      std::string out(std::size_t(st.st_size), '\0');
      for (std::size_t done = 0; done < out.size();) {
        const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, off_t(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("read");
        done += std::size_t(n);
      }
      return out;
    }

   private:
    [[noreturn]] void fail(const char* what) const {
      throw io_error(std::string("hnswlib backend: in-memory file ") + what + " failed (" + std::strerror(errno) + ")");
    }
    int fd_;
  };

  std::size_t dim_;
  hnswlib_params params_;
  std::size_t size_ = 0;
  std::unique_ptr<hnswlib::InnerProductSpace> space_;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph_;
};
static_assert(serializable_backend<hnswlib_backend>, "hnswlib_backend must model serializable_backend");

}  // namespace aligner
