// The index directory: segments committed atomically, search equal to one retriever, snapshots under a writer,
// crash safety (kill -9 at random moments, disk full), corruption refused by name, one writer.
#include <aligner/aligner.hpp>
#include <aligner/eval/alignment_view.hpp>
#include <aligner/io/index_directory.hpp>
#include <aligner/io/npy.hpp>
#include <aligner/io/streamed_build.hpp>

#include "test_common.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <random>
#include <thread>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using retriever = aligner::aligner_retriever<aligner::exact_backend>;

/// Runs `body` in a forked child that ignores SIGXFSZ (so that writes past RLIMIT_FSIZE fail with EFBIG, as on a
/// full disk) and returns the child's exit status: body's return value, or `failed` (the exception printed with
/// `what`) when body throws; -1 when the child did not exit normally.
template <class Body>
int exit_code_in_child(const char* what, int failed, Body&& body) {
  const pid_t child = ::fork();
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    int code = failed;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", what, e.what());
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

fs::path fresh_dir(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("aligner_dir_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

/// Documents [first, last) of a corpus as their own set.
struct slice {
  std::vector<std::int64_t> offsets;
  aligner::sequence_set_view view;
  std::span<const float> salience;
  slice(const aligner_test::random_corpus& c, std::size_t first, std::size_t last) {
    for (std::size_t d = first; d <= last; ++d) offsets.push_back(c.offsets[d] - c.offsets[first]);
    const std::size_t t0 = std::size_t(c.offsets[first]), t1 = std::size_t(c.offsets[last]);
    view = {{c.tokens.data() + t0 * c.dim, t1 - t0, c.dim}, offsets};
    salience = std::span<const float>(c.salience).subspan(t0, t1 - t0);
  }
};

std::shared_ptr<const aligner::residual_codec> small_codec(const aligner_test::random_corpus& c, std::size_t nbits = 2) {
  return std::make_shared<const aligner::residual_codec>(
      aligner::train_residual_codec({c.tokens.data(), std::size_t(c.offsets.back()), c.dim}, {.nbits = nbits, .centroids = 24, .seed = 5}));
}

void require_same(const aligner::search_result& a, const aligner::search_result& b) {
  REQUIRE(a.ids == b.ids);
  REQUIRE(a.scores == b.scores);
  CHECK(a.candidates_scored == b.candidates_scored);
  CHECK(a.reranked_all_allowed == b.reranked_all_allowed);
}

/// Every kind of search on the directory equals the same search on one retriever.
void require_equal_searches(const aligner::index_directory_reader& dir, const retriever& one, std::size_t dim, bool residual) {
  const auto q = aligner_test::random_matrix(6, dim, 99, true);
  const auto qs = aligner_test::random_weights(6, 98, true);
  const aligner::matrix_view<float> query(q.data(), 6, dim);
  std::vector<aligner::search_params> grid;
  for (const auto& s : {aligner::alignment::top1(), aligner::alignment::top_k(3), aligner::alignment::top_p(0.2)}) {
    grid.push_back({.strategy = s, .top = 25, .exhaustive = true});
    if (!residual) continue;
    for (std::size_t nprobe : {1, 3, 8})
      for (std::size_t ndocs : {0, 15}) grid.push_back({.strategy = s, .top = 25, .nprobe = nprobe, .ndocs = ndocs});
  }
  if (residual) {
    grid.push_back({.top = 10, .nprobe = 2, .query_prune = 0.5, .query_salience = qs});
    grid.push_back({.top = 7, .nprobe = 2, .filter = [](std::int64_t id) { return id % 3 == 0; }});
    grid.push_back({.candidates_per_token = 1, .top = 40, .nprobe = 1, .filter = [](std::int64_t id) { return id % 2 == 1; }});
  }
  const std::vector<std::int64_t> allowed = {3, 5, 44, 120, 121, 199, 250};
  grid.push_back({.top = 5, .exhaustive = true, .allowed_ids = allowed});
  if (residual) grid.push_back({.candidates_per_token = 1, .top = 5, .nprobe = 1, .allowed_ids = allowed});
  for (const auto& p : grid) {
    INFO("nprobe " << p.nprobe << " ndocs " << p.ndocs << " exhaustive " << p.exhaustive);
    const auto ref = one.search(query, p);
    require_same(dir.search(query, p), ref);
    // One search's rerank on 3 threads (search_params.threads): the same results bit for bit, on both.
    aligner::search_params threaded = p;
    threaded.threads = 3;
    require_same(dir.search(query, threaded), ref);
    require_same(one.search(query, threaded), ref);
  }
  // Several strategies at once equal one search each.
  const aligner::alignment strategies[] = {aligner::alignment::top1(), aligner::alignment::top_k(2), aligner::alignment::top_p(0.3)};
  for (const auto& p : {grid[residual ? 1 : 0], grid.back()}) {
    const auto multi = dir.search_multi(query, strategies, p), ref = one.search_multi(query, strategies, p);
    REQUIRE(multi.size() == 3);
    for (std::size_t g = 0; g != 3; ++g) require_same(multi[g], ref[g]);
    aligner::search_params threaded = p;
    threaded.threads = 0;  // every core
    const auto multi_threaded = dir.search_multi(query, strategies, threaded);
    for (std::size_t g = 0; g != 3; ++g) require_same(multi_threaded[g], ref[g]);
  }
  // Batches equal serial searches; explain equals the score.
  const std::int64_t offsets[] = {0, 3, 6};
  const aligner::search_params p = residual ? aligner::search_params{.top = 10, .nprobe = 4} : aligner::search_params{.top = 10, .exhaustive = true};
  const auto batch = dir.search_batch({query, offsets}, p, {}, 2);
  require_same(batch[1], one.search({q.data() + 3 * dim, 3, dim}, p));
  const auto hit = batch[0];
  REQUIRE(!hit.ids.empty());
  CHECK(dir.explain({q.data(), 3, dim}, hit.ids[0], p).score == hit.scores[0]);
  // Exhaustive batches go in blocks of queries that sweep each document once, segment by segment: equal bit for bit
  // to serial searches (an empty query among them, query salience, Top-1 / Top-p / dense, several strategies at once).
  {
    const auto many = aligner_test::random_matrix(40, dim, 97, true);
    const auto weights = aligner_test::random_weights(40, 96, true);
    const std::vector<std::int64_t> cuts = {0, 3, 9, 9, 14, 15, 22, 30, 31, 36, 40};
    const aligner::sequence_set_view queries{{many.data(), 40, dim}, cuts};
    const aligner::alignment all[] = {aligner::alignment::top1(), aligner::alignment::dense(), aligner::alignment::top_p(0.3)};
    for (const auto& strategy : all)
      for (unsigned threads : {1u, 2u}) {
        const aligner::search_params bp{.strategy = strategy, .top = 12, .exhaustive = true};
        const auto got = dir.search_batch(queries, bp, weights, threads);
        REQUIRE(got.size() == 10);
        for (std::size_t k = 0; k != 10; ++k) {
          aligner::search_params op = bp;
          op.query_salience = std::span<const float>(weights).subspan(std::size_t(cuts[k]), queries.length(k));
          INFO("query " << k << ", " << strategy.name() << ", threads " << threads);
          require_same(got[k], dir.search(queries.sequence(k), op));
          require_same(got[k], one.search(queries.sequence(k), op));
        }
      }
    const auto multi = dir.search_batch_multi(queries, all, {.top = 9, .exhaustive = true}, {}, 2);
    for (std::size_t k = 0; k != 10; ++k) {
      const auto ref = dir.search_multi(queries.sequence(k), all, {.top = 9, .exhaustive = true});
      REQUIRE(multi[k].size() == 3);
      for (std::size_t g = 0; g != 3; ++g) require_same(multi[k][g], ref[g]);
    }
    CHECK_THROWS_WITH(dir.search_batch_multi(queries, {}, {.exhaustive = true}), Catch::Contains("needs at least one strategy"));
  }
  // A query without tokens: no results, and the result says so.
  const auto empty = dir.search(aligner::matrix_view<float>(q.data(), 0, dim), p);
  CHECK(empty.ids.empty());
  CHECK(empty.empty_query);
  CHECK_FALSE(batch[0].empty_query);
}

struct fixture {
  aligner_test::random_corpus corpus{260, 9, 12, 41};
  std::shared_ptr<const aligner::residual_codec> codec = small_codec(corpus);
  std::vector<std::string> names;
  fixture() {
    for (std::size_t d = 0; d != 260; ++d) names.push_back("doc-" + std::to_string(d));
  }
  /// One retriever with the same documents (and codec) as a directory built from batches.
  retriever one(aligner::storage precision) const {
    aligner::index_params ip{.precision = precision, .token_index = false};
    if (precision == aligner::storage::residual) ip.codec = codec;
    return retriever(aligner::exact_backend(corpus.dim), corpus.view(), ip, corpus.salience);
  }
  /// Adds documents [first, last) as one segment.
  std::int64_t add(aligner::index_directory_writer& w, std::size_t first, std::size_t last) const {
    const slice s(corpus, first, last);
    return w.add(s.view, s.salience, std::span<const std::string>(names).subspan(first, last - first));
  }
};

}  // namespace

TEST_CASE("directory: searches over several segments equal one retriever, before and after removals and compaction", "[property]") {
  const fixture f;
  for (auto precision : {aligner::storage::residual, aligner::storage::f32, aligner::storage::bf16}) {
    const bool residual = precision == aligner::storage::residual;
    INFO("precision " << aligner::to_string(precision));
    const auto dir = fresh_dir("equal");
    retriever one = f.one(precision);
    {
      auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.precision = precision, .codec = residual ? f.codec : nullptr});
      CHECK(f.add(w, 0, 100) == 0);
      CHECK(f.add(w, 100, 101) == 100);
      CHECK(f.add(w, 101, 200) == 101);
      CHECK(f.add(w, 200, 260) == 200);
      CHECK(w.generation() == 5);
      CHECK(w.snapshot().segments.size() == 4);
    }
    aligner::index_directory_reader reader(dir);
    CHECK(reader.live_size() == 260);
    CHECK(reader.name(7) == "doc-7");
    require_equal_searches(reader, one, f.corpus.dim, residual);

    const std::vector<std::int64_t> gone = {0, 5, 99, 100, 150, 201, 259};
    {
      auto w = aligner::index_directory_writer::open(dir);
      w.remove(std::span<const std::int64_t>(gone).first(4));
      w.remove(std::span<const std::int64_t>(gone).subspan(4));
    }
    for (std::int64_t id : gone) one.remove(id);
    CHECK(reader.refresh());
    CHECK(reader.live_size() == 253);
    require_equal_searches(reader, one, f.corpus.dim, residual);
    CHECK_THROWS_AS(reader.name(5), aligner::invalid_argument);

    {
      auto w = aligner::index_directory_writer::open(dir);
      w.compact();
      CHECK(w.snapshot().segments.size() == 1);
      CHECK(w.snapshot().documents() == 253);
      w.remove(7);
    }
    one.remove(7);
    CHECK(reader.refresh());
    require_equal_searches(reader, one, f.corpus.dim, residual);
    CHECK(aligner::index_directory_reader(dir).name(8) == "doc-8");
    // Garbage collection: only the files of the last commit are left.
    std::size_t files = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      ++files;
      INFO(e.path());
      const auto n = e.path().filename().string();
      CHECK((n == "MANIFEST" || n == "LOCK" || n.rfind("seg-", 0) == 0 || n.rfind("del-", 0) == 0));
    }
    CHECK(files == 5);  // MANIFEST, LOCK, seg .aidx + .ids, one tombstone
    fs::remove_all(dir);
  }
}

