// aligner.Retriever: aligner_retriever<Backend> over the backends of this build, by name (io/named_backends.hpp).
//
// Thread safety from Python: searches, explain and save run concurrently with each other (the GIL is released);
// add and remove wait for running searches and block new ones (a shared mutex), so Python threads never see the
// C++ class's concurrency_error. The GIL is always released before the mutex is taken: a search whose filter calls
// back into Python takes the GIL while it holds the shared lock.
#include <aligner/io/named_backends.hpp>
#include <aligner/math/explain.hpp>

#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <variant>

#include "codec.hpp"
#include "search.hpp"

namespace aligner_py {

namespace {

using any_retriever = std::variant<aligner::aligner_retriever<aligner::exact_backend>
#ifdef ALIGNER_HAVE_FAISS
                                   , aligner::aligner_retriever<aligner::faiss_backend>
#endif
#ifdef ALIGNER_HAVE_HNSWLIB
                                   , aligner::aligner_retriever<aligner::hnswlib_backend>
#endif
                                   >;

class py_retriever {
 public:
  py_retriever(std::size_t dim, const std::string& backend, const std::string& storage, double doc_prune, bool dedup_tokens,
               bool token_index, std::size_t residual_nbits, std::size_t residual_centroids, std::size_t residual_iterations,
               double residual_anisotropy, std::uint64_t seed, unsigned threads, std::size_t graph_m, std::size_t ef_construction, std::size_t ef_search,
               std::size_t nlist, std::size_t ivf_nprobe, py::handle codec)
      : r_(make(dim, backend, storage, doc_prune, dedup_tokens, token_index, residual_nbits, residual_centroids, residual_iterations,
                residual_anisotropy, seed, threads, {.m = graph_m, .ef_construction = ef_construction, .ef_search = ef_search, .nlist = nlist, .nprobe = ivf_nprobe},
                codec_arg(codec))),
        backend_(backend) {}

  static any_retriever make(std::size_t dim, const std::string& backend, const std::string& storage, double doc_prune,
                            bool dedup_tokens, bool token_index, std::size_t residual_nbits, std::size_t residual_centroids,
                            std::size_t residual_iterations, double residual_anisotropy, std::uint64_t seed, unsigned threads,
                            aligner::graph_settings graph, std::shared_ptr<const aligner::residual_codec> codec) {
    if (dim == 0) throw py::value_error("dim must be >= 1, got 0");
    aligner::index_params params;
    params.precision = storage_arg(storage, residual_nbits);
    check_codec_storage(codec, storage, residual_nbits);
    if (codec && codec->dim() != dim)
      throw py::value_error("codec has dim " + std::to_string(codec->dim()) + " but the retriever has dim " + std::to_string(dim));
    params.codec = std::move(codec);
    params.residual = residual_arg(residual_nbits, residual_centroids, residual_iterations, residual_anisotropy, seed, threads);
    params.doc_prune = doc_prune;
    params.dedup_tokens = dedup_tokens;
    params.token_index = token_index;
    params.threads = threads;  // hnswlib inserts on these threads too
    return aligner::with_backend(
        backend, dim,
        [&](auto b) { return any_retriever(std::in_place_type<aligner::aligner_retriever<decltype(b)>>, std::move(b), params); }, graph);
  }

  py_retriever(any_retriever&& r, std::string backend) : r_(std::move(r)), backend_(std::move(backend)) {}

  template <class Fn>
  decltype(auto) visit(Fn&& fn) const {
    return std::visit(std::forward<Fn>(fn), r_);
  }

