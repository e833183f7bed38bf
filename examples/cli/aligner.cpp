// aligner: command-line tool over the library. `aligner --help` lists the subcommands, `aligner CMD --help`
// their options. Bad input exits with code 2 and a one-line reason on stderr; a progress bar goes to stderr
// during long steps when stderr is a terminal (or with --progress).
#include <aligner/aligner.hpp>
#include <aligner/eval/adapt.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/npy.hpp>
#ifdef ALIGNER_HAVE_FAISS
#include <aligner/backends/faiss.hpp>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
#include <aligner/backends/hnswlib.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

/// A usage error: exit code 2 with the message.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------------- arguments
class arguments {
 public:
  arguments(int argc, char** argv, int first, std::set<std::string> flags, std::set<std::string> switches)
      : flags_(std::move(flags)), switches_(std::move(switches)) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") { help_ = true; continue; }
      if (a.rfind("--", 0) != 0) throw usage_error("unexpected argument '" + a + "'");
      std::string value;
      const auto eq = a.find('=');
      if (eq != std::string::npos) value = a.substr(eq + 1), a = a.substr(0, eq);
      if (switches_.count(a)) {
        if (eq != std::string::npos) throw usage_error(a + " takes no value");
        values_[a] = "1";
        continue;
      }
      if (!flags_.count(a)) throw usage_error("unknown option " + a);
      if (eq == std::string::npos) {
        if (i + 1 >= argc) throw usage_error(a + " needs a value");
        value = argv[++i];
      }
      if (values_.count(a)) throw usage_error(a + " given twice");
      values_[a] = value;
    }
  }
  bool help() const { return help_; }
  bool has(const std::string& f) const { return values_.count(f) != 0; }
  std::string get(const std::string& f, const std::string& fallback = "") const {
    const auto it = values_.find(f);
    return it == values_.end() ? fallback : it->second;
  }
  std::string required(const std::string& f) const {
    if (!has(f)) throw usage_error("missing required option " + f);
    return get(f);
  }
  double number(const std::string& f, double fallback) const { return has(f) ? parse_double(f, get(f)) : fallback; }
  std::size_t count(const std::string& f, std::size_t fallback) const { return has(f) ? parse_size(f, get(f)) : fallback; }

  static double parse_double(const std::string& f, const std::string& v) {
    double x = 0;
    const auto res = std::from_chars(v.data(), v.data() + v.size(), x);
    if (res.ec != std::errc{} || res.ptr != v.data() + v.size()) throw usage_error(f + " expects a number, got '" + v + "'");
    return x;
  }
  static std::size_t parse_size(const std::string& f, const std::string& v) {
    std::size_t x = 0;
    const auto res = std::from_chars(v.data(), v.data() + v.size(), x);
    if (res.ec != std::errc{} || res.ptr != v.data() + v.size()) throw usage_error(f + " expects a non-negative integer, got '" + v + "'");
    return x;
  }

 private:
  std::set<std::string> flags_, switches_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

// ---------------------------------------------------------------------------------------------- progress
class progress {
 public:
  progress(std::string label, std::size_t total, bool enabled) : label_(std::move(label)), total_(total), enabled_(enabled) { draw(0); }
  ~progress() {
    if (enabled_) std::fprintf(stderr, "\n");
  }
  void tick() {
    const std::size_t done = ++done_;
    if (!enabled_) return;
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (done != total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    draw(done);
  }

 private:
  void draw(std::size_t done) const {
    if (!enabled_) return;
    const int width = 30, filled = total_ ? int(double(done) / double(total_) * width) : width;
    std::fprintf(stderr, "\r%-22s [%s%s] %3d%% (%zu/%zu)", label_.c_str(), std::string(std::size_t(filled), '=').c_str(),
                 std::string(std::size_t(width - filled), ' ').c_str(), total_ ? int(100.0 * double(done) / double(total_)) : 100,
                 done, total_);
    std::fflush(stderr);
  }
  std::string label_;
  std::size_t total_;
  bool enabled_;
  std::atomic<std::size_t> done_{0};
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_{};
};

bool progress_enabled(const arguments& a) { return a.has("--progress") || isatty(2); }

/// Runs body(i) for i in [0, n) on `threads` threads (0 = all cores).
template <class Body>
void parallel_for(std::size_t n, unsigned threads, Body body) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = unsigned(std::min<std::size_t>(threads, std::max<std::size_t>(n, 1)));
  std::atomic<std::size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    try {
      for (std::size_t i; (i = next.fetch_add(1)) < n;) body(i);
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
      next = n;
    }
  };
  if (threads == 1) {
    work();
  } else {
    std::vector<std::jthread> pool;
    for (unsigned t = 0; t != threads; ++t) pool.emplace_back(work);
  }
  if (error) std::rethrow_exception(error);
}

