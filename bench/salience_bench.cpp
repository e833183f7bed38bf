// The pruning report of learned salience (issue "Learned salience", bench/salience.sh runs it): for every way of
// choosing the tokens to keep (learned heads, the FFN fitted to IDF, token norm, seeded random) and every document
// keep ratio beta_d and query keep ratio beta_q, the candidates come from a token search (k' per kept query token,
// exact backend, identical vectors indexed once) over the kept tokens only, and every candidate is reranked with all
// of its tokens (SPEC section 5). The rerank is reported twice: unweighted, and weighted by the same salience that
// chose the tokens (random keep has no weights). nDCG@10 on the judged queries of --split; margins of learned
// against each other rule at the same (beta_d, beta_q), both with the unweighted rerank (so that only the choice of
// tokens differs), with a paired bootstrap (95% interval, seeded) and a per-query sign test.
//
// Two columns say how far the keep rule's candidates are from the ceiling that the full rerank sets: the share of the
// judged relevant documents that are among the candidates, and the share of the exhaustive rerank's top 10 that are
// (with every one of those, the pruned run returns the exhaustive ranking's top 10 exactly, so no keep rule can score
// higher there than the unpruned rerank, up to documents that pruning drops from above a relevant one).
//
//   salience_bench --collection DIR --vectors NAME --heads FILE [--split test] [--candidates 100[,K2,...]]
//                  [--threads 2] [--strategy top1] [--seed 0] [--ndocs 0] [--beta-d 1,0.4,0.2,0.1] [--beta-q 1,0.5]
//                  [--rules idf-fit,norm,random]
//
// --ndocs N > 0 keeps each query's best N candidates by the token search's own score (search_params.ndocs: per kept
// query token, the best hit similarity through which it found the document) before the rerank: keep rules then
// compare at one rerank cost, instead of at one k' whose candidate counts differ from rule to rule.
//
// --beta-d / --beta-q choose the keep ratios and --rules the rules learned keep is compared with (default: all), for
// quicker runs that compare heads at a few settings.
//
// With several --candidates values (k' per kept query token) the pruned table and the margins are printed for each.
#include <aligner/aligner.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/npy.hpp>
#include <aligner/io/salience_heads.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

struct args {
  std::string collection, vectors = "glove100", heads, split = "test", strategy = "top1";
  std::vector<std::size_t> candidates{100};
  unsigned threads = 2;
  std::uint64_t seed = 0;
  std::size_t ndocs = 0;
  std::vector<double> betas_d{1.0, 0.4, 0.2, 0.1}, betas_q{1.0, 0.5};
  std::vector<std::string> rules;  ///< keep rules besides learned (empty: all)
};

/// The comma-separated items of a flag's value.
std::vector<std::string> items_of(const std::string& v) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at <= v.size();) {
    const std::size_t end = std::min(v.find(',', at), v.size());
    out.push_back(v.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

std::vector<double> fractions(const std::string& flag, const std::string& v) {
  std::vector<double> out;
  for (const auto& item : items_of(v)) {
    const double x = std::stod(item);
    if (!(x > 0.0 && x <= 1.0)) throw std::runtime_error(flag + ": every value must be in (0, 1], got " + item);
    out.push_back(x);
  }
  return out;
}

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--collection") a.collection = v;
    else if (f == "--vectors") a.vectors = v;
    else if (f == "--heads") a.heads = v;
    else if (f == "--split") a.split = v;
    else if (f == "--strategy") a.strategy = v;
    else if (f == "--candidates") {
      a.candidates.clear();
      for (const auto& item : items_of(v)) {
        const std::size_t k = std::stoul(item);
        if (k == 0) throw std::runtime_error("--candidates: every k' must be >= 1");
        a.candidates.push_back(k);
      }
    }
    else if (f == "--threads") a.threads = unsigned(std::stoul(v));
    else if (f == "--seed") a.seed = std::stoull(v);
    else if (f == "--ndocs") a.ndocs = std::stoul(v);
    else if (f == "--beta-d") a.betas_d = fractions(f, v);
    else if (f == "--beta-q") a.betas_q = fractions(f, v);
    else if (f == "--rules") {
      a.rules = items_of(v);
      for (const auto& r : a.rules)
        if (r != "idf-fit" && r != "norm" && r != "random") throw std::runtime_error("--rules: idf-fit, norm or random, got '" + r + "'");
    }
    else throw std::runtime_error("unknown flag " + f);
  }
  if ((argc - 1) % 2) throw std::runtime_error("every flag takes a value");
  if (a.collection.empty() || a.heads.empty()) throw std::runtime_error("--collection and --heads are required");
  return a;
}

/// Per-token saliences of one rule (queries and documents).
struct rule {
  std::string name;
  std::vector<float> uq, ud;
  bool weights = true;  ///< meaningful as rerank weights
};

