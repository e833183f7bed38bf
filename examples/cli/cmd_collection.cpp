// eval, adapt, index, search, info, kernels and explain: the subcommands over a collection folder or an index.
#include <aligner/eval/adapt.hpp>
#include <aligner/eval/alignment_view.hpp>
#include <aligner/io/index_directory.hpp>
#include <aligner/io/npy.hpp>
#include <aligner/io/streamed_build.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "collection_run.hpp"
#include "commands.hpp"

namespace cli {

int run_eval(const options& o) {
  o.require("--strategy");
  const auto s = load_setup(o);
  report(o, s, o.strategies, rank_queries(o, s, o.strategies));
  return 0;
}

namespace {

namespace fs = std::filesystem;

std::uintmax_t directory_bytes(const fs::path& dir) {
  std::uintmax_t bytes = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) bytes += e.file_size();
  return bytes;
}

/// aligner index --layout directory: the streamed build (documents read from the mapped vectors chunk by chunk).
int run_index_directory(const options& o) {
  o.require("--collection");
  for (const char* flag : {"--backend", "--dedup", "--prune-doc", "--token-index", "--nlist", "--ivf-nprobe"})
    if (o.has(flag))
      throw usage_error(std::string(flag) + " shapes a token index, which an index directory does not have (search it with --candidates postings or all)");
  if (o.salience != "none") throw usage_error("--salience " + o.salience + ": an index directory stores no salience (use --layout file)");
  aligner::storage precision = aligner::storage::f32;
  if (o.residual_bits) precision = aligner::storage::residual;
  else aligner::parse_storage(o.storage, precision);
  if (o.centroids && !o.residual_bits) throw usage_error("--centroids needs --storage residual:N");
  if (o.has("--anisotropy") && !o.residual_bits) throw usage_error("--anisotropy needs --storage residual:N");
  const fs::path vdir = fs::path(o.collection) / o.vectors;
  const auto codec = codec_from(o, 0);  // its dim is checked against the vectors' by the build
  const aligner::directory_params params{
      .precision = precision,
      .codec = codec,
      .residual = {.nbits = o.residual_bits ? o.residual_bits : 2, .centroids = o.centroids, .anisotropy = o.anisotropy, .threads = o.threads}};
  if (precision == aligner::storage::residual)
    std::fprintf(stderr, codec ? "encoding chunk by chunk with the codec of --codec\n"
                               : "training the residual codec on a sample of the collection, then encoding chunk by chunk\n");
  std::optional<progress> bar;
  const aligner::io::build_options build{.segment_tokens = o.segment_tokens, .threads = o.threads, .progress = [&](std::size_t done, std::size_t total) {
    if (!bar) bar.emplace("indexing tokens", total, o.progress);
    bar->update(done);
  }};
  aligner::io::build_report report;
  std::size_t tokens = 0;
  if (fs::exists(vdir / "doc_vectors.npy")) {  // the dense form: mapped, never read whole
    const aligner::io::mapped_npy_matrix vectors(vdir / "doc_vectors.npy");
    tokens = vectors.rows();
    const auto offsets = aligner::io::detail::load_offsets(vdir / "doc_offsets.npy", tokens);
    const auto names = aligner::io::detail::load_ids(vdir / "doc_ids.txt", offsets.size() - 1);
    report = aligner::io::build_directory(
        o.out, vectors.cols(), tokens, [&](std::size_t first, std::size_t count, float* out) { vectors.read_rows(first, count, out); },
        offsets, names, params, build);
  } else if (fs::exists(vdir / "embeddings.npy")) {  // the token-id form: rows of the vocabulary's embeddings
    const auto emb = aligner::io::load_npy<float>(vdir / "embeddings.npy");
    if (emb.shape.size() != 2) throw aligner::io_error((vdir / "embeddings.npy").string() + ": embeddings must be a 2-d array [vocab, dim]");
    const auto ids = aligner::io::load_npy<std::int32_t>(vdir / "doc_token_ids.npy");
    tokens = ids.values.size();
    for (std::size_t t = 0; t != tokens; ++t)
      if (ids.values[t] < 0 || std::size_t(ids.values[t]) >= emb.rows())
        throw aligner::io_error((vdir / "doc_token_ids.npy").string() + ": token id " + std::to_string(ids.values[t]) + " at index " +
                                std::to_string(t) + " is outside the vocabulary");
    const auto offsets = aligner::io::detail::load_offsets(vdir / "doc_offsets.npy", tokens);
    const auto names = aligner::io::detail::load_ids(vdir / "doc_ids.txt", offsets.size() - 1);
    const std::size_t dim = emb.cols();
    report = aligner::io::build_directory(
        o.out, dim, tokens,
        [&](std::size_t first, std::size_t count, float* out) {
          for (std::size_t t = 0; t != count; ++t)
            std::copy_n(emb.values.data() + std::size_t(ids.values[first + t]) * dim, dim, out + t * dim);
        },
        offsets, names, params, build);
  } else {
    throw aligner::io_error(vdir.string() + ": holds neither doc_vectors.npy (dense form) nor embeddings.npy (token-id form)");
  }
  bar.reset();
  const auto bytes = directory_bytes(o.out);
  std::printf("indexed %zu documents (%zu tokens) into %zu segments of %s: %ju bytes, %.2f bytes a token", report.documents, report.tokens,
              report.segments, o.out.c_str(), bytes, tokens ? double(bytes) / double(tokens) : 0.0);
  if (report.centroids) std::printf(", %zu centroids (trained in %.1f s)", report.centroids, report.train_seconds);
  std::printf(", encoded in %.1f s (%.3g tokens/s)\n", report.encode_seconds, report.encode_seconds > 0 ? double(tokens) / report.encode_seconds : 0.0);
  return 0;
}

/// The name of every document id of a directory snapshot ("" for ids whose segment stores no names, and for removed
/// ids of compacted segments).
std::vector<std::string> directory_names(const aligner::directory_snapshot& snap) {
  std::vector<std::string> names(std::size_t(snap.next_id));
  for (const auto& seg : snap.segments)
    for (std::size_t d = 0; d != seg->names.size(); ++d) names[std::size_t(seg->ids[d])] = seg->names[d];
  return names;
}

/// directory_names of a directory built by aligner index: a usage error naming `path` when a segment stores no names.
std::vector<std::string> stored_names(const std::string& path, const aligner::directory_snapshot& snap) {
  for (const auto& seg : snap.segments)
    if (seg->names.empty()) throw usage_error(path + " stores no document names (it was not built by aligner index)");
  return directory_names(snap);
}

/// aligner search --index DIR: the judged queries against an index directory (the collection's documents are not read).
int run_search_directory(const options& o) {
  if (o.has("--no-mmap")) throw usage_error("--no-mmap: an index directory is always memory-mapped");
  if (o.candidates) throw usage_error("--candidates K needs a token index; search an index directory with --candidates postings or all");
  if (o.salience != "none") throw usage_error("--salience " + o.salience + ": an index directory stores no salience");
  const auto s = load_setup(o, true, false);
  search_params_of(o, s);
  const aligner::index_directory_reader reader(o.index_file);
  if (s.c.queries.dim != reader.dim())
    throw usage_error("the queries have dim " + std::to_string(s.c.queries.dim) + ", the index directory " + std::to_string(reader.dim()));
  const std::vector<std::string> names = stored_names(o.index_file, *reader.snapshot());
  report(o, s, o.strategies, rank_with(o, reader, s, o.strategies, &names));
  return 0;
}

}  // namespace

