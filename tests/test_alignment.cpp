#include <aligner/math/alignment.hpp>

#include "test_common.hpp"

using aligner::alignment;

TEST_CASE("alignment: row budgets follow SPEC section 2", "[golden]") {
  CHECK(alignment::top1().row_budget(10) == 1);
  CHECK(alignment::top_k(4).row_budget(10) == 4);
  CHECK(alignment::top_k(40).row_budget(10) == 10);  // clamped to m
  CHECK(alignment::top_k(3).row_budget(0) == 0);
  CHECK(alignment::top_p(0.01).row_budget(50) == 1);    // max(floor(0.5), 1)
  CHECK(alignment::top_p(0.01).row_budget(250) == 2);   // floor(2.5)
  CHECK(alignment::top_p(0.02).row_budget(1494) == 29); // floor(29.88)
  CHECK(alignment::top_p(0.5).row_budget(3) == 1);
  CHECK(alignment::top_p(1.0).row_budget(17) == 17);
  CHECK(alignment::top_p(0.015).row_budget(200) == 3);
  CHECK(alignment::dense().row_budget(9) == 1);
}

TEST_CASE("alignment: names round-trip through parse", "[property]") {
  for (const auto& a : {alignment::top1(), alignment::top_k(2), alignment::top_k(16), alignment::top_p(0.005),
                        alignment::top_p(0.015), alignment::top_p(1.0), alignment::dense()})
    CHECK(alignment::parse(a.name()) == a);
  CHECK(alignment::parse("topk:1") == alignment::top1());
  CHECK(alignment::parse("top4") == alignment::top_k(4));
  CHECK(alignment::parse("topp:1.5%") == alignment::top_p(0.015));
  CHECK(alignment::top_p(0.005).name() == "topp:0.005");
  CHECK(alignment::top_k(6).name() == "topk:6");
}

TEST_CASE("alignment: bad strategies throw with the argument and value", "[edge]") {
  CHECK_THROWS_WITH(alignment::top_k(0).validate(), Catch::Contains("k = 0"));
  CHECK_THROWS_WITH(alignment::top_p(0.0).validate(), Catch::Contains("p = 0"));
  CHECK_THROWS_WITH(alignment::top_p(1.5).validate(), Catch::Contains("p = 1.5"));
  CHECK_THROWS_AS(alignment::top_p(std::nan("")).validate(), aligner::invalid_argument);
  CHECK_THROWS_AS(alignment::top_p(-0.1).validate(), aligner::invalid_argument);
  CHECK_THROWS_WITH(alignment::parse("topk:x"), Catch::Contains("topk:x"));
  CHECK_THROWS_WITH(alignment::parse("bm25"), Catch::Contains("bm25"));
  CHECK_THROWS_AS(alignment::parse("topp:2"), aligner::invalid_argument);
  CHECK_THROWS_AS(alignment::parse("topk:0"), aligner::invalid_argument);
  CHECK_THROWS_AS(alignment::parse(""), aligner::invalid_argument);
  CHECK(aligner::parse_normalization("none") == aligner::normalization::none);
  CHECK_THROWS_WITH(aligner::parse_normalization("sum"), Catch::Contains("sum"));
}
