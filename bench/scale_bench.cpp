// The scale benchmark's two measurements (bench/scale.sh runs them):
//   scale_bench reference --collection C [--vectors V] [--threads T] [--chunk-tokens N] --out PREFIX
//     an exhaustive float32 rerank of every document of the collection, read from its mapped (float16/float32)
//     doc_vectors.npy a chunk at a time: for every judged query, the top 100 under top1 and topp:0.01 (TREC runs
//     PREFIX.top1.run and PREFIX.topp.run) and their nDCG@10. Memory: one chunk of float panels.
//   scale_bench search --index DIR --collection C [--vectors V] [--nprobe P] [--ndocs N] [--threads T] [--reference PREFIX]
//                      [--exhaustive 1]
//     every judged query against an index directory through its centroid postings: latency p50/p95 on one thread
//     (and where the time goes: candidate generation vs rerank), queries per second on T threads, nDCG@10 of top1
//     and topp:0.01, and, with --reference, the difference to the exhaustive float32 rerank of the same collection.
//     --exhaustive 1: quality only, every document reranked from its codes (what the codes cost, without postings).
#include <aligner/aligner.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/index_directory.hpp>
#include <aligner/io/streamed_build.hpp>
#include <aligner/io/trec.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct args {
  std::map<std::string, std::string> v;
  std::string get(const std::string& k, const std::string& def = "") const {
    const auto it = v.find(k);
    return it == v.end() ? def : it->second;
  }
  std::size_t num(const std::string& k, std::size_t def) const {
    const auto s = get(k);
    return s.empty() ? def : std::size_t(std::stoull(s));
  }
};

const aligner::alignment strategies[] = {aligner::alignment::top1(), aligner::alignment::top_p(0.01)};
const char* strategy_file[] = {"top1", "topp"};

struct queries {
  aligner::io::collection c;
  std::vector<std::size_t> judged;
};

queries load_queries(const args& a) {
  queries q;
  q.c = aligner::io::load_collection(a.get("--collection"), a.get("--vectors", "ctx100"), "test", false);
  for (std::size_t i = 0; i != q.c.queries.size(); ++i)
    if (q.c.judgments.count(q.c.queries.ids[i])) q.judged.push_back(i);
  return q;
}

/// Keeps the best `k` (score, doc) of a query, ties toward the smaller doc.
struct top_keeper {
  std::size_t k = 100;
  std::vector<std::pair<float, std::int64_t>> items;
  void offer(float s, std::int64_t d) {
    items.emplace_back(s, d);
    if (items.size() >= 4 * k) shrink();
  }
  void shrink() {
    auto better = [](const auto& a, const auto& b) { return aligner::ranks_before(a.first, a.second, b.first, b.second); };
    if (items.size() > k) {
      std::nth_element(items.begin(), items.begin() + std::ptrdiff_t(k), items.end(), better);
      items.resize(k);
    }
    std::sort(items.begin(), items.end(), better);
  }
};

int reference(const args& a) {
  const auto q = load_queries(a);
  const fs::path vdir = fs::path(a.get("--collection")) / a.get("--vectors", "ctx100");
  const aligner::io::mapped_npy_matrix vectors(vdir / "doc_vectors.npy");
  const auto offsets = aligner::io::detail::load_offsets(vdir / "doc_offsets.npy", vectors.rows());
  const auto names = aligner::io::detail::load_ids(vdir / "doc_ids.txt", offsets.size() - 1);
  const std::size_t dim = vectors.cols(), docs = offsets.size() - 1, chunk_tokens = a.num("--chunk-tokens", std::size_t(1) << 23);
  const unsigned threads = unsigned(a.num("--threads", 2));
  std::vector<std::vector<top_keeper>> best(2, std::vector<top_keeper>(q.judged.size()));
  std::vector<float> rows;
  const auto t0 = clock_type::now();
  for (std::size_t d = 0; d < docs;) {
    std::size_t end = d;
    while (end < docs && (end == d || std::size_t(offsets[end + 1] - offsets[d]) <= chunk_tokens)) ++end;
    const std::size_t first = std::size_t(offsets[d]), count = std::size_t(offsets[end]) - first;
    rows.resize(count * dim);
    vectors.read_rows(first, count, rows.data());
    std::vector<std::int64_t> local(end - d + 1);
    for (std::size_t i = d; i <= end; ++i) local[i - d] = offsets[i] - offsets[d];
    const aligner::token_store store(aligner::sequence_set_view{{rows.data(), count, dim}, local});
    std::vector<std::uint32_t> which(end - d);
    std::iota(which.begin(), which.end(), std::uint32_t{0});
    aligner::parallel_for(q.judged.size(), threads, [&](std::size_t i) {
      const aligner::prepared_query pq(q.c.queries.sequence(q.judged[i]), {});
      std::vector<float> scores(which.size() * 2);
      aligner::score_packed_multi(pq, store, which, strategies, scores);
      for (std::size_t j = 0; j != which.size(); ++j)
        for (std::size_t g = 0; g != 2; ++g) best[g][i].offer(scores[j * 2 + g], std::int64_t(d + j));
    });
    std::fprintf(stderr, "\rreference: %zu/%zu documents (%.0f s)", end, docs, std::chrono::duration<double>(clock_type::now() - t0).count());
    d = end;
  }
  std::fprintf(stderr, "\n");
  for (std::size_t g = 0; g != 2; ++g) {
    aligner::io::run run;
    for (std::size_t i = 0; i != q.judged.size(); ++i) {
      best[g][i].shrink();
      auto& entries = run[q.c.queries.ids[q.judged[i]]];
      for (const auto& [s, doc] : best[g][i].items) entries.push_back({names[std::size_t(doc)], s});
    }
    aligner::io::save_run(a.get("--out") + "." + strategy_file[g] + ".run", run, "exhaustive-f32");
    std::printf("reference %s ndcg@10=%.4f queries=%zu documents=%zu tokens=%zu seconds=%.1f\n", strategies[g].name().c_str(),
                aligner::ndcg_at(10, run, q.c.judgments).mean, q.judged.size(), docs, vectors.rows(),
                std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return 0;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, std::size_t(p * double(v.size() - 1) + 0.5))];
}

