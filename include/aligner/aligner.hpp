/** @file aligner.hpp
 *  @brief Umbrella header: the whole library except file I/O (io/, eval/) and the optional FAISS and hnswlib
 *  backends. It includes no POSIX header; saving and loading a retriever is io/index_file.hpp. */
#pragma once

#include "version.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/types.hpp"
#include "kernels/aligned_rows.hpp"
#include "kernels/dot.hpp"
#include "kernels/lane_topk.hpp"
#include "kernels/layout.hpp"
#include "kernels/storage.hpp"
#include "kernels/tile.hpp"
#include "kernels/token_scan.hpp"
#include "math/alignment.hpp"
#include "math/gate_solver.hpp"
#include "math/pruner.hpp"
#include "math/salience.hpp"
#include "math/scorer.hpp"
#include "math/explain.hpp"
#include "storage/token_store.hpp"
#include "backends/concepts.hpp"
#include "backends/exact.hpp"
#include "pipeline/retriever.hpp"
