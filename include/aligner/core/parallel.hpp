/** @file parallel.hpp
 *  @brief The library's one parallel loop: work items shared out to threads, exceptions forwarded to the caller.
 *
 *  `parallel_for(n, threads, body)` runs body(i) for every i in [0, n) on up to `threads` threads (0 = one per
 *  hardware thread), each taking the next unclaimed index. When a body throws, no further indices are handed out,
 *  every thread is joined, and the first exception is rethrown in the caller: nothing escapes a worker thread as
 *  std::terminate. With one thread (or n <= 1) the loop runs on the caller's thread. */
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace aligner {

/// Threads a loop of `n` items uses for a request of `threads` (0 = hardware concurrency): never more than n.
inline unsigned worker_count(std::size_t n, unsigned threads) noexcept {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  return unsigned(std::min<std::size_t>(threads, std::max<std::size_t>(n, 1)));
}

template <class Body>
void parallel_for(std::size_t n, unsigned threads, Body&& body) {
  threads = worker_count(n, threads);
  std::atomic<std::size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&]() noexcept {
    try {
      for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) body(i);
    } catch (...) {
      const std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(n, std::memory_order_relaxed);  // hand out no further items
    }
  };
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::jthread> pool;
    pool.reserve(threads - 1);
    for (unsigned t = 1; t != threads; ++t) pool.emplace_back(work);
    work();  // the caller's thread works too
  }  // joined here
  if (error) std::rethrow_exception(error);
}

}  // namespace aligner
