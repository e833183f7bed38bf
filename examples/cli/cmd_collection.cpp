// eval, adapt, index and search: the subcommands over a collection folder.
#include <aligner/eval/adapt.hpp>

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

int run_index(const options& o) {
  o.require("--out");
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
  const auto s = load_setup(o);
  search_params_of(o, s);  // validate the search options before loading
  const aligner::load_options options{.mmap = !o.no_mmap, .expected_dim = s.c.docs.dim};
  with_saved_index(o.index_file, options, [&](const auto& index) { report(o, s, o.strategies, rank_with(o, index, s, o.strategies)); });
  return 0;
}

int run_info(const options& o) {
  if (o.index_file.empty()) throw usage_error("info needs an index file: aligner info INDEX");
  const std::string label = aligner::read_index_label(o.index_file);  // reads and verifies the file (io_error if it cannot)
  const std::uintmax_t bytes = std::filesystem::file_size(o.index_file);
  with_saved_index(o.index_file, {.mmap = true}, [&](const auto& index) {
    const auto& store = index.store();
    const auto& codec = store.codec();
    std::printf("file=%s\nbytes=%ju\ndocuments=%zu\nlive_documents=%zu\ntokens=%zu\ndim=%zu\n", o.index_file.c_str(), bytes,
                index.size(), index.live_size(), store.tokens(), index.dim());
    std::printf("storage=%s\n", codec ? codec->name().c_str() : aligner::to_string(store.precision()));
    if (codec) std::printf("centroids=%zu\n", codec->centroids());
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