int run_index(const options& o) {
  o.require("--out");
  if (o.layout == "directory") return run_index_directory(o);
  if (o.has("--segment-tokens")) throw usage_error("--segment-tokens needs --layout directory");
  const auto s = load_setup(o, false);
  build_index(o, s, [&](const auto& index) {
    aligner::save_index(index, o.out, o.backend);
    std::printf("indexed %zu documents (%zu tokens): %zu vectors in the token index, %zu (vector, document) postings, into %s\n",
                index.size(), s.c.docs.tokens(), index.indexed_tokens(), index.indexed_postings(), o.out.c_str());
  });
  return 0;
}

int run_search(const options& o) {
  o.require("--strategy");
  o.require("--index");
  if (fs::is_directory(o.index_file)) return run_search_directory(o);
  const auto s = load_setup(o);
  search_params_of(o, s);  // validate the search options before loading
  const aligner::load_options options{.mmap = !o.no_mmap, .expected_dim = s.c.docs.dim};
  const std::string label = aligner::read_index_label(o.index_file);
  with_saved_index(o.index_file, options, [&](const auto& index) {
    require_candidates_for_ann(o, label, index.indexed_tokens() > 0);
    const bool indexed_salience = index.store().has_salience(), asked = o.salience != "none";
    if (indexed_salience != asked)
      throw usage_error(o.index_file + (indexed_salience ? " was built with a salience: search it with the --salience it was built with"
                                                         : " was built without salience: search it without --salience " + o.salience));
    report(o, s, o.strategies, rank_with(o, index, s, o.strategies));
  });
  return 0;
}