std::vector<std::int32_t> token_ids_of(const aligner::io::token_sequences& s, const std::string& dir, const std::string& side) {
  if (!s.token_ids.empty()) return s.token_ids;
  const auto file = std::filesystem::path(dir) / (side + "_token_ids.npy");
  if (!std::filesystem::exists(file)) return {};
  auto ids = aligner::io::load_npy<std::int32_t>(file);
  if (ids.values.size() != s.tokens()) throw std::runtime_error(file.string() + ": one id per token expected");
  return ids.values;
}

/// Paired bootstrap of mean(a - b) (95% interval) and the sign test's counts.
struct margin {
  double mean = 0, lo = 0, hi = 0;
  std::size_t wins = 0, losses = 0;
};

margin compare(const std::vector<double>& a, const std::vector<double>& b, std::uint64_t seed) {
  margin m;
  const std::size_t n = a.size();
  std::vector<double> d(n);
  for (std::size_t i = 0; i != n; ++i) {
    d[i] = a[i] - b[i];
    m.mean += d[i] / double(n);
    m.wins += d[i] > 0;
    m.losses += d[i] < 0;
  }
  std::mt19937_64 rng(seed);
  std::vector<double> means(2000);
  for (auto& mean : means) {
    double s = 0;
    for (std::size_t i = 0; i != n; ++i) s += d[std::size_t(rng() % n)];
    mean = s / double(n);
  }
  std::sort(means.begin(), means.end());
  m.lo = means[50], m.hi = means[1949];
  return m;
}

/// Two-sided sign test p-value (binomial, ties dropped).
double sign_test(std::size_t wins, std::size_t losses) {
  const std::size_t n = wins + losses;
  if (n == 0) return 1.0;
  const std::size_t k = std::min(wins, losses);
  double p = 0, log_half_n = double(n) * std::log(0.5);
  for (std::size_t i = 0; i <= k; ++i) p += std::exp(std::lgamma(double(n + 1)) - std::lgamma(double(i + 1)) - std::lgamma(double(n - i + 1)) + log_half_n);
  return std::min(1.0, 2 * p);
}

}  // namespace

