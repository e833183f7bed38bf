// aligner.train_salience: learns the query and document salience heads from labelled (query, relevant documents)
// pairs on the caller's own token vectors (eval/salience_training.hpp), as `aligner train-salience` does for a
// collection folder. The training runs with the GIL released; on_epoch is called on the calling thread with it.
#include <aligner/eval/salience_training.hpp>
#include <aligner/io/salience_heads.hpp>

#include "search.hpp"

namespace aligner_py {

namespace {

/// Document indices of one example's list (ints, or an array of ints).
std::vector<std::uint32_t> index_list(py::handle obj, const std::string& name) {
  const std::vector<std::int64_t> raw = int_or_int64s(obj, name.c_str());
  std::vector<std::uint32_t> out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i != raw.size(); ++i) {
    if (raw[i] < 0 || raw[i] > std::int64_t(UINT32_MAX))
      throw py::value_error(name + "[" + std::to_string(i) + "] = " + std::to_string(raw[i]) + " is not a document index");
    out.push_back(std::uint32_t(raw[i]));
  }
  return out;
}

/// The examples: a sequence of (query index, relevant document indices) or (query, relevant, negatives).
std::vector<aligner::training_query> examples_arg(py::handle examples) {
  if (!py::isinstance<py::sequence>(examples) || py::isinstance<py::str>(examples))
    throw py::type_error("examples must be a sequence of (query, relevant documents[, negatives]) tuples, got " +
                         std::string(py::str(py::type::of(examples).attr("__name__"))));
  const auto seq = py::reinterpret_borrow<py::sequence>(examples);
  std::vector<aligner::training_query> out;
  out.reserve(seq.size());
  for (std::size_t e = 0; e != seq.size(); ++e) {
    const std::string at = "examples[" + std::to_string(e) + "]";
    const py::handle item = seq[e];
    if (!py::isinstance<py::sequence>(item) || py::isinstance<py::str>(item) || (py::len(item) != 2 && py::len(item) != 3))
      throw py::type_error(at + " must be a (query, relevant documents) or (query, relevant, negatives) tuple");
    const auto parts = py::reinterpret_borrow<py::sequence>(item);
    const py::handle query = parts[0];
    if (!py::isinstance<py::int_>(query) && !py::hasattr(query, "__index__"))
      throw py::type_error(at + "[0] must be a query index (int)");
    const auto q = py::cast<std::int64_t>(py::reinterpret_borrow<py::object>(query).attr("__index__")());
    if (q < 0) throw py::value_error(at + "[0] = " + std::to_string(q) + " is not a query index");
    aligner::training_query t{std::size_t(q), index_list(parts[1], at + "[1]"), {}};
    if (py::len(item) == 3) t.negatives = index_list(parts[2], at + "[2]");
    out.push_back(std::move(t));
  }
  return out;
}

aligner::salience_scorer head_arg(py::handle obj, const char* name) {
  if (!py::isinstance<py::dict>(obj)) throw py::type_error(std::string(name) + " must be a dict of weights, bias, gate_alpha, gate_epsilon");
  const auto d = py::reinterpret_borrow<py::dict>(obj);
  for (const char* key : {"weights", "bias"})
    if (!d.contains(key)) throw py::value_error(std::string(name) + " has no '" + key + "'");
  const f32_array w = as_vector(d["weights"], (std::string(name) + "['weights']").c_str());
  std::optional<aligner::gate_params> gate;
  if (d.contains("gate_alpha") && !d["gate_alpha"].is_none())
    gate = aligner::gate_params{.alpha = py::cast<double>(d["gate_alpha"]),
                                .epsilon = d.contains("gate_epsilon") ? py::cast<double>(d["gate_epsilon"]) : 0.002};
  return aligner::salience_scorer(std::vector<float>(w.data(), w.data() + w.size()), py::cast<float>(d["bias"]), gate);
}

py::dict epoch_dict(const aligner::salience_training_epoch& e) {
  py::dict d;
  d["epoch"] = e.epoch;
  d["train_loss"] = e.train_loss;
  d["holdout_loss"] = e.holdout_loss;
  d["holdout_accuracy"] = e.holdout_accuracy;
  d["learning_rate"] = e.learning_rate;
  d["epsilon"] = e.epsilon;
  d["seconds"] = e.seconds;
  return d;
}

py::dict result_dict(const aligner::salience_training_result& result) {
  py::dict r;
  r["dim"] = result.heads.dim();
  r["query"] = head_dict(result.heads.query);
  r["doc"] = head_dict(result.heads.doc);
  r["best_epoch"] = result.best_epoch;
  r["stopped_early"] = result.stopped_early;
  r["train_queries"] = result.train_queries;
  r["holdout_queries"] = result.holdout_queries;
  py::list history;
  for (const auto& e : result.epochs) history.append(epoch_dict(e));
  r["epochs"] = history;
  if (!result.members.empty()) {
    py::list members;
    for (const auto& m : result.members) members.append(result_dict(m));
    r["members"] = members;
  }
  return r;
}

py::dict train_salience(py::handle queries, py::handle docs, py::handle examples, py::handle query_offsets, py::handle doc_offsets,
                        const std::string& strategy, const std::string& normalize, double alpha_query, double alpha_doc, double epsilon,
                        double epsilon_start, double temperature, bool in_batch_negatives, std::size_t batch_size, std::size_t epochs,
                        double learning_rate, double final_learning_rate, double holdout, std::size_t patience, std::uint64_t seed,
                        std::size_t hard_negatives, py::handle start, unsigned threads, py::handle on_epoch, py::handle out,
                        const std::string& objective, double token_temperature, std::size_t ensemble, std::size_t collection_negatives) {
  aligner::salience_training_params p;
  p.strategy = aligner::alignment::parse(strategy);
  p.norm = aligner::parse_normalization(normalize);
  p.alpha_query = alpha_query, p.alpha_doc = alpha_doc, p.epsilon = epsilon, p.epsilon_start = epsilon_start;
  p.temperature = temperature, p.in_batch_negatives = in_batch_negatives, p.batch_size = batch_size, p.epochs = epochs;
  p.learning_rate = learning_rate, p.final_learning_rate = final_learning_rate, p.holdout = holdout, p.patience = patience;
  p.seed = seed, p.threads = threads;
  p.objective = aligner::parse_salience_objective(objective);
  p.token_temperature = token_temperature;
  p.ensemble = ensemble;
  p.collection_negatives = collection_negatives;
  p.validate();  // every setting before anything is read or trained
  if (!on_epoch.is_none() && !PyCallable_Check(on_epoch.ptr())) throw py::type_error("on_epoch must be callable (a dict per epoch) or None");
  std::string out_path;
  if (!out.is_none()) out_path = py::cast<std::string>(py::module_::import("os").attr("fspath")(out));
  std::string init = "none";  // the start, for the heads file's provenance line (as the CLI's init=)
  if (!start.is_none()) {
    init = "dict";
    if (py::isinstance<py::str>(start) || py::hasattr(start, "__fspath__")) {
      init = "file";
      p.start = aligner::io::load_salience_heads(py::cast<std::string>(py::module_::import("os").attr("fspath")(start))).heads;
    } else {
      if (!py::isinstance<py::dict>(start) || !py::reinterpret_borrow<py::dict>(start).contains("query") ||
          !py::reinterpret_borrow<py::dict>(start).contains("doc"))
        throw py::type_error("start must be None, a heads file's path, or a dict with 'query' and 'doc' heads (as train_salience returns)");
      const auto d = py::reinterpret_borrow<py::dict>(start);
      p.start.emplace(head_arg(d["query"], "start['query']"), head_arg(d["doc"], "start['doc']"));
    }
  }
  const f32_sequences q = as_sequences(queries, query_offsets, "queries");
  const f32_sequences d = as_sequences(docs, doc_offsets, "docs", q.dim);
  auto ex = examples_arg(examples);
  if (!on_epoch.is_none()) {
    p.on_epoch = [&on_epoch](const aligner::salience_training_epoch& e) {
      py::gil_scoped_acquire gil;
      on_epoch(epoch_dict(e));
    };
  }
  std::optional<aligner::salience_training_result> trained;
  {
    py::gil_scoped_release release;
    for (std::size_t e = 0; e != ex.size(); ++e)  // (the trainer checks them again; mining needs them in range first)
      ALIGNER_EXPECTS(ex[e].query < q.view().size(), "training example ", e, " names query ", ex[e].query, " of ", q.view().size());
    if (hard_negatives > 0) aligner::mine_hard_negatives(q.view(), d.view(), ex, hard_negatives, p.strategy, p.norm, threads);
    const aligner::salience_trainer trainer(q.view(), d.view(), std::move(ex), p);
    trained.emplace(trainer.train());
    if (!out_path.empty()) {  // the CLI's provenance fields (examples/cli/cmd_train.cpp), but no split: examples are given
      char token_temperature_text[32];
      std::snprintf(token_temperature_text, sizeof token_temperature_text, "%g", p.token_temperature);
      aligner::io::save_salience_heads(
          out_path, trained->heads,
          p.strategy.name() + " " + aligner::to_string(p.norm) + " epochs=" + trained->best_epochs() + " seed=" + std::to_string(seed) +
              (ensemble > 1 ? " ensemble=" + std::to_string(ensemble) : std::string()) + " init=" + init +
              (p.objective == aligner::salience_objective::tokens ? " objective=tokens token_temperature=" + std::string(token_temperature_text)
                                                                  : std::string()) +
              (collection_negatives ? " collection_negatives=" + std::to_string(collection_negatives) : std::string()) + " (python)");
    }
  }
  const auto& result = *trained;
  return result_dict(result);
}

}  // namespace

void bind_training(py::module_& m) {
  m.def("_train_salience", &train_salience, py::arg("queries"), py::arg("docs"), py::arg("examples"), py::arg("query_offsets"),
        py::arg("doc_offsets"), py::arg("strategy"), py::arg("normalize"), py::arg("alpha_query"), py::arg("alpha_doc"), py::arg("epsilon"),
        py::arg("epsilon_start"), py::arg("temperature"), py::arg("in_batch_negatives"), py::arg("batch_size"), py::arg("epochs"),
        py::arg("learning_rate"), py::arg("final_learning_rate"), py::arg("holdout"), py::arg("patience"), py::arg("seed"),
        py::arg("hard_negatives"), py::arg("start"), py::arg("threads"), py::arg("on_epoch"), py::arg("out"), py::arg("objective"),
        py::arg("token_temperature"), py::arg("ensemble"), py::arg("collection_negatives"));
}

}  // namespace aligner_py
