// Runs over a collection folder: loading it (with salience), building an index, ranking the judged queries,
// reporting the metrics. Shared by eval, adapt, index and search.
#pragma once

#include <aligner/aligner.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/index_directory.hpp>
#include <aligner/io/npy.hpp>
#include <aligner/io/salience_heads.hpp>
#include <aligner/io/trec.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "backends.hpp"
#include "options.hpp"
#include "progress.hpp"

namespace cli {

struct retrieval_setup {
  aligner::io::collection c;
  std::vector<float> uq, ud;        ///< salience per token (empty: none)
  std::vector<std::size_t> judged;  ///< query indices with judgments
};

/// Token ids of one side: those the collection loaded (token-id form), else the dense form's <side>_token_ids.npy
/// when the folder has one (checked against the side's token count), else none.
inline std::vector<std::int32_t> token_ids_of(const aligner::io::token_sequences& side, const std::filesystem::path& vdir, const std::string& name) {
  if (!side.token_ids.empty()) return side.token_ids;
  const auto file = vdir / (name + "_token_ids.npy");
  if (!std::filesystem::exists(file)) return {};
  auto ids = aligner::io::load_npy<std::int32_t>(file);
  if (ids.values.size() != side.tokens())
    throw aligner::io_error(file.string() + ": " + std::to_string(ids.values.size()) + " token ids for " + std::to_string(side.tokens()) + " tokens");
  return std::move(ids.values);
}

/// Loads --collection with its --vectors and --split (`with_judgments` false: documents and queries only) and the
/// --salience.
inline retrieval_setup load_setup(const options& o, bool with_judgments = true, bool with_documents = true) {
  o.require("--collection");
  retrieval_setup s;
  s.c = aligner::io::load_collection(o.collection, o.vectors, with_judgments ? o.split : std::string(), with_documents);
  if (o.salience == "idf") {
    if (s.c.queries.token_ids.empty()) throw usage_error("--salience idf needs the token-id vectors form (embeddings.npy)");
    const auto idf = aligner::token_idf(s.c.docs, s.c.vocab_size);
    s.uq = aligner::lookup_salience(s.c.queries, idf);
    s.ud = aligner::lookup_salience(s.c.docs, idf);
  } else if (o.salience != "none") {  // learned heads (aligner train-salience)
    const auto file = aligner::io::load_salience_heads(o.salience);
    if (file.heads.dim() != s.c.queries.dim)
      throw usage_error("--salience " + o.salience + " holds heads of dim " + std::to_string(file.heads.dim()) + ", the collection's vectors have dim " +
                        std::to_string(s.c.queries.dim));
    s.uq = file.heads.query(s.c.queries.view(), false);
    if (with_documents) s.ud = file.heads.doc(s.c.docs.view(), false);
  }
  for (std::size_t q = 0; q != s.c.queries.size(); ++q)
    if (s.c.judgments.count(s.c.queries.ids[q])) s.judged.push_back(q);
  if (o.query_limit != 0 && s.judged.size() > o.query_limit) {  // --query-limit: the first N, and only their judgments
    s.judged.resize(o.query_limit);
    aligner::io::qrels kept;
    for (const std::size_t q : s.judged) kept.insert(s.c.judgments.extract(s.c.queries.ids[q]));
    s.c.judgments = std::move(kept);
  }
  return s;
}

/// The search_params of the ranking flags. `index_salience`: the documents' salience may come from a saved index
/// (aligner query), so --rerank-weights off means something without a query salience.
inline aligner::search_params search_params_of(const options& o, const retrieval_setup& s, bool index_salience = false) {
  if (o.prune_query != 1.0 && s.uq.empty()) throw usage_error("--prune-query below 1 needs a salience (--salience idf or FILE)");
  if (!o.postings && o.has("--nprobe")) throw usage_error("--nprobe needs --candidates postings");
  if (!o.postings && !o.candidates && o.has("--ndocs"))
    throw usage_error("--ndocs needs candidates to cut (--candidates K or --candidates postings); --candidates all reranks every document");
  if (o.has("--rerank-weights") && o.salience == "none" && s.uq.empty() && !index_salience) throw usage_error("--rerank-weights needs a salience (--salience idf or FILE)");
  return {.norm = o.norm,
          .candidates_per_token = o.candidates.value_or(1),
          .top = o.top,
          .exhaustive = !o.candidates.has_value() && !o.postings,
          .nprobe = o.postings ? o.nprobe : 0,
          .ndocs = o.postings || o.has("--ndocs") ? o.ndocs : 0,  // the token search's default: no cut
          .query_prune = o.prune_query,
          .use_doc_salience = o.rerank_weights,
          .use_query_salience = o.rerank_weights};
}

/// The runs of every strategy (runs[g] is the run of strategies[g]) and what producing them cost.
struct ranking {
  std::vector<aligner::io::run> runs;
  double candidates = 0;    ///< documents reranked per query (mean)
  double ms_per_query = 0;  ///< wall time of one query's search (mean over queries, each on one thread)
};

/// Ranks `queries` (with `salience`: one value a token, or empty) through `batch(view, salience)`, an index's
/// search_batch or search_batch_multi, in chunks of 16 queries a worker and in order, so that a progress bar moves:
/// exhaustive searches sweep each document once for a block of queries, and the exact backend's token search scans
/// its index once for a block's rows. take(q, result, seconds) receives each query's result and its share of its
/// chunk's wall time times the threads (its time on one thread).
template <class Batch, class Take>
void rank_in_chunks(const aligner::sequence_set_view& queries, std::span<const float> salience, unsigned threads, Batch&& batch, Take&& take) {
  const std::size_t n = queries.size(), chunk = 16 * std::size_t(aligner::worker_count(n, threads));
  for (std::size_t c0 = 0; c0 < n; c0 += chunk) {
    const std::size_t c1 = std::min(n, c0 + chunk), first = std::size_t(queries.offsets[c0]);
    std::vector<std::int64_t> part(queries.offsets.begin() + std::ptrdiff_t(c0), queries.offsets.begin() + std::ptrdiff_t(c1) + 1);
    for (auto& v : part) v -= std::int64_t(first);
    const std::size_t rows = std::size_t(part.back());
    const aligner::sequence_set_view view{queries.tokens.middle_rows(first, rows), part};
    const auto t0 = std::chrono::steady_clock::now();
    auto got = batch(view, salience.empty() ? salience : salience.subspan(first, rows));
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double share = wall * double(aligner::worker_count(c1 - c0, threads)) / double(c1 - c0);
    for (std::size_t q = c0; q != c1; ++q) take(q, std::move(got[q - c0]), share);
  }
}

/// Ranks every judged query of `s` with `index` under every strategy. Results are named by `doc_names` (by id;
/// default: the collection's document ids, whose count must match the index's).
template <class Index>
ranking rank_with(const options& o, const Index& index, const retrieval_setup& s, const std::vector<aligner::alignment>& strategies,
                  const std::vector<std::string>* doc_names = nullptr) {
  const aligner::search_params p = search_params_of(o, s);
  if (!doc_names && index.size() != s.c.docs.size())
    throw usage_error("the index holds " + std::to_string(index.size()) + " documents, the collection " + std::to_string(s.c.docs.size()));
  const std::vector<std::string>& names = doc_names ? *doc_names : s.c.docs.ids;
  std::vector<std::vector<aligner::search_result>> results(s.judged.size());
  std::vector<double> seconds(s.judged.size());
  constexpr bool batches = requires(const Index& i, aligner::sequence_set_view v, std::span<const aligner::alignment> g,
                                    std::span<const float> u) { i.search_batch_multi(v, g, aligner::search_params{}, u, 1u); };
  progress bar("ranking queries", s.judged.size(), o.progress);
  if constexpr (batches) {
    // The judged queries, back to back, go to search_batch_multi in chunks (rank_in_chunks).
    const std::size_t dim = s.c.queries.dim;
    std::vector<float> rows, uq;
    std::vector<std::int64_t> offsets{0};
    for (const std::size_t q : s.judged) {
      const auto seq = s.c.queries.sequence(q);
      for (std::size_t r = 0; r != seq.rows; ++r) rows.insert(rows.end(), seq.row(r), seq.row(r) + dim);
      offsets.push_back(offsets.back() + std::int64_t(seq.rows));
      if (!s.uq.empty()) {
        const auto* u = s.uq.data() + s.c.queries.offsets[q];
        uq.insert(uq.end(), u, u + seq.rows);
      }
    }
    const aligner::sequence_set_view judged{{rows.data(), std::size_t(offsets.back()), dim}, offsets};
    rank_in_chunks(
        judged, uq, o.threads,
        [&](const aligner::sequence_set_view& view, std::span<const float> u) { return index.search_batch_multi(view, strategies, p, u, o.threads); },
        [&](std::size_t i, std::vector<aligner::search_result> got, double share) {
          results[i] = std::move(got);
          seconds[i] = share;
          bar.tick();
        });
  } else {
    aligner::parallel_for(s.judged.size(), o.threads, [&](std::size_t i) {
      const std::size_t q = s.judged[i];
      aligner::search_params qp = p;
      if (!s.uq.empty())
        qp.query_salience = std::span<const float>(s.uq).subspan(std::size_t(s.c.queries.offsets[q]), s.c.queries.view().length(q));
      const auto t0 = std::chrono::steady_clock::now();
      results[i] = index.search_multi(s.c.queries.sequence(q), strategies, qp);
      seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      bar.tick();
    });
  }
  ranking out;
  out.runs.resize(strategies.size());
  for (std::size_t g = 0; g != strategies.size(); ++g)
    for (std::size_t i = 0; i != s.judged.size(); ++i) {
      auto& entries = out.runs[g][s.c.queries.ids[s.judged[i]]];
      const auto& r = results[i][g];
      for (std::size_t k = 0; k != r.ids.size(); ++k) entries.push_back({names[std::size_t(r.ids[k])], r.scores[k]});
    }
  for (std::size_t i = 0; i != s.judged.size(); ++i) {
    out.candidates += double(results[i].empty() ? 0 : results[i][0].candidates_scored);
    out.ms_per_query += 1e3 * seconds[i];
  }
  if (!s.judged.empty()) {
    out.candidates /= double(s.judged.size());
    out.ms_per_query /= double(s.judged.size());
  }
  return out;
}

/// --codec INDEX: the residual codec of an index file or index directory, checked against the build (--storage
/// residual:N with its N, the collection's dim unless 0, no flag that would train one); null without the flag.
inline std::shared_ptr<const aligner::residual_codec> codec_from(const options& o, std::size_t dim) {
  if (o.codec_from.empty()) return nullptr;
  if (!o.residual_bits) throw usage_error("--codec needs --storage residual:N (the codec's N)");
  if (o.centroids || o.has("--anisotropy")) throw usage_error("--codec gives a trained codec: --centroids and --anisotropy would train one");
  std::shared_ptr<const aligner::residual_codec> codec;
  if (std::filesystem::is_directory(o.codec_from))
    codec = aligner::index_directory_reader(o.codec_from).snapshot()->codec;
  else
    aligner::with_saved_index(o.codec_from, {.mmap = true}, [&](const auto& index) { codec = index.store().codec(); });
  if (!codec) throw usage_error("--codec " + o.codec_from + ": not a residual index (it holds no codec)");
  if (dim && codec->dim() != dim)
    throw usage_error("--codec " + o.codec_from + ": the codec has dim " + std::to_string(codec->dim()) + ", the collection " + std::to_string(dim));
  if (codec->nbits() != o.residual_bits)
    throw usage_error("--codec " + o.codec_from + " codes " + std::to_string(codec->nbits()) + " bits a component, --storage residual:" +
                      std::to_string(o.residual_bits) + " asks for " + std::to_string(o.residual_bits));
  return codec;
}

/// Builds a retriever over the collection's documents with --backend, --storage, --prune-doc and --dedup; calls fn(retriever).
/// `ranks_now` (eval, adapt): the index is only ranked with now, so its token index is built only for --candidates K
/// (token candidates), and the flags that shape a token index are refused without it instead of being ignored.
template <class Fn>
void build_index(const options& o, const retrieval_setup& s, Fn&& fn, bool ranks_now = false) {
  const bool token_candidates = o.candidates.has_value();
  if (ranks_now && !token_candidates)
    for (const char* flag : {"--backend", "--dedup", "--prune-doc", "--token-index", "--nlist", "--ivf-nprobe"})
      if (o.has(flag))
        throw usage_error(std::string(flag) + " shapes the token index, which only --candidates K uses (without it every document is " +
                          (o.postings ? "found through centroid postings" : "reranked") + ")");
  if (o.prune_doc != 1.0 && s.ud.empty()) throw usage_error("--prune-doc below 1 needs a salience (--salience idf or FILE)");
  aligner::storage precision = aligner::storage::f32;
  if (o.residual_bits) precision = aligner::storage::residual;
  else aligner::parse_storage(o.storage, precision);  // validated by the flag handler
  if (o.centroids && !o.residual_bits) throw usage_error("--centroids needs --storage residual:N");
  if (o.has("--anisotropy") && !o.residual_bits) throw usage_error("--anisotropy needs --storage residual:N");
  if (o.postings && !o.residual_bits) throw usage_error("--candidates postings needs --storage residual:N");
  if ((o.has("--nlist") || o.has("--ivf-nprobe")) && o.backend != "faiss-ivf") throw usage_error("--nlist and --ivf-nprobe need --backend faiss-ivf");
  aligner::residual_params residual{
      .nbits = o.residual_bits ? o.residual_bits : 2, .centroids = o.centroids, .anisotropy = o.anisotropy, .threads = o.threads};
  const auto codec = codec_from(o, s.c.docs.dim);

  with_backend(o.backend, s.c.docs.dim, [&](auto backend) {
    using backend_t = decltype(backend);
    std::unique_ptr<aligner::aligner_retriever<backend_t>> index;
    {
      // One bar per stage of the build (codec training, token index insertion, store encoding), moving as it goes.
      std::optional<progress> bar;
      std::string stage;
      const auto report = [&](const aligner::build_progress& p) {
        if (p.stage != stage || !bar) {
          bar.reset();
          stage = p.stage;
          bar.emplace("indexing: " + stage, p.total, o.progress);
        }
        bar->update(p.done);
      };
      index = std::make_unique<aligner::aligner_retriever<backend_t>>(
          std::move(backend), s.c.docs.view(),
          aligner::index_params{.doc_prune = o.prune_doc, .precision = precision, .codec = codec, .residual = residual, .dedup_tokens = o.dedup,
                                .token_index = o.token_index && (!ranks_now || token_candidates), .threads = o.threads, .progress = report},
          s.ud);
    }
    if (const auto& codec = index->params().codec)
      std::fprintf(stderr, "%s codec: %zu centroids, anisotropy %.3g, %.1f bytes a token of codes\n", codec->name().c_str(),
                   codec->centroids(), codec->anisotropy(), codec->bytes_per_token());
#ifdef ALIGNER_HAVE_FAISS
    if constexpr (std::is_same_v<backend_t, aligner::faiss_backend>)
      if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(&index->backend().index()))
        std::fprintf(stderr, "faiss-ivf: %zu inverted lists, %zu probed per query token\n", std::size_t(ivf->nlist), std::size_t(ivf->nprobe));
#endif
    fn(*index);
  }, aligner::backend_settings{.nlist = o.nlist, .nprobe = o.ivf_nprobe});
}