TEST_CASE("directory: the alignment view of a document equals a retriever's with the same documents and removals", "[oracle]") {
  const aligner_test::random_corpus corpus(30, 40, 16, 7);
  const auto dir = fresh_dir("view");
  {
    auto w = aligner::index_directory_writer::create(dir, 16, {.precision = aligner::storage::bf16});
    w.add(corpus.view(), corpus.salience);
    w.remove(std::int64_t(4));
  }
  aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(16), aligner::index_params{.precision = aligner::storage::bf16});
  index.add(corpus.view(), corpus.salience);
  index.remove(4);
  const aligner::index_directory_reader reader(dir);
  const auto q = aligner_test::random_matrix(5, 16, 8, true);
  const aligner::search_params p{.strategy = aligner::alignment::top_p(0.2), .top = 3, .exhaustive = true};
  const auto hits = reader.search({q.data(), 5, 16}, p);
  REQUIRE(!hits.ids.empty());
  const auto v = aligner::make_alignment_view(reader, {q.data(), 5, 16}, hits.ids[0], p);
  CHECK(v.why.score == hits.scores[0]);
  CHECK(aligner::alignment_svg(v) == aligner::alignment_svg(aligner::make_alignment_view(index, {q.data(), 5, 16}, hits.ids[0], p)));
  CHECK(v.why.score == reader.explain({q.data(), 5, 16}, hits.ids[0], p).score);
  CHECK_THROWS_WITH(aligner::make_alignment_view(reader, {q.data(), 5, 16}, 4, p), Catch::Contains("not a live document"));
  CHECK_THROWS_WITH(aligner::make_alignment_view(reader, {q.data(), 5, 16}, 999, p), Catch::Contains("not a live document"));
  const auto wide = aligner_test::random_matrix(2, 17, 9, true);
  CHECK_THROWS_WITH(aligner::make_alignment_view(reader, {wide.data(), 2, 17}, 0, p), Catch::Contains("does not match the index dim"));
  fs::remove_all(dir);
}