  std::size_t dim() const { return visit([](const auto& r) { return r.dim(); }); }
  std::size_t size() const { return visit([](const auto& r) { return r.size(); }); }
  std::size_t live_size() const { return visit([](const auto& r) { return r.live_size(); }); }
  std::size_t indexed_tokens() const { return visit([](const auto& r) { return r.indexed_tokens(); }); }
  std::size_t store_bytes() const { return visit([](const auto& r) { return r.store().memory_bytes(); }); }
  std::size_t store_tokens() const { return visit([](const auto& r) { return r.store().tokens(); }); }
  std::string storage() const { return visit([](const auto& r) { return std::string(aligner::to_string(r.params().precision)); }); }
  /// The residual store's codec (trained by the first add, given, or loaded), or None.
  py::object codec() const { return codec_object(visit([](const auto& r) { return r.store().codec(); })); }
  const std::string& backend() const { return backend_; }
  bool is_removed(std::int64_t id) const { return visit([&](const auto& r) { return r.is_removed(id); }); }

  py::array_t<std::int64_t> add(py::handle docs, py::handle offsets, py::handle salience) {
    const f32_sequences d = as_sequences(docs, offsets, "docs", dim());
    std::optional<f32_array> u;
    if (!salience.is_none()) u = as_vector(salience, "salience", d.rows);
    std::int64_t first = 0;
    {
      py::gil_scoped_release release;
      std::unique_lock lock(mu_);
      first = std::visit([&](auto& r) { return r.add(d.view(), span_of(u)); }, r_);
    }
    std::vector<std::int64_t> ids(d.view().size());
    for (std::size_t i = 0; i != ids.size(); ++i) ids[i] = first + std::int64_t(i);
    return to_numpy(std::move(ids));
  }

  void remove(py::handle ids) {
    const std::vector<std::int64_t> list = int_or_int64s(ids, "ids");
    py::gil_scoped_release release;
    std::unique_lock lock(mu_);
    // All or nothing: every id is checked (known, not removed, not repeated) before the first removal.
    std::visit([&](auto& r) {
      std::vector<std::int64_t> sorted = list;
      std::sort(sorted.begin(), sorted.end());
      for (std::size_t i = 0; i != sorted.size(); ++i) {
        ALIGNER_EXPECTS(sorted[i] >= 0 && std::size_t(sorted[i]) < r.size(), "remove: unknown document id ", sorted[i],
                        " (the retriever holds ids 0..", std::int64_t(r.size()) - 1, ")");
        ALIGNER_EXPECTS(!r.is_removed(sorted[i]), "remove: document id ", sorted[i], " is already removed");
        ALIGNER_EXPECTS(i == 0 || sorted[i] != sorted[i - 1], "remove: document id ", sorted[i], " is listed twice");
      }
      for (std::int64_t id : list) r.remove(id);
    }, r_);
  }

  py_result search(py::handle query, py::handle query_salience, py_search_args& a) const {
    const f32_matrix q = as_matrix(query, "query", dim());
    a.set_query_salience(query_salience, q.view().rows);
    aligner::search_result r;
    {
      py::gil_scoped_release release;
      std::shared_lock lock(mu_);
      r = visit([&](const auto& ret) { return ret.search(q.view(), a.p); });
    }
    return py_result::from(std::move(r));
  }

  py::list search_batch(py::handle queries, py::handle offsets, py::handle query_salience, unsigned threads, py_search_args& a) const {
    const f32_sequences q = as_sequences(queries, offsets, "queries", dim());
    std::optional<f32_array> u;
    if (!query_salience.is_none()) u = as_vector(query_salience, "query_salience", q.rows);
    std::vector<aligner::search_result> rs;
    {
      py::gil_scoped_release release;
      std::shared_lock lock(mu_);
      rs = visit([&](const auto& ret) { return ret.search_batch(q.view(), a.p, span_of(u), threads); });
    }
    return results_list(std::move(rs));
  }

  py::list search_multi(py::handle query, py::handle strategies, py::handle query_salience, py_search_args& a) const {
    const f32_matrix q = as_matrix(query, "query", dim());
    a.set_query_salience(query_salience, q.view().rows);
    const auto grid = grid_arg(strategies, "strategies");
    std::vector<aligner::search_result> rs;
    {
      py::gil_scoped_release release;
      std::shared_lock lock(mu_);
      rs = visit([&](const auto& ret) { return ret.search_multi(q.view(), grid, a.p); });
    }
    return results_list(std::move(rs));
  }

