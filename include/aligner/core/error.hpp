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

/// Throws invalid_argument(what), naming the header and line that threw when `file` is given (see
/// ALIGNER_ERROR_LOCATIONS below).
[[noreturn]] inline void fail(const std::string& what, const char* file, int line) {
  if (file) throw invalid_argument(what + " (" + file + ":" + std::to_string(line) + ")");
  throw invalid_argument(what);
}

}  // namespace detail
}  // namespace aligner

/// ALIGNER_ERROR_LOCATIONS 1: messages end with the header and line that threw ("... (aligner/core/types.hpp:131)"),
/// for developers; 0: they do not, for messages shown to end users (the CLI, the Python package). The default is 1
/// in builds without NDEBUG and 0 in release builds; define it before including aligner to choose.
#ifndef ALIGNER_ERROR_LOCATIONS
#ifdef NDEBUG
#define ALIGNER_ERROR_LOCATIONS 0
#else
#define ALIGNER_ERROR_LOCATIONS 1
#endif
#endif
#if ALIGNER_ERROR_LOCATIONS
#define ALIGNER_ERROR_FILE_ __FILE__
#else
#define ALIGNER_ERROR_FILE_ nullptr
#endif

/// Throws aligner::invalid_argument with the streamed message parts when `cond` is false.
/// Usage: ALIGNER_EXPECTS(k >= 1, "k must be >= 1, got k = ", k);
#define ALIGNER_EXPECTS(cond, ...)                                                          \
  do {                                                                                      \
    if (!(cond)) ::aligner::detail::fail(::aligner::detail::concat(__VA_ARGS__), ALIGNER_ERROR_FILE_, __LINE__); \
  } while (false)

/// Internal invariant, checked in debug builds only.
#define ALIGNER_ASSERT(cond) assert(cond)
