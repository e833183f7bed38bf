// Identical token vectors indexed once (pipeline/token_postings.hpp): the posting lists against a plain count of
// which documents hold which vector, candidates against a brute-force candidate set, persistence.
#include <aligner/aligner.hpp>
#include <aligner/io/index_file.hpp>
#include <aligner/io/section_file.hpp>

#include "test_common.hpp"
#include "test_sections.hpp"

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include <unistd.h>

namespace {

/// Documents whose tokens are drawn from a small vocabulary of unit vectors (a static-embedding collection):
/// word w of the vocabulary has vector vocab[w]; tokens[t] = vocab[words[t]].
struct word_corpus {
  std::size_t dim, vocab_size;
  std::vector<float> vocab, tokens;
  std::vector<std::uint32_t> words;
  std::vector<std::int64_t> offsets{0};

  word_corpus(std::size_t docs, std::size_t max_len, std::size_t dim_, std::size_t vocab_, std::uint64_t seed, bool with_empty = true)
      : dim(dim_), vocab_size(vocab_), vocab(aligner_test::random_matrix(vocab_, dim_, seed, true)) {
    std::mt19937_64 rng(seed + 1);
    for (std::size_t d = 0; d != docs; ++d) {
      const std::size_t len = with_empty && d % 13 == 4 ? 0 : 1 + rng() % max_len;
      for (std::size_t j = 0; j != len; ++j) {
        // Zipf-like: low word ids are common (every document), high ones rare.
        const auto w = std::uint32_t(std::min<std::uint64_t>(vocab_ - 1, (rng() % vocab_) * (rng() % vocab_) / vocab_));
        words.push_back(w);
        tokens.insert(tokens.end(), vocab.begin() + std::ptrdiff_t(w * dim), vocab.begin() + std::ptrdiff_t((w + 1) * dim));
      }
      offsets.push_back(std::int64_t(words.size()));
    }
  }
  aligner::sequence_set_view view() const { return {{tokens.data(), words.size(), dim}, offsets}; }
  std::size_t size() const { return offsets.size() - 1; }
  /// Documents holding word w (ascending), counted from the word lists.
  std::set<std::uint32_t> holders(std::uint32_t w) const {
    std::set<std::uint32_t> out;
    for (std::size_t d = 0; d != size(); ++d)
      for (std::int64_t t = offsets[d]; t != offsets[d + 1]; ++t)
        if (words[std::size_t(t)] == w) out.insert(std::uint32_t(d));
    return out;
  }
};

using retriever = aligner::aligner_retriever<aligner::exact_backend>;

}  // namespace

TEST_CASE("postings: identical vectors are indexed once and expand to every document holding them", "[oracle]") {
  const word_corpus c(120, 30, 16, 50, 7);
  // Added in three batches (duplicates within a batch, within a document and across batches).
  retriever r(aligner::exact_backend(c.dim));
  const std::size_t cut1 = 40, cut2 = 41;
  for (auto [a, b] : {std::pair<std::size_t, std::size_t>{0, cut1}, {cut1, cut2}, {cut2, c.size()}}) {
    std::vector<std::int64_t> offs;
    for (std::size_t d = a; d <= b; ++d) offs.push_back(c.offsets[d] - c.offsets[a]);
    r.add(aligner::sequence_set_view{{c.tokens.data() + std::size_t(c.offsets[a]) * c.dim, std::size_t(offs.back()), c.dim}, offs});
  }
  const std::set<std::uint32_t> used(c.words.begin(), c.words.end());
  CHECK(r.indexed_tokens() == used.size());
  CHECK(r.backend().size() == used.size());
  // Each backend vector is one word; its posting list is exactly the documents holding that word.
  std::size_t pairs = 0;
  for (std::size_t v = 0; v != r.indexed_tokens(); ++v) {
    const auto vec = r.backend().vector(v);
    std::uint32_t word = 0;
    while (!std::equal(vec.begin(), vec.end(), c.vocab.begin() + std::ptrdiff_t(word * c.dim))) ++word;
    REQUIRE(word < c.vocab_size);
    std::vector<std::uint32_t> got;
    r.state().tokens.for_each_doc(v, [&](std::uint32_t d) { got.push_back(d); });
    const auto want = c.holders(word);
    CHECK(got == std::vector<std::uint32_t>(want.begin(), want.end()));
    pairs += want.size();
  }
  CHECK(r.indexed_postings() == pairs);

  // Candidates: the documents holding any of each query token's k' best distinct vectors, computed here by brute force.
  const auto q = aligner_test::random_matrix(5, c.dim, 99, true);
  for (std::size_t k : {1, 3, 10}) {
    const auto res = r.search({q.data(), 5, c.dim}, {.candidates_per_token = k, .top = 1000});
    std::set<std::uint32_t> want;
    for (std::size_t i = 0; i != 5; ++i) {
      std::vector<std::pair<double, std::uint32_t>> by_score;
      for (std::uint32_t w : used) {
        double s = 0;
        for (std::size_t x = 0; x != c.dim; ++x) s += double(q[i * c.dim + x]) * c.vocab[w * c.dim + x];
        by_score.emplace_back(-s, w);
      }
      std::sort(by_score.begin(), by_score.end());
      for (std::size_t h = 0; h != std::min(k, by_score.size()); ++h)
        for (std::uint32_t d : c.holders(by_score[h].second)) want.insert(d);
    }
    INFO("k' " << k);
    CHECK(res.candidates_scored == want.size());
    CHECK(res.backend_hits == 5 * k);
    std::set<std::uint32_t> returned(res.ids.begin(), res.ids.end());
    CHECK(returned == want);
  }
}

