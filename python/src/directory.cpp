// aligner.IndexDirectoryWriter, aligner.IndexDirectoryReader and aligner.build_directory: the index directory of
// io/index_directory.hpp (immutable segments, atomic commits, one writer and any number of readers, also in other
// processes) and its streamed build from token vectors that need not fit in memory (io/streamed_build.hpp).
//
// Thread safety from Python: the writer's calls are serialised by a mutex of its own (the C++ writer is one
// object of one thread); the reader's searches and refresh run concurrently with the GIL released, as the C++
// reader allows. Files and locks are released by close() (and by `with`), not only when Python collects the object.
#include <aligner/io/index_directory.hpp>
#include <aligner/io/streamed_build.hpp>

#include <mutex>

#include "codec.hpp"
#include "search.hpp"

namespace aligner_py {

namespace {

std::string storage_text(const aligner::directory_snapshot& s) {
  std::string out = aligner::to_string(s.precision);
  if (s.precision == aligner::storage::residual) out += ":" + std::to_string(s.codec ? s.codec->nbits() : s.residual.nbits);
  return out;
}

/// The facts of a commit that both Python classes expose as properties.
py::dict snapshot_facts(const aligner::directory_snapshot& s) {
  py::dict out;
  out["path"] = s.dir.string();
  out["dim"] = s.dim;
  out["generation"] = s.generation;
  out["size"] = std::size_t(s.next_id);
  out["live_size"] = s.live_documents();
  out["tokens"] = s.tokens();
  out["segments"] = s.segments.size();
  out["storage"] = storage_text(s);
  out["centroids"] = s.codec ? s.codec->centroids() : std::size_t(0);
  return out;
}

class py_directory_writer {
 public:
  explicit py_directory_writer(aligner::index_directory_writer&& w) : w_(std::move(w)) {}

  static std::unique_ptr<py_directory_writer> create(const std::string& path, std::size_t dim, const std::string& storage, std::size_t residual_centroids,
                                                     std::size_t residual_iterations, double residual_anisotropy, std::uint64_t seed,
                                                     unsigned threads, bool check_finite, py::handle codec) {
    std::size_t nbits = 2;
    aligner::directory_params params;
    params.precision = storage_arg(storage, nbits);
    params.residual = residual_arg(nbits, residual_centroids, residual_iterations, residual_anisotropy, seed, threads);
    params.check_finite = check_finite;
    params.codec = codec_arg(codec);
    check_codec_storage(params.codec, storage, nbits);
    py::gil_scoped_release release;
    return std::make_unique<py_directory_writer>(aligner::index_directory_writer::create(path, dim, params));
  }

  static std::unique_ptr<py_directory_writer> open(const std::string& path) {
    py::gil_scoped_release release;
    return std::make_unique<py_directory_writer>(aligner::index_directory_writer::open(path));
  }

  py::array_t<std::int64_t> add(py::handle docs, py::handle offsets, py::handle salience, py::handle names) {
    std::size_t dim = 0;
    with([&](aligner::index_directory_writer& w) { dim = w.snapshot().dim; });
    const f32_sequences d = as_sequences(docs, offsets, "docs", dim);
    std::optional<f32_array> u;
    if (!salience.is_none()) u = as_vector(salience, "salience", d.rows);
    if (d.offsets.empty()) throw py::value_error("offsets must hold at least one value (0)");
    const auto n = strings_arg(names, d.offsets.size() - 1, "names", "documents");
    std::int64_t first = 0;
    {
      py::gil_scoped_release release;
      with([&](aligner::index_directory_writer& w) { first = w.add(d.view(), span_of(u), n); });
    }
    std::vector<std::int64_t> ids(d.view().size());
    for (std::size_t i = 0; i != ids.size(); ++i) ids[i] = first + std::int64_t(i);
    return to_numpy(std::move(ids));
  }

  void remove(py::handle ids) {
    const auto list = int_or_int64s(ids, "ids");
    py::gil_scoped_release release;
    with([&](aligner::index_directory_writer& w) { w.remove(list); });
  }

  void compact() {
    py::gil_scoped_release release;
    with([&](aligner::index_directory_writer& w) { w.compact(); });
  }

