// The aligner command-line tool, run as a process.
#include <aligner/aligner.hpp>
#include <aligner/eval/alignment_view.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/index_directory.hpp>
#include <aligner/io/index_file.hpp>
#include <aligner/io/npy.hpp>
#include <aligner/io/salience_heads.hpp>
#include <aligner/io/trec.hpp>

#include "test_common.hpp"

#include <cstdio>
#include <filesystem>
#include <sys/wait.h>

using Catch::Matchers::WithinAbs;

namespace {

struct process_result {
  int status = -1;
  std::string out;
};

/// Runs the tool with `args` (and `env`, "NAME=value ...", set for it alone).
process_result run_cli(const std::string& args, bool with_stderr = false, const std::string& env = "") {
  // test_library does not depend on the tool's target (tests/CMakeLists.txt): building test_library alone leaves it out.
  INFO("the aligner tool is not at " << ALIGNER_CLI << ": build the aligner_cli target (cmake --build <build dir>)");
  REQUIRE(std::filesystem::is_regular_file(ALIGNER_CLI));
  const std::string cmd = (env.empty() ? "" : env + " ") + std::string(ALIGNER_CLI) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  process_result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

/// Eval/search output without its timing field (ms_per_query differs from run to run).
std::string without_timing(std::string out) {
  for (std::size_t at; (at = out.find(" ms_per_query=")) != std::string::npos;) out.erase(at, out.find('\n', at) - at);
  return out;
}

std::filesystem::path cli_temp(const std::string& name) { return std::filesystem::temp_directory_path() / ("aligner_cli_" + name); }

}  // namespace

TEST_CASE("cli: eval --candidates all top1 equals the library's brute-force scores", "[oracle]") {
  const auto run_file = cli_temp("run.txt");
  const auto r = run_cli("eval --collection " + aligner_test::cranfield_dir().string() +
                         " --strategy top1,topp:0.02 --top 1400 --run " + run_file.string());
  REQUIRE(r.status == 0);
  CHECK(r.out.find("top1 ndcg@10=") == 0);
  CHECK(r.out.find("\ntopp:0.02 ndcg@10=") != std::string::npos);
  CHECK(r.out.find("queries=225") != std::string::npos);
  const auto run = aligner::io::load_run(run_file);
  const auto c = aligner::io::load_collection(aligner_test::cranfield_dir());
  std::map<std::string, std::size_t> doc_index;
  for (std::size_t d = 0; d != c.docs.size(); ++d) doc_index[c.docs.ids[d]] = d;
  std::vector<float> scores(c.docs.size());
  for (std::size_t q = 0; q < c.queries.size(); q += 37) {
    aligner::score_batch(c.queries.sequence(q), c.docs.view(), scores);
    const auto& entries = run.at(c.queries.ids[q]);
    REQUIRE(entries.size() == 1400);
    for (const auto& e : entries) REQUIRE_THAT(e.score, WithinAbs(scores[doc_index.at(e.doc_id)], 1e-6));
  }
  // --query-limit 40: the first 40 judged queries exactly as in the full run, metrics over those 40 alone.
  const auto limited_file = cli_temp("run40.txt");
  const auto limited = run_cli("eval --collection " + aligner_test::cranfield_dir().string() + " --strategy top1 --top 1400 --query-limit 40 --run " +
                               limited_file.string());
  REQUIRE(limited.status == 0);
  CHECK(limited.out.find("queries=40 ") != std::string::npos);
  const auto run40 = aligner::io::load_run(limited_file);
  REQUIRE(run40.size() == 40);
  aligner::io::qrels judged40;
  for (std::size_t q = 0; q != c.queries.size() && judged40.size() != 40; ++q)
    if (c.judgments.count(c.queries.ids[q])) {
      judged40[c.queries.ids[q]] = c.judgments.at(c.queries.ids[q]);
      const auto &got = run40.at(c.queries.ids[q]), &want = run.at(c.queries.ids[q]);
      REQUIRE(got.size() == want.size());
      for (std::size_t k = 0; k != got.size(); ++k) CHECK((got[k].doc_id == want[k].doc_id && got[k].score == want[k].score));
    }
  char expect[64];
  std::snprintf(expect, sizeof expect, "top1 ndcg@10=%.4f", aligner::ndcg_at(10, run40, judged40).mean);
  CHECK(limited.out.find(expect) == 0);
  for (const char* bad : {" --query-limit 0", " --query-limit -3", " --query-limit x"})
    CHECK(run_cli("eval --collection " + aligner_test::cranfield_dir().string() + " --strategy top1" + bad).status == 2);
  std::filesystem::remove(run_file);
  std::filesystem::remove(limited_file);
}

TEST_CASE("cli: adapt is deterministic for a seed", "[property]") {
  const std::string args = "adapt --collection " + aligner_test::cranfield_dir().string() + " --grid top1,topk:2,topp:0.01 --shots 8";
  const auto a = run_cli(args + " --seed 5"), b = run_cli(args + " --seed 5"), c = run_cli(args + " --seed 6");
  REQUIRE(a.status == 0);
  CHECK(a.out == b.out);
  CHECK(a.out != c.out);
  CHECK(a.out.find("fold 28: chose ") != std::string::npos);  // 225 queries -> 28 folds of 8
  CHECK(a.out.find("adapted ndcg@10=") != std::string::npos);
}

TEST_CASE("cli: score, gate and salience agree with the library", "[oracle]") {
  const std::size_t dim = 6;
  const auto q = aligner_test::random_matrix(5, dim, 1), d = aligner_test::random_matrix(9, dim, 2);
  const std::vector<std::int64_t> qo = {0, 2, 5}, dof = {0, 4, 4, 9};
  const auto ud = aligner_test::random_weights(9, 3);
  aligner::io::save_npy(cli_temp("q.npy"), q, {5, dim});
  aligner::io::save_npy(cli_temp("d.npy"), d, {9, dim});
  aligner::io::save_npy<std::int64_t>(cli_temp("qo.npy"), qo, {3});
  aligner::io::save_npy<std::int64_t>(cli_temp("do.npy"), dof, {4});
  aligner::io::save_npy(cli_temp("ud.npy"), ud, {9});
  const auto r = run_cli("score --queries " + cli_temp("q.npy").string() + " --query-offsets " + cli_temp("qo.npy").string() + " --docs " +
                         cli_temp("d.npy").string() + " --doc-offsets " + cli_temp("do.npy").string() + " --strategy topk:2 --doc-salience " +
                         cli_temp("ud.npy").string() + " --normalize none");
  REQUIRE(r.status == 0);
  std::istringstream lines(r.out);
  std::size_t qi, di, count = 0;
  double s;
  while (lines >> qi >> di >> s) {
    const std::size_t len = std::size_t(dof[di + 1] - dof[di]);
    const double want = aligner::score({q.data() + qo[qi] * std::int64_t(dim), std::size_t(qo[qi + 1] - qo[qi]), dim},
                                       {d.data() + dof[di] * std::int64_t(dim), len, dim},
                                       {.strategy = aligner::alignment::top_k(2), .norm = aligner::normalization::none,
                                        .doc_salience = std::span<const float>(ud).subspan(std::size_t(dof[di]), len)});
    CHECK_THAT(s, WithinAbs(want, 1e-6 * std::max(1.0, std::abs(want))));
    ++count;
  }
  CHECK(count == 6);
  // gate
  const std::vector<float> scores = {1.f, 0.f, -1.f};
  aligner::io::save_npy(cli_temp("s.npy"), scores, {3});
  REQUIRE(run_cli("gate --scores " + cli_temp("s.npy").string() + " --k 1 --epsilon 1 --out " + cli_temp("l.npy").string()).status == 0);
  const auto lambda = aligner::io::load_npy<float>(cli_temp("l.npy"));
  CHECK_THAT(lambda.values[0], WithinAbs(0.665240955774822, 1e-6));
  REQUIRE(run_cli("gate --scores " + cli_temp("s.npy").string() + " --k 1 --epsilon 1 --iterations 50 --out " + cli_temp("l2.npy").string()).status == 0);
  CHECK_THAT(aligner::io::load_npy<float>(cli_temp("l2.npy")).values[0], WithinAbs(0.665240955774822, 1e-5));
  // salience
  const std::vector<float> w = {0.5f, -0.25f, 1.f, 0.f, 0.3f, -1.f};
  aligner::io::save_npy(cli_temp("w.npy"), w, {dim});
  REQUIRE(run_cli("salience --tokens " + cli_temp("d.npy").string() + " --weights " + cli_temp("w.npy").string() +
                  " --bias 0.1 --budget 0.5 --epsilon 0.01 --out " + cli_temp("u.npy").string()).status == 0);
  const auto u = aligner::io::load_npy<float>(cli_temp("u.npy"));
  const auto want = aligner::salience_scorer(w, 0.1f, aligner::gate_params{.alpha = 0.5, .epsilon = 0.01})({d.data(), 9, dim});
  REQUIRE(u.values.size() == 9);
  for (std::size_t i = 0; i != 9; ++i) CHECK_THAT(u.values[i], WithinAbs(want[i], 1e-6));
}

TEST_CASE("cli: bad input exits 2, help exits 0", "[edge]") {
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  CHECK(run_cli("eval" + coll + " --strategy topk:0").status == 2);
  CHECK(run_cli("eval" + coll + " --strategy nonsense").status == 2);
  CHECK(run_cli("eval" + coll + " --strategy top1,topk:2,top1").status == 2);  // a strategy named twice
  CHECK(run_cli("eval" + coll + " --strategy top1 --threads 4294967296").status == 2);  // would wrap to 0 = all cores
  CHECK(run_cli("eval" + coll + " --strategy top1 --threads 65537").status == 2);
  CHECK(run_cli("eval --collection /nonexistent --strategy top1").status == 2);
  CHECK(run_cli("eval" + coll + " --strategy top1 --unknown 3").status == 2);
  CHECK(run_cli("eval" + coll + " --strategy top1 --candidates 0").status == 2);
  CHECK(run_cli("eval" + coll + " --strategy top1 --prune-doc 0.5").status == 2);
  CHECK(run_cli("eval" + coll + " --strategy top1 --backend nope --candidates 10").status == 2);
  CHECK(run_cli("eval" + coll).status == 2);  // --strategy missing
  CHECK(run_cli("frobnicate").status == 2);
  CHECK(run_cli("gate --scores /nonexistent.npy --k 1 --epsilon 1 --out /tmp/x.npy").status == 2);
  CHECK(run_cli("gate --scores " + cli_temp("s.npy").string() + " --k 1 --epsilon 0 --out /tmp/x.npy").status == 2);
  for (const char* cmd : {"eval", "adapt", "score", "gate", "salience", "index", "search"}) {
    const auto h = run_cli(std::string(cmd) + " --help");
    CHECK(h.status == 0);
    CHECK(h.out.find("usage: aligner") == 0);
  }
  CHECK(run_cli("--help").status == 0);
}

TEST_CASE("cli: index then search equals eval, a corrupt index exits 2", "[oracle]") {
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  const auto idx = cli_temp("cran.idx");
  REQUIRE(run_cli("index" + coll + " --out " + idx.string() + " --salience idf --prune-doc 0.4").status == 0);
  // --query-limit: the first 60 judged queries (what the comparison needs at a quarter of the time).
  const std::string opts = " --strategy top1,topk:2 --candidates 500 --salience idf --query-limit 60";
  const auto searched = run_cli("search --index " + idx.string() + coll + opts);
  const auto evaluated = run_cli("eval" + coll + opts + " --prune-doc 0.4");
  REQUIRE(searched.status == 0);
  CHECK(without_timing(searched.out) == without_timing(evaluated.out));
  CHECK(without_timing(run_cli("search --no-mmap --index " + idx.string() + coll + opts).out) == without_timing(evaluated.out));
  // The salience of a search must be the index's (an index built with idf searched without it, and the reverse).
  const auto mismatch = run_cli("search --index " + idx.string() + coll + " --strategy top1 --candidates 500", true);
  CHECK(mismatch.status == 2);
  CHECK(mismatch.out.find("was built with a salience") != std::string::npos);
  // eval without --candidates K builds no token index: the flags that shape one are refused, not ignored.
  for (const char* flag : {" --backend exact", " --dedup off", " --prune-doc 0.5", " --token-index off"}) {
    const auto r = run_cli("eval" + coll + " --strategy top1 --salience idf" + flag, true);
    INFO(flag);
    CHECK(r.status == 2);
    CHECK(r.out.find("only --candidates K uses") != std::string::npos);
  }
  // --ndocs cuts the token search's candidates the same way from an index and in eval; 0 (its default there) and a
  // cut above every query's candidates change nothing; without candidates to cut it is refused.
  const std::string few = " --strategy top1 --candidates 500 --salience idf --query-limit 15";
  const auto cut = run_cli("search --index " + idx.string() + coll + few + " --ndocs 40");
  REQUIRE(cut.status == 0);
  CHECK(without_timing(cut.out) == without_timing(run_cli("eval" + coll + few + " --prune-doc 0.4 --ndocs 40").out));
  CHECK(cut.out.find("candidates=40.0 ") != std::string::npos);  // every query reaches more than 40 documents here
  const auto whole = run_cli("search --index " + idx.string() + coll + few);
  CHECK(whole.out.find("candidates=40.0 ") == std::string::npos);
  CHECK(without_timing(run_cli("search --index " + idx.string() + coll + few + " --ndocs 0").out) == without_timing(whole.out));
  CHECK(without_timing(run_cli("search --index " + idx.string() + coll + few + " --ndocs 100000").out) == without_timing(whole.out));
  const auto uncut = run_cli("eval" + coll + " --strategy top1 --ndocs 40 --query-limit 5", true);
  CHECK(uncut.status == 2);
  CHECK(uncut.out.find("--ndocs needs candidates to cut") != std::string::npos);
  std::string bytes = aligner::io::read_file(idx);
  bytes[bytes.size() / 2] = char(bytes[bytes.size() / 2] ^ 1);
  aligner::io::atomic_write(idx, bytes);
  CHECK(run_cli("search --index " + idx.string() + coll + opts).status == 2);
  CHECK(run_cli("search --index /nonexistent.idx" + coll + opts).status == 2);
  std::filesystem::remove(idx);
}

TEST_CASE("cli: index --layout directory (streamed) then search equals eval, info, flags that do not apply exit 2", "[oracle]") {
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  const auto dir = cli_temp("cran_dir");
  std::filesystem::remove_all(dir);
  const auto built = run_cli("index" + coll + " --storage residual:2 --layout directory --segment-tokens 40000 --threads 2 --out " + dir.string());
  REQUIRE(built.status == 0);
  CHECK(built.out.find("indexed 1400 documents (229380 tokens) into ") != std::string::npos);
  const auto info = run_cli("info " + dir.string());
  CHECK(info.status == 0);
  CHECK(info.out.find("documents=1400\nlive_documents=1400\ntokens=229380\ndim=100\nstorage=residual:2\n") != std::string::npos);
  CHECK(info.out.find("segments=6\n") != std::string::npos);
  // The same codec is trained (all tokens fit the default sample), so the directory ranks exactly as eval does.
  for (const std::string opts : {" --strategy top1,topp:0.01 --query-limit 60", " --strategy top1,topk:2 --candidates postings --nprobe 6 --ndocs 300 --query-limit 60"}) {
    INFO(opts);
    const auto searched = run_cli("search --index " + dir.string() + coll + opts);
    REQUIRE(searched.status == 0);
    CHECK(without_timing(searched.out) == without_timing(run_cli("eval" + coll + opts + " --storage residual:2").out));
  }
  for (const std::string bad : {" --backend exact", " --dedup off", " --salience idf", " --centroids 8 --storage f32"}) {
    const auto r = run_cli("index" + coll + " --layout directory --out " + (dir / "x").string() + bad, true);
    INFO(bad << ": " << r.out);
    CHECK(r.status == 2);
  }
  const auto twice = run_cli("index" + coll + " --storage residual:2 --layout directory --out " + dir.string(), true);
  CHECK(twice.status == 2);
  CHECK(twice.out.find("already holds an index directory") != std::string::npos);
  CHECK(run_cli("index" + coll + " --segment-tokens 10 --out " + (dir / "y").string()).status == 2);
  for (const std::string bad : {" --candidates 10", " --no-mmap", " --salience idf"}) {
    const auto r = run_cli("search --index " + dir.string() + coll + " --strategy top1" + bad, true);
    INFO(bad << ": " << r.out);
    CHECK(r.status == 2);
  }
  std::filesystem::remove(dir / "MANIFEST");
  const auto broken = run_cli("search --index " + dir.string() + coll + " --strategy top1", true);
  CHECK(broken.status == 2);
  CHECK(broken.out.find("MANIFEST") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("cli: a flag of another subcommand exits 2 naming the flag and the subcommand", "[edge]") {
  // One inapplicable flag per subcommand (each valid elsewhere); the rest of the command line is complete and valid
  // where that is cheap, so the flag is the only fault.
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  const std::pair<std::string, std::string> cases[] = {
      {"eval" + coll + " --strategy top1", "--index x.idx"},
      {"adapt" + coll, "--strategy top1"},
      {"index" + coll + " --out " + cli_temp("never.idx").string(), "--top 10"},
      {"search --index x.idx" + coll + " --strategy top1", "--storage i8"},
      {"search --index x.idx" + coll + " --strategy top1", "--backend hnswlib"},
      {"search --index x.idx" + coll + " --strategy top1", "--prune-doc 0.1"},
      {"score --queries q.npy --query-offsets qo.npy --docs d.npy --doc-offsets do.npy --strategy top1", "--threads 2"},
      {"gate --scores s.npy --k 1 --epsilon 1 --out l.npy", "--bias 0.5"},
      {"salience --tokens x.npy --weights w.npy --bias 0 --out u.npy", "--k 2"},
  };
  for (const auto& [command, flag] : cases) {
    INFO(command << " " << flag);
    const auto r = run_cli(command + " " + flag, true);
    CHECK(r.status == 2);
    const std::string name = flag.substr(0, flag.find(' ')), sub = command.substr(0, command.find(' '));
    CHECK(r.out.find(name + " does not apply to " + sub) != std::string::npos);
  }
  CHECK(!std::filesystem::exists(cli_temp("never.idx")));
  // The report: three flags of index/eval given to search, which used to exit 0 ignoring them.
  CHECK(run_cli("search --index x.idx" + coll + " --strategy top1 --storage i8 --backend hnswlib --prune-doc 0.1").status == 2);
}

TEST_CASE("cli: every subcommand's help lists exactly the flags it accepts", "[edge]") {
  const auto h = run_cli("search --help");
  REQUIRE(h.status == 0);
  CHECK(h.out.find("--index INDEX") != std::string::npos);
  CHECK(h.out.find("--no-mmap") != std::string::npos);
  CHECK(h.out.find("--storage") == std::string::npos);
  CHECK(h.out.find("--backend") == std::string::npos);
  const auto e = run_cli("eval --help");
  CHECK(e.out.find("--storage f32|bf16|f16|i8|residual:N") != std::string::npos);
  CHECK(e.out.find("--index") == std::string::npos);
}

TEST_CASE("cli: a residual codes-only index: index, info, search by postings, misused flags exit 2", "[property]") {
  const auto idx = cli_temp("residual.idx");
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  const auto built = run_cli("index" + coll + " --storage residual:2 --centroids 256 --token-index off --out " + idx.string(), true);
  REQUIRE(built.status == 0);
  CHECK(built.out.find("residual:2 codec: 256 centroids, anisotropy 18.9,") != std::string::npos);  // 0.19 (dim - 1) at dim 100
  const auto info = run_cli("info " + idx.string());
  REQUIRE(info.status == 0);
  auto value = [&](const std::string& key) {
    const auto at = info.out.find("\n" + key + "=");
    REQUIRE(at != std::string::npos);
    return info.out.substr(at + key.size() + 2, info.out.find('\n', at + 1) - at - key.size() - 2);
  };
  const auto c = aligner::io::load_collection(aligner_test::cranfield_dir(), "glove100", "");
  CHECK(value("tokens") == std::to_string(c.docs.tokens()));
  CHECK(value("documents") == std::to_string(c.docs.size()));
  CHECK(value("storage") == "residual:2");
  CHECK(value("centroids") == "256");
  CHECK(std::abs(std::stod(value("anisotropy")) - aligner::default_anisotropy(100)) < 1e-3);
  CHECK(value("token_index") == "off");
  const double per_token = std::stod(value("bytes_per_token"));
  CHECK(std::abs(per_token - double(std::filesystem::file_size(idx)) / double(c.docs.tokens())) < 0.01);
  CHECK(per_token < 40);  // dim 100 at 2 bits: 27 bytes of codes, plus panel padding, the codebook and offsets
  // Search by postings: the same lines as eval, reranking fewer documents than there are.
  const auto s = run_cli("search --index " + idx.string() + coll + " --strategy top1 --candidates postings --nprobe 8 --ndocs 300");
  REQUIRE(s.status == 0);
  CHECK(s.out.find("top1 ndcg@10=") == 0);
  CHECK(s.out.find("candidates=300.0") != std::string::npos);
  // Misuse
  CHECK(run_cli("search --index " + idx.string() + coll + " --strategy top1 --candidates 10").status == 2);  // no token index
  CHECK(run_cli("eval" + coll + " --strategy top1 --candidates postings").status == 2);                      // not residual
  CHECK(run_cli("eval" + coll + " --strategy top1 --nprobe 3").status == 2);                                 // needs postings
  CHECK(run_cli("eval" + coll + " --strategy top1 --storage residual:3").status == 2);
  {  // "residual" alone is residual:2, as in Python
    const std::string opts = " --strategy top1 --centroids 64 --query-limit 3";
    const auto bare = run_cli("eval" + coll + opts + " --storage residual");
    REQUIRE(bare.status == 0);
    CHECK(without_timing(bare.out) == without_timing(run_cli("eval" + coll + opts + " --storage residual:2").out));
  }
  CHECK(run_cli("eval" + coll + " --strategy top1 --centroids 16").status == 2);                             // needs residual
  CHECK(run_cli("eval" + coll + " --strategy top1 --storage residual:2 --centroids 99999999").status == 2);
  CHECK(run_cli("eval" + coll + " --strategy top1 --anisotropy 4").status == 2);                             // needs residual
  for (const std::string eta : {"0.5", "0", "nan", "2e6", "x"}) {
    const auto r = run_cli("eval" + coll + " --strategy top1 --storage residual:2 --anisotropy " + eta, true);
    INFO(eta << ": " << r.out);
    CHECK(r.status == 2);
    CHECK(r.out.find("--anisotropy") != std::string::npos);
  }
  // --anisotropy 1: nearest buckets, stored in the file's codec
  const auto nearest = cli_temp("residual_nearest.idx");
  REQUIRE(run_cli("index" + coll + " --storage residual:2 --centroids 64 --anisotropy 1 --token-index off --out " + nearest.string()).status == 0);
  CHECK(run_cli("info " + nearest.string()).out.find("\nanisotropy=1\n") != std::string::npos);
  std::filesystem::remove(nearest);
  CHECK(run_cli("info").status == 2);
  CHECK(run_cli("info /nonexistent/file.idx").status == 2);
  std::filesystem::remove(idx);
}

TEST_CASE("cli: kernels prints the library's kernel_info, and AMX off when ALIGNER_NO_AMX=1", "[oracle]") {
  const auto k = run_cli("kernels");
  REQUIRE(k.status == 0);
  CHECK(k.out.find("compiled_arch=") == 0);
  for (const char* key : {"panel_width=", "cpu=", "amx_bf16=", "avx512_wide=", "avx2_wide=", "kernel_f32=", "kernel_bf16=", "kernel_f16=", "kernel_i8=",
                          "kernel_residual=", "kernel_token_search=", "tile_prefetch=", "tile_order="})
    CHECK(k.out.find(key) != std::string::npos);
  // The run-time AVX-512 tiles follow ALIGNER_NO_AVX512 in the tool's process as well.
  const auto no512 = run_cli("kernels", false, "ALIGNER_NO_AVX512=1");
  REQUIRE(no512.status == 0);
  CHECK(no512.out.find("avx512_wide=yes") == std::string::npos);
  const auto no_wide = run_cli("kernels", false, "ALIGNER_NO_AVX512=1 ALIGNER_NO_AVX2=1");
  REQUIRE(no_wide.status == 0);
  CHECK(no_wide.out.find("avx2_wide=yes") == std::string::npos);
  CHECK(no_wide.out.find("-wide panels") == std::string::npos);
  // The tool is a separate build (its own flags): compare what both say about AMX, which depends on the machine only.
  const bool amx = aligner::amx_bf16_usable();
  CHECK((k.out.find("amx_bf16=yes") != std::string::npos) == amx);
  const auto off = run_cli("kernels", false, "ALIGNER_NO_AMX=1");
  REQUIRE(off.status == 0);
  CHECK(off.out.find("amx_bf16=yes") == std::string::npos);
  if (amx) CHECK(off.out.find("amx_bf16=no (turned off") != std::string::npos);
  CHECK(run_cli("kernels --threads 2").status == 2);  // a flag of another subcommand
  CHECK(run_cli("kernels extra").status == 2);
}

TEST_CASE("cli: explain draws the library's view with words, from the collection and from an index, misuse exits 2", "[oracle]") {
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  const auto html = cli_temp("explain.html"), svg = cli_temp("explain.svg"), idx = cli_temp("explain.idx");
  const auto r = run_cli("explain" + coll + " --query 1 --doc 184 --strategy topk:2 --salience idf --html " + html.string() + " --svg " + svg.string());
  REQUIRE(r.status == 0);
  CHECK(r.out.find("score=") == 0);
  // The library's view of the same pair: the same score and the same page.
  const auto c = aligner::io::load_collection(aligner_test::cranfield_dir(), "glove100", "");
  const auto idf = aligner::token_idf(c.docs, c.vocab_size);
  const auto uq = aligner::lookup_salience(c.queries, idf), ud = aligner::lookup_salience(c.docs, idf);
  const std::size_t q = 0, d = 183;  // ids "1" and "184" are the first query and the 184th document
  REQUIRE(c.queries.ids[q] == "1");
  REQUIRE(c.docs.ids[d] == "184");
  aligner::token_store store(c.docs.dim, aligner::storage::f32);
  const auto doc = c.docs.sequence(d);
  const std::vector<std::int64_t> offsets{0, std::int64_t(doc.rows)};
  store.add(aligner::sequence_set_view{doc, offsets}, std::span<const float>(ud).subspan(std::size_t(c.docs.offsets[d]), doc.rows));
  const auto query = c.queries.sequence(q);
  const aligner::prepared_query pq(query, {.strategy = aligner::alignment::top_k(2),
                                           .query_salience = std::span<const float>(uq).subspan(0, query.rows)});
  const auto view = aligner::make_alignment_view(pq, store, 0);
  char line[64];
  std::snprintf(line, sizeof line, "score=%.9g ", double(view.why.score));
  CHECK(r.out.find(line) == 0);
  const std::string page = aligner::io::read_file(html), picture = aligner::io::read_file(svg);
  CHECK(page.find("<!DOCTYPE html>") == 0);
  CHECK(picture.find("<svg") == 0);
  CHECK(picture.find("class=\"aligned\"") != std::string::npos);
  std::size_t outlined = 0;
  for (std::size_t at = picture.find("class=\"aligned\""); at != std::string::npos; at = picture.find("class=\"aligned\"", at + 1)) ++outlined;
  CHECK(outlined == view.why.pairs.size());
  // Words from vocab.txt through the token ids.
  std::vector<std::string> vocab;
  {
    const std::string text = aligner::io::read_file(aligner_test::cranfield_dir() / "glove100" / "vocab.txt");
    for (std::size_t at = 0; at < text.size();) {
      const std::size_t end = std::min(text.find('\n', at), text.size());
      vocab.push_back(text.substr(at, end - at));
      at = end + 1;
    }
  }
  const std::string first_word = vocab[std::size_t(c.queries.token_ids[0])];
  CHECK(picture.find(">" + first_word + "</text>") != std::string::npos);
  // From a saved index: its store and salience, and the score a search gives that document.
  REQUIRE(run_cli("index" + coll + " --salience idf --storage bf16 --out " + idx.string()).status == 0);
  const auto ri = run_cli("explain" + coll + " --index " + idx.string() + " --salience idf --query 1 --doc 184 --strategy topk:2 --svg " + svg.string());
  REQUIRE(ri.status == 0);
  CHECK(ri.out.find("score=") == 0);
  // From an index directory (found by the document's name): the same picture as from an index file of that storage.
  const auto dir = cli_temp("explain.dir"), idx8 = cli_temp("explain8.idx");
  std::filesystem::remove_all(dir);
  REQUIRE(run_cli("index" + coll + " --storage i8 --out " + idx8.string()).status == 0);
  REQUIRE(run_cli("index" + coll + " --storage i8 --layout directory --segment-tokens 30000 --out " + dir.string()).status == 0);
  const auto from_file = run_cli("explain" + coll + " --index " + idx8.string() + " --query 1 --doc 184 --strategy topp:0.02 --svg " + svg.string());
  REQUIRE(from_file.status == 0);
  const std::string file_picture = aligner::io::read_file(svg);
  const auto from_dir = run_cli("explain" + coll + " --index " + dir.string() + " --query 1 --doc 184 --strategy topp:0.02 --svg " + svg.string());
  REQUIRE(from_dir.status == 0);
  CHECK(from_dir.out == from_file.out);
  CHECK(aligner::io::read_file(svg) == file_picture);
  {
    const aligner::index_directory_reader reader(dir);
    std::int64_t id = -1;
    for (const auto& seg : reader.snapshot()->segments)
      for (std::size_t k = 0; k != seg->names.size(); ++k)
        if (seg->names[k] == "184") id = seg->ids[k];
    REQUIRE(id >= 0);
    const auto dv = aligner::make_alignment_view(reader, query, id, {.strategy = aligner::alignment::top_p(0.02)});
    std::snprintf(line, sizeof line, "score=%.9g ", double(dv.why.score));
    CHECK(from_dir.out.find(line) == 0);
    // Removed documents are not drawn.
    aligner::index_directory_writer::open(dir).remove(std::vector<std::int64_t>{id});
  }
  CHECK(run_cli("explain" + coll + " --index " + dir.string() + " --query 1 --doc 184 --svg " + svg.string()).status == 2);
  CHECK(run_cli("explain" + coll + " --index " + dir.string() + " --query 1 --doc 185 --salience idf --svg " + svg.string()).status == 2);
  CHECK(run_cli("explain" + coll + " --index " + dir.string() + " --query 1 --doc 185 --svg " + svg.string()).status == 0);
  std::filesystem::remove_all(dir);
  std::filesystem::remove(idx8);
  // Misuse
  CHECK(run_cli("explain" + coll + " --query 1 --doc 184").status == 2);                                     // no output
  CHECK(run_cli("explain" + coll + " --query nope --doc 184 --svg " + svg.string()).status == 2);            // unknown id
  CHECK(run_cli("explain" + coll + " --query 1 --doc 184 --strategy top1,topk:2 --svg " + svg.string()).status == 2);
  CHECK(run_cli("explain" + coll + " --query 1 --doc 184 --svg /nonexistent-dir/x.svg").status == 2);
  CHECK(run_cli("explain" + coll + " --query 1 --doc 184 --index " + idx.string() + " --storage f16 --svg " + svg.string()).status == 2);
  CHECK(run_cli("explain" + coll + " --query 1 --doc 184 --candidates 5 --svg " + svg.string()).status == 2);  // not an explain flag
  CHECK(run_cli("explain" + coll + " --query 1 --doc 184 --vocab /nonexistent/vocab.txt --svg " + svg.string()).status == 2);
  for (const auto& f : {html, svg, idx}) std::filesystem::remove(f);
}

TEST_CASE("cli: --codec builds with another index's residual codec (file and directory), misuse exits 2", "[oracle]") {
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  const auto a = cli_temp("codec_a.idx"), b = cli_temp("codec_b.idx"), c = cli_temp("codec_c.idx"), f32 = cli_temp("codec_f32.idx");
  const auto dir = cli_temp("codec.dir"), dir2 = cli_temp("codec2.dir");
  for (const auto& d : {dir, dir2}) std::filesystem::remove_all(d);
  REQUIRE(run_cli("index" + coll + " --storage residual:2 --centroids 64 --anisotropy 3 --out " + a.string()).status == 0);
  // The same build with A's codec instead of training one writes the same file, byte for byte.
  REQUIRE(run_cli("index" + coll + " --storage residual:2 --codec " + a.string() + " --out " + b.string()).status == 0);
  CHECK(aligner::io::read_file(a) == aligner::io::read_file(b));
  // Another build (no token index) and a directory with A's codec: the same codec, and the same rankings.
  REQUIRE(run_cli("index" + coll + " --storage residual:2 --token-index off --codec " + a.string() + " --out " + c.string()).status == 0);
  REQUIRE(run_cli("index" + coll + " --storage residual:2 --layout directory --segment-tokens 50000 --codec " + a.string() + " --out " +
                  dir.string()).status == 0);
  const auto codec_a = aligner::load_index<aligner::exact_backend>(a.string(), {.mmap = true}).store().codec();
  REQUIRE(codec_a);
  CHECK(codec_a->centroids() == 64);
  CHECK(aligner::load_index<aligner::exact_backend>(c.string(), {.mmap = true}).store().codec()->serialize() == codec_a->serialize());
  CHECK(aligner::index_directory_reader(dir).snapshot()->codec->serialize() == codec_a->serialize());
  const auto run_a = run_cli("search" + coll + " --index " + a.string() + " --strategy top1,topk:2 --candidates postings --ndocs 0 --top 20");
  const auto run_dir = run_cli("search" + coll + " --index " + dir.string() + " --strategy top1,topk:2 --candidates postings --ndocs 0 --top 20");
  REQUIRE(run_a.status == 0);
  REQUIRE(run_dir.status == 0);
  const auto metrics = [](const std::string& out) {  // every line without its timing
    std::string kept;
    for (std::size_t at = 0; at < out.size();) {
      const std::size_t end = std::min(out.find('\n', at), out.size());
      const std::string line = out.substr(at, end - at);
      kept += line.substr(0, line.find(" ms_per_query")) + "\n";
      at = end + 1;
    }
    return kept;
  };
  CHECK(metrics(run_dir.out) == metrics(run_a.out));
  CHECK(std::count(run_a.out.begin(), run_a.out.end(), '\n') == 2);
  // A directory's codec serves too.
  REQUIRE(run_cli("index" + coll + " --storage residual:2 --layout directory --codec " + dir.string() + " --out " + dir2.string()).status == 0);
  CHECK(aligner::index_directory_reader(dir2).snapshot()->codec->serialize() == codec_a->serialize());
  // Misuse: no residual storage, other bits, flags that train a codec, an index without a codec, no such file.
  REQUIRE(run_cli("index" + coll + " --storage bf16 --out " + f32.string()).status == 0);
  const auto out = " --out " + cli_temp("codec_x.idx").string();
  CHECK(run_cli("index" + coll + " --codec " + a.string() + out).status == 2);
  CHECK(run_cli("index" + coll + " --storage residual:4 --codec " + a.string() + out).status == 2);
  CHECK(run_cli("index" + coll + " --storage residual:2 --centroids 32 --codec " + a.string() + out).status == 2);
  CHECK(run_cli("index" + coll + " --storage residual:2 --anisotropy 2 --codec " + a.string() + out).status == 2);
  CHECK(run_cli("index" + coll + " --storage residual:2 --codec " + f32.string() + out).status == 2);
  CHECK(run_cli("index" + coll + " --storage residual:2 --codec /nonexistent/x.idx" + out).status == 2);
  CHECK(run_cli("search" + coll + " --index " + a.string() + " --strategy top1 --codec " + a.string()).status == 2);  // not a search flag
  CHECK(!std::filesystem::exists(cli_temp("codec_x.idx")));
  for (const auto& f : {a, b, c, f32}) std::filesystem::remove(f);
  for (const auto& d : {dir, dir2}) std::filesystem::remove_all(d);
}

TEST_CASE("cli: the bf16 and i8 exact backends index, save under their own labels and search like eval", "[oracle]") {
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  for (const std::string backend : {"exact-bf16", "exact-i8"}) {
    INFO(backend);
    const auto idx = cli_temp(backend + ".idx");
    REQUIRE(run_cli("index" + coll + " --backend " + backend + " --out " + idx.string()).status == 0);
    const auto info = run_cli("info " + idx.string());
    CHECK(info.out.find("backend=" + backend) != std::string::npos);
    const std::string opts = " --strategy top1 --candidates 50 --query-limit 60";
    const auto searched = run_cli("search --index " + idx.string() + coll + opts);
    const auto evaluated = run_cli("eval" + coll + opts + " --backend " + backend);
    REQUIRE(searched.status == 0);
    CHECK(without_timing(searched.out) == without_timing(evaluated.out));
    std::filesystem::remove(idx);
  }
}

TEST_CASE("cli: train-salience writes heads that eval, index and search use, the same seed writes the same file, bad input "
          "exits 2 and writes nothing", "[property]") {
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string() + " --split test";
  const auto heads = cli_temp("heads.txt"), again = cli_temp("heads_again.txt"), idx = cli_temp("learned.idx");
  for (const auto& f : {heads, again, idx}) std::filesystem::remove(f);
  const std::string train = "train-salience" + coll + " --epochs 1 --hard-negatives 4 --alpha-query 1 --alpha-doc 0.5 --epsilon 0.1 --seed 3";
  const auto r = run_cli(train + " --out " + heads.string());
  REQUIRE(r.status == 0);
  CHECK(r.out.find("epoch 0 train_loss=nan holdout_loss=") == 0);
  CHECK(r.out.find("epoch 1 train_loss=") != std::string::npos);
  CHECK(r.out.find("heads written to " + heads.string()) != std::string::npos);
  const auto file = aligner::io::load_salience_heads(heads);
  CHECK(file.heads.dim() == 100);
  CHECK(!file.heads.query.gate());
  CHECK(file.heads.doc.gate()->alpha == 0.5);
  CHECK(file.trained_with.find("top1 mean split=test") == 0);
  REQUIRE(run_cli(train + " --threads 2 --out " + again.string()).status == 0);
  CHECK(aligner::io::read_file(heads) == aligner::io::read_file(again));

  // eval with the heads equals the library: the heads' saliences on an exhaustive search (the first 60 judged queries:
  // --query-limit, here and below).
  const std::string lim = " --query-limit 60";
  const auto c = aligner::io::load_collection(aligner_test::cranfield_dir(), "glove100", "test");
  const auto uq = file.heads.query(c.queries.view()), ud = file.heads.doc(c.docs.view());
  const aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(c.docs.dim), c.docs.view(),
                                                                 aligner::index_params{.token_index = false}, ud);
  aligner::io::run run;
  for (std::size_t q = 0; q != c.queries.size() && run.size() != 60; ++q) {
    if (!c.judgments.count(c.queries.ids[q])) continue;
    const auto res = index.search(c.queries.sequence(q), {.exhaustive = true, .query_salience = std::span<const float>(uq).subspan(
                                                                                  std::size_t(c.queries.offsets[q]), c.queries.view().length(q))});
    for (std::size_t k = 0; k != res.ids.size(); ++k) run[c.queries.ids[q]].push_back({c.docs.ids[std::size_t(res.ids[k])], res.scores[k]});
  }
  char expect[64];
  std::snprintf(expect, sizeof expect, "top1 ndcg@10=%.4f", aligner::ndcg_at(10, run, c.judgments).mean);
  const auto ev = run_cli("eval" + coll + " --strategy top1 --salience " + heads.string() + lim);
  REQUIRE(ev.status == 0);
  CHECK(ev.out.find(expect) == 0);
  // Pruned by the learned heads: index, then search with the same heads equals eval.
  const std::string pruned = " --prune-doc 0.4 --candidates 20 --prune-query 0.5 --strategy top1" + lim;
  REQUIRE(run_cli("index" + coll.substr(0, coll.find(" --split")) + " --salience " + heads.string() + " --prune-doc 0.4 --out " + idx.string()).status == 0);
  const auto searched = run_cli("search --index " + idx.string() + coll + " --salience " + heads.string() + " --candidates 20 --prune-query 0.5 --strategy top1" + lim);
  const auto evaluated = run_cli("eval" + coll + " --salience " + heads.string() + pruned);
  REQUIRE(searched.status == 0);
  CHECK(without_timing(searched.out) == without_timing(evaluated.out));
  CHECK(run_cli("search --index " + idx.string() + coll + " --strategy top1").status == 2);  // built with a salience
  // --rerank-weights off: the heads choose no token here (nothing pruned), so the ranking is the unweighted one.
  const auto unweighted = run_cli("eval" + coll + " --strategy top1 --salience " + heads.string() + " --rerank-weights off" + lim);
  REQUIRE(unweighted.status == 0);
  CHECK(without_timing(unweighted.out) == without_timing(run_cli("eval" + coll + " --strategy top1" + lim).out));
  CHECK(run_cli("eval" + coll + " --strategy top1 --rerank-weights off").status == 2);  // no salience to switch off

  // --init idf-fit starts from the FFN fitted to the IDF (Cranfield has token ids) and records it; a heads file is a
  // start too; a start that cannot be had exits 2 and writes nothing.
  std::filesystem::remove(again);
  const std::string short_train = "train-salience" + coll + " --epochs 1 --hard-negatives 2 --alpha-query 1 --alpha-doc 0.5 --epsilon 0.1";
  const auto from_idf = run_cli(short_train + " --init idf-fit --out " + again.string(), true);
  REQUIRE(from_idf.status == 0);
  CHECK(from_idf.out.find("start: the FFN fitted to the documents' IDF (R^2 = 0.") != std::string::npos);
  CHECK(aligner::io::load_salience_heads(again).trained_with.find(" init=idf-fit") != std::string::npos);
  std::filesystem::remove(again);
  REQUIRE(run_cli(short_train + " --init " + heads.string() + " --out " + again.string()).status == 0);
  CHECK(aligner::io::load_salience_heads(again).trained_with.find(" init=" + heads.string()) != std::string::npos);
  std::filesystem::remove(again);
  for (const std::string& bad : {std::string(" --init /nonexistent/heads.txt"), " --init " + aligner_test::cranfield_dir().string() + "/qrels/test.tsv",
                                std::string(" --init ")}) {
    INFO(bad);
    CHECK(run_cli(short_train + bad + " --out " + again.string()).status == 2);
    CHECK(!std::filesystem::exists(again));
  }

  // The tokens objective trains and records itself in the heads file.
  REQUIRE(run_cli(short_train + " --objective tokens --token-temperature 30 --out " + again.string()).status == 0);
  CHECK(aligner::io::load_salience_heads(again).trained_with.find(" objective=tokens token_temperature=30") != std::string::npos);
  std::filesystem::remove(again);
  // Collection negatives train and record themselves too.
  REQUIRE(run_cli(short_train + " --collection-negatives 32 --out " + again.string()).status == 0);
  CHECK(aligner::io::load_salience_heads(again).trained_with.find(" collection_negatives=32") != std::string::npos);
  std::filesystem::remove(again);

  // Bad input: exit 2, nothing written.
  for (const std::string bad : {" --alpha-doc 0", " --alpha-query 1.5", " --epsilon 0", " --epsilon -1", " --temperature 0", " --holdout 1",
                                " --objective nosuch", " --token-temperature 30", " --objective tokens --token-temperature 0",
                                " --objective tokens --alpha-query 1 --alpha-doc 1",
                                " --epochs 0", " --ensemble 0", " --ensemble 1001", " --collection-negatives 1048577", " --collection-negatives -3",
                                " --strategy top1,topk:2", " --split nosuchsplit",
                                " --vectors nosuchvectors"}) {
    INFO(bad);
    CHECK(run_cli("train-salience --collection " + aligner_test::cranfield_dir().string() + bad + " --out " + again.string()).status == 2);
    CHECK(!std::filesystem::exists(again));
  }
  CHECK(run_cli("train-salience" + coll).status == 2);                                                         // no --out
  CHECK(run_cli("eval" + coll + " --strategy top1 --salience /nonexistent/heads.txt").status == 2);          // unreadable heads
  CHECK(run_cli("eval" + coll + " --strategy top1 --salience " + aligner_test::cranfield_dir().string() + "/qrels/test.tsv").status == 2);
  for (const auto& f : {heads, again, idx}) std::filesystem::remove(f);
}

TEST_CASE("cli: query ranks the vectors a user brings exactly as the library searches the index, misuse exits 2", "[oracle]") {
  const auto dir = aligner_test::cranfield_dir();
  const auto c = aligner::io::load_collection(dir);
  const auto idx = cli_temp("query.idx");
  REQUIRE(run_cli("index --collection " + dir.string() + " --out " + idx.string()).status == 0);
  // Five queries of the collection, back to back, as a user would save them.
  const std::size_t first = 3, count = 5, dim = c.queries.dim;
  const auto begin = std::size_t(c.queries.offsets[first]), end = std::size_t(c.queries.offsets[first + count]);
  const std::vector<float> q(c.queries.vectors.begin() + std::ptrdiff_t(begin * dim), c.queries.vectors.begin() + std::ptrdiff_t(end * dim));
  std::vector<std::int64_t> offsets;
  for (std::size_t i = 0; i <= count; ++i) offsets.push_back(c.queries.offsets[first + i] - std::int64_t(begin));
  aligner::io::save_npy(cli_temp("qv.npy"), q, {end - begin, dim});
  aligner::io::save_npy<std::int64_t>(cli_temp("qo.npy"), offsets, {count + 1});
  const std::string base = "query --index " + idx.string() + " --vectors " + cli_temp("qv.npy").string();
  const auto r = run_cli(base + " --offsets " + cli_temp("qo.npy").string() + " --strategy topp:0.02 --top 15 --doc-ids " +
                         (dir / "glove100" / "doc_ids.txt").string());
  REQUIRE(r.status == 0);
  const auto index = aligner::load_index<aligner::exact_backend>(idx);
  std::ostringstream want;
  for (std::size_t i = 0; i != count; ++i) {
    const auto res = index.search(c.queries.sequence(first + i), {.strategy = aligner::alignment::top_p(0.02), .top = 15});
    REQUIRE(res.ids.size() == 15);
    for (std::size_t k = 0; k != res.ids.size(); ++k) {
      char line[256];
      std::snprintf(line, sizeof line, "%zu Q0 %s %zu %.9g aligner-topp:0.02\n", i, c.docs.ids[std::size_t(res.ids[k])].c_str(), k + 1,
                    double(res.scores[k]));
      want << line;
    }
  }
  CHECK(r.out == want.str());
  // Without --offsets every row is one query; without --doc-ids documents are named by id; the default top is 10.
  const auto one = run_cli(base);
  REQUIRE(one.status == 0);
  std::istringstream lines(one.out);
  std::string qid, q0, doc, tag;
  std::size_t rank = 0, n = 0;
  double score = 0;
  const auto whole = index.search({q.data(), end - begin, dim}, {.top = 10});
  while (lines >> qid >> q0 >> doc >> rank >> score >> tag) {
    CHECK(qid == "0");
    CHECK(doc == std::to_string(whole.ids[n]));
    CHECK(rank == n + 1);
    CHECK_THAT(score, WithinAbs(whole.scores[n], 1e-6));
    ++n;
  }
  CHECK(n == 10);
  // One query with --threads: its own rerank on two threads (search_params.threads), the same lines.
  const auto threaded = run_cli(base + " --threads 2");
  REQUIRE(threaded.status == 0);
  CHECK(threaded.out == one.out);
  // Misuse: each exits 2 with a reason and prints no results.
  const std::vector<float> narrow(4 * 3, 0.5f);
  aligner::io::save_npy(cli_temp("qnarrow.npy"), narrow, {4, 3});
  const std::vector<std::int64_t> bad_offsets = {0, 9, 4};
  aligner::io::save_npy<std::int64_t>(cli_temp("qbad.npy"), bad_offsets, {3});
  const std::pair<std::string, std::string> cases[] = {
      {"query --index " + idx.string(), "--vectors"},
      {"query --index " + idx.string() + " --vectors " + cli_temp("qnarrow.npy").string(), "dim 3"},
      {base + " --offsets " + cli_temp("qbad.npy").string(), "qbad.npy"},
      {base + " --salience idf", "--salience idf"},
      {base + " --top 0", "--top"},
      {base + " --strategy top1,top2", "one strategy"},
      {base + " --doc-ids " + (dir / "glove100" / "query_ids.txt").string(), "names"},
      {base + " --query-salience " + cli_temp("qnarrow.npy").string(), "salience values"},
      {base + " --candidates postings", "residual"},
      {"query --index /nonexistent.idx --vectors " + cli_temp("qv.npy").string(), "/nonexistent.idx"},
  };
  for (const auto& [command, reason] : cases) {
    INFO(command);
    const auto bad = run_cli(command, true);
    CHECK(bad.status == 2);
    CHECK(bad.out.find(reason) != std::string::npos);
    CHECK(bad.out.find(" Q0 ") == std::string::npos);
  }
  // An index built with salience needs the queries' salience, or --rerank-weights off.
  const auto sal = cli_temp("query_idf.idx");
  REQUIRE(run_cli("index --collection " + dir.string() + " --salience idf --out " + sal.string()).status == 0);
  const std::string on_sal = "query --index " + sal.string() + " --vectors " + cli_temp("qv.npy").string();
  CHECK(run_cli(on_sal).status == 2);
  const auto unweighted = run_cli(on_sal + " --rerank-weights off");
  REQUIRE(unweighted.status == 0);
  const auto loaded = aligner::load_index<aligner::exact_backend>(sal);
  const auto plain = loaded.search({q.data(), end - begin, dim}, {.top = 10, .use_doc_salience = false});
  CHECK(unweighted.out.find("0 Q0 " + std::to_string(plain.ids[0]) + " 1 ") == 0);
  // An index directory names its documents itself.
  const auto dirx = cli_temp("query_dir");
  std::filesystem::remove_all(dirx);
  REQUIRE(run_cli("index --collection " + dir.string() + " --storage residual:2 --centroids 64 --layout directory --out " + dirx.string()).status == 0);
  const auto from_dir = run_cli("query --index " + dirx.string() + " --vectors " + cli_temp("qv.npy").string() + " --candidates postings --top 5");
  REQUIRE(from_dir.status == 0);
  const aligner::index_directory_reader reader(dirx);
  const auto hits = reader.search({q.data(), end - begin, dim}, {.top = 5, .nprobe = 4, .ndocs = 1000});
  std::ostringstream named;
  for (std::size_t k = 0; k != hits.ids.size(); ++k) {
    char line[256];
    std::snprintf(line, sizeof line, "0 Q0 %s %zu %.9g aligner-top1\n", reader.name(hits.ids[k]).c_str(), k + 1, double(hits.scores[k]));
    named << line;
  }
  CHECK(from_dir.out == named.str());
  CHECK(run_cli("query --index " + dirx.string() + " --vectors " + cli_temp("qv.npy").string() + " --candidates 10").status == 2);
  std::filesystem::remove_all(dirx);
  std::filesystem::remove(idx);
  std::filesystem::remove(sal);
}

TEST_CASE("cli: index shows a bar per build stage that moves during the build", "[property]") {
  const auto idx = cli_temp("progress.idx");
  const auto r = run_cli("index --collection " + aligner_test::cranfield_dir().string() + " --storage residual:2 --centroids 64 --progress --out " +
                             idx.string(),
                         true);
  REQUIRE(r.status == 0);
  for (const char* stage : {"indexing: codec", "indexing: token index", "indexing: store"}) {
    INFO(stage);
    CHECK(r.out.find(stage) != std::string::npos);
  }
  CHECK(r.out.find("(0/") != std::string::npos);
  CHECK(r.out.find("100% (1400/1400)") != std::string::npos);
  std::filesystem::remove(idx);
}

TEST_CASE("cli: --backend faiss-ivf builds, saves and searches, --nlist and --ivf-nprobe need it", "[property]") {
  const auto help = run_cli("index --help");
  const auto listed = help.out.find("--backend NAME");  // the line that lists this build's backends
  if (listed == std::string::npos || help.out.substr(listed, help.out.find('\n', listed) - listed).find("faiss-ivf") == std::string::npos) {
    std::printf("SKIP: this build of the CLI has no FAISS\n");
    return;
  }
  const std::string coll = " --collection " + aligner_test::cranfield_dir().string();
  const auto idx = cli_temp("ivf.idx");
  const auto built = run_cli("index" + coll + " --backend faiss-ivf --nlist 64 --ivf-nprobe 16 --out " + idx.string(), true);
  REQUIRE(built.status == 0);
  CHECK(built.out.find("faiss-ivf: 64 inverted lists, 16 probed per query token") != std::string::npos);
  CHECK(run_cli("info " + idx.string()).out.find("backend=faiss-ivf") != std::string::npos);
  const std::string opts = " --strategy top1 --candidates 100 --query-limit 60", limit = " --query-limit 60";
  const auto searched = run_cli("search --index " + idx.string() + coll + opts);
  const auto evaluated = run_cli("eval" + coll + opts + " --backend faiss-ivf --nlist 64 --ivf-nprobe 16");
  REQUIRE(searched.status == 0);
  CHECK(without_timing(searched.out) == without_timing(evaluated.out));
  // Its quality is the exhaustive rerank's on Cranfield (identical vectors indexed once: k' reaches far).
  const auto exhaustive = run_cli("eval" + coll + " --strategy top1" + limit);
  const auto ndcg = [](const std::string& out) { return std::stod(out.substr(out.find("ndcg@10=") + 8, 6)); };
  CHECK(ndcg(searched.out) >= ndcg(exhaustive.out) - 0.01);
  // Searching it without --candidates would leave the inverted file unused: refused, naming both choices.
  const auto unchosen = run_cli("search --index " + idx.string() + coll + " --strategy top1", true);
  CHECK(unchosen.status == 2);
  CHECK(unchosen.out.find("holds a faiss-ivf token index") != std::string::npos);
  CHECK(without_timing(run_cli("search --index " + idx.string() + coll + " --strategy top1 --candidates all" + limit).out) == without_timing(exhaustive.out));
  const auto c = aligner::io::load_collection(aligner_test::cranfield_dir());
  const std::vector<float> qv(c.queries.vectors.begin(), c.queries.vectors.begin() + std::ptrdiff_t(c.queries.offsets[1]) * std::ptrdiff_t(c.queries.dim));
  aligner::io::save_npy(cli_temp("ivf_q.npy"), qv, {std::size_t(c.queries.offsets[1]), c.queries.dim});
  CHECK(run_cli("query --index " + idx.string() + " --vectors " + cli_temp("ivf_q.npy").string()).status == 2);
  CHECK(run_cli("query --index " + idx.string() + " --vectors " + cli_temp("ivf_q.npy").string() + " --candidates 100").status == 0);
  // The default list count is chosen and printed.
  const auto chosen = run_cli("eval" + coll + opts + " --backend faiss-ivf", true);
  REQUIRE(chosen.status == 0);
  // 6,487 distinct vectors: 4 sqrt(n) = 322 -> 256, but at most n / 39 = 166 -> 128.
  CHECK(chosen.out.find("faiss-ivf: 128 inverted lists, 32 probed") != std::string::npos);
  for (const char* bad : {" --nlist 8", " --ivf-nprobe 4", " --backend faiss-ivf --nlist 0", " --backend faiss-ivf --ivf-nprobe 0"}) {
    INFO(bad);
    CHECK(run_cli("index" + coll + bad + " --out " + cli_temp("never_ivf.idx").string()).status == 2);
  }
  CHECK(!std::filesystem::exists(cli_temp("never_ivf.idx")));
  CHECK(run_cli("eval" + coll + " --strategy top1 --backend faiss-ivf --nlist 8").status == 2);  // no token index without --candidates K
  std::filesystem::remove(idx);
}
