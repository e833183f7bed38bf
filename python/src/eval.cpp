// Salience fitting and few-shot alignment adaptation from Python: token_idf, fit_salience, fit_idf_salience
// (eval/idf.hpp), paper_grid, adapt and fold_protocol (eval/adapt.hpp, SPEC section 7).
#include <aligner/eval/idf.hpp>

#include <numeric>

#include "search.hpp"

namespace aligner_py {

namespace {

std::vector<std::int32_t> token_ids_arg(py::handle obj, std::size_t expected) {
  const auto ids = as_int64(obj, "token_ids");
  if (ids.size() != expected)
    throw py::value_error("token_ids has " + std::to_string(ids.size()) + " entries for " + std::to_string(expected) + " tokens");
  std::vector<std::int32_t> out(ids.size());
  for (std::size_t i = 0; i != ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] > INT32_MAX)
      throw py::value_error("token_ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]) + " is not a vocabulary id");
    out[i] = std::int32_t(ids[i]);
  }
  return out;
}

std::optional<aligner::gate_params> gate_arg(py::handle alpha, double epsilon) {
  if (alpha.is_none()) return std::nullopt;
  const aligner::gate_params g{.alpha = py::cast<double>(alpha), .epsilon = epsilon};
  ALIGNER_EXPECTS(std::isfinite(g.alpha) && g.alpha > 0.0 && g.alpha <= 1.0, "gate_alpha must be in (0, 1], got ", g.alpha);
  ALIGNER_EXPECTS(std::isfinite(g.epsilon) && g.epsilon > 0.0, "gate_epsilon must be finite and > 0, got ", g.epsilon);
  return g;
}

py::array_t<float> token_idf(py::handle token_ids, py::handle offsets, std::size_t vocab_size) {
  const auto off = as_int64(offsets, "offsets");
  if (off.empty()) throw py::value_error("offsets must hold documents + 1 values, from 0 to the number of tokens; got an empty array");
  const auto ids = token_ids_arg(token_ids, std::size_t(std::max<std::int64_t>(0, off.back())));
  if (vocab_size == 0 && !ids.empty()) vocab_size = std::size_t(*std::max_element(ids.begin(), ids.end())) + 1;
  return to_numpy(aligner::token_idf(off, ids, vocab_size));
}

py::tuple fit_salience(py::handle vectors, py::handle targets, double ridge, py::handle gate_alpha, double gate_epsilon) {
  const f32_matrix x = as_matrix(vectors, "vectors");
  const f32_array y = as_vector(targets, "targets", x.view().rows);
  const auto gate = gate_arg(gate_alpha, gate_epsilon);
  double r2 = 0;
  aligner::salience_scorer head = [&] {
    py::gil_scoped_release release;
    return aligner::fit_salience(x.view(), std::span<const float>(y.data(), y.size()), ridge, &r2, gate);
  }();
  return py::make_tuple(head_dict(head), r2);
}

py::tuple fit_idf_salience(py::handle docs, py::handle token_ids, py::handle offsets, std::size_t vocab_size, std::size_t sample,
                           std::uint64_t seed, double ridge, py::handle gate_alpha, double gate_epsilon) {
  const f32_sequences d = as_sequences(docs, offsets, "docs");
  const auto ids = token_ids_arg(token_ids, d.rows);
  const auto gate = gate_arg(gate_alpha, gate_epsilon);
  double r2 = 0;
  aligner::salience_scorer head = [&] {
    py::gil_scoped_release release;
    return aligner::fit_idf_salience(d.view(), ids, vocab_size, sample, seed, ridge, &r2, gate);
  }();
  return py::make_tuple(head_dict(head), r2);
}

/// A strategy table from Python: values [queries, strategies] (a metric per query and strategy) and the grid's names.
aligner::strategy_table table_arg(py::handle values, py::handle grid) {
  const py::array a = real_array(values, "values");
  if (a.ndim() != 2) throw py::value_error("values must be a 2-d array [queries, strategies], got shape " + shape_text(a));
  const auto v = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(a);
  aligner::strategy_table t;
  const std::size_t n = std::size_t(a.shape(0)), g = std::size_t(a.shape(1));
  t.grid = grid.is_none() ? aligner::paper_grid() : grid_arg(grid, "grid");
  if (t.grid.size() != g)
    throw py::value_error("values has " + std::to_string(g) + " columns for a grid of " + std::to_string(t.grid.size()) + " strategies");
  t.values.assign(v.data(), v.data() + v.size());
  for (std::size_t i = 0; i != t.values.size(); ++i)
    if (!std::isfinite(t.values[i]))
      throw py::value_error("values[" + std::to_string(i / std::max<std::size_t>(g, 1)) + ", " + std::to_string(i % std::max<std::size_t>(g, 1)) +
                            "] is not finite");
  t.query_ids.resize(n);
  for (std::size_t q = 0; q != n; ++q) t.query_ids[q] = std::to_string(q);
  return t;
}

std::size_t choices_arg(py::handle choices, std::size_t grid) {
  if (choices.is_none()) return grid;
  const auto c = py::cast<std::int64_t>(choices);
  if (c < 1) throw py::value_error("choices must be >= 1, got " + std::to_string(c));
  return std::size_t(c);
}

py::dict adaptation_dict(const aligner::adaptation& a, const aligner::strategy_table& t) {
  py::dict d;
  d["means"] = to_numpy(std::vector<double>(a.means));
  d["best"] = a.best;
  d["strategy"] = t.grid[a.best].name();
  return d;
}

py::dict adapt(py::handle values, py::handle queries, py::handle grid, py::handle choices) {
  const auto t = table_arg(values, grid);
  std::vector<std::size_t> picked;
  if (queries.is_none()) {
    picked.resize(t.query_ids.size());
    std::iota(picked.begin(), picked.end(), std::size_t{0});
  } else {
    for (const auto q : as_int64(queries, "queries")) {
      if (q < 0) throw py::value_error("queries holds the negative index " + std::to_string(q));
      picked.push_back(std::size_t(q));
    }
  }
  return adaptation_dict(aligner::adapt(t, picked, choices_arg(choices, t.grid.size())), t);
}

py::dict fold_protocol(py::handle values, py::handle grid, std::size_t shots, std::uint64_t seed, py::handle baseline, py::handle choices) {
  const auto t = table_arg(values, grid);
  std::size_t base = 0;
  if (baseline.is_none()) {
    const auto it = std::find(t.grid.begin(), t.grid.end(), aligner::alignment::top1());
    base = it == t.grid.end() ? 0 : std::size_t(it - t.grid.begin());
  } else {
    const auto b = py::cast<std::int64_t>(baseline);
    if (b < 0) throw py::value_error("baseline must be a column index >= 0, got " + std::to_string(b));
    base = std::size_t(b);
  }
  const auto r = aligner::fold_protocol(t, shots, seed, base, choices_arg(choices, t.grid.size()));
  py::list folds;
  for (const auto& f : r.folds) {
    py::dict d = adaptation_dict(f.choice, t);
    d["shots"] = to_numpy(std::vector<std::int64_t>(f.shots.begin(), f.shots.end()));
    d["held_out"] = f.held_out;
    d["baseline_held_out"] = f.top1_held_out;
    folds.append(d);
  }
  py::dict out;
  out["folds"] = folds;
  out["mean"] = r.mean;
  out["std"] = r.stddev;
  out["baseline_mean"] = r.top1_mean;
  out["baseline_std"] = r.top1_stddev;
  out["baseline"] = t.grid[base].name();
  return out;
}

}  // namespace

void bind_eval(py::module_& m) {
  m.def("token_idf", &token_idf, py::arg("token_ids"), py::arg("offsets"), py::arg("vocab_size") = 0);
  m.def("_fit_salience", &fit_salience, py::arg("vectors"), py::arg("targets"), py::arg("ridge"), py::arg("gate_alpha"), py::arg("gate_epsilon"));
  m.def("_fit_idf_salience", &fit_idf_salience, py::arg("docs"), py::arg("token_ids"), py::arg("offsets"), py::arg("vocab_size"),
        py::arg("sample"), py::arg("seed"), py::arg("ridge"), py::arg("gate_alpha"), py::arg("gate_epsilon"));
  m.def("paper_grid", [] {
    std::vector<std::string> names;
    for (const auto& a : aligner::paper_grid()) names.push_back(a.name());
    return names;
  });
  m.def("_adapt", &adapt, py::arg("values"), py::arg("queries"), py::arg("grid"), py::arg("choices"));
  m.def("_fold_protocol", &fold_protocol, py::arg("values"), py::arg("grid"), py::arg("shots"), py::arg("seed"), py::arg("baseline"),
        py::arg("choices"));
}

}  // namespace aligner_py