TEST_CASE("postings: deduplicated and plain indexes rank alike when k' reaches every vector", "[oracle]") {
  const word_corpus c(90, 25, 12, 40, 11, false);  // no empty document: a token search finds every document
  const retriever dedup(aligner::exact_backend(c.dim), c.view());
  const retriever plain(aligner::exact_backend(c.dim), c.view(), {.dedup_tokens = false});
  CHECK(plain.indexed_tokens() == c.words.size());
  CHECK(dedup.indexed_tokens() < plain.indexed_tokens() / 5);
  const auto q = aligner_test::random_matrix(6, c.dim, 5, true);
  for (const auto& a : {aligner::alignment::top1(), aligner::alignment::top_k(3), aligner::alignment::top_p(0.05)}) {
    const auto all = dedup.search({q.data(), 6, c.dim}, {.strategy = a, .top = 100, .exhaustive = true});
    const auto d = dedup.search({q.data(), 6, c.dim}, {.strategy = a, .candidates_per_token = dedup.indexed_tokens(), .top = 100});
    const auto p = plain.search({q.data(), 6, c.dim}, {.strategy = a, .candidates_per_token = plain.indexed_tokens(), .top = 100});
    CHECK(d.ids == all.ids);
    CHECK(d.scores == all.scores);
    CHECK(p.ids == all.ids);
    CHECK(p.scores == all.scores);
  }
  // With a small k' the deduplicated index finds more documents: every holder of each hit.
  const auto d1 = dedup.search({q.data(), 6, c.dim}, {.candidates_per_token = 2, .top = 100});
  const auto p1 = plain.search({q.data(), 6, c.dim}, {.candidates_per_token = 2, .top = 100});
  CHECK(d1.candidates_scored > p1.candidates_scored);
}

TEST_CASE("postings: +0 and -0 are one vector, different vectors never merge", "[edge]") {
  const std::size_t dim = 3;
  const std::vector<float> tokens = {0.f, 1.f, 0.5f,  -0.f, 1.f, 0.5f,  0.f, 1.f, 0.50000006f,  1.f, 0.f, 0.f};
  const std::int64_t offsets[] = {0, 1, 2, 3, 4};
  const retriever r(aligner::exact_backend(dim), aligner::sequence_set_view{{tokens.data(), 4, dim}, offsets});
  CHECK(r.indexed_tokens() == 3);  // the first two are equal; one ulp apart is another vector
  CHECK(r.indexed_postings() == 4);
  std::vector<std::uint32_t> docs;
  r.state().tokens.for_each_doc(0, [&](std::uint32_t d) { docs.push_back(d); });
  CHECK(docs == std::vector<std::uint32_t>{0, 1});
}