// ---------------------------------------------------------------------------------------------- backends
const char* backend_names() {
  return "exact"
#ifdef ALIGNER_HAVE_FAISS
         "|faiss-flat|faiss-hnsw"
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
         "|hnswlib"
#endif
      ;
}

/// Calls fn(backend) with a fresh backend of the named kind.
template <class Fn>
void with_backend(const std::string& name, std::size_t dim, Fn&& fn) {
  if (name == "exact") return fn(aligner::exact_backend(dim));
#ifdef ALIGNER_HAVE_FAISS
  if (name == "faiss-flat") return fn(aligner::faiss_backend(std::make_unique<faiss::IndexFlatIP>(dim)));
  if (name == "faiss-hnsw") {
    auto index = std::make_unique<faiss::IndexHNSWFlat>(int(dim), 16, faiss::METRIC_INNER_PRODUCT);
    index->hnsw.efConstruction = 80;
    auto params = std::make_shared<faiss::SearchParametersHNSW>();
    params->efSearch = 128;
    return fn(aligner::faiss_backend(std::move(index), params));
  }
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
  if (name == "hnswlib") return fn(aligner::hnswlib_backend(dim, {.ef_construction = 80, .ef_search = 128}));
#endif
  throw usage_error("--backend must be one of " + std::string(backend_names()) + ", got '" + name + "'");
}

// ---------------------------------------------------------------------------------------------- collection runs
struct retrieval_setup {
  aligner::io::collection c;
  std::vector<float> uq, ud;   // salience per token (empty: none)
  std::vector<std::size_t> judged;  // query indices with judgments
};

retrieval_setup load_setup(const arguments& a) {
  retrieval_setup s;
  s.c = aligner::io::load_collection(a.required("--collection"), a.get("--vectors", "glove100"), a.get("--split", "test"));
  const std::string salience = a.get("--salience", "none");
  if (salience == "idf") {
    if (s.c.queries.token_ids.empty()) throw usage_error("--salience idf needs the token-id vectors form (embeddings.npy)");
    const auto idf = aligner::token_idf(s.c.docs, s.c.vocab_size);
    s.uq = aligner::lookup_salience(s.c.queries, idf);
    s.ud = aligner::lookup_salience(s.c.docs, idf);
  } else if (salience != "none") {
    throw usage_error("--salience must be none or idf, got '" + salience + "'");
  }
  for (std::size_t q = 0; q != s.c.queries.size(); ++q)
    if (s.c.judgments.count(s.c.queries.ids[q])) s.judged.push_back(q);
  return s;
}

aligner::search_params search_params_of(const arguments& a) {
  const std::string candidates = a.get("--candidates", "all");
  const bool exhaustive = candidates == "all";
  aligner::search_params p{.norm = aligner::parse_normalization(a.get("--normalize", "mean")),
                           .candidates_per_token = exhaustive ? 1 : arguments::parse_size("--candidates", candidates),
                           .top = a.count("--top", 1000),
                           .exhaustive = exhaustive,
                           .query_prune = a.number("--prune-query", 1.0)};
  if (!exhaustive && p.candidates_per_token == 0) throw usage_error("--candidates must be 'all' or an integer >= 1, got 0");
  return p;
}

