// A progress bar on stderr for long steps: drawn when stderr is a terminal or with --progress.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <mutex>
#include <string>
#include <unistd.h>

namespace cli {

class progress {
 public:
  progress(std::string label, std::size_t total, bool forced)
      : label_(std::move(label)), total_(total), enabled_(forced || isatty(2)) {
    draw(0);
  }
  ~progress() {
    if (enabled_) std::fprintf(stderr, "\n");
  }
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;

  /// One more item done (thread-safe; redraws at most every 100 ms, and at the end).
  void tick() { redraw(++done_); }
  /// `done` items done in all (thread-safe).
  void update(std::size_t done) {
    done_ = done;
    redraw(done);
  }

 private:
  void redraw(std::size_t done) {
    if (!enabled_) return;
    const std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (done != total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    draw(done);
  }

  /// The bar, the count, the rate and the time left (from the rate since the start).
  void draw(std::size_t done) const {
    if (!enabled_) return;
    const int width = 30, filled = total_ ? int(double(done) / double(total_) * width) : width;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = seconds > 0 ? double(done) / seconds : 0;
    std::string tail;
    if (done && seconds > 0.5) {
      char buf[96];
      const double left = rate > 0 ? double(total_ - std::min(done, total_)) / rate : 0;
      std::snprintf(buf, sizeof buf, " %.3g/s, ETA %dm%02ds", rate, int(left) / 60, int(left) % 60);
      tail = buf;
    }
    std::fprintf(stderr, "\r%-22s [%s%s] %3d%% (%zu/%zu)%s   ", label_.c_str(), std::string(std::size_t(filled), '=').c_str(),
                 std::string(std::size_t(width - filled), ' ').c_str(), total_ ? int(100.0 * double(done) / double(total_)) : 100,
                 done, total_, tail.c_str());
    std::fflush(stderr);
  }
  std::string label_;
  std::size_t total_;
  bool enabled_;
  std::atomic<std::size_t> done_{0};
  std::mutex mutex_;
  // last_ starts at the constructor's draw, so an update right after it (a stage's "0 of total") is not drawn again.
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_ = start_;
};

}  // namespace cli