TEST_CASE("directory: the codec's training settings, anisotropy included, survive a reopen until the first add trains it", "[property]") {
  const fixture f;
  const auto dir = fresh_dir("settings");
  CHECK_THROWS_WITH(aligner::index_directory_writer::create(dir, f.corpus.dim, {.residual = {.anisotropy = 0.5}}),
                    Catch::Contains("anisotropy must be 0 (default) or in [1, ") && Catch::Contains("got 0.5"));
  CHECK_FALSE(fs::exists(dir / "MANIFEST"));
  { auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.residual = {.nbits = 2, .centroids = 8, .anisotropy = 7}}); }
  {
    auto w = aligner::index_directory_writer::open(dir);
    f.add(w, 0, 40);
  }
  const auto codec = aligner::index_directory_reader(dir).snapshot()->codec;
  REQUIRE(codec);
  CHECK(codec->centroids() == 8);
  CHECK(codec->anisotropy() == 7);
  fs::remove_all(dir);
}

TEST_CASE("directory: a reader keeps its snapshot while a writer changes the directory", "[property]") {
  const fixture f;
  const auto dir = fresh_dir("snapshot");
  auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.codec = f.codec});
  f.add(w, 0, 120);
  aligner::index_directory_reader reader(dir);
  const auto q = aligner_test::random_matrix(4, f.corpus.dim, 7, true);
  const aligner::search_params p{.top = 300, .nprobe = 4};
  const auto before = reader.search({q.data(), 4, f.corpus.dim}, p);
  f.add(w, 120, 260);
  w.remove(std::vector<std::int64_t>{before.ids[0], before.ids[1]});
  w.compact();  // the snapshot's segment files are deleted now; its mapping stays valid
  require_same(reader.search({q.data(), 4, f.corpus.dim}, p), before);
  CHECK(reader.generation() == 2);
  CHECK(reader.refresh());
  CHECK(reader.generation() == w.generation());
  const auto after = reader.search({q.data(), 4, f.corpus.dim}, p);
  CHECK(std::find(after.ids.begin(), after.ids.end(), before.ids[0]) == after.ids.end());
  CHECK(after.candidates_scored > before.candidates_scored);
  CHECK_FALSE(reader.refresh());
  fs::remove_all(dir);
}

TEST_CASE("directory: bad input is refused by name and changes nothing", "[error]") {
  const fixture f;
  const auto dir = fresh_dir("bad");
  auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.codec = f.codec});
  f.add(w, 0, 50);
  const auto gen = w.generation();
  const auto wrong = aligner_test::random_matrix(3, f.corpus.dim + 1, 1);
  const std::int64_t three[] = {0, 3}, two[] = {0, 2};
  CHECK_THROWS_WITH(w.add({{wrong.data(), 3, f.corpus.dim + 1}, three}),
                    Catch::Contains("dim 13") && Catch::Contains("dim 12"));
  CHECK_THROWS_WITH(w.remove(50), Catch::Contains("unknown document id 50"));
  CHECK_THROWS_WITH(w.remove(std::vector<std::int64_t>{3, 3}), Catch::Contains("listed twice"));
  w.remove(3);
  CHECK_THROWS_WITH(w.remove(std::vector<std::int64_t>{4, 3}), Catch::Contains("id 3 is already removed"));
  CHECK_FALSE(aligner::index_directory_reader(dir).snapshot()->is_live(3));
  CHECK(aligner::index_directory_reader(dir).snapshot()->is_live(4));
  auto nan = aligner_test::random_matrix(2, f.corpus.dim, 2);
  nan[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(w.add({{nan.data(), 2, f.corpus.dim}, two}), aligner::invalid_argument);
  const std::string bad_name[] = {"a\nb"};
  const auto one = aligner_test::random_matrix(1, f.corpus.dim, 3, true);
  const std::int64_t offs[] = {0, 1};
  const float sal[] = {0.5f};
  CHECK_THROWS_WITH(w.add({{one.data(), 1, f.corpus.dim}, offs}, sal, bad_name), Catch::Contains("line break"));
  CHECK_THROWS_WITH(w.add({{one.data(), 1, f.corpus.dim}, offs}), Catch::Contains("salience"));  // the others have salience
  CHECK(w.generation() == gen + 1);
  aligner::index_directory_reader reader(dir);
  const auto q = aligner_test::random_matrix(2, f.corpus.dim, 4, true);
  CHECK_THROWS_WITH(reader.search({q.data(), 2, f.corpus.dim}), Catch::Contains("nprobe") && Catch::Contains("exhaustive"));
  const std::int64_t out_of_range[] = {77};
  CHECK_THROWS_WITH(reader.search({q.data(), 2, f.corpus.dim}, {.nprobe = 2, .allowed_ids = out_of_range}), Catch::Contains("allowed_ids[0] = 77"));
  CHECK_THROWS_WITH(aligner::index_directory_writer::create(dir, f.corpus.dim), Catch::Contains("another writer"));
  fs::remove_all(dir);
}

