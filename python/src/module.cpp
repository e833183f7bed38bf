// The Python module aligner._aligner: scoring, the gate, salience, pruning, metrics and readers (this file), the
// Retriever (retriever.cpp), the index directory (directory.cpp), salience training (training.cpp), salience fitting
// and few-shot adaptation (eval.cpp). The Python package (python/aligner/__init__.py) re-exports it with docstrings and
// type stubs.
#include <aligner/aligner.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/metrics.hpp>
#include <aligner/io/beir.hpp>
#include <aligner/io/collection.hpp>
#include <aligner/io/salience_heads.hpp>
#include <aligner/io/trec.hpp>
#include <aligner/kernels/kernel_info.hpp>
#include <aligner/version.hpp>

#include <map>
#include <string>

#include "search.hpp"

namespace aligner_py {

void bind_retriever(py::module_& m);
void bind_directory(py::module_& m);
void bind_training(py::module_& m);
void bind_eval(py::module_& m);
void bind_codec(py::module_& m);

namespace {

aligner::score_params make_score_params(const std::string& strategy, const std::string& normalize, std::span<const float> uq,
                                        std::span<const float> ud) {
  aligner::score_params p;
  p.strategy = aligner::alignment::parse(strategy);
  p.norm = aligner::parse_normalization(normalize);
  p.query_salience = uq;
  p.doc_salience = ud;
  return p;
}

std::optional<f32_array> optional_vector(py::handle obj, const char* name, std::size_t expected) {
  if (obj.is_none()) return std::nullopt;
  return as_vector(obj, name, expected);
}

double score(py::handle query, py::handle doc, const std::string& strategy, const std::string& normalize, py::handle query_salience,
             py::handle doc_salience, bool reference) {
  const f32_matrix q = as_matrix(query, "query");
  const f32_matrix d = as_matrix(doc, "doc");
  const auto uq = optional_vector(query_salience, "query_salience", q.view().rows);
  const auto ud = optional_vector(doc_salience, "doc_salience", d.view().rows);
  const auto p = make_score_params(strategy, normalize, span_of(uq), span_of(ud));
  if (reference) return aligner::ref::score(q.view(), d.view(), p);
  py::gil_scoped_release release;
  return double(aligner::score(q.view(), d.view(), p));
}

py::array_t<float> score_batch(py::handle query, py::handle docs, py::handle offsets, const std::string& strategy,
                               const std::string& normalize, py::handle query_salience, py::handle doc_salience) {
  const f32_matrix q = as_matrix(query, "query");
  const f32_sequences d = as_sequences(docs, offsets, "docs", q.view().rows ? q.view().cols : 0);
  const auto uq = optional_vector(query_salience, "query_salience", q.view().rows);
  const auto ud = optional_vector(doc_salience, "doc_salience", d.rows);
  const auto p = make_score_params(strategy, normalize, span_of(uq), span_of(ud));
  std::vector<float> out(d.view().size());
  {
    py::gil_scoped_release release;
    aligner::score_batch(q.view(), d.view(), out, p);
  }
  return to_numpy(std::move(out));
}

py::array_t<float> solve_gate(py::handle scores, double k, double epsilon, bool exact, std::size_t max_iterations) {
  const f32_array s = as_vector(scores, "scores");
  const std::span<const float> v(s.data(), s.size());
  if (exact) return to_numpy(aligner::solve_gate(v, k, epsilon));
  aligner::gate_iteration_params ip;
  ip.max_iterations = max_iterations;
  return to_numpy(aligner::iterate_gate(v, k, epsilon, ip).lambda);
}

std::optional<aligner::gate_params> gate_of(py::handle alpha, double epsilon) {
  if (alpha.is_none()) return std::nullopt;
  aligner::gate_params g;
  g.alpha = py::cast<double>(alpha);
  g.epsilon = epsilon;
  return g;
}

py::array_t<float> salience(py::handle tokens, py::handle weights, double bias, py::handle gate_alpha, double gate_epsilon) {
  const f32_matrix t = as_matrix(tokens, "tokens");
  const f32_array w = as_vector(weights, "weights");
  if (t.view().rows && t.view().cols != w.size())
    throw py::value_error("weights has " + std::to_string(w.size()) + " entries but tokens have dim " + std::to_string(t.view().cols));
  const aligner::salience_scorer scorer(std::vector<float>(w.data(), w.data() + w.size()), float(bias), gate_of(gate_alpha, gate_epsilon));
  return to_numpy(scorer(t.view()));
}

/// A heads file of `aligner train-salience` as a dict: dim, trained_with, and per head (query, doc) its weights, bias,
/// gate_alpha (None: no gate) and gate_epsilon, the arguments salience() takes.
py::dict load_salience_heads(const std::string& path) {
  const auto file = aligner::io::load_salience_heads(path);
  py::dict out;
  out["dim"] = file.heads.dim();
  out["trained_with"] = file.trained_with;
  out["query"] = head_dict(file.heads.query);
  out["doc"] = head_dict(file.heads.doc);
  return out;
}

py::array_t<std::uint32_t> prune(py::handle salience, double beta) {
  const f32_array s = as_vector(salience, "salience");
  return to_numpy(aligner::prune(std::span<const float>(s.data(), s.size()), beta));
}

// ---- evaluation ----------------------------------------------------------------------------------------------

aligner::io::qrels to_qrels(py::handle obj) {
  if (!py::isinstance<py::dict>(obj)) throw py::type_error("qrels must be a dict {query id: {document id: grade}}");
  aligner::io::qrels out;
  for (auto [q, docs] : py::reinterpret_borrow<py::dict>(obj)) {
    if (!py::isinstance<py::dict>(docs))
      throw py::type_error("qrels[" + std::string(py::str(q)) + "] must be a dict {document id: grade}");
    auto& row = out[py::str(q)];
    for (auto [d, g] : py::reinterpret_borrow<py::dict>(docs)) row[py::str(d)] = py::cast<int>(g);
  }
  return out;
}

aligner::io::run to_run(py::handle obj) {
  if (!py::isinstance<py::dict>(obj)) throw py::type_error("run must be a dict {query id: {document id: score}}");
  aligner::io::run out;
  for (auto [q, docs] : py::reinterpret_borrow<py::dict>(obj)) {
    if (!py::isinstance<py::dict>(docs)) throw py::type_error("run[" + std::string(py::str(q)) + "] must be a dict {document id: score}");
    auto& row = out[py::str(q)];
    for (auto [d, s] : py::reinterpret_borrow<py::dict>(docs)) row.push_back({py::str(d), py::cast<double>(s)});
  }
  return out;
}

py::dict from_qrels(const aligner::io::qrels& q) {
  py::dict out;
  for (const auto& [qid, docs] : q) {
    py::dict row;
    for (const auto& [d, g] : docs) row[py::str(d)] = g;
    out[py::str(qid)] = row;
  }
  return out;
}

py::dict from_run(const aligner::io::run& r) {
  py::dict out;
  for (const auto& [qid, docs] : r) {
    py::dict row;
    for (const auto& e : docs) row[py::str(e.doc_id)] = e.score;
    out[py::str(qid)] = row;
  }
  return out;
}

py::tuple metric(aligner::measure which, std::size_t k, py::handle run, py::handle qrels, bool all_judged) {
  const auto r = to_run(run);
  const auto q = to_qrels(qrels);
  const auto res = aligner::evaluate(which, k, r, q, all_judged);
  py::dict per;
  for (const auto& [qid, v] : res.per_query) per[py::str(qid)] = v;
  return py::make_tuple(res.mean, per);
}

// ---- collections ---------------------------------------------------------------------------------------------

py::dict sequences_dict(aligner::io::token_sequences&& s) {
  py::dict d;
  const std::size_t rows = s.tokens(), dim = s.dim;
  d["vectors"] = to_numpy(std::move(s.vectors), {py::ssize_t(rows), py::ssize_t(dim)});
  d["offsets"] = to_numpy(std::move(s.offsets));
  d["ids"] = s.ids;
  if (!s.token_ids.empty()) d["token_ids"] = to_numpy(std::move(s.token_ids));
  return d;
}

py::dict load_collection(const std::string& dir, const std::string& vectors, const std::string& split, bool documents) {
  aligner::io::collection c;
  {
    py::gil_scoped_release release;
    c = aligner::io::load_collection(dir, vectors, split, documents);
  }
  py::dict out;
  out["docs"] = sequences_dict(std::move(c.docs));
  out["queries"] = sequences_dict(std::move(c.queries));
  out["qrels"] = from_qrels(c.judgments);
  out["vocab_size"] = c.vocab_size;
  return out;
}

}  // namespace

}  // namespace aligner_py

