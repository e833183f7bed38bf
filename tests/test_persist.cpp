// Saving and loading a retriever: identical results, every corruption caught, crash-safe writes.
#include <aligner/aligner.hpp>
#include <aligner/io/index_file.hpp>
#include <aligner/io/crc32c.hpp>
#include <aligner/io/section_file.hpp>

#include "test_common.hpp"
#include "test_sections.hpp"

#include <chrono>
#include <random>
#include <csignal>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>

namespace {

/// 1..9 tokens per document, every 17th empty.
struct small_index : aligner_test::random_corpus {
  small_index(std::size_t docs, std::uint64_t seed) : random_corpus(docs, 9, 8, seed) {}
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

std::filesystem::path persist_temp(const std::string& name) { return std::filesystem::temp_directory_path() / ("aligner_persist_" + name); }

}  // namespace

TEST_CASE("crc32c: standard check value", "[golden]") {
  CHECK(aligner::io::crc32c("123456789", 9) == 0xE3069283u);
  CHECK(aligner::io::crc32c("", 0) == 0u);
  // Incremental equals one shot.
  CHECK(aligner::io::crc32c("6789", 4, aligner::io::crc32c("12345", 5)) == 0xE3069283u);
  // The instruction path (taken where the CPU has SSE4.2) equals the table at every length and alignment.
  std::vector<unsigned char> bytes(300);
  std::mt19937 rng(7);
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  for (std::size_t start = 0; start != 9; ++start)
    for (std::size_t len = 0; start + len <= bytes.size(); len += 1 + len / 8) {
      const std::uint32_t table = ~aligner::io::detail::crc32c_table_driven(bytes.data() + start, len, ~0x1234u);
      CHECK(aligner::io::crc32c(bytes.data() + start, len, 0x1234u) == table);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
      if (aligner::io::detail::cpu_has_sse42()) CHECK(~aligner::io::detail::crc32c_sse42(bytes.data() + start, len, ~0x1234u) == table);
#endif
    }
}

TEST_CASE("persist: save -> load -> search gives identical results (mmap and read)", "[property]") {
  const small_index data(60, 3);
  retriever r(aligner::exact_backend(data.dim), data.view(), {.doc_prune = 0.5}, data.salience);
  r.remove(4);
  r.remove(17);
  const auto path = persist_temp("index.bin");
  aligner::save_index(r, path);
  for (bool mmap : {true, false}) {
    const auto back = aligner::load_index<aligner::exact_backend>(path, {.mmap = mmap});
    CHECK(back.size() == r.size());
    CHECK(back.live_size() == r.live_size());
    CHECK(back.indexed_tokens() == r.indexed_tokens());
    CHECK(back.store().is_adopted() == mmap);
    CHECK(back.is_removed(4));
    CHECK(back.params().doc_prune == 0.5);
    require_same_results(r, back, data.dim);
  }
  // A loaded (mapped) retriever accepts new documents: they are copied out of the mapping first.
  auto grown = aligner::load_index<aligner::exact_backend>(path);
  const auto extra = aligner_test::random_matrix(3, data.dim, 77, true);
  const std::vector<float> extra_salience = {1.f, 0.5f, 2.f};
  CHECK(grown.add(aligner::matrix_view<float>(extra.data(), 3, data.dim), extra_salience) == 60);
  CHECK(!grown.store().is_adopted());
  r.add(aligner::matrix_view<float>(extra.data(), 3, data.dim), extra_salience);
  require_same_results(r, grown, data.dim);
  // Expected dimension.
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path, {.expected_dim = 9}), Catch::Contains("does not match the expected dim 9"));
  std::filesystem::remove(path);
}

TEST_CASE("persist: bf16, f16 and i8 stores save and load (mapped and read)", "[property]") {
  const small_index data(40, 21);
  for (aligner::storage st : {aligner::storage::bf16, aligner::storage::f16, aligner::storage::i8}) {
    INFO(aligner::to_string(st));
    retriever r(aligner::exact_backend(data.dim), data.view(), {.doc_prune = 0.5, .precision = st}, data.salience);
    const auto path = persist_temp("low.bin");
    aligner::save_index(r, path);
    for (bool mmap : {true, false}) {
      const auto back = aligner::load_index<aligner::exact_backend>(path, {.mmap = mmap});
      CHECK(back.store().precision() == st);
      CHECK(back.params().precision == st);
      require_same_results(r, back, data.dim);
    }
    std::filesystem::remove(path);
  }
}

