// The flag table: each flag once, with the subcommands it applies to, its help and its handler.
#include "options.hpp"

#include <aligner/eval/adapt.hpp>
#include <aligner/kernels/residual.hpp>
#include <aligner/kernels/storage.hpp>

#include <charconv>
#include <cstdio>
#include <functional>
#include <map>

#include "registry.hpp"

namespace cli {
namespace {

double parse_double(std::string_view flag, const std::string& v) {
  double x = 0;
  const auto res = std::from_chars(v.data(), v.data() + v.size(), x);
  if (res.ec != std::errc{} || res.ptr != v.data() + v.size())
    throw usage_error(std::string(flag) + " expects a number, got '" + v + "'");
  return x;
}

std::uint64_t parse_count(std::string_view flag, const std::string& v) {
  std::uint64_t x = 0;
  const auto res = std::from_chars(v.data(), v.data() + v.size(), x);
  if (res.ec != std::errc{} || res.ptr != v.data() + v.size())
    throw usage_error(std::string(flag) + " expects a non-negative integer, got '" + v + "'");
  return x;
}

/// A count that must be at least 1.
std::uint64_t parse_positive(std::string_view flag, const std::string& v) {
  const std::uint64_t x = parse_count(flag, v);
  if (x == 0) throw usage_error(std::string(flag) + " must be >= 1, got 0");
  return x;
}

double parse_fraction(std::string_view flag, const std::string& v) {
  const double x = parse_double(flag, v);
  if (!(x > 0.0 && x <= 1.0)) throw usage_error(std::string(flag) + " must be in (0, 1], got " + v);
  return x;
}

std::string one_of(std::string_view flag, const std::string& v, std::initializer_list<std::string_view> allowed) {
  std::string names;
  for (std::string_view a : allowed) {
    if (v == a) return v;
    (names.empty() ? names : names.append("|")).append(a);
  }
  throw usage_error(std::string(flag) + " must be one of " + names + ", got '" + v + "'");
}

using handler = std::function<void(options&, const std::string&)>;

struct flag {
  std::string_view name;
  std::string metavar;  ///< empty: a switch (takes no value); owned (some are built at run time)
  unsigned commands;         ///< bits of `command`
  std::string help;
  handler set;
};

constexpr unsigned collection_cmds = eval | adapt | index | search, ranking_cmds = eval | adapt | search | query;
constexpr unsigned building_cmds = eval | adapt | index;

const std::vector<flag>& flags() {
  static const std::vector<flag> table = {
      {"--collection", "DIR", collection_cmds | explain | train_salience, "collection folder (BEIR files + vectors folder)",
       [](options& o, const std::string& v) { o.collection = v; }},
      {"--vectors", "NAME|Q.npy", collection_cmds | explain | train_salience | query,
       "vectors subfolder (default glove100); query: the query token vectors Q.npy [tokens, dim], float32, float16 or float64",
       [](options& o, const std::string& v) { o.vectors = v; }},
      {"--offsets", "O.npy", query, "query: where each query starts in Q.npy [queries + 1] (default: all rows are one query)",
       [](options& o, const std::string& v) { o.offsets = v; }},
      {"--doc-ids", "FILE", query, "query: the name of each document id, one per line (default: the index directory's names, else the ids)",
       [](options& o, const std::string& v) { o.doc_ids = v; }},
      {"--split", "NAME", eval | adapt | search | train_salience, "qrels split (default test; train-salience: train)", [](options& o, const std::string& v) { o.split = v; }},
      {"--index", "INDEX", search | explain | query, "index file or directory written by aligner index (search: from the same collection)",
       [](options& o, const std::string& v) { o.index_file = v; }},
      {"--strategy", "S[,S...]", eval | search | score | explain | train_salience | query,
       "alignment strategies: top1, topk:K, topp:P, dense (score, explain, train-salience, query: one; query's default top1)",
       [](options& o, const std::string& v) { o.strategies = aligner::parse_grid(v); }},
      {"--grid", "paper|S,S,...", adapt, "strategy grid (default paper: topk 1,2,4,6,8 and topp 0.5%,1%,1.5%,2%)",
       [](options& o, const std::string& v) {
         aligner::parse_grid(v);  // validated here, parsed again by adapt
         o.grid = v;
       }},
      {"--shots", "N", adapt, "labelled queries per fold (default 8)",
       [](options& o, const std::string& v) { o.shots = parse_positive("--shots", v); }},
      {"--seed", "N", adapt | train_salience, "shuffle seed (default 0)", [](options& o, const std::string& v) { o.seed = parse_count("--seed", v); }},
      {"--normalize", "mean|none", ranking_cmds | score | explain | train_salience, "divide by Z (default mean) or return the ColBERT sum",
       [](options& o, const std::string& v) { o.norm = aligner::parse_normalization(v); }},
      {"--candidates", "all|K|postings", ranking_cmds,
       "all: rerank every document (default; search and query of an index with an approximate token index need the choice); "
       "K: token-MIPS k' per query token; postings: centroid postings of a residual store",
       [](options& o, const std::string& v) {
         o.postings = v == "postings";
         if (v == "all" || v == "postings") return o.candidates.reset();
         o.candidates = parse_count("--candidates", v);
         if (*o.candidates == 0) throw usage_error("--candidates must be 'all' or an integer >= 1, got 0");
       }},
      {"--backend", "NAME", building_cmds, "token MIPS backend for --candidates K: " + backend_names() + " (default exact)",
       [](options& o, const std::string& v) {
         for (std::string_view name : backend_list)
           if (v == name) return void(o.backend = v);
         throw usage_error("--backend must be one of " + backend_names() + ", got '" + v + "'");
       }},
      {"--prune-query", "B", ranking_cmds, "keep the top B of each query's tokens for the token search (needs --salience)",
       [](options& o, const std::string& v) { o.prune_query = parse_fraction("--prune-query", v); }},
      {"--prune-doc", "B", building_cmds, "keep the top B of each document's tokens in the token index (needs --salience)",
       [](options& o, const std::string& v) { o.prune_doc = parse_fraction("--prune-doc", v); }},
      {"--salience", "none|idf|FILE", collection_cmds | explain | query,
       "idf: token IDF over the collection as query and document salience; FILE: learned heads (aligner train-salience) "
       "(search: the index's own; query: FILE only)",
       [](options& o, const std::string& v) {
         if (v.empty()) throw usage_error("--salience must be none, idf or a heads file, got ''");
         o.salience = v;
       }},
      {"--rerank-weights", "on|off", ranking_cmds,
       "off: the salience only chooses the tokens searched (--prune-query, --prune-doc); the rerank is unweighted (default on)",
       [](options& o, const std::string& v) { o.rerank_weights = one_of("--rerank-weights", v, {"on", "off"}) == "on"; }},
      {"--storage", aligner::storage_names() + "|residual:N", building_cmds | explain,
       "precision of the rerank token store (default f32; bf16 and f16 halve its memory, i8 quarters it; residual:N, N in "
       "1|2|4|8: a centroid id plus N bits per component, trained on the collection; residual alone: residual:2)",
       [](options& o, const std::string& given) {
         aligner::storage st;
         const std::string v = given == "residual" ? std::string("residual:2") : given;
         if (v.rfind("residual:", 0) == 0) {
           const auto bits = parse_count("--storage residual:N", v.substr(9));
           if (bits != 1 && bits != 2 && bits != 4 && bits != 8)
             throw usage_error("--storage residual:N needs N in 1|2|4|8, got " + std::to_string(bits));
           o.residual_bits = bits;
         } else if (!aligner::parse_storage(v, st)) {
           throw usage_error("--storage must be one of " + aligner::storage_names() + "|residual:N, got '" + v + "'");
         }
         o.storage = v;
       }},
      {"--centroids", "K", building_cmds, "residual storage: k-means centroids (default 2^floor(log2(16 sqrt(tokens))), printed)",
       [](options& o, const std::string& v) { o.centroids = parse_positive("--centroids", v); }},
      {"--anisotropy", "ETA", building_cmds,
       "residual storage: weight of a code's error along its token against the error across it (default 0.19 (dim - 1), printed; 1: nearest buckets)",
       [](options& o, const std::string& v) {
         const double x = parse_double("--anisotropy", v);
         if (!(x >= 1 && x <= aligner::residual_codec::max_anisotropy))
           throw usage_error("--anisotropy must be in [1, 1e6], got " + v);
         o.anisotropy = x;
       }},
      {"--codec", "INDEX", building_cmds,
       "residual storage: code with the codec of this residual index file or directory instead of training one (so that several indexes code alike)",
       [](options& o, const std::string& v) { o.codec_from = v; }},
      {"--nprobe", "P", ranking_cmds, "--candidates postings: centroids probed per query token (default 4)",
       [](options& o, const std::string& v) { o.nprobe = parse_positive("--nprobe", v); }},
      {"--ndocs", "N", ranking_cmds, "documents kept for the rerank by the approximate score of their candidates' similarities: with --candidates postings "
       "the probed centroids' (default 1000), with --candidates K the token hits' (default 0: all); 0 keeps all",
       [](options& o, const std::string& v) { o.ndocs = parse_count("--ndocs", v); }},
      {"--nlist", "L", building_cmds, "--backend faiss-ivf: inverted lists (default: 4 sqrt(vectors) rounded down to a power of two, at most vectors/39)",
       [](options& o, const std::string& v) { o.nlist = parse_positive("--nlist", v); }},
      {"--ivf-nprobe", "P", building_cmds, "--backend faiss-ivf: lists probed per query token (default 32; saved with the index)",
       [](options& o, const std::string& v) { o.ivf_nprobe = parse_positive("--ivf-nprobe", v); }},
      {"--token-index", "on|off", building_cmds, "off: no token MIPS index (a residual store searched by postings holds codes only)",
       [](options& o, const std::string& v) { o.token_index = one_of("--token-index", v, {"on", "off"}) == "on"; }},
      {"--dedup", "on|off", building_cmds,
       "on: identical token vectors enter the token index once, a hit expands to every document holding one (default)",
       [](options& o, const std::string& v) { o.dedup = one_of("--dedup", v, {"on", "off"}) == "on"; }},
      {"--top", "N", ranking_cmds, "results per query (default 1000; query: 10)",
       [](options& o, const std::string& v) { o.top = parse_positive("--top", v); }},
      {"--run", "FILE", eval | search, "write the TREC run of the first strategy", [](options& o, const std::string& v) { o.run_file = v; }},
      {"--query-limit", "N", eval | search, "rank only the first N judged queries, in the collection's query order (default: all); the metrics average over them",
       [](options& o, const std::string& v) { o.query_limit = parse_positive("--query-limit", v); }},
      {"--threads", "T", collection_cmds | train_salience | query, "worker threads for searching (query: one query's own rerank when the file holds one), residual training and the hnswlib graph build (default 1; 0 = all cores)",
       [](options& o, const std::string& v) {
         // A bound no machine is near: past 2^32 the unsigned field would wrap (4294967296 read as 0 = all cores).
         const std::uint64_t t = parse_count("--threads", v);
         if (t > 65536) throw usage_error("--threads must be at most 65536 (0 = all cores), got " + v);
         o.threads = unsigned(t);
       }},
      {"--no-mmap", "", search | query, "read the index into memory instead of mapping it", [](options& o, const std::string&) { o.no_mmap = true; }},
      {"--progress", "", collection_cmds | train_salience | query, "progress bar on stderr even when it is not a terminal",
       [](options& o, const std::string&) { o.progress = true; }},
      {"--queries", "Q.npy", score, "query token vectors [tokens, dim], float32, float16 or float64", [](options& o, const std::string& v) { o.queries = v; }},
      {"--query-offsets", "QO.npy", score, "query offsets [queries + 1], int64 or int32",
       [](options& o, const std::string& v) { o.query_offsets = v; }},
      {"--docs", "D.npy", score, "document token vectors [tokens, dim]", [](options& o, const std::string& v) { o.docs = v; }},
      {"--doc-offsets", "DO.npy", score, "document offsets [documents + 1]", [](options& o, const std::string& v) { o.doc_offsets = v; }},
      {"--query-salience", "UQ.npy", score | query, "query salience [query tokens]", [](options& o, const std::string& v) { o.query_salience = v; }},
      {"--doc-salience", "UD.npy", score, "document salience [document tokens]", [](options& o, const std::string& v) { o.doc_salience = v; }},
      {"--scores", "S.npy", gate, "scores, 1-d or 2-d (solved row by row)", [](options& o, const std::string& v) { o.scores = v; }},
      {"--k", "K", gate, "budget k of the gate", [](options& o, const std::string& v) { o.k = parse_double("--k", v); }},
      {"--iterations", "N", gate, "run exactly N steps of the paper's iteration instead of the exact solver",
       [](options& o, const std::string& v) { o.iterations = parse_count("--iterations", v); }},
      {"--exact", "", gate, "the sort-based exact solver (the default)", [](options& o, const std::string&) { o.exact = true; }},
      {"--tokens", "X.npy", salience, "token vectors [tokens, dim]", [](options& o, const std::string& v) { o.tokens = v; }},
      {"--weights", "W.npy", salience, "salience weights w [dim]", [](options& o, const std::string& v) { o.weights = v; }},
      {"--bias", "B", salience, "salience bias b", [](options& o, const std::string& v) { o.bias = parse_double("--bias", v); }},
      {"--budget", "A", salience, "gate budget fraction alpha: k = ceil(A * tokens) (with --epsilon)",
       [](options& o, const std::string& v) { o.budget = parse_double("--budget", v); }},
      {"--epsilon", "E", gate | salience | train_salience, "gate temperature epsilon (train-salience: default 0.002)", [](options& o, const std::string& v) { o.epsilon = parse_double("--epsilon", v); }},
      {"--query", "ID", explain, "the query's id (query_ids.txt)", [](options& o, const std::string& v) { o.query_id = v; }},
      {"--doc", "ID", explain, "the document's id (doc_ids.txt)", [](options& o, const std::string& v) { o.doc_id = v; }},
      {"--html", "OUT.html", explain, "write the alignment as a self-contained HTML page", [](options& o, const std::string& v) { o.html = v; }},
      {"--svg", "OUT.svg", explain, "write the alignment as a standalone SVG", [](options& o, const std::string& v) { o.svg = v; }},
      {"--vocab", "FILE", explain, "the word of each token id, one per line (default: vocab.txt of the vectors folder, if any)",
       [](options& o, const std::string& v) { o.vocab = v; }},
      {"--layout", "file|directory", index,
       "file: one index file (default); directory: an index directory of segments built streaming from the vectors (mapped, chunk by chunk)",
       [](options& o, const std::string& v) { o.layout = one_of("--layout", v, {"file", "directory"}); }},
      {"--segment-tokens", "N", index, "--layout directory: tokens per segment (default 4194304)",
       [](options& o, const std::string& v) { o.segment_tokens = parse_positive("--segment-tokens", v); }},
      {"--alpha-query", "A", train_salience, "query gate budget fraction in (0, 1] (default 0.5; 1: no gate)",
       [](options& o, const std::string& v) { o.alpha_query = parse_fraction("--alpha-query", v); }},
      {"--alpha-doc", "B", train_salience, "document gate budget fraction in (0, 1] (default 0.4; 1: no gate)",
       [](options& o, const std::string& v) { o.alpha_doc = parse_fraction("--alpha-doc", v); }},
      {"--epsilon-start", "E0", train_salience, "anneal the gate's temperature from E0 down to --epsilon over the first half of training",
       [](options& o, const std::string& v) { o.epsilon_start = parse_double("--epsilon-start", v); }},
      {"--init", "none|idf-fit|FILE", train_salience,
       "start heads: none (every token alike, default), idf-fit (the FFN fitted to the IDF of the token ids: needs the token-id form "
       "or <vectors>/doc_token_ids.npy; training keeps it when no epoch beats it on the held-out queries) or a heads FILE",
       [](options& o, const std::string& v) {
         if (v.empty()) throw usage_error("--init needs none, idf-fit or a heads file, got an empty value");
         o.init = v;
       }},
      {"--temperature", "T", train_salience, "softmax temperature tau of the loss (default 20)",
       [](options& o, const std::string& v) { o.temperature = parse_double("--temperature", v); }},
      {"--objective", "score|tokens", train_salience,
       "score: cross-entropy of the salience-weighted score (SPEC 12, default); tokens: the kept query tokens' search should find the "
       "relevant document among the kept document tokens (for heads used to prune; trains the gates, so --alpha-query or --alpha-doc < 1)",
       [](options& o, const std::string& v) { o.objective = one_of("--objective", v, {"score", "tokens"}); }},
      {"--token-temperature", "T", train_salience, "--objective tokens: the softmax temperature of a query token's search (default 50)",
       [](options& o, const std::string& v) { o.token_temperature = parse_double("--token-temperature", v); }},
      {"--epochs", "N", train_salience, "at most N passes over the training queries (default 20)",
       [](options& o, const std::string& v) { o.epochs = parse_count("--epochs", v); }},
      {"--batch", "N", train_salience, "training queries per step (default 32)",
       [](options& o, const std::string& v) { o.batch = parse_count("--batch", v); }},
      {"--learning-rate", "R", train_salience, "Adam step size at the start, decayed to 10% on a cosine (default 0.01)",
       [](options& o, const std::string& v) { o.learning_rate = parse_double("--learning-rate", v); }},
      {"--hard-negatives", "N", train_salience, "negatives per query from an exhaustive search without salience (default 16)",
       [](options& o, const std::string& v) { o.hard_negatives = parse_count("--hard-negatives", v); }},
      {"--collection-negatives", "N", train_salience,
       "every step, N documents drawn at random from the whole collection join every query's negatives, weighted to stand for it "
       "(default 0)",
       [](options& o, const std::string& v) { o.collection_negatives = parse_count("--collection-negatives", v); }},
      {"--holdout", "F", train_salience, "fraction of the training queries held out for early stopping, in [0, 1) (default 0.1)",
       [](options& o, const std::string& v) { o.holdout = parse_double("--holdout", v); }},
      {"--patience", "N", train_salience, "epochs without a better held-out loss before stopping (default 3)",
       [](options& o, const std::string& v) { o.patience = parse_count("--patience", v); }},
      {"--ensemble", "N", train_salience,
       "train N heads with seeds --seed, --seed + 1, ... (each its own held-out queries) and write their mean (default 1)",
       [](options& o, const std::string& v) { o.ensemble = parse_count("--ensemble", v); }},
      {"--out", "FILE", index | gate | salience | train_salience,
       "file to write (index: the index file or directory; gate: lambda .npy; salience: u .npy; train-salience: the heads)",
       [](options& o, const std::string& v) { o.out = v; }},
  };
  return table;
}

std::string commands_of(unsigned bits) {
  static const std::pair<command, const char*> names[] = {{eval, "eval"},   {adapt, "adapt"}, {index, "index"},       {search, "search"},
                                                          {score, "score"}, {gate, "gate"},   {salience, "salience"}, {info, "info"},
                                                          {kernels, "kernels"}, {explain, "explain"}, {train_salience, "train-salience"}, {query, "query"}};
  std::string out;
  for (const auto& [bit, name] : names)
    if (bits & bit) (out.empty() ? out : out.append(", ")).append(name);
  return out;
}

}  // namespace

void options::require(std::string_view flag) const {
  if (!has(flag)) throw usage_error("missing required option " + std::string(flag));
}

options parse_options(int argc, char** argv, int first, command cmd, std::string_view name) {
  options o;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      o.help = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      if (cmd == info && o.index_file.empty()) {  // aligner info FILE
        o.index_file = a;
        continue;
      }
      throw usage_error("unexpected argument '" + a + "'");
    }
    std::string value;
    const auto eq = a.find('=');
    if (eq != std::string::npos) value = a.substr(eq + 1), a = a.substr(0, eq);
    const flag* f = nullptr;
    for (const auto& candidate : flags())
      if (candidate.name == a) f = &candidate;
    if (!f) throw usage_error("unknown option " + a);
    if (!(f->commands & cmd))
      throw usage_error(a + " does not apply to " + std::string(name) + " (it is an option of " + commands_of(f->commands) + ")");
    if (o.given.count(a)) throw usage_error(a + " given twice");
    if (f->metavar.empty()) {
      if (eq != std::string::npos) throw usage_error(a + " takes no value");
    } else if (eq == std::string::npos) {
      if (i + 1 >= argc) throw usage_error(a + " needs a value");
      value = argv[++i];
    }
    f->set(o, value);
    o.given.insert(a);
  }
  return o;
}

std::string flag_help(command cmd) {
  std::string out;
  for (const auto& f : flags()) {
    if (!(f.commands & cmd)) continue;
    // Appended piecewise: "literal" + std::string&& trips GCC 12's -Wrestrict false positive at -O3.
    std::string left = "  ";
    left.append(f.name);
    if (!f.metavar.empty()) left.append(" ").append(f.metavar);
    if (left.size() < 24)
      left.resize(24, ' ');
    else
      left.append("\n").append(24, ' ');
    out.append(left).append(f.help).append("\n");
  }
  return out;
}

}  // namespace cli