TEST_CASE("directory: one writer at a time, the lock dies with its holder", "[error]") {
  const auto dir = fresh_dir("lock");
  auto w = aligner::index_directory_writer::create(dir, 4, {.precision = aligner::storage::f32});
  CHECK_THROWS_WITH(aligner::index_directory_writer::open(dir), Catch::Contains("LOCK") && Catch::Contains("another writer"));
  aligner::index_directory_reader reader(dir);  // readers take no lock
  CHECK(reader.live_size() == 0);
  {
    auto moved = std::move(w);
  }
  CHECK_NOTHROW(aligner::index_directory_writer::open(dir));
  // A writer process killed while holding the lock releases it.
  const pid_t child = ::fork();
  if (child == 0) {
    auto held = aligner::index_directory_writer::open(dir);
    ::pause();
    ::_exit(0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  CHECK_NOTHROW(aligner::index_directory_writer::open(dir));
  CHECK_THROWS_WITH(aligner::index_directory_writer::create(dir, 4), Catch::Contains("already holds an index directory"));
  fs::remove_all(dir);
}

TEST_CASE("directory: a corrupt, truncated, missing or newer file is refused naming it", "[error]") {
  const fixture f;
  const auto dir = fresh_dir("corrupt");
  {
    auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.codec = f.codec});
    f.add(w, 0, 40);
    f.add(w, 40, 80);
    w.remove(3);
  }
  const auto snap = aligner::index_directory_reader(dir).snapshot();
  const std::string seg = snap->segments[1]->name, tomb = snap->tombstone_files[0];
  auto flip = [](const fs::path& p, std::size_t at) {
    std::fstream io(p, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(std::streamoff(at));
    char c = 0;
    io.read(&c, 1);
    c = char(c ^ 0x40);
    io.seekp(std::streamoff(at));
    io.write(&c, 1);
  };
  auto with_damage = [&](const fs::path& file, auto&& damage, const std::string& expect) {
    const auto backup = file.string() + ".orig";
    fs::copy_file(file, backup, fs::copy_options::overwrite_existing);
    damage(file);
    INFO(file);
    CHECK_THROWS_WITH(aligner::index_directory_reader(dir), Catch::Contains(file.string()) && Catch::Contains(expect));
    fs::rename(backup, file);
  };
  // The first byte of the largest payload (trailing padding is not data).
  auto payload_byte = [](const fs::path& p) {
    const auto bytes = aligner::io::file_bytes::open(p, false);
    const auto sections = aligner::io::decode_sections(*bytes);
    const aligner::io::section_in* big = nullptr;
    for (const auto& [name, s] : sections)
      if (!big || s.bytes > big->bytes) big = &s;
    return std::size_t(big->data - bytes->data());
  };
  for (const fs::path& file : {dir / "MANIFEST", dir / (seg + ".aidx"), dir / (seg + ".ids"), dir / tomb}) {
    with_damage(file, [&](const fs::path& p) { flip(p, payload_byte(p)); }, "checksum mismatch");
    with_damage(file, [&](const fs::path& p) { fs::resize_file(p, fs::file_size(p) / 2); }, "");
    with_damage(file, [&](const fs::path& p) { fs::remove(p); }, "");
  }
  CHECK_NOTHROW(aligner::index_directory_reader(dir));
  // A newer directory format is refused by name (a manifest re-encoded with format version 2).
  {
    aligner::io::file_bytes::open(dir / "MANIFEST", false);
    const auto bytes = aligner::io::file_bytes::open(dir / "MANIFEST", false);
    auto sections = aligner::io::decode_sections(*bytes);
    std::vector<std::int64_t> meta(sections["dirmeta"].as<std::int64_t>().begin(), sections["dirmeta"].as<std::int64_t>().end());
    meta[0] = 2;
    std::vector<aligner::io::section_out> out;
    for (const auto& [name, s] : sections)
      out.push_back({name, s.dtype, s.shape, name == "dirmeta" ? std::string_view(reinterpret_cast<const char*>(meta.data()), 64)
                                                               : std::string_view(s.data, s.bytes)});
    aligner::io::atomic_write(dir / "MANIFEST", aligner::io::encode_sections(out));
  }
  CHECK_THROWS_WITH(aligner::index_directory_reader(dir), Catch::Contains("MANIFEST") && Catch::Contains("newer aligner") &&
                                                             Catch::Contains("directory format 2"));
  CHECK_THROWS_WITH(aligner::index_directory_reader(dir / "nope"), Catch::Contains("not an index directory"));
  // a writer opening a folder that holds no index says so, and leaves nothing in it (no LOCK file)
  CHECK_THROWS_WITH(aligner::index_directory_writer::open(dir / "nope"), Catch::Contains("not an index directory"));
  fs::create_directories(dir / "plain");
  CHECK_THROWS_WITH(aligner::index_directory_writer::open(dir / "plain"), Catch::Contains("not an index directory"));
  CHECK(fs::is_empty(dir / "plain"));
  fs::remove_all(dir);
}

namespace {

/// The deterministic history of the crash test: operation k (1-based) of a writer, on a fixture corpus.
void crash_history_step(const fixture& f, aligner::index_directory_writer& w, int k) {
  switch (k % 5) {
    case 0:
      if (w.snapshot().segments.size() > 1 || w.snapshot().live_documents() != w.snapshot().documents()) {
        w.compact();
        break;
      }
      [[fallthrough]];
    case 3: {  // the first live id from a point that moves with k (a commit whatever the state)
      const auto& s = w.snapshot();
      if (s.live_documents() > 1) {
        std::int64_t id = std::int64_t(k) * 7 % s.next_id;
        while (!s.is_live(id)) id = (id + 1) % s.next_id;
        w.remove(id);
        break;
      }
      [[fallthrough]];
    }
    default: {
      const std::size_t first = std::size_t(k * 13) % 200;
      f.add(w, first, first + 1 + std::size_t(k) % 40);
    }
  }
}

/// The live documents and a search of the state after `ops` steps of the history, replayed in memory.
std::pair<std::size_t, aligner::search_result> expected_after(const fixture& f, const fs::path& scratch, int ops) {
  fs::remove_all(scratch);
  auto w = aligner::index_directory_writer::create(scratch, f.corpus.dim, {.codec = f.codec});
  for (int k = 1; k <= ops; ++k) crash_history_step(f, w, k);
  aligner::index_directory_reader r(scratch);
  const auto q = aligner_test::random_matrix(3, f.corpus.dim, 5, true);
  return {r.live_size(), r.search({q.data(), 3, f.corpus.dim}, {.top = 50, .nprobe = 3})};
}

}  // namespace

TEST_CASE("directory: kill -9 at random moments of add, remove and compact leaves the last commit, complete", "[crash]") {
  const fixture f;
  const auto dir = fresh_dir("crash"), scratch = fresh_dir("crash_replay");
  std::mt19937 rng(2024);
  constexpr int ops = 24, rounds = 40;
  {
    auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.codec = f.codec});
  }
  std::map<int, std::pair<std::size_t, aligner::search_result>> expected;
  int reached_max = 0, killed_mid = 0, torn = 0;
  for (int round = 0; round != rounds; ++round) {
    // The writer reports each finished commit's generation through a pipe, then runs on until killed.
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const auto committed_before = aligner::index_directory_reader(dir).generation();
    const pid_t child = ::fork();
    if (child == 0) {
      ::close(fds[0]);
      try {
        auto w = aligner::index_directory_writer::open(dir);
        for (int k = int(w.generation()); k <= ops + 1000; ++k) {
          crash_history_step(f, w, k);
          const std::uint64_t g = w.generation();
          if (::write(fds[1], &g, sizeof g) != sizeof g) ::_exit(3);
          if (k >= ops) ::pause();
        }
      } catch (...) {
        ::_exit(2);
      }
      ::_exit(0);
    }
    ::close(fds[1]);
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 60000)(rng)));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFSIGNALED(status));
    std::uint64_t g = 0, last_reported = committed_before;
    while (::read(fds[0], &g, sizeof g) == sizeof g) last_reported = g;
    ::close(fds[0]);
    for (const auto& e : fs::directory_iterator(dir)) {
      const auto n = e.path().filename().string();
      if (n.find(".tmp.") != std::string::npos) {
        ++torn;
        break;
      }
    }
    // Opening gives the last commit: at least the last one reported (committed stays committed), at most one more.
    aligner::index_directory_reader reader(dir);
    const auto gen = reader.generation();
    INFO("round " << round << " reported " << last_reported << " opened " << gen);
    REQUIRE(gen >= last_reported);
    REQUIRE(gen <= last_reported + 1);
    killed_mid += gen == last_reported && gen < ops;
    reached_max = std::max(reached_max, int(gen));
    // Complete: equal to replaying the same number of operations in a fresh directory.
    const int done = int(gen) - 1;  // generation 1 is the empty creation
    if (!expected.count(done)) expected[done] = expected_after(f, scratch, done);
    CHECK(reader.live_size() == expected[done].first);
    const auto q = aligner_test::random_matrix(3, f.corpus.dim, 5, true);
    require_same(reader.search({q.data(), 3, f.corpus.dim}, {.top = 50, .nprobe = 3}), expected[done].second);
    if (gen > std::uint64_t(ops)) {  // the history is done: start over
      fs::remove_all(dir);
      auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.codec = f.codec});
    }
  }
  // Garbage of killed writers is collected by the next writer.
  {
    auto w = aligner::index_directory_writer::open(dir);
    for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  }
  std::printf("crash test: %d kills, %d before a commit was reported, %d left a half-written file, generation %d reached\n", rounds,
              killed_mid, torn, reached_max);
  CHECK(reached_max > 1);
  fs::remove_all(dir);
  fs::remove_all(scratch);
}