  py::dict explain(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a) const {
    const f32_matrix q = as_matrix(query, "query", dim());
    a.set_query_salience(query_salience, q.view().rows);
    aligner::explanation e;
    {
      py::gil_scoped_release release;
      std::shared_lock lock(mu_);
      e = visit([&](const auto& ret) { return ret.explain(q.view(), id, a.p); });
    }
    return explanation_dict(std::move(e));
  }

  /// The alignment picture of document `id` (S from the scorer's kernel, the aligned cells of the explanation).
  std::string view(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a, py::handle query_words,
                   py::handle doc_words, const std::string& title, bool html) const {
    return render_view(alignment_of(query, id, query_salience, a), query_words, doc_words, title, html);
  }

  py::dict alignment(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a) const {
    return view_dict(alignment_of(query, id, query_salience, a));
  }

  /// For the binding-overhead benchmark: seconds of `repeats` passes of C++ search calls over the queries (one call
  /// per query, no Python in between), the same calls search() makes.
  double bench_search(py::handle queries, std::size_t repeats, py_search_args& a) const {
    const f32_sequences q = as_sequences(queries, py::none(), "queries", dim());
    py::gil_scoped_release release;
    std::shared_lock lock(mu_);
    const auto view = q.view();
    const auto start = std::chrono::steady_clock::now();
    std::size_t sink = 0;
    for (std::size_t rep = 0; rep != repeats; ++rep)
      for (std::size_t i = 0; i != view.size(); ++i)
        sink += visit([&](const auto& ret) { return ret.search(view.sequence(i), a.p); }).ids.size();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    return sink ? took.count() : took.count();
  }

  void save(const std::string& path) const {
    py::gil_scoped_release release;
    std::shared_lock lock(mu_);
    visit([&](const auto& r) { aligner::save_index(r, path, backend_); });
  }

  static std::unique_ptr<py_retriever> load(const std::string& path, bool mmap) {
    std::string label;
    std::optional<any_retriever> r;
    {
      py::gil_scoped_release release;
      label = aligner::read_index_label(path);
      r.emplace(aligner::with_saved_index(path, {.mmap = mmap}, [](auto&& ret) { return any_retriever(std::move(ret)); }));
    }
    return std::make_unique<py_retriever>(std::move(*r), label.empty() ? "exact" : label);
  }

 private:
  /// The view() / alignment() data of document `id` (the query and its salience checked first).
  aligner::alignment_view alignment_of(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a) const {
    const f32_matrix q = as_matrix(query, "query", dim());
    a.set_query_salience(query_salience, q.view().rows);
    py::gil_scoped_release release;
    std::shared_lock lock(mu_);
    return visit([&](const auto& ret) { return aligner::make_alignment_view(ret, q.view(), id, a.p); });
  }

