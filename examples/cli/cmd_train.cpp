// train-salience: learns the query and document salience heads from a collection's judged queries.
#include <aligner/eval/idf.hpp>
#include <aligner/eval/salience_training.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/salience_heads.hpp>

#include <chrono>
#include <cstdio>
#include <optional>

#include "collection_run.hpp"
#include "commands.hpp"
#include "progress.hpp"

namespace cli {

int run_train_salience(const options& o) {
  o.require("--collection");
  o.require("--out");
  if (o.strategies.size() > 1) throw usage_error("train-salience trains under one strategy; --strategy got " + std::to_string(o.strategies.size()));

  aligner::salience_training_params p;
  if (!o.strategies.empty()) p.strategy = o.strategies[0];
  p.norm = o.norm;
  p.alpha_query = o.alpha_query, p.alpha_doc = o.alpha_doc;
  if (o.has("--epsilon")) p.epsilon = o.epsilon;
  p.epsilon_start = o.epsilon_start;
  p.temperature = o.temperature, p.learning_rate = o.learning_rate, p.holdout = o.holdout;
  p.objective = aligner::parse_salience_objective(o.objective);
  p.token_temperature = o.token_temperature;
  if (o.has("--token-temperature") && p.objective != aligner::salience_objective::tokens)
    throw usage_error("--token-temperature sets the tokens objective's temperature; it needs --objective tokens");
  p.epochs = o.epochs, p.batch_size = o.batch, p.patience = o.patience;
  p.seed = o.seed, p.threads = o.threads, p.ensemble = o.ensemble, p.collection_negatives = o.collection_negatives;
  p.validate();  // every setting, before the collection is read

  const std::string split = o.has("--split") ? o.split : "train";
  auto c = aligner::io::load_collection(o.collection, o.vectors, split);
  std::size_t missing = 0;
  auto examples = aligner::training_queries(c, &missing);
  std::size_t pairs = 0;
  for (const auto& e : examples) pairs += e.positives.size();
  std::fprintf(stderr, "%zu training queries (split %s), %zu relevant pairs, %zu documents%s\n", examples.size(), split.c_str(), pairs,
               c.docs.size(), missing ? (", " + std::to_string(missing) + " judged documents not in the collection skipped").c_str() : "");

  if (o.init == "idf-fit") {
    // Fitted to the document tokens' IDF (a seeded sample of 200k tokens), for both heads.
    auto ids = token_ids_of(c.docs, std::filesystem::path(o.collection) / o.vectors, "doc");
    if (ids.empty())
      throw usage_error("--init idf-fit needs token ids: the token-id vectors form (embeddings.npy) or " +
                        (std::filesystem::path(o.collection) / o.vectors / "doc_token_ids.npy").string());
    double r2 = 0;  // an id outside the vocabulary (c.vocab_size; 0: the largest id + 1) is refused by token_idf
    const auto fitted = aligner::fit_idf_salience(c.docs.view(), ids, c.vocab_size, 200000, p.seed ^ 0x1df, 1e-3, &r2);
    std::fprintf(stderr, "start: the FFN fitted to the documents' IDF (R^2 = %.3f)\n", r2);
    p.start.emplace(fitted, fitted);
  } else if (o.init != "none") {
    auto file = aligner::io::load_salience_heads(o.init);
    if (file.heads.dim() != c.docs.dim)
      throw usage_error("--init " + o.init + " holds heads of dim " + std::to_string(file.heads.dim()) + ", the vectors have dim " +
                        std::to_string(c.docs.dim));
    p.start.emplace(std::move(file.heads));
  }

  const auto t0 = std::chrono::steady_clock::now();
  {
    progress bar("mining negatives", 1, o.progress);
    aligner::mine_hard_negatives(c.queries.view(), c.docs.view(), examples, o.hard_negatives, p.strategy, p.norm, o.threads);
    bar.tick();
  }
  std::optional<progress> bar;
  std::size_t epoch_shown = 0;
  p.on_step = [&](std::size_t done, std::size_t total) {
    if (!bar) bar.emplace("epoch " + std::to_string(epoch_shown + 1), total, o.progress);
    bar->update(done);
  };
  std::size_t member = 0;
  p.on_epoch = [&](const aligner::salience_training_epoch& e) {
    bar.reset();
    epoch_shown = e.epoch;
    if (p.ensemble > 1 && e.epoch == 0) {
      std::printf("member %zu of %zu, seed %llu\n", member + 1, p.ensemble, static_cast<unsigned long long>(p.seed + member));
      ++member;
    }
    std::printf("epoch %zu train_loss=%.4f holdout_loss=%.4f holdout_first=%.4f learning_rate=%.5f epsilon=%.4g seconds=%.1f\n", e.epoch,
                e.train_loss, e.holdout_loss, e.holdout_accuracy, e.learning_rate, e.epsilon, e.seconds);
    std::fflush(stdout);
  };
  const aligner::salience_trainer trainer(c.queries.view(), c.docs.view(), std::move(examples), p);
  const auto result = trainer.train();
  char token_temperature[32];
  std::snprintf(token_temperature, sizeof token_temperature, "%g", p.token_temperature);
  const std::string epochs = result.best_epochs();
  const std::string trained_with = p.strategy.name() + " " + aligner::to_string(p.norm) + " split=" + split + " epochs=" + epochs +
                                   " seed=" + std::to_string(p.seed) +
                                   (p.ensemble > 1 ? " ensemble=" + std::to_string(p.ensemble) : std::string()) + " init=" +
                                   (o.init.find_first_of("\r\n") == std::string::npos ? o.init : std::string("file")) +
                                   (p.objective == aligner::salience_objective::tokens
                                        ? " objective=tokens token_temperature=" + std::string(token_temperature)
                                        : std::string()) +
                                   (p.collection_negatives ? " collection_negatives=" + std::to_string(p.collection_negatives) : std::string());
  if (p.start && result.members.empty() && result.best_epoch == 0)
    std::fprintf(stderr, "note: no epoch scored the held-out queries better than the --init heads; they are written unchanged\n");
  // (Not for the tokens objective: its start, every token alike, keeps each at λ = k / m, a share of every token and
  // no keep rule, so its loss is no baseline.)
  if (!p.start && p.objective == aligner::salience_objective::score && result.holdout_queries && result.members.empty() &&
      result.epochs[result.best_epoch].holdout_loss > result.epochs[0].holdout_loss)
    std::fprintf(stderr,
                 "note: the heads score the held-out queries worse than no salience (loss %.4f against %.4f): with a gate the score "
                 "keeps only a budget of each sequence's tokens; --alpha-query 1 --alpha-doc 1 trains weights without a gate\n",
                 result.epochs[result.best_epoch].holdout_loss, result.epochs[0].holdout_loss);
  aligner::io::save_salience_heads(o.out, result.heads, trained_with);
  if (result.members.empty())
    std::printf("best epoch %zu%s; ", result.best_epoch, result.stopped_early ? " (stopped early)" : "");
  else
    std::printf("the mean of %zu members (best epochs %s); ", result.members.size(), epochs.c_str());
  std::printf("%zu training and %zu held-out queries; %.1f s; heads written to %s\n", result.train_queries, result.holdout_queries,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), o.out.c_str());
  return 0;
}

}  // namespace cli