TEST_CASE("directory: a full disk during a commit leaves the previous commit intact", "[crash]") {
  const fixture f;
  const auto dir = fresh_dir("full");
  {
    auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.codec = f.codec});
    f.add(w, 0, 60);
  }
  const auto q = aligner_test::random_matrix(3, f.corpus.dim, 5, true);
  const auto before = aligner::index_directory_reader(dir).search({q.data(), 3, f.corpus.dim}, {.top = 50, .exhaustive = true});
  // A child process whose files may not grow past a few KB (RLIMIT_FSIZE: writes fail with EFBIG, as on a full disk).
  const int code = exit_code_in_child("full-disk writer", 13, [&] {
    int result = 0;
    auto w = aligner::index_directory_writer::open(dir);
    rlimit old{};
    ::getrlimit(RLIMIT_FSIZE, &old);
    const rlimit lim{4096, old.rlim_max};  // the soft limit only, so that it can be lifted again
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      f.add(w, 60, 260);
      result = 10;  // should have failed
    } catch (const aligner::io_error&) {
    }
    if (w.generation() != 2) result = 11;
    // The writer stays usable once space is back.
    ::setrlimit(RLIMIT_FSIZE, &old);
    f.add(w, 60, 70);
    if (w.generation() != 3) result = 12;
    return result;
  });
  REQUIRE(code != -1);
  CHECK(code == 0);
  aligner::index_directory_reader reader(dir);
  CHECK(reader.generation() == 3);
  CHECK(reader.live_size() == 70);
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  // The first 60 documents score and rank as before.
  const auto after = reader.search({q.data(), 3, f.corpus.dim}, {.top = 50, .exhaustive = true, .filter = [](std::int64_t id) { return id < 60; }});
  require_same(after, before);
  fs::remove_all(dir);
}