  any_retriever r_;
  std::string backend_;
  mutable std::shared_mutex mu_;
};

}  // namespace

void bind_retriever(py::module_& m) {
  py::class_<py_result>(m, "SearchResult")
      .def_readonly("ids", &py_result::ids)
      .def_readonly("scores", &py_result::scores)
      .def_readonly("candidates_scored", &py_result::candidates_scored)
      .def_readonly("tokens_searched", &py_result::tokens_searched)
      .def_readonly("query_tokens_pruned", &py_result::query_tokens_pruned)
      .def_readonly("backend_hits", &py_result::backend_hits)
      .def_readonly("reranked_all_allowed", &py_result::reranked_all_allowed)
      .def_readonly("empty_query", &py_result::empty_query)
      .def("__len__", [](const py_result& r) { return r.ids.size(); })
      .def("__iter__", [](const py_result& r) { return py::iter(py::make_tuple(r.ids, r.scores)); })
      .def("__repr__", [](const py_result& r) {
        return "SearchResult(" + std::to_string(r.ids.size()) + " hits, candidates_scored=" + std::to_string(r.candidates_scored) + ")";
      });

  py::class_<py_search_args>(m, "_SearchArgs")
      .def(py::init<std::size_t, const std::string&, const std::string&, std::size_t, bool, std::size_t, std::size_t, double, bool,
                    py::handle, py::handle, bool, unsigned>(),
           py::arg("top"), py::arg("strategy"), py::arg("normalize"), py::arg("candidates"), py::arg("exhaustive"), py::arg("nprobe"),
           py::arg("ndocs"), py::arg("query_prune"), py::arg("use_doc_salience"), py::arg("allowed_ids"), py::arg("filter"),
           py::arg("use_query_salience") = true, py::arg("threads") = 1u);

  py::class_<py_retriever>(m, "_Retriever")
      .def(py::init<std::size_t, const std::string&, const std::string&, double, bool, bool, std::size_t, std::size_t, std::size_t,
                    double, std::uint64_t, unsigned, std::size_t, std::size_t, std::size_t, std::size_t, std::size_t, py::handle>(),
           py::arg("dim"), py::arg("backend"), py::arg("storage"), py::arg("doc_prune"), py::arg("dedup_tokens"), py::arg("token_index"),
           py::arg("residual_nbits"), py::arg("residual_centroids"), py::arg("residual_iterations"), py::arg("residual_anisotropy"), py::arg("seed"), py::arg("threads"),
           py::arg("graph_m"), py::arg("ef_construction"), py::arg("ef_search"), py::arg("nlist"), py::arg("ivf_nprobe"), py::arg("codec"))
      .def_property_readonly("dim", &py_retriever::dim)
      .def_property_readonly("size", &py_retriever::size)
      .def_property_readonly("live_size", &py_retriever::live_size)
      .def_property_readonly("indexed_tokens", &py_retriever::indexed_tokens)
      .def_property_readonly("store_bytes", &py_retriever::store_bytes)
      .def_property_readonly("store_tokens", &py_retriever::store_tokens)
      .def_property_readonly("storage", &py_retriever::storage)
      .def_property_readonly("codec", &py_retriever::codec)
      .def_property_readonly("backend", &py_retriever::backend)
      .def("is_removed", &py_retriever::is_removed, py::arg("id"))
      .def("add", &py_retriever::add, py::arg("docs"), py::arg("offsets"), py::arg("salience"))
      .def("remove", &py_retriever::remove, py::arg("ids"))
      .def("search", &py_retriever::search, py::arg("query"), py::arg("query_salience"), py::arg("args"))
      .def("search_batch", &py_retriever::search_batch, py::arg("queries"), py::arg("offsets"), py::arg("query_salience"),
           py::arg("threads"), py::arg("args"))
      .def("search_multi", &py_retriever::search_multi, py::arg("query"), py::arg("strategies"), py::arg("query_salience"), py::arg("args"))
      .def("explain", &py_retriever::explain, py::arg("query"), py::arg("id"), py::arg("query_salience"), py::arg("args"))
      .def("view", &py_retriever::view, py::arg("query"), py::arg("id"), py::arg("query_salience"), py::arg("args"), py::arg("query_words"),
           py::arg("doc_words"), py::arg("title"), py::arg("html"))
      .def("alignment", &py_retriever::alignment, py::arg("query"), py::arg("id"), py::arg("query_salience"), py::arg("args"))
      .def("_bench_search", &py_retriever::bench_search, py::arg("queries"), py::arg("repeats"), py::arg("args"))
      .def("save", &py_retriever::save, py::arg("path"))
      .def_static("load", &py_retriever::load, py::arg("path"), py::arg("mmap"));
  m.attr("backends") = py::cast(std::vector<std::string>(std::begin(aligner::backend_list), std::end(aligner::backend_list)));
}

}  // namespace aligner_py