/// Ranks every judged query of `s` with `index` under every strategy: runs[g] is the run of strategies[g].
template <class Index>
std::vector<aligner::io::run> rank_with(const arguments& a, const Index& index, const retrieval_setup& s,
                                        const std::vector<aligner::alignment>& strategies) {
  const aligner::search_params p = search_params_of(a);
  if (p.query_prune != 1.0 && s.uq.empty()) throw usage_error("--prune-query below 1 needs a salience (--salience idf)");
  if (index.size() != s.c.docs.size())
    throw usage_error("the index holds " + std::to_string(index.size()) + " documents, the collection " + std::to_string(s.c.docs.size()));
  std::vector<std::vector<aligner::search_result>> results(s.judged.size());
  {
    progress bar("ranking queries", s.judged.size(), progress_enabled(a));
    parallel_for(s.judged.size(), unsigned(a.count("--threads", 1)), [&](std::size_t i) {
      const std::size_t q = s.judged[i];
      aligner::search_params qp = p;
      if (!s.uq.empty())
        qp.query_salience = std::span<const float>(s.uq).subspan(std::size_t(s.c.queries.offsets[q]), s.c.queries.view().length(q));
      results[i] = index.search_multi(s.c.queries.sequence(q), strategies, qp);
      bar.tick();
    });
  }
  std::vector<aligner::io::run> runs(strategies.size());
  for (std::size_t g = 0; g != strategies.size(); ++g)
    for (std::size_t i = 0; i != s.judged.size(); ++i) {
      auto& entries = runs[g][s.c.queries.ids[s.judged[i]]];
      const auto& r = results[i][g];
      for (std::size_t k = 0; k != r.ids.size(); ++k) entries.push_back({s.c.docs.ids[std::size_t(r.ids[k])], r.scores[k]});
    }
  return runs;
}

/// Builds a retriever over the collection's documents with the chosen backend and calls fn(retriever).
template <class Fn>
void build_index(const arguments& a, const retrieval_setup& s, Fn&& fn) {
  const double prune_doc = a.number("--prune-doc", 1.0);
  if (prune_doc != 1.0 && s.ud.empty()) throw usage_error("--prune-doc below 1 needs a salience (--salience idf)");
  with_backend(a.get("--backend", "exact"), s.c.docs.dim, [&](auto backend) {
    using backend_t = decltype(backend);
    std::unique_ptr<aligner::aligner_retriever<backend_t>> index;
    {
      progress bar("indexing", 1, progress_enabled(a));
      const std::string st = a.get("--storage", "f32");
      aligner::storage precision = aligner::storage::f32;
      if (!aligner::parse_storage(st, precision)) throw usage_error("--storage must be f32, bf16, f16 or i8, got '" + st + "'");
      index = std::make_unique<aligner::aligner_retriever<backend_t>>(
          std::move(backend), s.c.docs.view(),
          aligner::index_params{.doc_prune = prune_doc, .precision = precision}, s.ud);
      bar.tick();
    }
    fn(*index);
  });
}

/// Ranks every judged query under every strategy with a freshly built index.
std::vector<aligner::io::run> rank_queries(const arguments& a, const retrieval_setup& s,
                                           const std::vector<aligner::alignment>& strategies) {
  search_params_of(a);  // validate the search options before the (possibly long) build
  std::vector<aligner::io::run> runs;
  build_index(a, s, [&](const auto& index) { runs = rank_with(a, index, s, strategies); });
  return runs;
}

/// Prints the eval lines and writes the run of the first strategy.
void report(const arguments& a, const retrieval_setup& s, const std::vector<aligner::alignment>& strategies,
            const std::vector<aligner::io::run>& runs) {
  for (std::size_t g = 0; g != strategies.size(); ++g) {
    const auto ndcg = aligner::ndcg_at(10, runs[g], s.c.judgments);
    std::printf("%s ndcg@10=%.4f mrr@10=%.4f recall@100=%.4f queries=%zu\n", strategies[g].name().c_str(), ndcg.mean,
                aligner::mrr_at(10, runs[g], s.c.judgments).mean, aligner::recall_at(100, runs[g], s.c.judgments).mean, ndcg.queries);
  }
  if (a.has("--run")) aligner::io::save_run(a.get("--run"), runs[0], "aligner-" + strategies[0].name());
}


// ---------------------------------------------------------------------------------------------- subcommands
const char* kEvalHelp = R"(usage: aligner eval --collection DIR --strategy S[,S...] [options]

Ranks every judged query of a collection and prints, per strategy, one line
  STRATEGY ndcg@10=0.xxxx mrr@10=0.xxxx recall@100=0.xxxx queries=N
Strategies: top1, topk:K, topp:P, dense.

  --collection DIR      collection folder (BEIR files + vectors folder)
  --vectors NAME        vectors subfolder (default glove100)
  --split NAME          qrels split (default test)
  --strategy S[,S...]   alignment strategies (required)
  --normalize mean|none divide by Z (default mean) or return the ColBERT sum
  --candidates all|K    all: rerank every document (default); K: token-MIPS k' per query token
  --backend NAME        MIPS backend for --candidates K: )";