TEST_CASE("directory: concurrent readers search and refresh while a writer adds, removes and compacts", "[concurrency]") {
  const fixture f;
  const auto dir = fresh_dir("concurrent");
  auto w = aligner::index_directory_writer::create(dir, f.corpus.dim, {.codec = f.codec});
  f.add(w, 0, 30);
  aligner::index_directory_reader reader(dir);
  std::atomic<bool> done{false};
  std::atomic<int> searches{0}, failures{0};
  const auto q = aligner_test::random_matrix(3, f.corpus.dim, 5, true);
  std::vector<std::thread> threads;
  for (int t = 0; t != 3; ++t)
    threads.emplace_back([&, t] {
      try {
        while (!done.load()) {
          if (t == 0) reader.refresh();
          aligner::index_directory_reader own(dir);  // opening while files come and go
          for (const auto* r : {&reader, &own}) {
            const auto res = r->search({q.data(), 3, f.corpus.dim}, {.top = 20, .nprobe = 3});
            if (res.ids.empty()) ++failures;
            ++searches;
          }
        }
      } catch (...) {
        ++failures;
      }
    });
  for (int k = 0; k != 12; ++k) {
    f.add(w, 30 + std::size_t(k) * 10, 40 + std::size_t(k) * 10);
    w.remove(std::int64_t(k) * 3);
    if (k % 4 == 3) w.compact();
  }
  done = true;
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(searches > 0);
  reader.refresh();
  CHECK(reader.live_size() == 150 - 12);
  fs::remove_all(dir);
}

namespace {

/// Half bits of a value exactly representable in float16 (normal range).
std::uint16_t exact_half(float x) {
  if (x == 0.f) return std::signbit(x) ? 0x8000 : 0;
  const std::uint16_t sign = x < 0 ? 0x8000 : 0;
  const float a = std::fabs(x);
  const int e = int(std::floor(std::log2(a)));
  const auto mantissa = std::uint16_t(std::lround((a / std::ldexp(1.f, e) - 1.f) * 1024.f));
  return std::uint16_t(sign | std::uint16_t((e + 15) << 10) | mantissa);
}

/// The fixture's tokens rounded to multiples of 1/1024 (exact in float16), written as float32 and float16 .npy.
struct npy_files {
  std::vector<float> rounded;
  fs::path f32, f16;
  npy_files(const fixture& f, const fs::path& dir) {
    fs::create_directories(dir);
    rounded = f.corpus.tokens;
    for (float& v : rounded) v = std::round(v * 1024.f) / 1024.f;
    const std::size_t shape[] = {rounded.size() / f.corpus.dim, f.corpus.dim};
    f32 = dir / "v32.npy";
    f16 = dir / "v16.npy";
    aligner::io::save_npy<float>(f32, rounded, shape);
    std::string bytes = aligner::io::encode_npy<float>(rounded, shape);
    const std::size_t header = bytes.size() - rounded.size() * 4;
    bytes.replace(bytes.find("<f4"), 3, "<f2");
    bytes.resize(header);
    for (float v : rounded) {
      const std::uint16_t h = exact_half(v);
      bytes.append(reinterpret_cast<const char*>(&h), 2);
    }
    aligner::io::atomic_write(f16, bytes);
  }
};

}  // namespace

TEST_CASE("streamed build: from mapped .npy (float32, float16), any chunking and threads, equal to adding in memory", "[property]") {
  const fixture f;
  const auto work = fresh_dir("stream");
  const npy_files files(f, work / "npy");
  // The reference: every document added at once (same codec, same rounded values).
  const aligner::sequence_set_view all{{files.rounded.data(), f.corpus.tokens.size() / f.corpus.dim, f.corpus.dim}, f.corpus.offsets};
  {
    auto w = aligner::index_directory_writer::create(work / "ref", f.corpus.dim, {.codec = f.codec});
    w.add(all, {}, f.names);
  }
  const aligner::index_directory_reader ref(work / "ref");
  const aligner::io::mapped_npy_matrix m16(files.f16);
  CHECK(m16.item_size() == 2);
  CHECK(m16.rows() == std::size_t(f.corpus.offsets.back()));
  std::vector<float> back(m16.rows() * m16.cols());
  m16.read_rows(0, m16.rows(), back.data());
  CHECK(back == files.rounded);
  const auto q = aligner_test::random_matrix(4, f.corpus.dim, 17, true);
  int case_no = 0;
  for (const auto& file : {files.f32, files.f16})
    for (auto [segment, chunk, threads] : {std::tuple{200, 64, 2}, std::tuple{100000, 1, 1}, std::tuple{1, 1000, 3}}) {
      INFO("file " << file << " segment " << segment << " chunk " << chunk << " threads " << threads);
      const auto dir = work / ("built" + std::to_string(case_no++));
      std::vector<std::size_t> seen;
      const auto report = aligner::io::build_directory(
          dir, file, f.corpus.offsets, f.names, {.codec = f.codec},
          {.segment_tokens = std::size_t(segment), .chunk_tokens = std::size_t(chunk), .threads = unsigned(threads),
           .progress = [&](std::size_t done, std::size_t total) {
             CHECK(total == std::size_t(f.corpus.offsets.back()));
             seen.push_back(done);
           }});
      CHECK(report.documents == 260);
      CHECK(std::is_sorted(seen.begin(), seen.end()));
      CHECK(seen.front() == 0);
      CHECK(seen.back() == std::size_t(f.corpus.offsets.back()));
      const aligner::index_directory_reader built(dir);
      CHECK(built.snapshot()->segments.size() == report.segments);
      if (segment == 1) {  // a document is never split: one segment per non-empty document (empty ones join the next)
        std::size_t nonempty = 0;
        for (std::size_t d = 0; d != 260; ++d) nonempty += f.corpus.offsets[d + 1] != f.corpus.offsets[d];
        CHECK(report.segments == nonempty);
      }
      CHECK(built.name(259) == "doc-259");
      for (const aligner::search_params& p : {aligner::search_params{.top = 30, .nprobe = 3, .ndocs = 20},
                                              aligner::search_params{.strategy = aligner::alignment::top_k(2), .top = 300, .exhaustive = true}})
        require_same(built.search({q.data(), 4, f.corpus.dim}, p), ref.search({q.data(), 4, f.corpus.dim}, p));
    }
  // A codec trained by the build itself (sample of the whole collection, K by PLAID's rule unless given).
  const auto report = aligner::io::build_directory(work / "trained", files.f16, f.corpus.offsets, {},
                                                   {.residual = {.nbits = 4, .centroids = 16, .anisotropy = 3.5}}, {.threads = 2, .training_tokens = 500});
  CHECK(report.centroids == 16);
  const aligner::index_directory_reader trained(work / "trained");
  CHECK(trained.snapshot()->codec->nbits() == 4);
  CHECK(trained.snapshot()->codec->anisotropy() == 3.5);
  CHECK(trained.search({q.data(), 4, f.corpus.dim}, {.top = 5, .nprobe = 4}).ids.size() == 5);
  CHECK(trained.name(3).empty());
  fs::remove_all(work);
}