int run_info(const options& o) {
  if (o.index_file.empty()) throw usage_error("info needs an index file: aligner info INDEX");
  if (fs::is_directory(o.index_file)) {
    const aligner::index_directory_reader reader(o.index_file);
    const auto s = reader.snapshot();
    const auto bytes = directory_bytes(o.index_file);
    std::printf("directory=%s\nbytes=%ju\ngeneration=%ju\nsegments=%zu\ndocuments=%zu\nlive_documents=%zu\ntokens=%zu\ndim=%zu\n",
                o.index_file.c_str(), bytes, std::uintmax_t(s->generation), s->segments.size(), std::size_t(s->next_id), s->live_documents(),
                s->tokens(), s->dim);
    std::printf("storage=%s\n", s->codec ? s->codec->name().c_str() : aligner::to_string(s->precision));
    if (s->codec) std::printf("centroids=%zu\nanisotropy=%.9g\n", s->codec->centroids(), s->codec->anisotropy());
    std::printf("salience=%s\nbytes_per_token=%.2f\n", s->has_salience == 1 ? "yes" : "no", s->tokens() ? double(bytes) / double(s->tokens()) : 0.0);
    return 0;
  }
  const std::string label = aligner::read_index_label(o.index_file);  // io_error when it is not an index file
  const std::uintmax_t bytes = std::filesystem::file_size(o.index_file);
  with_saved_index(o.index_file, {.mmap = true}, [&](const auto& index) {
    const auto& store = index.store();
    const auto& codec = store.codec();
    std::printf("file=%s\nbytes=%ju\ndocuments=%zu\nlive_documents=%zu\ntokens=%zu\ndim=%zu\n", o.index_file.c_str(), bytes,
                index.size(), index.live_size(), store.tokens(), index.dim());
    std::printf("storage=%s\n", codec ? codec->name().c_str() : aligner::to_string(store.precision()));
    if (codec) std::printf("centroids=%zu\nanisotropy=%.9g\n", codec->centroids(), codec->anisotropy());
    std::printf("backend=%s\ntoken_index=%s\ndedup=%s\nindexed_vectors=%zu\ntoken_postings=%zu\nsalience=%s\n", label.empty() ? "exact" : label.c_str(),
                index.params().token_index ? "on" : "off", index.params().dedup_tokens ? "on" : "off", index.indexed_tokens(),
                index.indexed_postings(), store.has_salience() ? "yes" : "no");
    std::printf("bytes_per_token=%.2f\n", store.tokens() ? double(bytes) / double(store.tokens()) : 0.0);
  });
  return 0;
}

int run_kernels(const options&) {
  std::printf("%s", aligner::kernel_info().describe().c_str());
  return 0;
}

namespace {

/// Index of `id` in `ids`, or a usage error naming the flag.
std::size_t find_id(const std::vector<std::string>& ids, const std::string& id, const char* flag, const std::string& where) {
  const auto it = std::find(ids.begin(), ids.end(), id);
  if (it == ids.end()) throw usage_error(std::string(flag) + ": no id '" + id + "' in " + where);
  return std::size_t(it - ids.begin());
}

/// The words of sequence `s` when token ids and a vocabulary exist (else empty).
std::vector<std::string> words_of(const aligner::io::token_sequences& side, const std::vector<std::int32_t>& token_ids,
                                  const std::vector<std::string>& vocab, std::size_t s, const std::string& vocab_file) {
  std::vector<std::string> out;
  if (token_ids.empty() || vocab.empty()) return out;
  for (auto t = side.offsets[s]; t != side.offsets[s + 1]; ++t) {
    const auto id = token_ids[std::size_t(t)];
    if (id < 0 || std::size_t(id) >= vocab.size())
      throw aligner::io_error(vocab_file + ": token id " + std::to_string(id) + " has no line (" + std::to_string(vocab.size()) + " words)");
    out.push_back(vocab[std::size_t(id)]);
  }
  return out;
}


}  // namespace

