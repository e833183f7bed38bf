// A program built with the kernels compiled once (ALIGNER_SEPARATE_KERNELS on every translation unit, and
// separate_kernels.cpp defining ALIGNER_KERNELS_IMPLEMENTATION): this TU and second_tu.cpp only call the kernels'
// instances. Every entry point that has one runs here (the rerank of each storage, the f32-only path of score, the
// exact token scan with and without a filter, explain's S), and each result is checked against the scalar
// reference. Built without separate_kernels.cpp the program must fail to link (run.cmake checks that too).
#include <aligner/aligner.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

float second_tu_score();

namespace {

int failures = 0;

void expect_near(double got, double want, double tol, const char* what) {
  if (!(std::abs(got - want) <= tol)) {
    std::printf("separate: %s: got %.7g, want %.7g\n", what, got, want);
    ++failures;
  }
}

}  // namespace

int main() {
  const std::size_t dim = 24, docs = 40;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<std::size_t> len(1, 37);
  std::vector<std::int64_t> offsets{0};
  for (std::size_t d = 0; d != docs; ++d) offsets.push_back(offsets.back() + std::int64_t(len(rng)));
  std::vector<float> tokens(std::size_t(offsets.back()) * dim);
  for (auto& x : tokens) x = nd(rng);
  const aligner::sequence_set_view set{{tokens.data(), std::size_t(offsets.back()), dim}, offsets};
  const float* query = tokens.data() + std::size_t(offsets[7]) * dim;  // document 7's first tokens
  const aligner::matrix_view<float> q{query, std::size_t(offsets[8] - offsets[7]), dim};

  // score and score_batch (the f32-only instance) against the double reference, Top-1 and Top-3.
  for (const auto& strategy : {aligner::alignment::top1(), aligner::alignment::top_k(3)}) {
    const aligner::score_params p{.strategy = strategy};
    const std::vector<float> batch = aligner::score_batch(q, set, p);
    for (std::size_t d = 0; d != docs; ++d) {
      const double want = aligner::ref::score(q, set.sequence(d), p);
      expect_near(aligner::score(q, set.sequence(d), p), want, 1e-4, "score");
      expect_near(batch[d], want, 1e-4, "score_batch");
    }
  }

  // The retriever over every rerank storage: exhaustive candidates, so every document is reranked; the token scan
  // of each exact backend precision, unfiltered and filtered.
  const std::pair<aligner::storage, aligner::storage> kinds[] = {{aligner::storage::f32, aligner::storage::f32},
                                                                 {aligner::storage::bf16, aligner::storage::bf16},
                                                                 {aligner::storage::i8, aligner::storage::i8},
                                                                 {aligner::storage::residual, aligner::storage::f32}};
  for (const auto& [store, scan] : kinds) {
    aligner::index_params ip{.precision = store};
    ip.residual.centroids = 16;
    aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(dim, scan), set, ip);
    const auto hits = index.search(q, {.candidates_per_token = 1000, .top = 5});
    if (hits.ids.empty() || hits.ids[0] != 7) {
      std::printf("separate: storage %s: the query's own document is not first\n", aligner::to_string(store));
      ++failures;
    }
    // The store's rounding: none for f32, 8 bits (bf16, i8), 2-bit residuals of 16 centroids.
    const double rel = store == aligner::storage::f32 ? 1e-5 : store == aligner::storage::residual ? 0.15 : 0.02;
    for (std::size_t r = 0; r != hits.ids.size(); ++r) {
      const double want = aligner::ref::score(q, set.sequence(std::size_t(hits.ids[r])));
      expect_near(hits.scores[r], want, rel * (1 + std::abs(want)), "retriever");
    }
    const auto filtered = index.search(q, {.candidates_per_token = 1000, .top = 5, .filter = [](std::int64_t id) { return id % 2 == 0; }});
    for (const auto id : filtered.ids)
      if (id % 2 != 0) {
        std::printf("separate: the filter let document %lld through\n", static_cast<long long>(id));
        ++failures;
      }
    const auto why = index.explain(q, 7);
    expect_near(why.score, hits.scores[0], 1e-5, "explain");
  }
  expect_near(second_tu_score(), 1.5, 1e-6, "second translation unit");
  if (failures) return 1;
  std::printf("separate: kernels compiled once (%s), every check passed\n", aligner::compiled_arch_name().c_str());
  return 0;
}
