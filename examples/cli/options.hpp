// The command line of the aligner tool: every flag is declared once (options.cpp), with the subcommands it applies
// to, its help text and the handler that stores its value in `options`. A flag given to a subcommand that does not
// take it, an unknown flag, a repeated flag or a malformed value is a usage error (exit code 2).
#pragma once

#include <aligner/math/alignment.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cli {

/// A usage error: the tool exits with code 2 and the message.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The subcommands, as bits so that a flag can name the set it applies to.
enum command : unsigned {
  eval = 1u << 0,
  adapt = 1u << 1,
  index = 1u << 2,
  search = 1u << 3,
  score = 1u << 4,
  gate = 1u << 5,
  salience = 1u << 6,
  info = 1u << 7,
  kernels = 1u << 8,
  explain = 1u << 9,
  train_salience = 1u << 10,
  query = 1u << 11,
};

/// Every value a flag can set, with its default.
struct options {
  std::set<std::string> given;  ///< the flags on the command line
  bool help = false;
  // collections
  std::string collection, vectors = "glove100", split = "test", index_file, run_file, out;
  std::vector<aligner::alignment> strategies;
  std::string grid = "paper";
  aligner::normalization norm = aligner::normalization::mean;
  std::optional<std::size_t> candidates;  ///< k' per query token; empty: rerank every document
  std::string backend = "exact", salience = "none", storage = "f32";
  double prune_query = 1.0, prune_doc = 1.0;
  std::size_t residual_bits = 0, centroids = 0;  ///< --storage residual:N, --centroids K
  double anisotropy = 0;                         ///< --anisotropy ETA (0: the codec default)
  std::string codec_from;                        ///< --codec INDEX: the residual codec of that index file or directory
  std::size_t top = 1000, shots = 8;
  std::uint64_t seed = 0;
  unsigned threads = 1;
  bool progress = false, no_mmap = false, dedup = true, postings = false, token_index = true, rerank_weights = true;
  std::size_t nprobe = 4, ndocs = 1000;  ///< --candidates postings
  std::size_t query_limit = 0;            ///< --query-limit: rank only the first N judged queries (0: all)
  std::size_t nlist = 0, ivf_nprobe = 32;  ///< --backend faiss-ivf (0 lists: chosen from the vector count)
  std::string layout = "file";           ///< index: one file, or an index directory of segments (streamed build)
  std::size_t segment_tokens = std::size_t(1) << 22;
  std::string query_id, doc_id, html, svg, vocab;  ///< explain
  std::string offsets, doc_ids;                    ///< query: --offsets O.npy, --doc-ids FILE
  // train-salience (defaults: aligner::salience_training_params)
  double alpha_query = 0.5, alpha_doc = 0.4, temperature = 20.0, learning_rate = 0.01, holdout = 0.1, epsilon_start = 0.0;
  std::string objective = "score";
  double token_temperature = 50.0;
  std::size_t epochs = 20, batch = 32, hard_negatives = 16, patience = 3, ensemble = 1, collection_negatives = 0;
  std::string init = "none";  ///< start heads: none (w = 0, b = 1), idf-fit, or a heads file
  // .npy tools
  std::string queries, query_offsets, docs, doc_offsets, query_salience, doc_salience, scores, tokens, weights;
  double k = 0, epsilon = 0, bias = 0, budget = 0;
  std::size_t iterations = 0;
  bool exact = false;

  bool has(std::string_view flag) const { return given.count(std::string(flag)) != 0; }
  /// Throws usage_error when a required flag is missing.
  void require(std::string_view flag) const;
};

/// Parses argv[first..] for subcommand `cmd` (named `name` in messages).
options parse_options(int argc, char** argv, int first, command cmd, std::string_view name);

/// The option list of a subcommand's help, generated from the flag table.
std::string flag_help(command cmd);

}  // namespace cli
