#include <aligner/eval/idf.hpp>
#include <aligner/io/collection.hpp>

#include "test_common.hpp"

TEST_CASE("collection: the bundled Cranfield loads and validates", "[golden]") {
  const auto c = aligner::io::load_collection(aligner_test::cranfield_dir());
  CHECK(c.docs.size() == 1400);
  CHECK(c.docs.tokens() == 229380);
  CHECK(c.docs.dim == 100);
  CHECK(c.queries.size() == 225);
  CHECK(c.judgments.size() == 225);
  CHECK(c.vocab_size == 6513);
  std::size_t empty = 0;
  for (std::size_t d = 0; d != c.docs.size(); ++d) empty += c.docs.view().length(d) == 0;
  CHECK(empty == 2);
  // Rows are L2-normalised GloVe vectors.
  double n = 0;
  for (std::size_t k = 0; k != c.docs.dim; ++k) n += double(c.docs.vectors[k]) * c.docs.vectors[k];
  CHECK(std::abs(n - 1.0) < 1e-4);
  const auto idf = aligner::token_idf(c.docs, c.vocab_size);
  for (float v : idf) REQUIRE(v > 0.f);
}

TEST_CASE("collection: SciFact from ../shared/data (skipped when absent)", "[golden]") {
  const auto dir = aligner_test::shared_dataset("scifact");
  if (dir.empty()) return;
  const auto c = aligner::io::load_collection(dir);
  CHECK(c.docs.size() == 5183);
  CHECK(c.docs.tokens() == 1045706);
  CHECK(c.queries.size() == 1109);
  CHECK(c.judgments.size() == 300);
}

TEST_CASE("collection: broken folders are reported with the file", "[edge]") {
  namespace fs = std::filesystem;
  const fs::path tmp = fs::temp_directory_path() / "aligner_test_collection";
  fs::remove_all(tmp);
  fs::create_directories(tmp / "vec");
  fs::create_directories(tmp / "qrels");
  CHECK_THROWS_WITH(aligner::io::load_collection(tmp, "missing"), Catch::Contains("vectors folder not found"));
  CHECK_THROWS_WITH(aligner::io::load_collection(tmp, "vec"), Catch::Contains("neither"));
  // Dense form with offsets that do not end at the token count.
  const std::vector<float> v(6, 0.5f);
  aligner::io::save_npy(tmp / "vec" / "doc_vectors.npy", v, {3, 2});
  aligner::io::save_npy(tmp / "vec" / "query_vectors.npy", v, {3, 2});
  aligner::io::save_npy<std::int64_t>(tmp / "vec" / "doc_offsets.npy", std::vector<std::int64_t>{0, 1, 2}, {3});
  aligner::io::save_npy<std::int64_t>(tmp / "vec" / "query_offsets.npy", std::vector<std::int64_t>{0, 3}, {2});
  CHECK_THROWS_WITH(aligner::io::load_collection(tmp, "vec"), Catch::Contains("doc_offsets.npy") && Catch::Contains("ends at 2"));
  aligner::io::save_npy<std::int64_t>(tmp / "vec" / "doc_offsets.npy", std::vector<std::int64_t>{0, 2, 1, 3}, {4});
  CHECK_THROWS_WITH(aligner::io::load_collection(tmp, "vec"), Catch::Contains("decrease"));
  aligner::io::save_npy<std::int64_t>(tmp / "vec" / "doc_offsets.npy", std::vector<std::int64_t>{0, 1, 3}, {3});
  aligner::io::atomic_write(tmp / "vec" / "doc_ids.txt", "a\nb\nc\n");
  aligner::io::atomic_write(tmp / "vec" / "query_ids.txt", "q\n");
  CHECK_THROWS_WITH(aligner::io::load_collection(tmp, "vec"), Catch::Contains("doc_ids.txt") && Catch::Contains("3 ids"));
  aligner::io::atomic_write(tmp / "vec" / "doc_ids.txt", "a\nb\n");
  CHECK_THROWS_WITH(aligner::io::load_collection(tmp, "vec"), Catch::Contains("test.tsv"));
  aligner::io::atomic_write(tmp / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq\ta\t1\n");
  const auto c = aligner::io::load_collection(tmp, "vec");
  CHECK(c.docs.size() == 2);
  CHECK(c.queries.size() == 1);
  fs::remove_all(tmp);
}
