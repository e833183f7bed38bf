/** @file aligner.hpp
 *  @brief Umbrella header: everything of the library except the optional FAISS and hnswlib backends. */
#pragma once

#include "version.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/types.hpp"
#include "kernels/dot.hpp"
#include "kernels/hadamard_sum.hpp"
#include "kernels/panels.hpp"
#include "alignment.hpp"
#include "gate_solver.hpp"
#include "salience.hpp"
#include "pruner.hpp"
#include "scorer.hpp"
#include "token_store.hpp"
#include "backends/concepts.hpp"
#include "backends/exact.hpp"
#include "retriever.hpp"