int run_explain(const options& o) {
  o.require("--query");
  o.require("--doc");
  if (o.html.empty() && o.svg.empty()) throw usage_error("explain needs --html OUT.html or --svg OUT.svg");
  if (o.strategies.size() > 1) throw usage_error("explain draws one strategy; --strategy got " + std::to_string(o.strategies.size()));
  if (o.has("--index") && o.has("--storage")) throw usage_error("--storage comes with the index; give one of --index and --storage");
  if (!o.has("--index") && o.residual_bits) throw usage_error("explain with --storage residual:N needs --index (a codec trained by aligner index)");
  const auto s = load_setup(o, false);
  const std::size_t q = find_id(s.c.queries.ids, o.query_id, "--query", o.collection + "/" + o.vectors + "/query_ids.txt");
  const std::size_t d = find_id(s.c.docs.ids, o.doc_id, "--doc", o.collection + "/" + o.vectors + "/doc_ids.txt");
  const auto vdir = std::filesystem::path(o.collection) / o.vectors;
  const std::string vocab_file = o.vocab.empty() ? (vdir / "vocab.txt").string() : o.vocab;
  std::vector<std::string> vocab;
  if (!o.vocab.empty() || std::filesystem::exists(vocab_file)) {
    const std::string text = aligner::io::read_file(vocab_file);
    for (std::size_t at = 0; at < text.size();) {
      const std::size_t end = std::min(text.find('\n', at), text.size());
      vocab.push_back(text.substr(at, end - at));
      at = end + 1;
    }
  }
  const aligner::alignment strategy = o.strategies.empty() ? aligner::alignment::top1() : o.strategies[0];
  const auto query = s.c.queries.sequence(q);
  const std::span<const float> uq =
      s.uq.empty() ? std::span<const float>() : std::span<const float>(s.uq).subspan(std::size_t(s.c.queries.offsets[q]), query.rows);
  aligner::alignment_view view;
  if (o.has("--index") && fs::is_directory(o.index_file)) {
    // An index directory: the document is found by the name it was added under (aligner index --layout directory
    // stores the collection's ids), and drawn from the directory's own store.
    if (o.salience != "none") throw usage_error("--salience " + o.salience + ": an index directory stores no salience");
    const aligner::index_directory_reader reader(o.index_file);
    if (reader.dim() != s.c.docs.dim)
      throw usage_error("the index directory has dim " + std::to_string(reader.dim()) + ", the collection " + std::to_string(s.c.docs.dim));
    const auto snap = reader.snapshot();
    const std::vector<std::string> names = stored_names(o.index_file, *snap);
    std::int64_t id = -1;
    for (std::size_t k = 0; k != names.size(); ++k)
      if (names[k] == o.doc_id && snap->is_live(std::int64_t(k))) id = std::int64_t(k);
    if (id < 0) throw usage_error("--doc: no live document '" + o.doc_id + "' in the index directory " + o.index_file);
    const aligner::search_params p{.strategy = strategy, .norm = o.norm, .query_salience = uq};
    view = aligner::make_alignment_view(reader, query, id, p);
    if (view.cols != s.c.docs.view().length(d))
      throw usage_error("document '" + o.doc_id + "' has " + std::to_string(view.cols) + " tokens in the index directory and " +
                        std::to_string(s.c.docs.view().length(d)) + " in the collection: not the same collection");
  } else if (o.has("--index")) {
    const aligner::search_params p{.strategy = strategy, .norm = o.norm, .query_salience = uq};
    with_saved_index(o.index_file, {.mmap = true, .expected_dim = s.c.docs.dim}, [&](const auto& index) {
      if (index.size() != s.c.docs.size())
        throw usage_error("the index holds " + std::to_string(index.size()) + " documents, the collection " + std::to_string(s.c.docs.size()));
      view = aligner::make_alignment_view(index, query, std::int64_t(d), p);
    });
  } else {
    aligner::storage st = aligner::storage::f32;
    aligner::parse_storage(o.storage, st);  // validated by the flag handler
    aligner::token_store store(s.c.docs.dim, st);
    const auto doc = s.c.docs.sequence(d);
    const std::vector<std::int64_t> offsets{0, std::int64_t(doc.rows)};
    const std::span<const float> ud =
        s.ud.empty() ? std::span<const float>() : std::span<const float>(s.ud).subspan(std::size_t(s.c.docs.offsets[d]), doc.rows);
    store.add(aligner::sequence_set_view{doc, offsets}, ud);
    const aligner::prepared_query pq(query, {.strategy = strategy, .norm = o.norm, .query_salience = uq});
    view = aligner::make_alignment_view(pq, store, 0);
  }
  view.query_words = words_of(s.c.queries, token_ids_of(s.c.queries, vdir, "query"), vocab, q, vocab_file);
  view.doc_words = words_of(s.c.docs, token_ids_of(s.c.docs, vdir, "doc"), vocab, d, vocab_file);
  view.title = "query " + o.query_id + " - document " + o.doc_id + " (" + std::filesystem::path(o.collection).filename().string() + ")";
  if (!o.html.empty()) aligner::write_alignment_html(o.html, view);
  if (!o.svg.empty()) aligner::write_alignment_svg(o.svg, view);
  std::printf("score=%.9g numerator=%.9g z=%.9g pairs=%zu query_tokens=%zu doc_tokens=%zu\n", double(view.why.score), view.why.numerator,
              view.why.z, view.why.pairs.size(), view.rows, view.cols);
  return 0;
}

