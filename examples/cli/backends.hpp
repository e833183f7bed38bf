// The token MIPS backends the tool builds and loads: the library's factory and loader by name
// (aligner/io/named_backends.hpp). Include it in one translation unit only: hnswlib's headers define non-inline
// functions.
#pragma once

#include <aligner/io/named_backends.hpp>

#include "options.hpp"
#include "registry.hpp"

namespace cli {

using aligner::with_backend;
using aligner::with_saved_index;

}  // namespace cli
