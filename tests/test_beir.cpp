#include <aligner/io/beir.hpp>

#include "test_common.hpp"

TEST_CASE("beir: records with escapes, nested members and numeric ids", "[golden]") {
  const auto r = aligner::io::parse_beir_jsonl(
      "{\"_id\": \"d1\", \"title\": \"A \\\"quoted\\\" title\", \"text\": \"caf\\u00e9 \\ud83d\\ude00\\n\", \"metadata\": {\"a\": [1, 2.5e3, null, true, {\"b\": \"x\"}]}}\n"
      "\n"
      "{\"_id\": 42, \"text\": \"t\", \"title\": null}\r\n");
  REQUIRE(r.size() == 2);
  CHECK(r[0].id == "d1");
  CHECK(r[0].title == "A \"quoted\" title");
  CHECK(r[0].text == "caf\xc3\xa9 \xf0\x9f\x98\x80\n");
  CHECK(r[1].id == "42");
  CHECK(r[1].title.empty());
}

TEST_CASE("beir: the bundled Cranfield corpus and queries parse and match the vector ids", "[golden]") {
  const auto docs = aligner::io::load_beir_jsonl(aligner_test::cranfield_dir() / "corpus.jsonl");
  const auto queries = aligner::io::load_beir_jsonl(aligner_test::cranfield_dir() / "queries.jsonl");
  CHECK(docs.size() == 1400);
  CHECK(queries.size() == 225);
  const auto ids = aligner::io::read_lines(aligner_test::cranfield_dir() / "glove100" / "doc_ids.txt");
  REQUIRE(ids.size() >= docs.size());
  for (std::size_t i = 0; i != docs.size(); ++i) REQUIRE(docs[i].id == ids[i]);
}

TEST_CASE("beir: malformed lines name file, line and column", "[edge]") {
  using aligner::io::parse_beir_jsonl;
  CHECK_THROWS_WITH(parse_beir_jsonl("{\"_id\": \"a\"}\n{\"_id\": \"b\"", "c.jsonl"), Catch::Contains("c.jsonl:2:"));
  CHECK_THROWS_WITH(parse_beir_jsonl("{\"text\": \"a\"}"), Catch::Contains("no \"_id\""));
  CHECK_THROWS_WITH(parse_beir_jsonl("{\"_id\": \"a\\q\"}"), Catch::Contains("invalid escape"));
  CHECK_THROWS_WITH(parse_beir_jsonl("{\"_id\": \"a\"} x"), Catch::Contains("after the object"));
  CHECK_THROWS_WITH(parse_beir_jsonl("{\"_id\": \"\\ud800\"}"), Catch::Contains("surrogate"));
  CHECK_THROWS_WITH(parse_beir_jsonl("{\"_id\": [1]}"), Catch::Contains("must be a string"));
  CHECK_THROWS_AS(parse_beir_jsonl("{\"_id\": \"a\", \"m\": {\"x\" 1}}"), aligner::io_error);
  CHECK_THROWS_AS(parse_beir_jsonl("[1, 2]"), aligner::io_error);
  CHECK_THROWS_AS(parse_beir_jsonl(std::string(300, '[')), aligner::io_error);
  // Every truncation of a valid line is an error, never a crash.
  const std::string good = "{\"_id\": \"d1\", \"text\": \"x\\u00e9\", \"m\": {\"a\": [1, {\"b\": null}]}}";
  for (std::size_t len = 1; len < good.size(); ++len) CHECK_THROWS_AS(parse_beir_jsonl(good.substr(0, len)), aligner::io_error);
}
