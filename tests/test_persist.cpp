// Saving and loading a retriever: identical results, every corruption caught, crash-safe writes.
#include <aligner/aligner.hpp>
#include <aligner/io/crc32c.hpp>
#include <aligner/io/section_file.hpp>

#include "test_common.hpp"

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct small_index {
  std::size_t dim = 8;
  std::vector<float> tokens;
  std::vector<std::int64_t> offsets{0};
  std::vector<float> salience;
  small_index(std::size_t docs, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t d = 0; d != docs; ++d) offsets.push_back(offsets.back() + std::int64_t(d % 7 == 3 ? 0 : 1 + rng() % 9));
    tokens = aligner_test::random_matrix(std::size_t(offsets.back()), dim, seed + 1, true);
    salience = aligner_test::random_weights(std::size_t(offsets.back()), seed + 2);
  }
  aligner::sequence_set_view view() const { return {{tokens.data(), std::size_t(offsets.back()), dim}, offsets}; }
};

using retriever = aligner::aligner_retriever<aligner::exact_backend>;

void require_same_results(const retriever& a, const retriever& b, std::size_t dim) {
  const auto q = aligner_test::random_matrix(5, dim, 1234, true);
  for (const auto& s : {aligner::alignment::top1(), aligner::alignment::top_k(3), aligner::alignment::top_p(0.2)})
    for (bool exhaustive : {false, true}) {
      const aligner::search_params p{.strategy = s, .candidates_per_token = 20, .top = 30, .exhaustive = exhaustive};
      const auto ra = a.search({q.data(), 5, dim}, p), rb = b.search({q.data(), 5, dim}, p);
      REQUIRE(ra.ids == rb.ids);
      REQUIRE(ra.scores == rb.scores);
    }
}

std::filesystem::path temp(const std::string& name) { return std::filesystem::temp_directory_path() / ("aligner_persist_" + name); }

}  // namespace

TEST_CASE("crc32c: standard check value", "[golden]") {
  CHECK(aligner::io::crc32c("123456789", 9) == 0xE3069283u);
  CHECK(aligner::io::crc32c("", 0) == 0u);
  // Incremental equals one shot.
  CHECK(aligner::io::crc32c("6789", 4, aligner::io::crc32c("12345", 5)) == 0xE3069283u);
}

TEST_CASE("persist: save -> load -> search gives identical results (mmap and read)", "[property]") {
  const small_index data(60, 3);
  retriever r(aligner::exact_backend(data.dim), data.view(), {.doc_prune = 0.5}, data.salience);
  r.remove(4);
  r.remove(17);
  const auto path = temp("index.bin");
  r.save(path);
  for (bool mmap : {true, false}) {
    const auto back = retriever::load(path, {.mmap = mmap});
    CHECK(back.size() == r.size());
    CHECK(back.live_size() == r.live_size());
    CHECK(back.indexed_tokens() == r.indexed_tokens());
    CHECK(back.store().is_adopted() == mmap);
    CHECK(back.is_removed(4));
    CHECK(back.params().doc_prune == 0.5);
    require_same_results(r, back, data.dim);
  }
  // A loaded (mapped) retriever accepts new documents: they are copied out of the mapping first.
  auto grown = retriever::load(path);
  const auto extra = aligner_test::random_matrix(3, data.dim, 77, true);
  const std::vector<float> extra_salience = {1.f, 0.5f, 2.f};
  CHECK(grown.add(aligner::matrix_view<float>(extra.data(), 3, data.dim), extra_salience) == 60);
  CHECK(!grown.store().is_adopted());
  r.add(aligner::matrix_view<float>(extra.data(), 3, data.dim), extra_salience);
  require_same_results(r, grown, data.dim);
  // Expected dimension.
  CHECK_THROWS_WITH(retriever::load(path, {.expected_dim = 9}), Catch::Contains("does not match the expected dim 9"));
  std::filesystem::remove(path);
}

TEST_CASE("persist: a bf16 store saves and loads (mapped and read)", "[property]") {
  const small_index data(40, 21);
  retriever r(aligner::exact_backend(data.dim), data.view(), {.doc_prune = 0.5, .precision = aligner::storage::bf16}, data.salience);
  const auto path = temp("bf16.bin");
  r.save(path);
  for (bool mmap : {true, false}) {
    const auto back = retriever::load(path, {.mmap = mmap});
    CHECK(back.store().precision() == aligner::storage::bf16);
    CHECK(back.params().precision == aligner::storage::bf16);
    require_same_results(r, back, data.dim);
  }
  std::filesystem::remove(path);
}

TEST_CASE("persist: every flipped byte is caught or harmless, every truncation caught", "[edge]") {
  const small_index data(12, 5);
  retriever r(aligner::exact_backend(data.dim), data.view(), {}, data.salience);
  const auto path = temp("flip.bin");
  r.save(path);
  const std::string good = aligner::io::read_file(path);
  const auto q = aligner_test::random_matrix(3, data.dim, 9, true);
  const auto want = r.search({q.data(), 3, data.dim}, {.candidates_per_token = 50, .top = 20});
  std::size_t caught = 0;
  for (std::size_t i = 0; i != good.size(); ++i) {
    std::string bad = good;
    bad[i] = char(bad[i] ^ 0x5a);
    aligner::io::atomic_write(path, bad);
    try {
      const auto back = retriever::load(path, {.mmap = (i % 2) == 0});
      const auto got = back.search({q.data(), 3, data.dim}, {.candidates_per_token = 50, .top = 20});
      REQUIRE(got.ids == want.ids);  // a byte no check reads (padding) may flip without effect
      REQUIRE(got.scores == want.scores);
    } catch (const aligner::io_error& e) {
      ++caught;
      REQUIRE(std::string(e.what()).find(path.string()) != std::string::npos);
    }
  }
  CHECK(caught > good.size() / 2);
  for (std::size_t len = 0; len < good.size(); len += 7) {
    aligner::io::atomic_write(path, good.substr(0, len));
    REQUIRE_THROWS_AS(retriever::load(path), aligner::io_error);
  }
  // A newer format version is refused by name.
  std::string newer = good;
  newer[8] = 2;
  aligner::io::atomic_write(path, newer);
  CHECK_THROWS_WITH(retriever::load(path), Catch::Contains("newer"));
  CHECK_THROWS_WITH(retriever::load(temp("missing.bin")), Catch::Contains("missing.bin"));
  std::filesystem::remove(path);
}

TEST_CASE("persist: a save killed at a random point leaves the old or the new index", "[edge]") {
  const small_index old_data(40, 11), new_data(80, 12);
  const auto path = temp("kill.bin");
  retriever(aligner::exact_backend(old_data.dim), old_data.view()).save(path);
  const retriever fresh(aligner::exact_backend(new_data.dim), new_data.view());
  std::mt19937_64 rng(5);
  std::size_t saw_old = 0, saw_new = 0;
  for (int round = 0; round != 40; ++round) {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      for (;;) fresh.save(path);  // keep rewriting until killed
    }
    usleep(useconds_t(rng() % 3000));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    const auto back = retriever::load(path);  // must never throw
    REQUIRE((back.size() == 40 || back.size() == 80));
    (back.size() == 40 ? saw_old : saw_new) += 1;
  }
  CHECK(saw_new > 0);
  // Temporary files of killed writers may remain; they never replace the index.
  for (const auto& entry : std::filesystem::directory_iterator(path.parent_path()))
    if (entry.path().filename().string().rfind(".aligner_persist_kill.bin.tmp.", 0) == 0) std::filesystem::remove(entry.path());
  std::filesystem::remove(path);
}