int run_adapt(const options& o) {
  // Columns: the grid (choices), then Top-1 as the reported baseline when the grid lacks it.
  auto columns = aligner::parse_grid(o.grid);
  const std::size_t choices = columns.size();
  const std::size_t baseline = std::size_t(std::find(columns.begin(), columns.end(), aligner::alignment::top1()) - columns.begin());
  if (baseline == choices) columns.push_back(aligner::alignment::top1());
  const auto s = load_setup(o);
  const auto runs = rank_queries(o, s, columns).runs;
  aligner::strategy_table table;
  table.grid = columns;
  std::vector<aligner::metric_result> per(columns.size());
  for (std::size_t g = 0; g != columns.size(); ++g) per[g] = aligner::ndcg_at(10, runs[g], s.c.judgments, true);
  for (const auto& [qid, value] : per[0].per_query) table.query_ids.push_back(qid);
  for (const auto& qid : table.query_ids)
    for (std::size_t g = 0; g != columns.size(); ++g) table.values.push_back(per[g].per_query.at(qid));
  const auto result = aligner::fold_protocol(table, o.shots, o.seed, baseline, choices);
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
              result.stddev, result.top1_mean, result.top1_stddev, result.folds.size(), o.shots,
              static_cast<unsigned long long>(o.seed));
  return 0;
}

}  // namespace cli

