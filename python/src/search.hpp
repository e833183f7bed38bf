// What the Retriever and the index directory share: the storage and residual-codec arguments, the search knobs read
// from Python keywords, the result type (SearchResult), an explanation as a dict and the alignment picture.
#pragma once

#include <aligner/eval/adapt.hpp>
#include <aligner/eval/alignment_view.hpp>
#include <aligner/kernels/storage.hpp>
#include <aligner/math/explain.hpp>
#include <aligner/math/residual_training.hpp>
#include <aligner/math/salience.hpp>
#include <aligner/pipeline/search_params.hpp>

#include "common.hpp"

namespace aligner_py {

/// A storage argument: "f32", "bf16", "f16", "i8", "residual" or "residual:N" (N in 1, 2, 4, 8: sets residual_nbits).
inline aligner::storage storage_arg(const std::string& storage, std::size_t& residual_nbits) {
  aligner::storage out = aligner::storage::f32;
  if (storage == "residual" || storage.rfind("residual:", 0) == 0) {
    if (storage.size() > 9) {
      const std::string bits = storage.substr(9);
      if (bits != "1" && bits != "2" && bits != "4" && bits != "8")
        throw py::value_error("storage 'residual:N' needs N in 1, 2, 4 or 8, got '" + storage + "'");
      residual_nbits = std::size_t(std::stoi(bits));
    }
    return aligner::storage::residual;
  }
  if (!aligner::parse_storage(storage, out))
    throw py::value_error("storage must be one of " + aligner::storage_names(", ") + ", residual or residual:N, got '" + storage + "'");
  return out;
}

/// The residual codec's training settings from keyword arguments (the anisotropy checked here, the rest by the library).
inline aligner::residual_params residual_arg(std::size_t nbits, std::size_t centroids, std::size_t iterations, double anisotropy,
                                             std::uint64_t seed, unsigned threads) {
  if (!aligner::anisotropy_setting_valid(anisotropy))
    throw py::value_error("residual_anisotropy must be 0 (default) or in [1, 1e6], got " + std::to_string(anisotropy));
  return {.nbits = nbits, .centroids = centroids, .iterations = iterations, .anisotropy = anisotropy, .seed = seed, .threads = threads};
}

/// Ranked documents of one query, with the search's diagnostics. Unpacks as (ids, scores).
struct py_result {
  py::array_t<std::int64_t> ids;
  py::array_t<float> scores;
  std::size_t candidates_scored = 0, tokens_searched = 0, query_tokens_pruned = 0, backend_hits = 0;
  bool reranked_all_allowed = false, empty_query = false;

  static py_result from(aligner::search_result&& r) {
    py_result out;
    out.ids = to_numpy(std::move(r.ids));
    out.scores = to_numpy(std::move(r.scores));
    out.candidates_scored = r.candidates_scored;
    out.tokens_searched = r.tokens_searched;
    out.query_tokens_pruned = r.query_tokens_pruned;
    out.backend_hits = r.backend_hits;
    out.reranked_all_allowed = r.reranked_all_allowed;
    out.empty_query = r.empty_query;
    return out;
  }
};

/// The knobs of one search, read from Python keywords; owns what the C++ search_params views.
struct py_search_args {
  aligner::search_params p;
  std::optional<f32_array> query_salience;
  std::vector<std::int64_t> allowed;
  py::object filter;  ///< kept alive for the std::function

  /// One query's salience (None: none), owned here and viewed by the search parameters.
  void set_query_salience(py::handle values, std::size_t rows) {
    if (values.is_none()) return;
    query_salience = as_vector(values, "query_salience", rows);
    p.query_salience = span_of(query_salience);
  }

