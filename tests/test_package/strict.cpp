// Compiled (not run) with -Wall -Wextra -Wpedantic -Werror and -march=x86-64-v4, the headers a plain -I include, at
// -O0 by the packaging test (tests/test_package/CMakeLists.txt) and at -O3 by a stage of .ci/run: the
// library's headers must give a consumer no warning (GCC 12's AVX-512 intrinsics warn falsely, bug 105593; the
// kernels silence exactly that for their own code). Touches the kernels, the retriever, index files and salience
// training with its heads file.
#include <aligner/aligner.hpp>
#include <aligner/eval/salience_training.hpp>
#include <aligner/io/index_file.hpp>
#include <aligner/io/salience_heads.hpp>

int strict_consumer() {
  std::vector<float> q(3 * 8, 0.5f), d(10 * 8, 0.25f);
  const std::vector<std::int64_t> offsets = {0, 4, 10};
  float total = 0.f;
  for (aligner::storage st : aligner::all_storages) {
    aligner::aligner_retriever<aligner::exact_backend> r(aligner::exact_backend(8), aligner::sequence_set_view{{d.data(), 10, 8}, offsets},
                                                         {.precision = st});
    for (const auto& a : {aligner::alignment::top1(), aligner::alignment::top_k(4), aligner::alignment::top_k(32)})
      total += r.search({q.data(), 3, 8}, {.strategy = a, .candidates_per_token = 3, .top = 2}).scores.at(0);
    aligner::save_index(r, "strict.idx");
    total += float(aligner::load_index<aligner::exact_backend>("strict.idx").size());
  }
  const aligner::sequence_set_view queries{{q.data(), 3, 8}, std::vector<std::int64_t>{0, 3}};
  std::vector<aligner::training_query> examples = {{0, {1}, {}}, {0, {0}, {}}};
  aligner::mine_hard_negatives(queries, {{d.data(), 10, 8}, offsets}, examples, 1);
  const aligner::salience_trainer trainer(queries, {{d.data(), 10, 8}, offsets}, examples, {.epochs = 1, .holdout = 0.5});
  aligner::io::save_salience_heads("strict.heads", trainer.train().heads);
  total += float(aligner::io::load_salience_heads("strict.heads").heads.dim());
  return int(total + aligner::score({q.data(), 3, 8}, {d.data(), 10, 8}));
}
