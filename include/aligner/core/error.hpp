/** @file error.hpp
 *  @brief Exceptions thrown at the public boundary, and the two checking macros.
 *
 *  User errors throw `aligner::invalid_argument` (a `std::invalid_argument`) whose message names the argument
 *  and its offending value; file problems throw `aligner::io_error` (a `std::runtime_error`) naming the file
 *  and where in it. Internal invariants use `ALIGNER_ASSERT`, which is a debug-only `assert`. */
#pragma once

#include <cassert>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace aligner {

/// A caller passed a value outside the documented domain (bad shape, NaN, k < 1, p outside (0, 1], ...).
class invalid_argument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A file could not be read or written, or its content is malformed (truncated, corrupt, wrong type).
class io_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A mutation (add, remove) overlapped a search on the same object, which the object's contract forbids.
class concurrency_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  out.precision(9);
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

[[noreturn]] inline void fail(const std::string& what, const char* file, int line) {
  throw invalid_argument(what + " (" + file + ":" + std::to_string(line) + ")");
}

}  // namespace detail
}  // namespace aligner

/// Throws aligner::invalid_argument with the streamed message parts when `cond` is false.
/// Usage: ALIGNER_EXPECTS(k >= 1, "k must be >= 1, got k = ", k);
#define ALIGNER_EXPECTS(cond, ...)                                                          \
  do {                                                                                      \
    if (!(cond)) ::aligner::detail::fail(::aligner::detail::concat(__VA_ARGS__), __FILE__, __LINE__); \
  } while (false)

/// Internal invariant, checked in debug builds only.
#define ALIGNER_ASSERT(cond) assert(cond)