int main(int argc, char** argv) try {
  const args a = parse(argc, argv);
  const auto strategy = aligner::alignment::parse(a.strategy);
  const auto t_start = std::chrono::steady_clock::now();
  auto c = aligner::io::load_collection(a.collection, a.vectors, a.split);
  std::vector<std::size_t> judged;
  for (std::size_t q = 0; q != c.queries.size(); ++q)
    if (c.judgments.count(c.queries.ids[q])) judged.push_back(q);
  std::printf("# %s/%s, split %s: %zu documents, %zu tokens, dim %zu, %zu judged queries; %s\n", a.collection.c_str(),
              a.vectors.c_str(), a.split.c_str(), c.docs.size(), c.docs.tokens(), c.docs.dim, judged.size(), strategy.name().c_str());

  // The rules.
  std::vector<rule> rules;
  const auto file = aligner::io::load_salience_heads(a.heads);
  rules.push_back({"learned", file.heads.query(c.queries.view()), file.heads.doc(c.docs.view())});
  auto wanted = [&](const char* name) { return a.rules.empty() || std::find(a.rules.begin(), a.rules.end(), name) != a.rules.end(); };
  if (wanted("idf-fit")) {
    const auto doc_ids = token_ids_of(c.docs, a.collection + "/" + a.vectors, "doc");
    if (!doc_ids.empty()) {
      // The FFN fitted to the IDF of a seeded sample of the document tokens (vocabulary 0: the largest id + 1).
      constexpr std::size_t sample = 200000;
      double r2 = 0;
      const auto fitted = aligner::fit_idf_salience(c.docs.view(), doc_ids, c.vocab_size, sample, a.seed ^ 0x1df, 1e-3, &r2);
      std::printf("# idf-fit: R^2 = %.3f on %zu sampled document tokens\n", r2, std::min(c.docs.tokens(), sample));
      rules.push_back({"idf-fit", fitted(c.queries.view()), fitted(c.docs.view())});
    } else {
      std::printf("# idf-fit: no token ids in this form; skipped\n");
    }
  }
  if (wanted("norm")) {
    rule r{"norm", std::vector<float>(c.queries.tokens()), std::vector<float>(c.docs.tokens())};
    auto norms = [](const aligner::io::token_sequences& s, std::vector<float>& out) {
      for (std::size_t t = 0; t != s.tokens(); ++t) {
        double acc = 0;
        for (std::size_t k = 0; k != s.dim; ++k) acc += double(s.vectors[t * s.dim + k]) * s.vectors[t * s.dim + k];
        out[t] = float(std::sqrt(acc));
      }
    };
    norms(c.queries, r.uq), norms(c.docs, r.ud);
    rules.push_back(std::move(r));
  }
  if (wanted("random")) {
    rule r{"random", std::vector<float>(c.queries.tokens()), std::vector<float>(c.docs.tokens()), false};
    std::mt19937_64 rng(a.seed);
    std::uniform_real_distribution<float> uni(0.f, 1.f);
    for (auto& v : r.uq) v = uni(rng);
    for (auto& v : r.ud) v = uni(rng);
    rules.push_back(std::move(r));
  }

  // Rerank indexes: no weights, and each rule's weights.
  using retriever = aligner::aligner_retriever<aligner::exact_backend>;
  const aligner::index_params rerank_params{.token_index = false};
  const retriever plain(aligner::exact_backend(c.docs.dim), c.docs.view(), rerank_params);
  std::vector<std::unique_ptr<retriever>> weighted(rules.size());
  for (std::size_t r = 0; r != rules.size(); ++r)
    if (rules[r].weights) weighted[r] = std::make_unique<retriever>(aligner::exact_backend(c.docs.dim), c.docs.view(), rerank_params, rules[r].ud);

  // nDCG@10 of reranking each query's candidates; `top10` (optional) receives each query's ten best documents.
  auto ndcg_of = [&](const std::vector<std::vector<std::int64_t>>& cands, const retriever& index, const std::vector<float>* uq,
                     std::vector<std::vector<std::int64_t>>* top10 = nullptr) {
    std::vector<aligner::search_result> res(judged.size());
    aligner::parallel_for(judged.size(), a.threads, [&](std::size_t i) {
      const std::size_t q = judged[i];
      aligner::search_params p{.strategy = strategy, .top = 1000, .exhaustive = true, .allowed_ids = cands[i]};
      if (uq) p.query_salience = std::span<const float>(*uq).subspan(std::size_t(c.queries.offsets[q]), c.queries.view().length(q));
      if (!cands[i].empty()) res[i] = index.search(c.queries.sequence(q), p);
    });
    aligner::io::run run;
    for (std::size_t i = 0; i != judged.size(); ++i) {
      auto& entries = run[c.queries.ids[judged[i]]];
      for (std::size_t k = 0; k != res[i].ids.size(); ++k) entries.push_back({c.docs.ids[std::size_t(res[i].ids[k])], res[i].scores[k]});
      if (top10) top10->emplace_back(res[i].ids.begin(), res[i].ids.begin() + std::ptrdiff_t(std::min<std::size_t>(10, res[i].ids.size())));
    }
    const auto m = aligner::ndcg_at(10, run, c.judgments);
    std::vector<double> per;
    for (std::size_t i = 0; i != judged.size(); ++i) per.push_back(m.per_query.at(c.queries.ids[judged[i]]));
    return std::make_pair(m.mean, per);
  };

  // Each judged query's relevant documents (grade > 0), as document numbers.
  std::map<std::string, std::size_t> doc_number;
  for (std::size_t d = 0; d != c.docs.size(); ++d) doc_number.emplace(c.docs.ids[d], d);
  std::vector<std::vector<std::int64_t>> relevant(judged.size());
  for (std::size_t i = 0; i != judged.size(); ++i)
    for (const auto& [doc, grade] : c.judgments.at(c.queries.ids[judged[i]]))
      if (const auto it = doc_number.find(doc); grade > 0 && it != doc_number.end()) relevant[i].push_back(std::int64_t(it->second));
  // Mean over queries (with at least one of them) of the share of `wanted` among the sorted `cands`.
  auto recall = [&](const std::vector<std::vector<std::int64_t>>& cands, const std::vector<std::vector<std::int64_t>>& wanted) {
    double sum = 0;
    std::size_t n = 0;
    for (std::size_t i = 0; i != judged.size(); ++i) {
      if (wanted[i].empty()) continue;
      std::size_t hit = 0;
      for (const auto id : wanted[i]) hit += std::binary_search(cands[i].begin(), cands[i].end(), id);
      sum += double(hit) / double(wanted[i].size()), ++n;
    }
    return n ? sum / double(n) : 0.0;
  };

  // The unpruned references: every document reranked.
  std::vector<std::vector<std::int64_t>> everything(judged.size());
  for (auto& v : everything)
    for (std::size_t d = 0; d != c.docs.size(); ++d) v.push_back(std::int64_t(d));
  std::vector<std::vector<std::int64_t>> exhaustive_top10;
  std::printf("\n## Exhaustive rerank of every document (no pruning, no token search)\n\n| weights | nDCG@10 |\n|---|---|\n");
  std::printf("| none | %.4f |\n", ndcg_of(everything, plain, nullptr, &exhaustive_top10).first);
  for (std::size_t r = 0; r != rules.size(); ++r)
    if (rules[r].weights) std::printf("| %s | %.4f |\n", rules[r].name.c_str(), ndcg_of(everything, *weighted[r], &rules[r].uq).first);
  std::fflush(stdout);

  const std::vector<double>&betas_d = a.betas_d, &betas_q = a.betas_q;
  // per (k', rule, beta_d, beta_q): nDCG per query with the unweighted rerank
  std::map<std::tuple<std::size_t, std::size_t, double, double>, std::vector<double>> own;
  std::vector<std::string> rows(a.candidates.size());
  std::printf("\n## Pruned retrieval: token search over the kept tokens, full rerank%s\n\n",
              a.ndocs ? (" of each query's best " + std::to_string(a.ndocs) + " candidates by the hits' score (ndocs)").c_str() : "");
  std::printf("(relevant recall: the share of the judged relevant documents among the candidates; top-10 recall: the share of the\n"
              "exhaustive unweighted rerank's top 10 among them; both means over the queries)\n");
  for (std::size_t r = 0; r != rules.size(); ++r)
    for (double bd : betas_d) {
      const retriever pruned(aligner::exact_backend(c.docs.dim), c.docs.view(), aligner::index_params{.doc_prune = bd}, rules[r].ud);
      for (double bq : betas_q)
        for (std::size_t ki = 0; ki != a.candidates.size(); ++ki) {
          std::vector<std::vector<std::int64_t>> cands(judged.size());
          aligner::parallel_for(judged.size(), a.threads, [&](std::size_t i) {
            const std::size_t q = judged[i];
            const auto uq = std::span<const float>(rules[r].uq).subspan(std::size_t(c.queries.offsets[q]), c.queries.view().length(q));
            const auto res = pruned.search(c.queries.sequence(q), {.strategy = strategy, .candidates_per_token = a.candidates[ki],
                                                                   .top = c.docs.size(), .ndocs = a.ndocs, .query_prune = bq,
                                                                   .query_salience = uq,
                                                                   .use_doc_salience = false});
            cands[i] = res.ids;
            std::sort(cands[i].begin(), cands[i].end());
          });
          double mean_cands = 0;
          for (const auto& v : cands) mean_cands += double(v.size()) / double(judged.size());
          const auto unweighted = ndcg_of(cands, plain, nullptr);
          std::string weighted_text = "-";
          if (rules[r].weights) {
            const auto w = ndcg_of(cands, *weighted[r], &rules[r].uq);
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.4f", w.first);
            weighted_text = buf;
          }
          own[{ki, r, bd, bq}] = unweighted.second;
          const double mb = double(pruned.indexed_tokens() * c.docs.dim * sizeof(float) + pruned.indexed_postings() * 8) / 1e6;
          char line[512];
          std::snprintf(line, sizeof line, "| %s | %.1f | %.1f | %zu | %.1f | %.0f | %.3f | %.3f | %.4f | %s |\n", rules[r].name.c_str(), bd, bq,
                        pruned.indexed_tokens(), mb, mean_cands, recall(cands, relevant), recall(cands, exhaustive_top10),
                        unweighted.first, weighted_text.c_str());
          rows[ki] += line;
          std::fprintf(stderr, "k' = %zu %s", a.candidates[ki], line);
        }
    }
  for (std::size_t ki = 0; ki != a.candidates.size(); ++ki) {
    std::printf("\n### k' = %zu\n\n", a.candidates[ki]);
    std::printf("| keep rule | beta_d | beta_q | indexed vectors | token index MB | candidates | relevant recall | top-10 recall | "
                "nDCG@10 unweighted rerank | nDCG@10 rule-weighted rerank |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n%s", rows[ki].c_str());
  }

  for (std::size_t ki = 0; ki != a.candidates.size(); ++ki) {
    std::printf("\n## Learned keep against each other keep rule (unweighted rerank, k' = %zu): nDCG@10 difference\n\n", a.candidates[ki]);
    std::printf("| other rule | beta_d | beta_q | learned - other | 95%% bootstrap | queries better / worse | sign test p |\n"
                "|---|---|---|---|---|---|---|\n");
    for (std::size_t r = 1; r != rules.size(); ++r)
      for (double bd : betas_d)
        for (double bq : betas_q) {
          const auto m = compare(own[{ki, 0, bd, bq}], own[{ki, r, bd, bq}], a.seed + 7);
          std::printf("| %s | %.1f | %.1f | %+.4f | [%+.4f, %+.4f] | %zu / %zu | %.3g |\n", rules[r].name.c_str(), bd, bq, m.mean, m.lo, m.hi,
                      m.wins, m.losses, sign_test(m.wins, m.losses));
        }
  }
  std::printf("\n# %.0f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "salience_bench: %s\n", e.what());
  return 2;
}
