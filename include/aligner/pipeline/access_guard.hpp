/** @file access_guard.hpp
 *  @brief The rule "a mutation never overlaps a search on the same object", enforced without a lock on the hot path.
 *
 *  A search counts itself in and out (`reading`); a mutation (`writing`) marks itself and refuses to start while a
 *  search runs, and a search refuses to start during a mutation, both with aligner::concurrency_error naming what
 *  was attempted. Copying or moving the owner gives the copy fresh counters (nothing is in flight on a new object). */
#pragma once

#include <atomic>
#include <string>

#include "../core/error.hpp"

namespace aligner {

class access_guard {
 public:
  access_guard() = default;
  access_guard(const access_guard&) noexcept {}
  access_guard& operator=(const access_guard&) noexcept { return *this; }

  /// Counts a search in flight for its lifetime.
  class reading {
   public:
    explicit reading(const access_guard& g) : g_(g) {
      g_.readers_.fetch_add(1, std::memory_order_seq_cst);
      if (g_.writing_.load(std::memory_order_seq_cst)) {
        g_.readers_.fetch_sub(1, std::memory_order_seq_cst);
        throw concurrency_error("aligner_retriever: search called while add/remove is running on the same retriever");
      }
    }
    ~reading() { g_.readers_.fetch_sub(1, std::memory_order_seq_cst); }
    reading(const reading&) = delete;
    reading& operator=(const reading&) = delete;

   private:
    const access_guard& g_;
  };

  /// Marks a mutation (`what`: "add", "remove") for its lifetime.
  class writing {
   public:
    writing(access_guard& g, const char* what) : g_(g) {
      if (g_.writing_.exchange(true, std::memory_order_seq_cst))
        throw concurrency_error(std::string("aligner_retriever: ") + what + " called while another add/remove is running");
      if (const int n = g_.readers_.load(std::memory_order_seq_cst); n != 0) {
        g_.writing_.store(false, std::memory_order_seq_cst);
        throw concurrency_error(std::string("aligner_retriever: ") + what + " called while " + std::to_string(n) +
                                " search(es) are running on the same retriever");
      }
    }
    ~writing() { g_.writing_.store(false, std::memory_order_seq_cst); }
    writing(const writing&) = delete;
    writing& operator=(const writing&) = delete;

   private:
    access_guard& g_;
  };

 private:
  mutable std::atomic<int> readers_{0};
  std::atomic<bool> writing_{false};
};

}  // namespace aligner