/// An index file whose token index was built by an approximate backend (a graph, an inverted file) is searched
/// through it only with --candidates K; without the flag the search would rerank every document and leave what the
/// user built unused, so that is refused, naming both choices. `label`: the backend name the file records.
inline void require_candidates_for_ann(const options& o, const std::string& label, bool has_token_index) {
  if (o.has("--candidates") || !has_token_index || label.empty() || label == "exact" || label == "exact-bf16" || label == "exact-i8" || label == "faiss-flat") return;
  throw usage_error(o.index_file + " holds a " + label + " token index: give --candidates K to search through it (k' hits per query token), "
                    "or --candidates all to rerank every document without it");
}

/// Ranks every judged query under every strategy with a freshly built index.
inline ranking rank_queries(const options& o, const retrieval_setup& s, const std::vector<aligner::alignment>& strategies) {
  search_params_of(o, s);  // validate the search options before the (possibly long) build
  ranking out;
  build_index(o, s, [&](const auto& index) { out = rank_with(o, index, s, strategies); }, true);
  return out;
}

/// Prints the eval lines (one per strategy) and writes the run of the first strategy (--run).
inline void report(const options& o, const retrieval_setup& s, const std::vector<aligner::alignment>& strategies, const ranking& ranked) {
  const auto& runs = ranked.runs;
  for (std::size_t g = 0; g != strategies.size(); ++g) {
    const auto ndcg = aligner::ndcg_at(10, runs[g], s.c.judgments);
    std::printf("%s ndcg@10=%.4f mrr@10=%.4f recall@100=%.4f map=%.4f p@10=%.4f queries=%zu candidates=%.1f ms_per_query=%.3f\n",
                strategies[g].name().c_str(), ndcg.mean, aligner::mrr_at(10, runs[g], s.c.judgments).mean,
                aligner::recall_at(100, runs[g], s.c.judgments).mean, aligner::mean_average_precision(runs[g], s.c.judgments).mean,
                aligner::precision_at(10, runs[g], s.c.judgments).mean, ndcg.queries, ranked.candidates, ranked.ms_per_query);
  }
  if (o.has("--run")) aligner::io::save_run(o.run_file, runs[0], "aligner-" + strategies[0].name());
}

}  // namespace cli