PYBIND11_MODULE(_aligner, m) {
  using namespace aligner_py;
  m.doc() = "aligner: multi-vector retrieval as sparse alignment (ALIGNER, ColBERT MaxSim); C++ core";
  m.attr("__version__") = std::to_string(ALIGNER_VERSION_MAJOR) + "." + std::to_string(ALIGNER_VERSION_MINOR) + "." + std::to_string(ALIGNER_VERSION_PATCH);

  // aligner::invalid_argument -> ValueError, io_error -> OSError, concurrency_error -> RuntimeError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const aligner::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const aligner::io_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const aligner::concurrency_error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.def("score", &score, py::arg("query"), py::arg("doc"), py::kw_only(), py::arg("strategy") = "top1", py::arg("normalize") = "mean",
        py::arg("query_salience") = py::none(), py::arg("doc_salience") = py::none(), py::arg("reference") = false);
  m.def("score_batch", &score_batch, py::arg("query"), py::arg("docs"), py::arg("offsets") = py::none(), py::kw_only(),
        py::arg("strategy") = "top1", py::arg("normalize") = "mean", py::arg("query_salience") = py::none(),
        py::arg("doc_salience") = py::none());
  m.def("solve_gate", &solve_gate, py::arg("scores"), py::arg("k"), py::kw_only(), py::arg("epsilon") = 0.002, py::arg("exact") = true,
        py::arg("max_iterations") = aligner::gate_iteration_params{}.max_iterations);
  m.def("gate_budget", &aligner::gate_budget, py::arg("alpha"), py::arg("rows"));
  m.def("salience", &salience, py::arg("tokens"), py::arg("weights"), py::arg("bias"), py::kw_only(), py::arg("gate_alpha") = py::none(),
        py::arg("gate_epsilon") = 0.002);
  m.def("prune", &prune, py::arg("salience"), py::arg("beta"));
  m.def("load_salience_heads", &load_salience_heads, py::arg("path"));
  m.def("prune_keep_count", &aligner::prune_keep_count, py::arg("rows"), py::arg("beta"));
  m.def("strategy_name", [](const std::string& s) { return aligner::alignment::parse(s).name(); }, py::arg("strategy"));

  m.def("_metric", [](const std::string& name, std::size_t k, py::handle run, py::handle qrels, bool all_judged) {
        static const std::map<std::string, aligner::measure> by_name = {
            {"ndcg", aligner::measure::ndcg}, {"mrr", aligner::measure::mrr}, {"recall", aligner::measure::recall},
            {"map", aligner::measure::average_precision}, {"precision", aligner::measure::precision}};
        const auto it = by_name.find(name);
        if (it == by_name.end()) throw py::value_error("unknown measure '" + name + "'");
        return metric(it->second, k, run, qrels, all_judged);
      }, py::arg("measure"), py::arg("k"), py::arg("run"), py::arg("qrels"), py::arg("all_judged") = false);

  m.def("load_qrels", [](const std::string& path) { return from_qrels(aligner::io::load_qrels(path)); }, py::arg("path"));
  m.def("load_run", [](const std::string& path) { return from_run(aligner::io::load_run(path)); }, py::arg("path"));
  m.def("save_run", [](const std::string& path, py::handle run, const std::string& tag) { aligner::io::save_run(path, to_run(run), tag); },
        py::arg("path"), py::arg("run"), py::arg("tag") = "aligner");
  m.def("load_beir_jsonl", [](const std::string& path) {
        py::list out;
        for (auto& r : aligner::io::load_beir_jsonl(path)) {
          py::dict d;
          d["_id"] = r.id;
          d["title"] = r.title;
          d["text"] = r.text;
          out.append(d);
        }
        return out;
      }, py::arg("path"));
  m.def("load_collection", &load_collection, py::arg("path"), py::arg("vectors") = "glove100", py::arg("split") = "test",
        py::arg("documents") = true);
  m.def("load_npy", [](const std::string& path) {
        auto a = aligner::io::load_npy<float>(path);
        return to_numpy(std::move(a.values), std::vector<py::ssize_t>(a.shape.begin(), a.shape.end()));
      }, py::arg("path"));
  // For the zero-copy test: the address the library reads a 2-d input from, and whether it was converted.
  m.def("_input_address", [](py::handle obj) {
    const f32_matrix a = as_matrix(obj, "array");
    return py::make_tuple(reinterpret_cast<std::uintptr_t>(a.data()), a.copied);
  }, py::arg("array"));
  m.def("kernel_info", [] { return aligner::kernel_info().describe(); });
  // The run-time switches of core/cpu.hpp (also ALIGNER_NO_AMX / ALIGNER_NO_AVX512 / ALIGNER_NO_AVX2 in the environment); True or
  // False only, so that a stray 0 / "no" is a TypeError rather than a silent choice.
  m.def("set_amx_enabled", [](bool on) { aligner::set_amx_enabled(on); }, py::arg("on").noconvert());
  m.def("set_avx512_enabled", [](bool on) { aligner::set_avx512_enabled(on); }, py::arg("on").noconvert());
  m.def("set_avx2_enabled", [](bool on) { aligner::set_avx2_enabled(on); }, py::arg("on").noconvert());
  m.def("set_vnni_enabled", [](bool on) { aligner::set_vnni_enabled(on); }, py::arg("on").noconvert());

  bind_codec(m);
  bind_retriever(m);
  bind_directory(m);
  bind_training(m);
  bind_eval(m);
}