TEST_CASE("streamed build: a contiguous range of a .npy file's rows builds that range's documents (a shard)", "[property]") {
  const fixture f;
  const auto work = fresh_dir("stream_range");
  const npy_files files(f, work / "npy");
  const std::size_t a = 100, b = 200, dim = f.corpus.dim;  // documents [a, b)
  const auto first_row = std::size_t(f.corpus.offsets[a]);
  std::vector<std::int64_t> local(f.corpus.offsets.begin() + std::ptrdiff_t(a), f.corpus.offsets.begin() + std::ptrdiff_t(b + 1));
  for (auto& o : local) o -= std::int64_t(first_row);
  const std::vector<std::string> names(f.names.begin() + std::ptrdiff_t(a), f.names.begin() + std::ptrdiff_t(b));
  {
    auto w = aligner::index_directory_writer::create(work / "ref", dim, {.codec = f.codec});
    w.add(aligner::sequence_set_view{{files.rounded.data() + first_row * dim, std::size_t(local.back()), dim}, local}, {}, names);
  }
  const aligner::index_directory_reader ref(work / "ref");
  const auto q = aligner_test::random_matrix(4, dim, 19, true);
  for (const auto& file : {files.f32, files.f16}) {
    INFO("file " << file);
    const auto dir = work / file.stem();
    const auto report = aligner::io::build_directory(dir, file, first_row, local, names, {.codec = f.codec},
                                                     {.segment_tokens = 300, .chunk_tokens = 50, .threads = 2});
    CHECK(report.documents == b - a);
    CHECK(report.tokens == std::size_t(local.back()));
    const aligner::index_directory_reader built(dir);
    CHECK(built.name(0) == "doc-100");
    CHECK(built.name(99) == "doc-199");
    for (const aligner::search_params& p : {aligner::search_params{.top = 30, .nprobe = 3, .ndocs = 20},
                                            aligner::search_params{.strategy = aligner::alignment::top_k(2), .top = 300, .exhaustive = true}})
      require_same(built.search({q.data(), 4, dim}, p), ref.search({q.data(), 4, dim}, p));
  }
  // A range past the file's end, or no offsets: refused by name, nothing written.
  const std::size_t rows = std::size_t(f.corpus.offsets.back());
  CHECK_THROWS_WITH(aligner::io::build_directory(work / "bad", files.f32, rows - 5, local, {}, {.codec = f.codec}),
                    Catch::Contains("rows [" + std::to_string(rows - 5)) && Catch::Contains("v32.npy") && Catch::Contains("holds " + std::to_string(rows)));
  CHECK_FALSE(fs::exists(work / "bad" / "MANIFEST"));
  CHECK_THROWS_WITH(aligner::io::build_directory(work / "bad2", files.f32, 0, std::span<const std::int64_t>{}, {}, {.codec = f.codec}),
                    Catch::Contains("offsets"));
  CHECK_FALSE(fs::exists(work / "bad2" / "MANIFEST"));
  fs::remove_all(work);
}