int cmd_eval(const arguments& a) {
  if (a.help()) {
    std::printf("%s%s (default exact)\n%s", kEvalHelp, backend_names(), R"(  --prune-query B       keep the top B of each query's tokens for the token search (needs --salience)
  --prune-doc B         keep the top B of each document's tokens in the token index (needs --salience)
  --salience none|idf   idf: token IDF over the collection as query and document salience
  --storage f32|bf16|f16|i8
                        precision of the rerank token store (default f32; bf16 and f16 halve its
                        memory, i8 (per-token scale) quarters it)
  --top N               results per query (default 1000)
  --run FILE            write the TREC run of the first strategy
  --threads T           worker threads (default 1; 0 = all cores)
  --progress            progress bar on stderr even when it is not a terminal
)");
    return 0;
  }
  const auto strategies = aligner::parse_grid(a.required("--strategy"));
  const auto s = load_setup(a);
  report(a, s, strategies, rank_queries(a, s, strategies));
  return 0;
}

int cmd_index(const arguments& a) {
  if (a.help()) {
    std::printf("%s%s (default exact)\n%s", R"(usage: aligner index --collection DIR --out INDEX [options]

Builds a retriever over the collection's documents and saves it atomically to INDEX (checksummed; loading
verifies it and memory-maps the token store).

  --collection DIR      collection folder
  --vectors NAME        vectors subfolder (default glove100)
  --out INDEX           index file to write
  --backend NAME        token MIPS backend: )", backend_names(), R"(  --prune-doc B         keep the top B of each document's tokens in the token index (needs --salience)
  --salience none|idf   idf: token IDF as document salience (stored in the index, used by search)
  --storage f32|bf16|f16|i8
                        precision of the stored token vectors (default f32)
  --progress            progress bar on stderr even when it is not a terminal
)");
    return 0;
  }
  const auto s = load_setup(a);
  const std::string out = a.required("--out");
  build_index(a, s, [&](const auto& index) {
    index.save(out, a.get("--backend", "exact"));
    std::printf("indexed %zu documents, %zu of %zu tokens in the token index, into %s\n", index.size(), index.indexed_tokens(),
                s.c.docs.tokens(), out.c_str());
  });
  return 0;
}

int cmd_search(const arguments& a) {
  if (a.help()) {
    std::printf(R"(usage: aligner search --index INDEX --collection DIR --strategy S[,S...] [options]

Loads INDEX (built by aligner index from the same collection), ranks the collection's judged queries and
prints the lines of aligner eval. Options as eval: --vectors, --split, --normalize, --candidates all|K
(default all), --prune-query, --salience none|idf (query salience; must match the index), --top, --run,
--threads, --progress; plus --no-mmap to read the index instead of mapping it.
)");
    return 0;
  }
  const auto strategies = aligner::parse_grid(a.required("--strategy"));
  const std::string path = a.required("--index");
  const std::string kind = aligner::read_index_label(path);
  const auto s = load_setup(a);
  const aligner::load_options options{.mmap = !a.has("--no-mmap"), .expected_dim = s.c.docs.dim};
  bool done = false;
  auto run_with = [&](const auto& index) {
    report(a, s, strategies, rank_with(a, index, s, strategies));
    done = true;
  };
  if (kind == "exact" || kind.empty()) run_with(aligner::aligner_retriever<aligner::exact_backend>::load(path, options));
#ifdef ALIGNER_HAVE_FAISS
  if (kind == "faiss-flat" || kind == "faiss-hnsw") run_with(aligner::aligner_retriever<aligner::faiss_backend>::load(path, options));
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
  if (kind == "hnswlib") run_with(aligner::aligner_retriever<aligner::hnswlib_backend>::load(path, options));
#endif
  if (!done) throw usage_error(path + ": index built with backend '" + kind + "', which this build of aligner does not have");
  return 0;
}