int search(const args& a) {
  const auto q = load_queries(a);
  const auto t_open = clock_type::now();
  const aligner::index_directory_reader reader(a.get("--index"));
  const double open_s = std::chrono::duration<double>(clock_type::now() - t_open).count();
  const auto snap = reader.snapshot();
  std::vector<std::string> names(std::size_t(snap->next_id));
  for (const auto& seg : snap->segments)
    for (std::size_t d = 0; d != seg->size(); ++d) names[std::size_t(seg->ids[d])] = seg->names.empty() ? std::to_string(seg->ids[d]) : seg->names[d];
  const bool exhaustive = a.num("--exhaustive", 0) != 0;  // quality of the codes alone: every document reranked
  const aligner::search_params p = exhaustive ? aligner::search_params{.top = 100, .exhaustive = true}
                                              : aligner::search_params{.top = 100, .nprobe = a.num("--nprobe", 4), .ndocs = a.num("--ndocs", 1000)};
  const unsigned threads = unsigned(a.num("--threads", 2));
  // One thread: latency of each query (both strategies from one search_multi, as aligner search does).
  std::vector<double> ms, gather_ms;
  std::vector<std::vector<aligner::search_result>> results(q.judged.size());
  double candidates = 0;
  if (exhaustive)
    aligner::parallel_for(q.judged.size(), threads, [&](std::size_t i) { results[i] = reader.search_multi(q.c.queries.sequence(q.judged[i]), strategies, p); });
  for (std::size_t i = 0; i != q.judged.size() && !exhaustive; ++i) {
    const auto t0 = clock_type::now();
    results[i] = reader.search_multi(q.c.queries.sequence(q.judged[i]), strategies, p);
    ms.push_back(1e3 * std::chrono::duration<double>(clock_type::now() - t0).count());
    candidates += double(results[i][0].candidates_scored);
  }
  // Where the time goes: the candidate step (probing every query token's nprobe centroids in every segment, the
  // centroid-only scores, the ndocs cut) timed alone as the same search cut to one document (one rerank).
  aligner::search_params probe_only = p;
  probe_only.ndocs = 1;
  for (std::size_t i = 0; i != q.judged.size() && !exhaustive; ++i) {
    const auto t0 = clock_type::now();
    (void)reader.search(q.c.queries.sequence(q.judged[i]), probe_only);
    gather_ms.push_back(1e3 * std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  // T threads: queries per second.
  const auto t1 = clock_type::now();
  if (!exhaustive)
    aligner::parallel_for(q.judged.size(), threads, [&](std::size_t i) { (void)reader.search_multi(q.c.queries.sequence(q.judged[i]), strategies, p); });
  const double qps = double(q.judged.size()) / std::chrono::duration<double>(clock_type::now() - t1).count();
  std::printf("index: %zu segments, %zu documents, %zu tokens, opened in %.2f s\n", snap->segments.size(), snap->live_documents(), snap->tokens(), open_s);
  if (exhaustive) std::printf("search exhaustive (every document reranked from its codes)\n");
  else std::printf("search nprobe=%zu ndocs=%zu: p50=%.1f ms p95=%.1f ms (one thread, top1+topp together), candidates=%.0f; "
              "candidate generation alone p50=%.1f ms; qps=%.1f on %u threads\n",
              p.nprobe, p.ndocs, percentile(ms, 0.5), percentile(ms, 0.95), candidates / double(q.judged.size()), percentile(gather_ms, 0.5), qps,
              threads);
  for (std::size_t g = 0; g != 2; ++g) {
    aligner::io::run run;
    for (std::size_t i = 0; i != q.judged.size(); ++i) {
      auto& entries = run[q.c.queries.ids[q.judged[i]]];
      const auto& r = results[i][g];
      for (std::size_t k = 0; k != r.ids.size(); ++k) entries.push_back({names[std::size_t(r.ids[k])], r.scores[k]});
    }
    const double ndcg = aligner::ndcg_at(10, run, q.c.judgments).mean;
    std::printf("%s ndcg@10=%.4f", strategies[g].name().c_str(), ndcg);
    if (const auto ref = a.get("--reference"); !ref.empty()) {
      const auto ref_run = aligner::io::load_run(ref + "." + strategy_file[g] + ".run");
      const double ref_ndcg = aligner::ndcg_at(10, ref_run, q.c.judgments).mean;
      std::printf(" exhaustive_f32=%.4f delta=%+.4f", ref_ndcg, ndcg - ref_ndcg);
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: scale_bench reference|search --flag value ...\n");
    return 2;
  }
  args a;
  for (int i = 2; i + 1 < argc; i += 2) a.v[argv[i]] = argv[i + 1];
  try {
    const std::string mode = argv[1];
    if (mode == "reference") return reference(a);
    if (mode == "search") return search(a);
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scale_bench: %s\n", e.what());
    return 1;
  }
}
