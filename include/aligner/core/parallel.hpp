/** @file parallel.hpp
 *  @brief The library's one parallel loop: work items shared out to threads, exceptions forwarded to the caller.
 *
 *  `parallel_for(n, threads, body)` runs body(i) for every i in [0, n) on up to `threads` threads (0 = one per
 *  hardware thread), each taking the next unclaimed index. When a body throws, no further indices are handed out,
 *  every thread has left the loop before the call returns, and the first exception is rethrown in the caller: nothing
 *  escapes a worker thread as std::terminate. With one thread (or n <= 1) the loop runs on the caller's thread.
 *
 *  The helper threads come from one process-wide pool (`detail::worker_pool`) that keeps them between loops: starting
 *  fifteen threads for every loop cost a one-query search on 16 cores a large part of its time. The pool grows to the
 *  most helpers one loop has asked for (at most `worker_pool::max_threads()`: four per hardware thread, and no fewer
 *  than 64) and never shrinks; its idle threads sleep on a condition variable. A loop is
 *  always worked by its caller's thread too, and takes the pool's idle helpers up to its count: loops running at once
 *  (from several user threads, or one nested in another's body) share the pool and never wait for each other's
 *  threads, so no loop can deadlock on a busy pool. After a fork the child starts a new pool (the parent's threads do
 *  not exist there). The pool is never destroyed: its sleeping threads end with the process. */
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace aligner {

/// Threads a loop of `n` items uses for a request of `threads` (0 = hardware concurrency): never more than n.
inline unsigned worker_count(std::size_t n, unsigned threads) noexcept {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  return unsigned(std::min<std::size_t>(threads, std::max<std::size_t>(n, 1)));
}

namespace detail {

/// One loop offered to the pool: `run(ctx)` claims and runs items until none are left (it never throws).
struct pool_job {
  void (*run)(void*) noexcept = nullptr;
  void* ctx = nullptr;
  unsigned wanted = 0;  ///< helpers that may still join (guarded by the pool's mutex)
  unsigned active = 0;  ///< helpers inside run() now (likewise)
};

/// Threads kept between parallel loops. See the file comment for the rules.
class worker_pool {
 public:
  /// This process's pool (a new one in a forked child).
  static worker_pool& instance() {
    worker_pool* p = current().load(std::memory_order_acquire);
    if (p) return *p;
    auto* fresh = new worker_pool();
    if (current().compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) {
      register_fork_handler();
      return *fresh;
    }
    delete fresh;  // another thread installed one first
    return *p;
  }

  /// The most threads the pool holds: 4 per hardware thread, at least 64. A request for more (threads = 2^32 - 1 is
  /// a valid argument) runs on that many, with the same results: the loop's items are claimed one by one.
  static unsigned max_threads() noexcept {
    static const unsigned cap = std::max(64u, 4 * std::max(1u, std::thread::hardware_concurrency()));
    return cap;
  }

  /// Runs job.run on the caller's thread and on up to `helpers` idle pool threads (at most max_threads()); returns
  /// once every helper that joined has left run().
  void run(pool_job& job, unsigned helpers) noexcept {
    helpers = std::min(helpers, max_threads());
    bool all = false;
    {
      const std::lock_guard lock(mutex_);
      grow(helpers);
      job.wanted = helpers;
      job.active = 0;
      queue_.push_back(&job);
      all = helpers >= threads_;
    }
    if (all)
      wake_.notify_all();  // one call wakes every sleeper
    else
      for (unsigned h = 0; h != helpers; ++h) wake_.notify_one();
    job.run(job.ctx);
    std::unique_lock lock(mutex_);
    if (job.wanted) {  // still offered: withdraw it, so that no helper joins from now on
      const auto it = std::find(queue_.begin(), queue_.end(), &job);
      if (it != queue_.end()) queue_.erase(it);
      job.wanted = 0;
    }
    done_.wait(lock, [&] { return job.active == 0; });
  }

  /// Threads the pool holds (for tests).
  std::size_t size() const {
    const std::lock_guard lock(mutex_);
    return threads_;
  }

 private:
  worker_pool() = default;

  static std::atomic<worker_pool*>& current() noexcept {
    static std::atomic<worker_pool*> p{nullptr};
    return p;
  }

  /// In a forked child only the forking thread exists: the parent's pool (its threads, perhaps its mutex held) is
  /// left as it is (still reachable, so not a leak) and the child's first loop makes a new one.
  static void register_fork_handler() {
#if defined(__unix__) || defined(__APPLE__)
    static const bool registered = [] {
      pthread_atfork(nullptr, nullptr, [] {
        static std::vector<worker_pool*> abandoned;  // the child's own copy; keeps the parent's pools reachable
        if (auto* p = current().exchange(nullptr)) abandoned.push_back(p);
      });
      return true;
    }();
    (void)registered;
#endif
  }

  /// Adds threads until the pool holds `helpers` (called with the mutex held). A thread that cannot be started is
  /// not an error: the loop runs on the threads there are (at least its caller's).
  void grow(unsigned helpers) noexcept {
    while (threads_ < helpers) {
      try {
        std::thread(&worker_pool::serve, this).detach();
      } catch (...) {
        return;
      }
      ++threads_;
    }
  }

  void serve() noexcept {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return !queue_.empty(); });
      pool_job* job = queue_.front();
      ++job->active;
      if (--job->wanted == 0) queue_.pop_front();
      lock.unlock();
      job->run(job->ctx);
      lock.lock();
      if (--job->active == 0 && job->wanted == 0) done_.notify_all();
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::deque<pool_job*> queue_;  ///< loops that may still take helpers, oldest first
  unsigned threads_ = 0;
};

}  // namespace detail

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
    detail::pool_job job;
    job.ctx = &work;
    job.run = [](void* w) noexcept { (*static_cast<decltype(work)*>(w))(); };
    detail::worker_pool::instance().run(job, threads - 1);  // the caller's thread works too
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace aligner
