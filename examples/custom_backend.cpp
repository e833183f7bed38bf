// Plugging your own maximum-inner-product engine into aligner_retriever: four members and a static_assert.
// This one is a deliberately simple brute force over a std::vector; swap the body of search() for your ANN.
#include <aligner/aligner.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

struct my_backend {
  std::size_t dims;
  std::vector<float> rows;

  std::size_t dim() const { return dims; }
  std::size_t size() const { return rows.size() / dims; }
  void add(aligner::matrix_view<float> v) {
    for (std::size_t r = 0; r != v.rows; ++r) rows.insert(rows.end(), v.row(r), v.row(r) + dims);
  }
  aligner::topk_result search(aligner::matrix_view<float> q, std::size_t k) const {
    aligner::topk_result out(q.rows, k);  // pre-filled with id -1, score -inf
    std::vector<std::int64_t> ids(size());
    std::vector<float> s(size());
    for (std::size_t i = 0; i != q.rows; ++i) {
      for (std::size_t t = 0; t != size(); ++t) s[t] = aligner::dot(q.row(i), rows.data() + t * dims, dims);
      std::iota(ids.begin(), ids.end(), 0);
      const std::size_t n = std::min(k, ids.size());
      std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(),
                        [&](auto a, auto b) { return s[std::size_t(a)] > s[std::size_t(b)] || (s[std::size_t(a)] == s[std::size_t(b)] && a < b); });
      for (std::size_t r = 0; r != n; ++r) out.ids_of(i)[r] = ids[r], out.scores_of(i)[r] = s[std::size_t(ids[r])];
    }
    return out;
  }
};
static_assert(aligner::mips_backend<my_backend>);

int main() {
  const std::size_t dim = 16, docs = 100, len = 12;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> tokens(docs * len * dim);
  for (auto& x : tokens) x = nd(rng);
  std::vector<std::int64_t> offsets(docs + 1);
  for (std::size_t d = 0; d <= docs; ++d) offsets[d] = std::int64_t(d * len);

  aligner::aligner_retriever<my_backend> index(my_backend{dim, {}}, {{tokens.data(), docs * len, dim}, offsets});
  const float* query = tokens.data() + 42 * len * dim;  // document 42's tokens as the query
  const auto hits = index.search({query, 5, dim}, {.strategy = aligner::alignment::top_k(2), .candidates_per_token = 50, .top = 3});
  for (std::size_t r = 0; r != hits.ids.size(); ++r)
    std::printf("rank %zu: document %lld score %.4f\n", r + 1, static_cast<long long>(hits.ids[r]), double(hits.scores[r]));
  return hits.ids.empty() || hits.ids[0] != 42;  // the document the query came from must win
}
