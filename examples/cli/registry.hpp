// The names of the token MIPS backends of this build: the library's one list (aligner/backends/names.hpp), used by
// help texts, flag validation and index labels.
#pragma once

#include <aligner/backends/names.hpp>

namespace cli {

using aligner::backend_list;
using aligner::backend_names;

}  // namespace cli