TEST_CASE("persist: every flipped byte is caught or harmless, every truncation caught", "[edge]") {
  const small_index data(12, 5);
  retriever r(aligner::exact_backend(data.dim), data.view(), {}, data.salience);
  const auto path = persist_temp("flip.bin");
  aligner::save_index(r, path);
  const std::string good = aligner::io::read_file(path);
  const auto q = aligner_test::random_matrix(3, data.dim, 9, true);
  const auto want = r.search({q.data(), 3, data.dim}, {.candidates_per_token = 50, .top = 20});
  std::size_t caught = 0;
  for (std::size_t i = 0; i != good.size(); ++i) {
    std::string bad = good;
    bad[i] = char(bad[i] ^ 0x5a);
    aligner::io::atomic_write(path, bad);
    try {
      const auto back = aligner::load_index<aligner::exact_backend>(path, {.mmap = (i % 2) == 0});
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
    REQUIRE_THROWS_AS(aligner::load_index<aligner::exact_backend>(path), aligner::io_error);
  }
  // A newer format version is refused by name.
  std::string newer = good;
  newer[8] = 2;
  aligner::io::atomic_write(path, newer);
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("newer"));
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(persist_temp("missing.bin")), Catch::Contains("missing.bin"));
  std::filesystem::remove(path);
}

TEST_CASE("persist: structurally inconsistent files with valid checksums are rejected", "[edge]") {
  // Found by fuzzing with repaired checksums: a huge last offset made packed sizes overflow into a
  // "consistent" value and the kernel read past the mapped panels.
  const small_index data(6, 31);
  retriever r(aligner::exact_backend(data.dim), data.view());
  const auto path = persist_temp("forged.bin");
  aligner::save_index(r, path);
  auto file = aligner::io::file_bytes::open(path, false);
  const auto sections = aligner::io::decode_sections(*file);
  auto forge = [&](const std::string& victim, auto&& mutate) { aligner_test::forge_section(path, sections, victim, mutate); };
  auto set_i64 = [](std::string& bytes, std::size_t index, std::int64_t value) { std::memcpy(bytes.data() + 8 * index, &value, 8); };
  const std::size_t last = data.offsets.size() - 1;
  forge("offsets", [&](std::string& b) { set_i64(b, last, (std::int64_t(1) << 62) + 12); });
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("tokens; at most 2^24 - 1"));
  CHECK_THROWS_AS(aligner::load_index<aligner::exact_backend>(path, {.mmap = false}), aligner::io_error);
  forge("offsets", [&](std::string& b) { set_i64(b, 1, data.offsets[1] + 20); });  // lengths no longer match the panels
  CHECK_THROWS_AS(aligner::load_index<aligner::exact_backend>(path), aligner::io_error);
  forge("token_doc", [&](std::string& b) { const std::uint32_t big = 1000; std::memcpy(b.data(), &big, 4); });
  CHECK_THROWS_WITH(aligner::load_index<aligner::exact_backend>(path), Catch::Contains("token map names document 1000"));
  forge("meta", [&](std::string& b) { set_i64(b, 0, 9); });  // dim
  CHECK_THROWS_AS(aligner::load_index<aligner::exact_backend>(path), aligner::io_error);
  std::filesystem::remove(path);
}

TEST_CASE("persist: a save killed at a random point leaves the old or the new index", "[edge]") {
  const small_index old_data(40, 11), new_data(80, 12);
  const auto path = persist_temp("kill.bin");
  aligner::save_index(retriever(aligner::exact_backend(old_data.dim), old_data.view()), path);
  const retriever fresh(aligner::exact_backend(new_data.dim), new_data.view());
  // Kill at random points within about three save durations (measured here, so a loaded machine still sees
  // kills both in the middle of a save and after completed ones).
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i != 3; ++i) aligner::save_index(fresh, persist_temp("kill_timing.bin"));
  const auto save_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count() / 3;
  std::filesystem::remove(persist_temp("kill_timing.bin"));
  const auto window_us = std::max<std::int64_t>(3 * save_us + 2000, 3000);
  std::mt19937_64 rng(5);
  std::size_t saw_old = 0, saw_new = 0;
  for (int round = 0; round != 40; ++round) {
    int done[2];
    REQUIRE(pipe(done) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      close(done[0]);
      for (;;) {  // keep rewriting until killed; report each completed save
        aligner::save_index(fresh, path);
        const char one = 1;
        (void)!write(done[1], &one, 1);
      }
    }
    close(done[1]);
    if (round >= 35) {  // the last rounds kill only after a completed save, so the new index is seen for sure
      char one;
      REQUIRE(read(done[0], &one, 1) == 1);
    }
    usleep(useconds_t(std::uint64_t(rng()) % std::uint64_t(window_us)));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    close(done[0]);
    const auto back = aligner::load_index<aligner::exact_backend>(path);  // must never throw
    REQUIRE((back.size() == 40 || back.size() == 80));
    (back.size() == 40 ? saw_old : saw_new) += 1;
  }
  CHECK(saw_new > 0);
  // Temporary files of killed writers may remain; they never replace the index.
  for (const auto& entry : std::filesystem::directory_iterator(path.parent_path()))
    if (entry.path().filename().string().rfind(".aligner_persist_kill.bin.tmp.", 0) == 0) std::filesystem::remove(entry.path());
  std::filesystem::remove(path);
}