  /// Releases the directory's LOCK (the writer is unusable afterwards); a second close does nothing.
  void close() {
    const auto lock = locked();
    w_.reset();
  }
  bool closed() const {
    const auto lock = locked();
    return !w_;
  }

  /// The directory's residual codec (given, or trained by the first add), or None.
  py::object codec() const {
    std::shared_ptr<const aligner::residual_codec> c;
    with([&](const aligner::index_directory_writer& w) { c = w.snapshot().codec; });
    return codec_object(std::move(c));
  }

  /// The writer's last commit, as a dict of facts.
  py::dict facts() const {
    py::dict out;
    with([&](const aligner::index_directory_writer& w) { out = snapshot_facts(w.snapshot()); });
    return out;
  }

 private:
  /// The writer's mutex, waited for without the GIL (a Python thread holding the GIL must not block the others while
  /// another thread's add runs).
  std::unique_lock<std::mutex> locked() const {
    std::unique_lock lock(mu_, std::defer_lock);
    if (PyGILState_Check()) {
      py::gil_scoped_release release;
      lock.lock();
    } else {
      lock.lock();
    }
    return lock;
  }
  template <class Fn>
  void with(Fn&& fn) const {
    const auto lock = locked();
    if (!w_) throw py::value_error("the index directory writer is closed");
    fn(*w_);
  }
  template <class Fn>
  void with(Fn&& fn) {
    const auto lock = locked();
    if (!w_) throw py::value_error("the index directory writer is closed");
    fn(*w_);
  }

  std::optional<aligner::index_directory_writer> w_;
  mutable std::mutex mu_;
};

class py_directory_reader {
 public:
  explicit py_directory_reader(const std::string& path) : r_(open(path)) {}

  static std::shared_ptr<aligner::index_directory_reader> open(const std::string& path) {
    py::gil_scoped_release release;
    return std::make_shared<aligner::index_directory_reader>(path);
  }

  bool refresh() {
    const auto r = reader();
    py::gil_scoped_release release;
    return r->refresh();
  }
  void close() {
    const std::lock_guard lock(mu_);
    r_.reset();
  }
  bool closed() const {
    const std::lock_guard lock(mu_);
    return !r_;
  }
  py::dict facts() const { return snapshot_facts(*reader()->snapshot()); }
  py::object codec() const { return codec_object(reader()->snapshot()->codec); }
  std::string name(std::int64_t id) const { return reader()->name(id); }
  bool is_live(std::int64_t id) const { return reader()->snapshot()->is_live(id); }

  py_result search(py::handle query, py::handle query_salience, py_search_args& a) const {
    const auto r = reader();
    const f32_matrix q = as_matrix(query, "query", r->dim());
    a.set_query_salience(query_salience, q.view().rows);
    aligner::search_result out;
    {
      py::gil_scoped_release release;
      out = r->search(q.view(), a.p);
    }
    return py_result::from(std::move(out));
  }

  py::list search_batch(py::handle queries, py::handle offsets, py::handle query_salience, unsigned threads, py_search_args& a) const {
    const auto r = reader();
    const f32_sequences q = as_sequences(queries, offsets, "queries", r->dim());
    std::optional<f32_array> u;
    if (!query_salience.is_none()) u = as_vector(query_salience, "query_salience", q.rows);
    std::vector<aligner::search_result> rs;
    {
      py::gil_scoped_release release;
      rs = r->search_batch(q.view(), a.p, span_of(u), threads);
    }
    return results_list(std::move(rs));
  }

  py::list search_multi(py::handle query, py::handle strategies, py::handle query_salience, py_search_args& a) const {
    const auto r = reader();
    const f32_matrix q = as_matrix(query, "query", r->dim());
    a.set_query_salience(query_salience, q.view().rows);
    const auto grid = grid_arg(strategies, "strategies");
    std::vector<aligner::search_result> rs;
    {
      py::gil_scoped_release release;
      rs = r->search_multi(q.view(), grid, a.p);
    }
    return results_list(std::move(rs));
  }

  py::dict explain(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a) const {
    const auto r = reader();
    const f32_matrix q = as_matrix(query, "query", r->dim());
    a.set_query_salience(query_salience, q.view().rows);
    aligner::explanation e;
    {
      py::gil_scoped_release release;
      e = r->explain(q.view(), id, a.p);
    }
    return explanation_dict(std::move(e));
  }