namespace cli {

int run_query(const options& o) {
  o.require("--index");
  o.require("--vectors");
  if (o.strategies.size() > 1) throw usage_error("query ranks with one strategy; --strategy got " + std::to_string(o.strategies.size()));
  if (o.has("--salience") && o.has("--query-salience")) throw usage_error("give one of --salience FILE and --query-salience UQ.npy");
  if (o.salience == "idf") throw usage_error("--salience idf needs a collection's token ids; for vectors you bring, give --salience FILE (learned heads) or --query-salience UQ.npy");
  // The queries: [tokens, dim] float32/float16, cut by --offsets (default: one query of every row).
  auto vectors = aligner::io::load_npy<float>(o.vectors);
  if (vectors.shape.size() != 2) throw usage_error(o.vectors + ": expected a 2-d array [tokens, dim], got " + std::to_string(vectors.shape.size()) + " dimensions");
  const std::size_t tokens = vectors.shape[0], dim = vectors.shape[1];
  std::vector<std::int64_t> offsets{0, std::int64_t(tokens)};
  if (o.has("--offsets")) {
    auto off = aligner::io::load_npy<std::int64_t>(o.offsets);
    if (off.shape.size() != 1) throw usage_error(o.offsets + ": expected a 1-d array of offsets [queries + 1]");
    offsets = std::move(off.values);
    try {
      aligner::detail::check_offsets(offsets, tokens, "offsets");
    } catch (const aligner::invalid_argument& e) {
      throw usage_error(o.offsets + ": " + e.what());
    }
  }
  const aligner::sequence_set_view queries{{vectors.values.data(), tokens, dim}, offsets};
  retrieval_setup s;  // what search_params_of reads: the query salience, if any
  if (o.has("--query-salience")) {
    auto u = aligner::io::load_npy<float>(o.query_salience);
    if (u.values.size() != tokens)
      throw usage_error(o.query_salience + ": " + std::to_string(u.values.size()) + " salience values for " + std::to_string(tokens) + " query tokens");
    s.uq = std::move(u.values);
  } else if (o.salience != "none") {
    const auto heads = aligner::io::load_salience_heads(o.salience);
    if (heads.heads.dim() != dim)
      throw usage_error("--salience " + o.salience + " holds heads of dim " + std::to_string(heads.heads.dim()) + ", the queries have dim " + std::to_string(dim));
    s.uq = heads.heads.query(queries, false);
  }
  aligner::search_params p = search_params_of(o, s, true);
  p.strategy = o.strategies.empty() ? aligner::alignment::top1() : o.strategies[0];
  p.top = o.has("--top") ? o.top : 10;
  const std::string tag = "aligner-" + p.strategy.name();
  std::vector<std::string> names;
  if (o.has("--doc-ids")) names = aligner::io::read_lines(o.doc_ids);

  // Ranks every query (on --threads threads: whole queries in batches, or one query's own rerank when the file holds
  // one query) and prints TREC run lines: query rank... in query order.
  const auto rank_all = [&](const auto& index, std::size_t documents, const auto& name_of) {
    if (index.dim() != dim) throw usage_error(o.vectors + " holds vectors of dim " + std::to_string(dim) + ", " + o.index_file + " of dim " + std::to_string(index.dim()));
    if (!names.empty() && names.size() != documents)
      throw usage_error(o.doc_ids + " names " + std::to_string(names.size()) + " documents, " + o.index_file + " holds " + std::to_string(documents));
    std::vector<aligner::search_result> results(queries.size());
    {
      progress bar("ranking queries", queries.size(), o.progress);
      rank_in_chunks(
          queries, s.uq, o.threads,
          [&](const aligner::sequence_set_view& view, std::span<const float> u) {
            if (queries.size() != 1) return index.search_batch(view, p, u, o.threads);
            aligner::search_params one = p;  // one query: search_params.threads shares its rerank out
            one.query_salience = u;
            one.threads = o.threads;
            return std::vector<aligner::search_result>{index.search(view.sequence(0), one)};
          },
          [&](std::size_t q, aligner::search_result got, double) {
            results[q] = std::move(got);
            bar.tick();
          });
    }
    for (std::size_t q = 0; q != queries.size(); ++q) {
      if (results[q].empty_query) std::fprintf(stderr, "query %zu has no tokens to search: no results\n", q);
      for (std::size_t r = 0; r != results[q].ids.size(); ++r) {
        const std::int64_t id = results[q].ids[r];
        const std::string name = !names.empty() ? names[std::size_t(id)] : name_of(id);
        std::printf("%zu Q0 %s %zu %.9g %s\n", q, name.c_str(), r + 1, double(results[q].scores[r]), tag.c_str());
      }
    }
  };
  if (fs::is_directory(o.index_file)) {
    if (o.has("--no-mmap")) throw usage_error("--no-mmap: an index directory is always memory-mapped");
    if (o.candidates) throw usage_error("--candidates K needs a token index; search an index directory with --candidates postings or all");
    if (!s.uq.empty() && o.rerank_weights) throw usage_error(o.index_file + " stores no salience: query salience can only choose tokens (--rerank-weights off)");
    const aligner::index_directory_reader reader(o.index_file);
    const std::vector<std::string> stored = directory_names(*reader.snapshot());
    rank_all(reader, stored.size(), [&](std::int64_t id) { return stored[std::size_t(id)].empty() ? std::to_string(id) : stored[std::size_t(id)]; });
    return 0;
  }
  const std::string label = aligner::read_index_label(o.index_file);
  with_saved_index(o.index_file, {.mmap = !o.no_mmap}, [&](const auto& index) {
    require_candidates_for_ann(o, label, index.indexed_tokens() > 0);
    if (index.store().has_salience() && s.uq.empty() && o.rerank_weights)
      throw usage_error(o.index_file + " was built with salience: give the queries theirs (--salience FILE or --query-salience UQ.npy)");
    if (!index.store().has_salience() && !s.uq.empty() && o.rerank_weights)
      throw usage_error(o.index_file + " was built without salience: query salience can only choose tokens (--rerank-weights off)");
    rank_all(index, index.size(), [](std::int64_t id) { return std::to_string(id); });
  });
  return 0;
}

}  // namespace cli