TEST_CASE("postings: remove, filters and allowed ids act on every document of a posting list", "[property]") {
  const word_corpus c(150, 20, 16, 30, 23);
  retriever r(aligner::exact_backend(c.dim), c.view());
  const auto q = aligner_test::random_matrix(4, c.dim, 3, true);
  const auto before = r.search({q.data(), 4, c.dim}, {.candidates_per_token = 2, .top = 10});
  REQUIRE(before.ids.size() == 10);
  // Remove the best document: it is never returned; the others keep their scores.
  r.remove(before.ids[0]);
  const auto after = r.search({q.data(), 4, c.dim}, {.candidates_per_token = 2, .top = 9});
  CHECK(std::vector<std::int64_t>(before.ids.begin() + 1, before.ids.end()) == after.ids);
  // A filter keeping odd documents: results are the exhaustive filtered ranking's top (candidates from postings
  // that hold some odd document).
  const auto odd = [](std::int64_t d) { return d % 2 == 1; };
  const auto f = r.search({q.data(), 4, c.dim}, {.candidates_per_token = 3, .top = 5, .filter = odd});
  for (auto id : f.ids) CHECK(id % 2 == 1);
  CHECK(f.ids.size() == 5);
  const std::int64_t allowed[] = {3, 77, 140};
  const auto a = r.search({q.data(), 4, c.dim}, {.candidates_per_token = 1, .top = 5, .allowed_ids = allowed});
  const auto ex = r.search({q.data(), 4, c.dim}, {.top = 5, .exhaustive = true, .allowed_ids = allowed});
  CHECK(a.ids == ex.ids);
}

TEST_CASE("postings: save and load keep the posting lists, later adds still deduplicate, old files load", "[property]") {
  const word_corpus c(80, 20, 8, 25, 31);
  retriever r(aligner::exact_backend(c.dim), c.view());
  r.remove(5);
  const auto path = std::filesystem::temp_directory_path() / ("aligner_postings_" + std::to_string(::getpid()) + ".idx");
  aligner::save_index(r, path);
  const auto q = aligner_test::random_matrix(3, c.dim, 8, true);
  const aligner::search_params p{.candidates_per_token = 2, .top = 20};
  for (bool mmap : {true, false}) {
    auto back = aligner::load_index<aligner::exact_backend>(path, {.mmap = mmap});
    CHECK(back.params().dedup_tokens);
    CHECK(back.indexed_tokens() == r.indexed_tokens());
    CHECK(back.indexed_postings() == r.indexed_postings());
    const auto x = r.search({q.data(), 3, c.dim}, p), y = back.search({q.data(), 3, c.dim}, p);
    CHECK(x.ids == y.ids);
    CHECK(x.scores == y.scores);
    // The same documents again: no new vector, one more posting per (word, document).
    const std::size_t vectors = back.indexed_tokens(), postings = back.indexed_postings();
    back.add(c.view());
    CHECK(back.indexed_tokens() == vectors);
    CHECK(back.indexed_postings() == 2 * postings);
  }
  // A file without the deduplication sections (as written before them) loads as a plain index.
  {
    const auto file = aligner::io::file_bytes::open(path, false);
    const auto sections = aligner::io::decode_sections(*file);
    std::vector<aligner::io::section_out> out;
    for (const auto& [name, sec] : sections)
      if (name != "token_dedup" && name != "token_prints" && name.rfind("postings_", 0) != 0)
        out.push_back({name, sec.dtype, sec.shape, std::string_view(sec.data, sec.bytes)});
    aligner::io::atomic_write(path, aligner::io::encode_sections(out));
  }
  // The deduplicated vectors then read as one vector per document: the first document of each.
  const auto old = aligner::load_index<aligner::exact_backend>(path);
  CHECK(!old.params().dedup_tokens);
  CHECK(old.indexed_postings() == old.indexed_tokens());
  std::filesystem::remove(path);
}

TEST_CASE("postings: corrupt posting sections are refused by name", "[edge]") {
  const word_corpus c(30, 10, 8, 10, 41);
  const retriever r(aligner::exact_backend(c.dim), c.view());
  const auto path = std::filesystem::temp_directory_path() / ("aligner_postings_bad_" + std::to_string(::getpid()) + ".idx");
  aligner::save_index(r, path);
  const auto file = aligner::io::file_bytes::open(path, false);
  const auto sections = aligner::io::decode_sections(*file);
  auto forge = [&](const std::string& victim, auto&& mutate) { aligner_test::forge_section(path, sections, victim, mutate); };
  forge("postings_docs", [](std::string& b) {
    const std::uint32_t big = 1000;
    std::memcpy(b.data(), &big, 4);
  });
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("names document 1000"));
  forge("token_prints", [](std::string& b) { std::memcpy(b.data() + 16, b.data(), 16); });  // vector 1 = vector 0
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("repeats an earlier vector"));
  forge("postings_vecs", [](std::string& b) {
    const std::uint32_t big = 1u << 30;
    std::memcpy(b.data(), &big, 4);
  });
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("names vector"));
  forge("token_dedup", [](std::string& b) { b[0] = 7; });
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("corrupt token_dedup"));
  std::filesystem::remove(path);
}