  /// The alignment picture of document `id` (as explain: S from the scorer's kernel, its aligned cells outlined).
  std::string view(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a, py::handle query_words,
                   py::handle doc_words, const std::string& title, bool html) const {
    return render_view(alignment_of(query, id, query_salience, a), query_words, doc_words, title, html);
  }

  py::dict alignment(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a) const {
    return view_dict(alignment_of(query, id, query_salience, a));
  }

 private:
  /// The view() / alignment() data of live document `id` (the query and its salience checked first).
  aligner::alignment_view alignment_of(py::handle query, std::int64_t id, py::handle query_salience, py_search_args& a) const {
    const auto r = reader();
    const f32_matrix q = as_matrix(query, "query", r->dim());
    a.set_query_salience(query_salience, q.view().rows);
    py::gil_scoped_release release;
    return aligner::make_alignment_view(*r, q.view(), id, a.p);
  }

  std::shared_ptr<aligner::index_directory_reader> reader() const {
    const std::lock_guard lock(mu_);
    if (!r_) throw py::value_error("the index directory reader is closed");
    return r_;
  }

  std::shared_ptr<aligner::index_directory_reader> r_;
  mutable std::mutex mu_;
};

/// The streamed build: `vectors` is a path to a .npy file (float32 or float16, memory-mapped and read chunk by
/// chunk) or an array [tokens, dim] (a float32 C-contiguous one, np.memmap included, is read in place; any other
/// is converted a chunk at a time).
py::dict build_directory(const std::string& path, py::handle vectors, py::handle offsets, py::handle names, const std::string& storage,
                         std::size_t residual_centroids, std::size_t residual_iterations, double residual_anisotropy, std::uint64_t seed,
                         std::size_t segment_tokens, std::size_t chunk_tokens, std::size_t training_tokens, unsigned threads,
                         py::handle progress, py::handle codec, py::handle first_token) {
  std::size_t nbits = 2;
  aligner::directory_params params;
  params.precision = storage_arg(storage, nbits);
  params.residual = residual_arg(nbits, residual_centroids, residual_iterations, residual_anisotropy, seed, threads);
  params.codec = codec_arg(codec);
  check_codec_storage(params.codec, storage, nbits);
  if (!progress.is_none() && !PyCallable_Check(progress.ptr())) throw py::type_error("progress must be callable (done, total) or None");
  const std::vector<std::int64_t> off = as_int64(offsets, "offsets");
  if (off.empty()) throw py::value_error("offsets must hold documents + 1 values, from 0 to the number of tokens; got an empty array");
  const auto n = strings_arg(names, off.size() - 1, "names", "documents");
  aligner::io::build_options opt{.segment_tokens = segment_tokens, .chunk_tokens = chunk_tokens, .threads = threads, .training_tokens = training_tokens};
  if (!progress.is_none()) {
    opt.progress = [&progress](std::size_t done, std::size_t total) {
      py::gil_scoped_acquire gil;
      progress(done, total);
    };
  }
  aligner::io::build_report report;
  if (py::isinstance<py::str>(vectors) || py::hasattr(vectors, "__fspath__")) {
    const std::string file = py::cast<std::string>(py::module_::import("os").attr("fspath")(vectors));
    const bool range = !first_token.is_none();
    const std::size_t first_row = range ? py::cast<std::size_t>(first_token) : 0;
    py::gil_scoped_release release;
    report = range ? aligner::io::build_directory(path, file, first_row, off, n, params, opt) : aligner::io::build_directory(path, file, off, n, params, opt);
  } else {
    if (!first_token.is_none())
      throw py::value_error("first_token reads a range of a .npy file's rows: give vectors as the file's path (or pass the rows of an "
                            "array, vectors[first:last], with first_token=None)");
    py::array a = real_array(vectors, "vectors");
    if (a.ndim() != 2) throw py::value_error("vectors must be a 2-d array [tokens, dim], got shape " + shape_text(a));
    const std::size_t rows = std::size_t(a.shape(0)), dim = std::size_t(a.shape(1));
    if (dim == 0) throw py::value_error("vectors must have at least one column, got shape " + shape_text(a));
    aligner::io::row_reader read;
    py::array_t<float> direct;
    if (py::isinstance<py::array_t<float, py::array::c_style>>(a) && (a.flags() & py::array::c_style)) {
      direct = py::reinterpret_borrow<py::array_t<float>>(a);
      const float* base = direct.data();
      read = [base, dim](std::size_t first, std::size_t count, float* out) { std::copy_n(base + first * dim, count * dim, out); };
    } else {
      read = [&a, dim](std::size_t first, std::size_t count, float* out) {
        py::gil_scoped_acquire gil;
        py::slice rows_slice(py::ssize_t(first), py::ssize_t(first + count), 1);
        auto part = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a[rows_slice]);
        if (!part) throw py::error_already_set();
        std::copy_n(part.data(), count * dim, out);
      };
    }
    py::gil_scoped_release release;
    report = aligner::io::build_directory(path, dim, rows, read, off, n, params, opt);
  }
  py::dict out;
  out["documents"] = report.documents;
  out["tokens"] = report.tokens;
  out["segments"] = report.segments;
  out["centroids"] = report.centroids;
  out["train_seconds"] = report.train_seconds;
  out["encode_seconds"] = report.encode_seconds;
  return out;
}

}  // namespace

