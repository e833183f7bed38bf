/** @file metrics.hpp
 *  @brief nDCG@k, MRR@k, Recall@k, MAP and P@k computed the way trec_eval computes them (SPEC section 8).
 *
 *  - ranking: a run's documents sorted by score descending, ties by document id descending (trec_eval);
 *  - relevant: grade >= 1; nDCG gain = the grade (linear), discount 1 / log2(rank + 1), ideal DCG from the
 *    judgments sorted by grade; MRR@k = 1 / rank of the first relevant document in the top k (0 if none);
 *    Recall@k = relevant documents in the top k / all relevant (0 when a query has none);
 *    AP@k (trec_eval map_cut_k; `map` is AP over the whole ranking) = sum over the relevant documents at ranks
 *    r <= k of (relevant in the top r) / r, divided by all relevant (0 when a query has none);
 *    P@k (trec_eval P_k) = relevant documents in the top k / k, k counted even when fewer were retrieved;
 *  - the mean is over queries present in both the run and the qrels (trec_eval's default), or with
 *    `all_judged` over every judged query, a query missing from the run counting 0 (trec_eval -c). A query
 *    with an empty ranking counts as missing, as it is when the run is written to a file. */
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/trec.hpp"

namespace aligner {

/// Per-query and mean values of one measure.
struct metric_result {
  std::map<std::string, double> per_query;
  double mean = 0.0;
  std::size_t queries = 0;
};

/// The measures this library computes.
enum class measure { ndcg, mrr, recall, average_precision, precision };

namespace detail {

inline std::vector<const io::run_entry*> trec_order(const std::vector<io::run_entry>& entries) {
  std::vector<const io::run_entry*> order;
  order.reserve(entries.size());
  for (const auto& e : entries) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const io::run_entry* a, const io::run_entry* b) {
    return a->score > b->score || (a->score == b->score && a->doc_id > b->doc_id);
  });
  return order;
}

inline double query_measure(measure m, std::size_t k, const std::vector<io::run_entry>& entries,
                            const std::map<std::string, int>& judged) {
  const auto order = trec_order(entries);
  const std::size_t depth = std::min(k, order.size());
  auto grade_of = [&](const std::string& doc) {
    const auto it = judged.find(doc);
    return it == judged.end() ? 0 : it->second;
  };
  switch (m) {
    case measure::ndcg: {
      double dcg = 0.0;
      for (std::size_t r = 0; r != depth; ++r) {
        const int g = grade_of(order[r]->doc_id);
        if (g > 0) dcg += double(g) / std::log2(double(r) + 2.0);
      }
      std::vector<int> grades;
      for (const auto& [doc, g] : judged)
        if (g > 0) grades.push_back(g);
      std::sort(grades.begin(), grades.end(), std::greater<>());
      double ideal = 0.0;
      for (std::size_t r = 0; r < std::min(k, grades.size()); ++r) ideal += double(grades[r]) / std::log2(double(r) + 2.0);
      return ideal > 0.0 ? dcg / ideal : 0.0;
    }
    case measure::mrr:
      for (std::size_t r = 0; r != depth; ++r)
        if (grade_of(order[r]->doc_id) > 0) return 1.0 / double(r + 1);
      return 0.0;
    case measure::recall: {
      std::size_t relevant = 0, found = 0;
      for (const auto& [doc, g] : judged) relevant += g > 0;
      for (std::size_t r = 0; r != depth; ++r) found += grade_of(order[r]->doc_id) > 0;
      return relevant ? double(found) / double(relevant) : 0.0;
    }
    case measure::average_precision: {
      std::size_t relevant = 0, found = 0;
      for (const auto& [doc, g] : judged) relevant += g > 0;
      double sum = 0.0;
      for (std::size_t r = 0; r != depth; ++r)
        if (grade_of(order[r]->doc_id) > 0) sum += double(++found) / double(r + 1);
      return relevant ? sum / double(relevant) : 0.0;
    }
    case measure::precision: {
      std::size_t found = 0;
      for (std::size_t r = 0; r != depth; ++r) found += grade_of(order[r]->doc_id) > 0;
      return double(found) / double(k);
    }
  }
  return 0.0;
}

}  // namespace detail

/// Evaluates one measure at cutoff k (k >= 1) over a run and qrels.
inline metric_result evaluate(measure m, std::size_t k, const io::run& run, const io::qrels& judgments,
                              bool all_judged = false) {
  ALIGNER_EXPECTS(k >= 1, "metric cutoff k must be >= 1, got ", k);
  metric_result out;
  double total = 0.0;
  for (const auto& [qid, judged] : judgments) {
    const auto it = run.find(qid);
    if (it == run.end() || it->second.empty()) {  // an empty ranking is absent from a TREC run file
      if (all_judged) {
        out.per_query[qid] = 0.0;
        ++out.queries;
      }
      continue;
    }
    const double v = detail::query_measure(m, k, it->second, judged);
    out.per_query[qid] = v;
    total += v;
    ++out.queries;
  }
  out.mean = out.queries ? total / double(out.queries) : 0.0;
  return out;
}

inline metric_result ndcg_at(std::size_t k, const io::run& r, const io::qrels& q, bool all_judged = false) {
  return evaluate(measure::ndcg, k, r, q, all_judged);
}
inline metric_result mrr_at(std::size_t k, const io::run& r, const io::qrels& q, bool all_judged = false) {
  return evaluate(measure::mrr, k, r, q, all_judged);
}
inline metric_result recall_at(std::size_t k, const io::run& r, const io::qrels& q, bool all_judged = false) {
  return evaluate(measure::recall, k, r, q, all_judged);
}
/// Average precision over the top k (trec_eval map_cut_k).
inline metric_result map_at(std::size_t k, const io::run& r, const io::qrels& q, bool all_judged = false) {
  return evaluate(measure::average_precision, k, r, q, all_judged);
}
/// Mean average precision over each whole ranking (trec_eval map).
inline metric_result mean_average_precision(const io::run& r, const io::qrels& q, bool all_judged = false) {
  return evaluate(measure::average_precision, std::numeric_limits<std::size_t>::max(), r, q, all_judged);
}
/// Precision at k (trec_eval P_k).
inline metric_result precision_at(std::size_t k, const io::run& r, const io::qrels& q, bool all_judged = false) {
  return evaluate(measure::precision, k, r, q, all_judged);
}

}  // namespace aligner
