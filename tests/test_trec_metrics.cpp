#include <aligner/eval/metrics.hpp>
#include <aligner/io/trec.hpp>

#include "test_common.hpp"

#include <fstream>

using Catch::Matchers::WithinAbs;

namespace {
const char* kQrels =
    "query-id\tcorpus-id\tscore\n"
    "q1\td1\t2\nq1\td2\t1\nq1\td3\t0\nq1\td5\t3\n"
    "q2\td1\t0\n"
    "q3\td9\t1\n"
    "q5\td1\t1\n";
const char* kRun =
    "q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.8 t\nq1 Q0 d4 3 0.8 t\nq1 Q0 d5 4 0.1 t\n"
    "q2 Q0 d1 1 1.0 t\n"
    "q4 Q0 d1 1 1.0 t\n";
}  // namespace

TEST_CASE("metrics: hand-computed nDCG, MRR, Recall with a tie, graded qrels and missing queries", "[golden]") {
  const auto q = aligner::io::parse_qrels(kQrels);
  auto r = aligner::io::parse_run(kRun);
  r["q5"];  // a query with an empty ranking
  // trec_eval order for q1: d1 (0.9), then the 0.8 tie by doc id descending: d4, d2; then d5.
  const auto ndcg3 = aligner::ndcg_at(3, r, q);
  CHECK_THAT(ndcg3.per_query.at("q1"), WithinAbs(0.5250049893849101, 1e-12));
  CHECK(ndcg3.per_query.at("q2") == 0.0);  // judged, nothing relevant
  CHECK(ndcg3.per_query.count("q5") == 0);  // empty ranking: absent from a run file, skipped like q3
  CHECK(ndcg3.per_query.count("q3") == 0);  // not in the run: trec_eval skips it
  CHECK(ndcg3.queries == 2);
  CHECK_THAT(ndcg3.mean, WithinAbs(0.5250049893849101 / 2, 1e-12));
  CHECK_THAT(aligner::ndcg_at(10, r, q).per_query.at("q1"), WithinAbs(0.7963337995444919, 1e-12));
  CHECK(aligner::mrr_at(10, r, q).per_query.at("q1") == 1.0);
  CHECK(aligner::mrr_at(10, r, q).per_query.at("q2") == 0.0);
  CHECK_THAT(aligner::recall_at(3, r, q).per_query.at("q1"), WithinAbs(2.0 / 3.0, 1e-12));
  CHECK(aligner::recall_at(4, r, q).per_query.at("q1") == 1.0);
  // trec_eval -c: judged queries missing from the run count as 0.
  const auto all = aligner::ndcg_at(3, r, q, true);
  CHECK(all.queries == 4);
  CHECK(all.per_query.at("q5") == 0.0);
  CHECK(all.per_query.at("q3") == 0.0);
  // MRR at a cutoff before the first relevant document.
  aligner::io::run late;
  late["q1"] = {{"d4", 3.0}, {"d9", 2.0}, {"d5", 1.0}};
  CHECK(aligner::mrr_at(2, late, q).per_query.at("q1") == 0.0);
  CHECK_THAT(aligner::mrr_at(3, late, q).per_query.at("q1"), WithinAbs(1.0 / 3.0, 1e-12));
  CHECK_THROWS_AS(aligner::ndcg_at(0, r, q), aligner::invalid_argument);
}

TEST_CASE("metrics: MAP and P@k equal trec_eval's map, map_cut_k and P_k", "[golden]") {
  // Golden values from pytrec_eval (trec_eval 9.0.8) on the same qrels and run.
  const auto q = aligner::io::parse_qrels(kQrels);
  auto r = aligner::io::parse_run(kRun);
  r["q5"];
  const auto m = aligner::mean_average_precision(r, q);
  CHECK_THAT(m.per_query.at("q1"), WithinAbs(0.8055555555555555, 1e-12));  // (1/1 + 2/3 + 3/4) / 3
  CHECK(m.per_query.at("q2") == 0.0);
  CHECK(m.queries == 2);
  CHECK_THAT(aligner::map_at(2, r, q).per_query.at("q1"), WithinAbs(0.3333333333333333, 1e-12));
  CHECK(aligner::precision_at(1, r, q).per_query.at("q1") == 1.0);
  CHECK_THAT(aligner::precision_at(3, r, q).per_query.at("q1"), WithinAbs(0.6666666666666666, 1e-12));
  CHECK_THAT(aligner::precision_at(10, r, q).per_query.at("q1"), WithinAbs(0.3, 1e-12));  // k counted past the 4 retrieved
  CHECK(aligner::precision_at(3, r, q).per_query.at("q2") == 0.0);
  aligner::io::run late;
  late["q1"] = {{"d4", 3.0}, {"d9", 2.0}, {"d5", 1.0}};
  CHECK_THAT(aligner::mean_average_precision(late, q).per_query.at("q1"), WithinAbs(0.1111111111111111, 1e-12));
  CHECK(aligner::precision_at(2, late, q).per_query.at("q1") == 0.0);
  CHECK(aligner::mean_average_precision(r, q, true).queries == 4);
  CHECK_THROWS_AS(aligner::precision_at(0, r, q), aligner::invalid_argument);
}

TEST_CASE("trec: qrels in TREC format, runs round-trip", "[property]") {
  const auto q = aligner::io::parse_qrels("1 0 a 2\n1 0 b 0\n2 0 c 1.0\n");
  CHECK(q.at("1").at("a") == 2);
  CHECK(q.at("2").at("c") == 1);
  auto r = aligner::io::parse_run(kRun);
  const auto text = aligner::io::format_run(r, "x");
  const auto back = aligner::io::parse_run(text);
  REQUIRE(back.size() == r.size());
  for (const auto& [qid, entries] : r) {
    REQUIRE(back.at(qid).size() == entries.size());
    for (std::size_t i = 0; i != entries.size(); ++i) {
      CHECK(back.at(qid)[i].doc_id == entries[i].doc_id);
      CHECK(back.at(qid)[i].score == entries[i].score);
    }
  }
  const auto path = std::filesystem::temp_directory_path() / "aligner_test_run.txt";
  aligner::io::save_run(path, r);
  CHECK(aligner::io::load_run(path).size() == r.size());
  std::filesystem::remove(path);
}

TEST_CASE("trec: malformed files name the file and line", "[edge]") {
  CHECK_THROWS_WITH(aligner::io::parse_qrels("q1\td1\t1\nq1 d2\n", "f.tsv"), Catch::Contains("f.tsv:2"));
  CHECK_THROWS_WITH(aligner::io::parse_qrels("q1\td1\tx\n", "f.tsv"), Catch::Contains("f.tsv:1") && Catch::Contains("'x'"));
  CHECK_THROWS_WITH(aligner::io::parse_run("q1 Q0 d1 1 nan t\n", "r"), Catch::Contains("r:1"));
  CHECK_THROWS_WITH(aligner::io::parse_run("q1 Q0 d1 1 0.5\n", "r"), Catch::Contains("6 fields"));
  CHECK_THROWS_AS(aligner::io::load_qrels("/nonexistent/qrels.tsv"), aligner::io_error);
}
