/** @file names.hpp
 *  @brief The names of the token MIPS backends of this build ("exact", "exact-bf16", "exact-i8", "faiss-flat", "faiss-hnsw",
 *  "faiss-ivf", "hnswlib"): the one list the CLI and the Python package offer and that saved indexes record as their label.
 *  The optional names are listed where the including translation unit defines ALIGNER_HAVE_FAISS or
 *  ALIGNER_HAVE_HNSWLIB; io/named_backends.hpp builds and loads backends by these names. */
#pragma once

#include <string>
#include <string_view>

namespace aligner {

/// The backends of this build, in help order.
inline constexpr std::string_view backend_list[] = {
    "exact", "exact-bf16", "exact-i8",
#ifdef ALIGNER_HAVE_FAISS
    "faiss-flat", "faiss-hnsw", "faiss-ivf",
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
    "hnswlib",
#endif
};

/// The names of backend_list joined by `separator`.
inline std::string backend_names(std::string_view separator = "|") {
  std::string out;
  for (std::string_view name : backend_list) (out.empty() ? out : out.append(separator)).append(name);
  return out;
}

/// True when `name` is one of backend_list.
constexpr bool is_backend_name(std::string_view name) noexcept {
  for (std::string_view n : backend_list)
    if (n == name) return true;
  return false;
}

}  // namespace aligner
