// The names of the token MIPS backends of this build (the one list: help texts, flag validation, index labels).
#pragma once

#include <string>
#include <string_view>

namespace cli {

/// The backends of this build, in help order. The name is also the label of saved indexes (backends.hpp).
inline constexpr std::string_view backend_list[] = {
    "exact", "exact-bf16",
#ifdef ALIGNER_HAVE_FAISS
    "faiss-flat", "faiss-hnsw",
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
    "hnswlib",
#endif
};

inline std::string backend_names(std::string_view separator = "|") {
  std::string out;
  for (std::string_view name : backend_list) (out.empty() ? out : out.append(separator)).append(name);
  return out;
}

}  // namespace cli