TEST_CASE("streamed build: bad input is refused by name", "[error]") {
  const fixture f;
  const auto work = fresh_dir("stream_bad");
  const npy_files files(f, work / "npy");
  auto offsets = f.corpus.offsets;
  offsets.back() -= 1;
  CHECK_THROWS_WITH(aligner::io::build_directory(work / "a", files.f32, offsets, {}, {.codec = f.codec}), Catch::Contains("offsets"));
  CHECK_FALSE(fs::exists(work / "a" / "MANIFEST"));
  const std::vector<std::string> few = {"x"};
  CHECK_THROWS_WITH(aligner::io::build_directory(work / "b", files.f32, f.corpus.offsets, few, {.codec = f.codec}),
                    Catch::Contains("1 document names for 260 documents"));
  auto bad = files.rounded;
  bad[700] = std::numeric_limits<float>::infinity();
  const std::size_t shape[] = {bad.size() / f.corpus.dim, f.corpus.dim};
  aligner::io::save_npy<float>(work / "inf.npy", bad, shape);
  CHECK_THROWS_WITH(aligner::io::build_directory(work / "c", work / "inf.npy", f.corpus.offsets, {}, {.codec = f.codec}),
                    Catch::Contains("inf.npy") && Catch::Contains("non-finite value at token 58"));
  const std::int64_t ids[] = {1, 2};
  aligner::io::save_npy<std::int64_t>(work / "ints.npy", ids, std::vector<std::size_t>{2});
  CHECK_THROWS_WITH(aligner::io::mapped_npy_matrix(work / "ints.npy"), Catch::Contains("ints.npy") && Catch::Contains("integer"));
  {  // Read in place: float64 and Fortran order are refused with what to do (load_npy converts both).
    const std::size_t two_by_two[] = {2, 2};
    std::string f8 = aligner::io::encode_npy<std::int64_t>(std::vector<std::int64_t>{1, 2, 3, 4}, two_by_two);
    f8.replace(f8.find("<i8"), 3, "<f8");
    aligner::io::atomic_write(work / "f8.npy", f8);
    CHECK_THROWS_WITH(aligner::io::mapped_npy_matrix(work / "f8.npy"), Catch::Contains("f8.npy") && Catch::Contains("float64") &&
                                                                          Catch::Contains("astype(np.float32)"));
    std::string fortran = aligner::io::encode_npy<float>(std::vector<float>{1, 2, 3, 4}, two_by_two);
    fortran.replace(fortran.find("False"), 5, "True ");
    aligner::io::atomic_write(work / "fortran.npy", fortran);
    CHECK_THROWS_WITH(aligner::io::mapped_npy_matrix(work / "fortran.npy"), Catch::Contains("Fortran order"));
    CHECK(aligner::io::load_npy<float>(work / "fortran.npy").values == std::vector<float>{1, 3, 2, 4});
  }
  aligner::io::build_directory(work / "d", files.f32, f.corpus.offsets, {}, {.codec = f.codec});
  CHECK_THROWS_WITH(aligner::io::build_directory(work / "d", files.f32, f.corpus.offsets, {}, {.codec = f.codec}),
                    Catch::Contains("already holds an index directory"));
  fs::remove_all(work);
}

TEST_CASE("streamed build: a full disk during a build leaves the segments committed so far, intact", "[crash]") {
  const fixture f;
  const auto work = fresh_dir("stream_full");
  const npy_files files(f, work / "npy");
  const auto dir = work / "full";
  const auto q = aligner_test::random_matrix(3, f.corpus.dim, 23, true);
  // A child whose files may not grow past 512 bytes (RLIMIT_FSIZE: writes fail with EFBIG, as on a full disk) once
  // the build has passed about half of the tokens.
  const int code = exit_code_in_child("full-disk build", 11, [&] {
    const std::size_t half = std::size_t(f.corpus.offsets.back()) / 2;
    try {
      aligner::io::build_directory(dir, files.f32, f.corpus.offsets, f.names, {.codec = f.codec},
                                   {.segment_tokens = 40, .chunk_tokens = 16, .progress = [&](std::size_t done, std::size_t) {
                                      if (done < half) return;
                                      rlimit lim{};
                                      ::getrlimit(RLIMIT_FSIZE, &lim);
                                      lim.rlim_cur = 512;
                                      ::setrlimit(RLIMIT_FSIZE, &lim);
                                    }});
      return 10;  // should have failed
    } catch (const aligner::io_error&) {
      return 0;
    }
  });
  REQUIRE(code != -1);
  CHECK(code == 0);
  REQUIRE(fs::exists(dir / "MANIFEST"));
  const aligner::index_directory_reader r(dir);
  const auto n = r.live_size();
  CHECK(n > 0);
  CHECK(n < 260);
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  // The committed prefix equals the same documents built without a limit.
  const auto whole = work / "whole";
  aligner::io::build_directory(whole, files.f32, f.corpus.offsets, f.names, {.codec = f.codec}, {.segment_tokens = 40, .chunk_tokens = 16});
  const aligner::index_directory_reader full(whole);
  const auto got = r.search({q.data(), 3, f.corpus.dim}, {.top = 300, .exhaustive = true});
  const auto want = full.search({q.data(), 3, f.corpus.dim},
                                {.top = 300, .exhaustive = true, .filter = [n](std::int64_t id) { return std::size_t(id) < n; }});
  CHECK(got.ids == want.ids);
  CHECK(got.scores == want.scores);
  for (std::size_t d = 0; d < n; d += 13) CHECK(r.name(std::int64_t(d)) == f.names[d]);
  fs::remove_all(work);
}

TEST_CASE("streamed build: a killed build leaves the segments committed so far, readable", "[crash]") {
  const fixture f;
  const auto work = fresh_dir("stream_kill");
  const npy_files files(f, work / "npy");
  std::mt19937 rng(7);
  int partial = 0;
  for (int round = 0; round != 8; ++round) {
    const auto dir = work / ("kill" + std::to_string(round));
    const pid_t child = ::fork();
    if (child == 0) {
      try {
        aligner::io::build_directory(dir, files.f32, f.corpus.offsets, f.names, {.codec = f.codec}, {.segment_tokens = 20, .chunk_tokens = 8});
      } catch (...) {
        ::_exit(2);
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(2000, 60000)(rng)));
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    if (!fs::exists(dir / "MANIFEST")) continue;  // killed before the directory's first commit
    const aligner::index_directory_reader r(dir);
    const auto n = r.live_size();
    partial += n > 0 && n < 260;
    // A prefix of the documents, each named and complete.
    for (std::size_t d = 0; d < n; d += 17) CHECK(r.name(std::int64_t(d)) == f.names[d]);
    if (n) {
      const auto res = r.search({files.rounded.data(), 2, f.corpus.dim}, {.top = 1000, .exhaustive = true});
      CHECK(res.ids.size() == n);
    }
  }
  std::printf("streamed build kill test: %d of 8 kills left a partial directory\n", partial);
  fs::remove_all(work);
}