int cmd_adapt(const arguments& a) {
  if (a.help()) {
    std::printf(R"(usage: aligner adapt --collection DIR [options]

Few-shot alignment adaptation with the paper's protocol: the judged queries are shuffled (seeded) and cut
into folds of --shots queries; on each fold the strategy of the grid with the best mean nDCG@10 is chosen
(ties to the earlier strategy) and evaluated on every other query. Prints each fold's choice, then the
mean +- std (over folds) of the adapted strategy next to Top-1's on the same held-out queries.

  --collection DIR      collection folder
  --vectors NAME        vectors subfolder (default glove100)
  --split NAME          qrels split (default test)
  --shots N             labelled queries per fold (default 8)
  --grid paper|S,S,...  strategy grid (default paper: topk 1,2,4,6,8 and topp 0.5%%,1%%,1.5%%,2%%)
  --seed N              shuffle seed (default 0)
  --normalize mean|none, --candidates all|K, --backend NAME, --salience none|idf, --top N, --threads T,
  --progress            as for eval
)");
    return 0;
  }
  // Columns: the grid (choices), then Top-1 as the reported baseline when the grid lacks it.
  auto columns = aligner::parse_grid(a.get("--grid", "paper"));
  const std::size_t choices = columns.size();
  std::size_t baseline = std::size_t(std::find(columns.begin(), columns.end(), aligner::alignment::top1()) - columns.begin());
  if (baseline == choices) columns.push_back(aligner::alignment::top1());
  const auto s = load_setup(a);
  const auto runs = rank_queries(a, s, columns);
  aligner::strategy_table table;
  table.grid = columns;
  std::vector<aligner::metric_result> per(columns.size());
  for (std::size_t g = 0; g != columns.size(); ++g) per[g] = aligner::ndcg_at(10, runs[g], s.c.judgments, true);
  for (const auto& [qid, value] : per[0].per_query) table.query_ids.push_back(qid);
  for (const auto& qid : table.query_ids)
    for (std::size_t g = 0; g != columns.size(); ++g) table.values.push_back(per[g].per_query.at(qid));
  const std::size_t shots = a.count("--shots", 8);
  const std::uint64_t seed = a.count("--seed", 0);
  const auto result = aligner::fold_protocol(table, shots, seed, baseline, choices);
  for (std::size_t f = 0; f != result.folds.size(); ++f) {
    const auto& fold = result.folds[f];
    std::printf("fold %zu: chose %s (fold ndcg@10=%.4f) held-out ndcg@10=%.4f top1=%.4f\n", f + 1,
                columns[fold.choice.best].name().c_str(), fold.choice.means[fold.choice.best], fold.held_out, fold.top1_held_out);
  }
  std::vector<std::size_t> all(table.query_ids.size());
  for (std::size_t q = 0; q != all.size(); ++q) all[q] = q;
  std::printf("grid means over all %zu queries:", all.size());
  for (std::size_t g = 0; g != choices; ++g) std::printf(" %s=%.4f", columns[g].name().c_str(), table.mean(g, all));
  std::printf("\nadapted ndcg@10=%.4f +- %.4f top1 ndcg@10=%.4f +- %.4f folds=%zu shots=%zu seed=%llu\n", result.mean,
              result.stddev, result.top1_mean, result.top1_stddev, result.folds.size(), shots, static_cast<unsigned long long>(seed));
  return 0;
}

struct npy_sequences {
  aligner::io::npy_array<float> vectors;
  std::vector<std::int64_t> offsets;
  aligner::sequence_set_view view() const {
    return {{vectors.values.data(), vectors.shape[0], vectors.shape[1]}, offsets};
  }
};

npy_sequences load_sequences(const std::string& vectors_file, const std::string& offsets_file) {
  npy_sequences s;
  s.vectors = aligner::io::load_npy<float>(vectors_file);
  if (s.vectors.shape.size() != 2) throw usage_error(vectors_file + ": expected a 2-d array [tokens, dim]");
  auto off = aligner::io::load_npy<std::int64_t>(offsets_file);
  if (off.shape.size() != 1) throw usage_error(offsets_file + ": expected a 1-d array of offsets");
  s.offsets = std::move(off.values);
  try {
    aligner::detail::check_offsets(s.offsets, s.vectors.shape[0], "offsets");
  } catch (const aligner::invalid_argument& e) {
    throw usage_error(offsets_file + ": " + e.what());
  }
  return s;
}

std::vector<float> load_vector(const std::string& file, std::size_t expected, const char* what) {
  auto v = aligner::io::load_npy<float>(file);
  if (v.values.size() != expected)
    throw usage_error(file + ": " + what + " has " + std::to_string(v.values.size()) + " values, expected " + std::to_string(expected));
  return std::move(v.values);
}

