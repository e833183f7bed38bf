// aligner: command-line tool over the library. `aligner --help` lists the subcommands, `aligner CMD --help`
// their options. Bad input exits with code 2 and a one-line reason on stderr; a progress bar goes to stderr
// during long steps when stderr is a terminal (or with --progress).
#include <aligner/core/error.hpp>

#include <cstdio>
#include <string>

#include "commands.hpp"

namespace {

const cli::subcommand subcommands[] = {
    {"eval", cli::eval, "rank a collection's judged queries with one or more alignment strategies; print nDCG@10, MRR@10, R@100",
     R"(usage: aligner eval --collection DIR --strategy S[,S...] [options]

Ranks every judged query of a collection and prints, per strategy, one line
  STRATEGY ndcg@10=0.xxxx mrr@10=0.xxxx recall@100=0.xxxx map=0.xxxx p@10=0.xxxx queries=N candidates=C ms_per_query=T
(C: documents reranked per query, mean; T: one query's search time in milliseconds, mean)
)",
     cli::run_eval},
    {"adapt", cli::adapt, "few-shot alignment adaptation with the paper's fold protocol",
     R"(usage: aligner adapt --collection DIR [options]

Few-shot alignment adaptation with the paper's protocol: the judged queries are shuffled (seeded) and cut
into folds of --shots queries; on each fold the strategy of the grid with the best mean nDCG@10 is chosen
(ties to the earlier strategy) and evaluated on every other query. Prints each fold's choice, then the
mean +- std (over folds) of the adapted strategy next to Top-1's on the same held-out queries.
)",
     cli::run_adapt},
    {"score", cli::score, "score every query against every document from .npy token matrices",
     R"(usage: aligner score --queries Q.npy --query-offsets QO.npy --docs D.npy --doc-offsets DO.npy --strategy S [options]

Prints query_index<TAB>doc_index<TAB>score for every pair (9 significant digits).
)",
     cli::run_score},
    {"gate", cli::gate, "entropy-regularised top-k gate of a score vector",
     R"(usage: aligner gate --scores S.npy --k K --epsilon E [--iterations N | --exact] --out L.npy

Entropy-regularised top-k gate: writes lambda (same shape as S; a 2-d S is solved row by row). --exact
(default) is the sort-based solver; --iterations N runs exactly N steps of the paper's iteration (a, b start at
0; lambda from the last a and b) and reports on stderr whether sum(lambda) reached k to 1e-6.
)",
     cli::run_gate},
    {"salience", cli::salience, "salience u = lambda * ReLU(X w + b) of token vectors",
     R"(usage: aligner salience --tokens X.npy --weights W.npy --bias B [--budget A --epsilon E] --out U.npy

Writes u = lambda * ReLU(X w + b) for the tokens X [tokens, dim]; lambda is 1 without --budget, else the exact
top-k gate of ReLU(X w + b) with budget k = ceil(A * tokens) and temperature E.
)",
     cli::run_salience},
    {"train-salience", cli::train_salience, "learn the query and document salience heads from a collection's judged queries",
     R"(usage: aligner train-salience --collection DIR --out FILE [--split train] [--strategy S] [--alpha-query A --alpha-doc B] [options]

Learns u = lambda * ReLU(w . x + b) for queries and documents (SPEC section 12) on the frozen token vectors of
the collection: each judged query of --split (default train) against its relevant documents, --hard-negatives
negatives from an exhaustive search without salience and the relevant documents of the other queries of its
batch, with a softmax cross-entropy on the ALIGNER score under --strategy (default top1); lambda is the exact
entropy-regularised gate with budget ceil(alpha * tokens) and temperature --epsilon. Adam, seeded; --holdout of
the queries is held out and the trained epoch with the lowest held-out loss (at --epsilon) is kept. Prints one line per epoch
  epoch N train_loss=... holdout_loss=... holdout_first=... learning_rate=... epsilon=... seconds=...
(holdout_first: held-out relevant documents scored above all their negatives) and writes FILE (text; atomic)
only when training finished. Use it with aligner eval/index/search/explain --salience FILE.
)",
     cli::run_train_salience},
    {"index", cli::index, "build a retriever over a collection and save it (checksummed, atomic)",
     R"(usage: aligner index --collection DIR --out INDEX [options]

Builds a retriever over the collection's documents and saves it atomically to INDEX (checksummed; loading
verifies it and memory-maps the token store). With --layout directory, INDEX is an index directory of segments
built streaming: the documents' vectors are memory-mapped and encoded chunk by chunk (the codec trained first on
a sample), each segment of --segment-tokens committed atomically, so memory stays bounded by a segment and a
killed build leaves the segments committed so far. A directory has no token index: search it with
--candidates postings (residual storage) or all. --codec OTHER (a residual index file or directory) codes the
documents with OTHER's codec instead of training one, so that indexes built apart code every token alike.
)",
     cli::run_index},
    {"search", cli::search, "load a saved index and rank a collection's judged queries",
     R"(usage: aligner search --index INDEX --collection DIR --strategy S[,S...] [options]

Loads INDEX (built by aligner index from the same collection; its backend, storage and document pruning come
with it), ranks the collection's judged queries and prints the lines of aligner eval. INDEX may be an index
directory (aligner index --layout directory): then only the collection's queries are read, and results are
named by the directory's document names.
)",
     cli::run_search},
    {"query", cli::query, "rank documents of a saved index for query vectors you bring (.npy); print a TREC run",
     R"(usage: aligner query --index INDEX --vectors Q.npy [--offsets O.npy] [--strategy S] [--top N] [options]

Ranks the documents of INDEX (an index file or directory of aligner index) for ad-hoc queries: Q.npy holds the
query token vectors [tokens, dim] (float32, float16 or float64), O.npy where each query starts (integers,
[queries + 1]; without it every row belongs to one query). Prints the top N (default 10) of each query as TREC
run lines
  QUERY Q0 DOC RANK SCORE aligner-STRATEGY
(QUERY: the query's index in O.npy; DOC: the document's name from --doc-ids, the index directory's names, or
its id). An index built with salience needs the queries' own: --salience FILE (learned heads) or
--query-salience UQ.npy, or --rerank-weights off.
)",
     cli::run_query},
    {"info", cli::info, "print what an index file or directory holds, one key=value per line",
     R"(usage: aligner info INDEX

Prints, one key=value per line: file, bytes, documents, live_documents, tokens, dim, storage (f32, bf16, f16, i8
or residual:N), centroids (residual), backend, token_index, dedup, indexed_vectors, token_postings, salience, and
bytes_per_token (every byte of the file divided by the token count). For an index directory: directory, bytes,
generation, segments, documents, live_documents, tokens, dim, storage, centroids, salience, bytes_per_token.
)",
     cli::run_info},
    {"kernels", cli::kernels, "print which kernel scores each storage on this machine, and why",
     R"(usage: aligner kernels

Prints, one key=value per line: the SIMD architecture the tool was compiled for, its panel width, the CPU, whether
AMX-BF16 runs (or why not: CPU, operating system, permission, or ALIGNER_NO_AMX=1 in the environment), and the
kernel of every storage (f32, bf16, f16, i8, residual) and of the exact token search.
)",
     cli::run_kernels},
    {"explain", cli::explain, "draw why a document matched a query: S as a heatmap, the aligned cells outlined",
     R"(usage: aligner explain --collection DIR --query ID --doc ID [--index INDEX] [--strategy S] --html OUT.html|--svg OUT.svg

Writes a picture of one alignment (atomically): the similarity matrix of the query's tokens (rows) and the
document's tokens (columns) as a heatmap, the cells the strategy aligns outlined, query and document salience
as bars, the score and its parts; hovering a cell shows S_ij and its weight. Words come from --vocab or the
vectors folder's vocab.txt with the token ids (positions otherwise). With --index (an index file, or a
directory from aligner index --layout directory, where --doc is the name the document was added under) the
index's token store, storage and salience are used (its score equals the search's); without it the document
is packed in --storage (default f32). Prints score, numerator, z and the number of aligned pairs.
)",
     cli::run_explain},
};

void print_overview() {
  std::printf("usage: aligner COMMAND [options]     (aligner COMMAND --help for its options)\n\ncommands:\n");
  for (const auto& c : subcommands) std::printf("  %-9s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_overview();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  try {
    for (const auto& c : subcommands) {
      if (name != c.name) continue;
      const cli::options o = cli::parse_options(argc, argv, 2, c.bit, c.name);
      if (o.help) {
        std::printf("%s\n%s", c.usage, cli::flag_help(c.bit).c_str());
        return 0;
      }
      return c.run(o);
    }
    throw cli::usage_error("unknown command '" + name + "' (aligner --help lists them)");
  } catch (const std::exception& e) {
    // Usage errors, bad values and unreadable files: exit 2 with the reason; anything else is a bug of the tool.
    const bool user = dynamic_cast<const cli::usage_error*>(&e) || dynamic_cast<const aligner::invalid_argument*>(&e) ||
                      dynamic_cast<const aligner::io_error*>(&e);
    std::fprintf(stderr, "aligner %s: %s%s\n", name.c_str(), user ? "" : "internal error: ", e.what());
    return user ? 2 : 1;
  }
}