void bind_directory(py::module_& m) {
  py::class_<py_directory_writer>(m, "_DirectoryWriter")
      .def_static("create", &py_directory_writer::create, py::arg("path"), py::arg("dim"), py::arg("storage"), py::arg("residual_centroids"),
                  py::arg("residual_iterations"), py::arg("residual_anisotropy"), py::arg("seed"), py::arg("threads"), py::arg("check_finite"), py::arg("codec"))
      .def_static("open", &py_directory_writer::open, py::arg("path"))
      .def("add", &py_directory_writer::add, py::arg("docs"), py::arg("offsets"), py::arg("salience"), py::arg("names"))
      .def("remove", &py_directory_writer::remove, py::arg("ids"))
      .def("compact", &py_directory_writer::compact)
      .def("close", &py_directory_writer::close)
      .def_property_readonly("closed", &py_directory_writer::closed)
      .def("facts", &py_directory_writer::facts)
      .def("codec", &py_directory_writer::codec);

  py::class_<py_directory_reader>(m, "_DirectoryReader")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def("refresh", &py_directory_reader::refresh)
      .def("close", &py_directory_reader::close)
      .def_property_readonly("closed", &py_directory_reader::closed)
      .def("facts", &py_directory_reader::facts)
      .def("codec", &py_directory_reader::codec)
      .def("name", &py_directory_reader::name, py::arg("id"))
      .def("is_live", &py_directory_reader::is_live, py::arg("id"))
      .def("search", &py_directory_reader::search, py::arg("query"), py::arg("query_salience"), py::arg("args"))
      .def("search_batch", &py_directory_reader::search_batch, py::arg("queries"), py::arg("offsets"), py::arg("query_salience"),
           py::arg("threads"), py::arg("args"))
      .def("search_multi", &py_directory_reader::search_multi, py::arg("query"), py::arg("strategies"), py::arg("query_salience"),
           py::arg("args"))
      .def("explain", &py_directory_reader::explain, py::arg("query"), py::arg("id"), py::arg("query_salience"), py::arg("args"))
      .def("view", &py_directory_reader::view, py::arg("query"), py::arg("id"), py::arg("query_salience"), py::arg("args"),
           py::arg("query_words"), py::arg("doc_words"), py::arg("title"), py::arg("html"))
      .def("alignment", &py_directory_reader::alignment, py::arg("query"), py::arg("id"), py::arg("query_salience"), py::arg("args"));

  m.def("_build_directory", &build_directory, py::arg("path"), py::arg("vectors"), py::arg("offsets"), py::arg("names"), py::arg("storage"),
        py::arg("residual_centroids"), py::arg("residual_iterations"), py::arg("residual_anisotropy"), py::arg("seed"),
        py::arg("segment_tokens"), py::arg("chunk_tokens"), py::arg("training_tokens"), py::arg("threads"), py::arg("progress"), py::arg("codec"), py::arg("first_token"));
}

}  // namespace aligner_py