int cmd_score(const arguments& a) {
  if (a.help()) {
    std::printf(R"(usage: aligner score --queries Q.npy --query-offsets QO.npy --docs D.npy --doc-offsets DO.npy --strategy S
                    [--query-salience UQ.npy] [--doc-salience UD.npy] [--normalize mean|none]

Prints query_index<TAB>doc_index<TAB>score for every pair (9 significant digits). Q.npy/D.npy: float32 or
float16 [tokens, dim]; offsets: int64/int32 [sequences + 1]; saliences: float [tokens].
)");
    return 0;
  }
  const auto q = load_sequences(a.required("--queries"), a.required("--query-offsets"));
  const auto d = load_sequences(a.required("--docs"), a.required("--doc-offsets"));
  const auto strategy = aligner::alignment::parse(a.required("--strategy"));
  const auto norm = aligner::parse_normalization(a.get("--normalize", "mean"));
  std::vector<float> uq, ud;
  if (a.has("--query-salience")) uq = load_vector(a.get("--query-salience"), q.vectors.shape[0], "query salience");
  if (a.has("--doc-salience")) ud = load_vector(a.get("--doc-salience"), d.vectors.shape[0], "document salience");
  if (q.vectors.shape[0] && d.vectors.shape[0] && q.vectors.shape[1] != d.vectors.shape[1])
    throw usage_error("query dim " + std::to_string(q.vectors.shape[1]) + " differs from document dim " + std::to_string(d.vectors.shape[1]));
  const auto qv = q.view(), dv = d.view();
  std::vector<float> scores(dv.size());
  std::string out;
  char line[96];
  for (std::size_t i = 0; i != qv.size(); ++i) {
    aligner::score_params p{.strategy = strategy, .norm = norm, .doc_salience = ud};
    if (!uq.empty()) p.query_salience = std::span<const float>(uq).subspan(std::size_t(qv.offsets[i]), qv.length(i));
    aligner::score_batch(qv.sequence(i), dv, scores, p);
    for (std::size_t j = 0; j != scores.size(); ++j) {
      const int n = std::snprintf(line, sizeof line, "%zu\t%zu\t%.9g\n", i, j, double(scores[j]));
      out.append(line, std::size_t(n));
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int cmd_gate(const arguments& a) {
  if (a.help()) {
    std::printf(R"(usage: aligner gate --scores S.npy --k K --epsilon E [--iterations N | --exact] --out L.npy

Entropy-regularised top-k gate: writes lambda (same shape as S; a 2-d S is solved row by row). --exact
(default) is the sort-based solver; --iterations N runs exactly N steps of the paper's iteration (a, b start at
0; lambda from the last a and b) and reports on stderr whether sum(lambda) reached k to 1e-6.
)");
    return 0;
  }
  auto s = aligner::io::load_npy<float>(a.required("--scores"));
  const double k = arguments::parse_double("--k", a.required("--k"));
  const double eps = arguments::parse_double("--epsilon", a.required("--epsilon"));
  if (a.has("--iterations") && a.has("--exact")) throw usage_error("--iterations and --exact exclude each other");
  if (s.shape.size() > 2) throw usage_error("--scores must be a 1-d or 2-d array");
  const std::size_t rows = s.shape.size() == 2 ? s.shape[0] : 1, cols = s.shape.size() == 2 ? s.shape[1] : s.values.size();
  std::vector<float> lambda(s.values.size());
  for (std::size_t r = 0; r != rows; ++r) {
    const std::span<const float> row(s.values.data() + r * cols, cols);
    if (a.has("--iterations")) {
      // Exactly N steps (tolerance 0: only an exact fixed point stops earlier); convergence is judged afterwards.
      const auto it = aligner::iterate_gate(row, k, eps, {.max_iterations = a.count("--iterations", 0), .tolerance = 0.0});
      std::copy(it.lambda.begin(), it.lambda.end(), lambda.begin() + std::ptrdiff_t(r * cols));
      double total = 0.0;
      for (float l : it.lambda) total += l;
      const double target = std::clamp(k, 0.0, double(cols));
      const bool converged = std::abs(total - target) <= 1e-6 * std::max(target, 1.0);
      std::fprintf(stderr, "row %zu: %zu iterations, sum(lambda) = %.9g, %s\n", r, it.iterations, total,
                   converged ? "converged" : "not converged");
    } else {
      aligner::solve_gate(row, k, eps, std::span<float>(lambda).subspan(r * cols, cols));
    }
  }
  aligner::io::save_npy<float>(a.required("--out"), lambda, s.shape);
  return 0;
}

int cmd_salience(const arguments& a) {
  if (a.help()) {
    std::printf(R"(usage: aligner salience --tokens X.npy --weights W.npy --bias B [--budget A --epsilon E] --out U.npy

Writes u = lambda * ReLU(X w + b) for the tokens X [tokens, dim]; lambda is 1 without --budget, else the exact
top-k gate of ReLU(X w + b) with budget k = ceil(A * tokens) and temperature E.
)");
    return 0;
  }
  auto x = aligner::io::load_npy<float>(a.required("--tokens"));
  if (x.shape.size() != 2) throw usage_error("--tokens must be a 2-d array [tokens, dim]");
  auto w = aligner::io::load_npy<float>(a.required("--weights"));
  const double bias = arguments::parse_double("--bias", a.required("--bias"));
  if (a.has("--budget") != a.has("--epsilon")) throw usage_error("--budget and --epsilon go together");
  std::optional<aligner::gate_params> gate;
  if (a.has("--budget")) gate = aligner::gate_params{.alpha = a.number("--budget", 0.5), .epsilon = a.number("--epsilon", 0.002)};
  const aligner::salience_scorer f(w.values, float(bias), gate);
  const auto u = f({x.values.data(), x.shape[0], x.shape[1]});
  aligner::io::save_npy<float>(a.required("--out"), u, {x.shape[0]});
  return 0;
}

const char* kHelp = R"(usage: aligner COMMAND [options]     (aligner COMMAND --help for its options)

commands:
  eval      rank a collection's judged queries with one or more alignment strategies; print nDCG@10, MRR@10, R@100
  adapt     few-shot alignment adaptation with the paper's fold protocol
  score     score every query against every document from .npy token matrices
  gate      entropy-regularised top-k gate of a score vector
  salience  salience u = lambda * ReLU(X w + b) of token vectors
  index     build a retriever over a collection and save it (checksummed, atomic)
  search    load a saved index and rank a collection's judged queries
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::printf("%s", kHelp);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const std::set<std::string> collection_flags = {"--collection", "--vectors", "--split", "--normalize", "--candidates", "--backend",
                                                  "--prune-query", "--prune-doc", "--salience", "--top", "--threads", "--storage"};
  try {
    if (cmd == "eval") {
      auto flags = collection_flags;
      flags.insert({"--strategy", "--run"});
      return cmd_eval(arguments(argc, argv, 2, flags, {"--progress"}));
    }
    if (cmd == "adapt") {
      auto flags = collection_flags;
      flags.insert({"--shots", "--grid", "--seed"});
      return cmd_adapt(arguments(argc, argv, 2, flags, {"--progress"}));
    }
    if (cmd == "index") {
      return cmd_index(arguments(argc, argv, 2, {"--collection", "--vectors", "--split", "--out", "--backend", "--prune-doc", "--salience", "--storage"},
                                 {"--progress"}));
    }
    if (cmd == "search") {
      auto flags = collection_flags;
      flags.insert({"--index", "--strategy", "--run"});
      return cmd_search(arguments(argc, argv, 2, flags, {"--progress", "--no-mmap"}));
    }
    if (cmd == "score")
      return cmd_score(arguments(argc, argv, 2, {"--queries", "--query-offsets", "--docs", "--doc-offsets", "--strategy",
                                                 "--query-salience", "--doc-salience", "--normalize"}, {}));
    if (cmd == "gate") return cmd_gate(arguments(argc, argv, 2, {"--scores", "--k", "--epsilon", "--iterations", "--out"}, {"--exact"}));
    if (cmd == "salience")
      return cmd_salience(arguments(argc, argv, 2, {"--tokens", "--weights", "--bias", "--budget", "--epsilon", "--out"}, {}));
    throw usage_error("unknown command '" + cmd + "' (aligner --help lists them)");
  } catch (const usage_error& e) {
    std::fprintf(stderr, "aligner %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const aligner::invalid_argument& e) {
    std::fprintf(stderr, "aligner %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const aligner::io_error& e) {
    std::fprintf(stderr, "aligner %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "aligner %s: internal error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