  py_search_args(std::size_t top, const std::string& strategy, const std::string& normalize, std::size_t candidates, bool exhaustive,
                 std::size_t nprobe, std::size_t ndocs, double query_prune, bool use_doc_salience, py::handle allowed_ids,
                 py::handle filter_fn, bool use_query_salience, unsigned threads) {
    p.strategy = aligner::alignment::parse(strategy);
    p.threads = threads;
    p.norm = aligner::parse_normalization(normalize);
    p.top = top;
    p.candidates_per_token = candidates;
    p.exhaustive = exhaustive;
    p.nprobe = nprobe;
    p.ndocs = ndocs;
    p.query_prune = query_prune;
    p.use_doc_salience = use_doc_salience;
    p.use_query_salience = use_query_salience;
    if (!allowed_ids.is_none()) {
      allowed = as_int64(allowed_ids, "allowed_ids");
      p.allowed_ids = allowed;
    }
    if (!filter_fn.is_none()) {
      if (!PyCallable_Check(filter_fn.ptr())) throw py::type_error("filter must be callable (document id -> bool)");
      filter = py::reinterpret_borrow<py::object>(filter_fn);
      py::object* f = &filter;  // lives as long as this object, which outlives the search
      p.filter = [f](std::int64_t id) {
        py::gil_scoped_acquire gil;
        return py::cast<bool>((*f)(id));
      };
    }
  }
};

/// Search results as a list of SearchResult.
inline py::list results_list(std::vector<aligner::search_result>&& results) {
  py::list out;
  for (auto& r : results) out.append(py_result::from(std::move(r)));
  return out;
}

/// An explanation as the dict Retriever.explain returns: arrays query_token, doc_token, similarity, weight (one entry
/// per aligned pair) and the floats numerator, z, score.
inline py::dict explanation_dict(aligner::explanation&& e) {
  std::vector<std::uint32_t> qi(e.pairs.size()), dj(e.pairs.size());
  std::vector<float> sim(e.pairs.size()), w(e.pairs.size());
  for (std::size_t n = 0; n != e.pairs.size(); ++n) {
    qi[n] = e.pairs[n].query_token;
    dj[n] = e.pairs[n].doc_token;
    sim[n] = e.pairs[n].similarity;
    w[n] = e.pairs[n].weight;
  }
  py::dict out;
  out["query_token"] = to_numpy(std::move(qi));
  out["doc_token"] = to_numpy(std::move(dj));
  out["similarity"] = to_numpy(std::move(sim));
  out["weight"] = to_numpy(std::move(w));
  out["numerator"] = e.numerator;
  out["z"] = e.z;
  out["score"] = e.score;
  return out;
}

/// A salience head as the dict salience() takes: weights, bias, gate_alpha (None: no gate), gate_epsilon.
inline py::dict head_dict(const aligner::salience_scorer& head) {
  py::dict h;
  h["weights"] = to_numpy(std::vector<float>(head.weights().begin(), head.weights().end()));
  h["bias"] = double(head.bias());
  h["gate_alpha"] = head.gate() ? py::object(py::float_(head.gate()->alpha)) : py::object(py::none());
  h["gate_epsilon"] = head.gate() ? head.gate()->epsilon : 0.002;
  return h;
}

/// Strings from Python: None (none) or a sequence of str with one entry per `what` (`name` in the messages).
inline std::vector<std::string> strings_arg(py::handle obj, std::size_t expected, const char* name, const char* what) {
  std::vector<std::string> out;
  if (obj.is_none()) return out;
  if (py::isinstance<py::str>(obj) || !py::isinstance<py::sequence>(obj))
    throw py::type_error(std::string(name) + " must be a sequence of str (one per " + what + ") or None, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  const auto seq = py::reinterpret_borrow<py::sequence>(obj);
  if (seq.size() != expected)
    throw py::value_error(std::string(name) + " has " + std::to_string(seq.size()) + " entries for " + std::to_string(expected) + " " + what);
  out.reserve(expected);
  for (std::size_t i = 0; i != expected; ++i) {
    const py::handle item = seq[i];
    if (!py::isinstance<py::str>(item))
      throw py::type_error(std::string(name) + "[" + std::to_string(i) + "] must be str, got " +
                           std::string(py::str(py::type::of(item).attr("__name__"))));
    out.push_back(py::cast<std::string>(item));
  }
  return out;
}

/// A grid of strategies: "paper", a comma-separated string ("top1,topk:2") or a sequence of strategy strings.
inline std::vector<aligner::alignment> grid_arg(py::handle grid, const char* name) {
  if (py::isinstance<py::str>(grid)) return aligner::parse_grid(py::cast<std::string>(grid));
  if (!py::isinstance<py::sequence>(grid))
    throw py::type_error(std::string(name) + " must be a sequence of strategy strings or one string, got " +
                         std::string(py::str(py::type::of(grid).attr("__name__"))));
  std::vector<aligner::alignment> out;
  for (const auto& s : strings_arg(grid, py::len(grid), name, "strategy")) {
    out.push_back(aligner::alignment::parse(s));
    aligner::expect_new_strategy(out, name);  // aligner::invalid_argument: ValueError
  }
  if (out.empty()) throw py::value_error(std::string(name) + " is empty");
  return out;
}

/// The picture of an alignment (eval/alignment_view.hpp) as SVG or a self-contained HTML page, with the tokens
/// labelled by `query_words` / `doc_words` (None: by position) and a title.
inline std::string render_view(aligner::alignment_view&& v, py::handle query_words, py::handle doc_words, const std::string& title, bool html) {
  v.query_words = strings_arg(query_words, v.rows, "query_words", "query token");
  v.doc_words = strings_arg(doc_words, v.cols, "doc_words", "document token");
  v.title = title;
  v.validate();
  return html ? aligner::alignment_html(v) : aligner::alignment_svg(v);
}

/// The data of an alignment picture: explain's dict plus the whole similarity matrix S (float32 [query tokens,
/// document tokens], the scorer kernel's values), the salience the rerank weighs with (None when there is none) and
/// the strategy's name.
inline py::dict view_dict(aligner::alignment_view&& v) {
  v.validate();
  const auto rows = py::ssize_t(v.rows), cols = py::ssize_t(v.cols);
  py::dict out = explanation_dict(std::move(v.why));
  out["similarity_matrix"] = to_numpy(std::move(v.similarity), {rows, cols});
  out["query_salience"] = v.query_salience.empty() ? py::object(py::none()) : py::object(to_numpy(std::move(v.query_salience)));
  out["doc_salience"] = v.doc_salience.empty() ? py::object(py::none()) : py::object(to_numpy(std::move(v.doc_salience)));
  out["strategy"] = v.strategy;
  return out;
}

}  // namespace aligner_py
