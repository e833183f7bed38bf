// aligner.ResidualCodec: training a residual codec on a sample of token vectors, its bytes (pickling, files), its
// facts, and what it does to a token (the nearest centroid, the decoded vector the store scores with).
#include <aligner/math/residual_training.hpp>

#include "codec.hpp"
#include "search.hpp"

namespace aligner_py {

namespace {

py_codec train_codec(py::handle tokens, std::size_t nbits, std::size_t centroids, std::size_t sample, std::size_t iterations, double anisotropy,
                     std::uint64_t seed, unsigned threads) {
  const f32_matrix x = as_matrix(tokens, "tokens");
  if (x.view().rows == 0) throw py::value_error("tokens must hold at least one token to train a codec on, got shape " + shape_text(x.array));
  if (x.view().cols == 0) throw py::value_error("tokens must have at least one column, got shape " + shape_text(x.array));
  aligner::residual_params p = residual_arg(nbits, centroids, iterations, anisotropy, seed, threads);
  p.sample = sample;
  py::gil_scoped_release release;
  return {std::make_shared<const aligner::residual_codec>(aligner::train_residual_codec(x.view(), p))};
}

py_codec codec_from_bytes(py::bytes data) {
  const std::string bytes = data;
  return {std::make_shared<const aligner::residual_codec>(aligner::residual_codec::deserialize(bytes))};
}

/// The tokens checked against the codec: [tokens, dim], finite.
f32_matrix codec_tokens(const py_codec& c, py::handle tokens) {
  const f32_matrix x = as_matrix(tokens, "tokens", c.codec->dim());
  if (x.view().rows) aligner::detail::check_matrix(x.view(), "tokens", true);
  return x;
}

py::array_t<std::uint32_t> codec_assign(const py_codec& c, py::handle tokens) {
  const f32_matrix x = codec_tokens(c, tokens);
  std::vector<std::uint32_t> ids(x.view().rows);
  {
    py::gil_scoped_release release;
    aligner::scan_workspace ws;
    if (!ids.empty()) c.codec->assign(x.view(), ids.data(), ws);
  }
  return to_numpy(std::move(ids));
}

/// Each token as the store keeps it (nearest centroid plus the decoded residual codes), float32 [tokens, dim].
py::array_t<float> codec_reconstruct(const py_codec& c, py::handle tokens) {
  const f32_matrix x = codec_tokens(c, tokens);
  const auto& codec = *c.codec;
  const std::size_t n = x.view().rows, dim = codec.dim();
  std::vector<float> out(n * dim);
  {
    py::gil_scoped_release release;
    std::vector<std::uint32_t> ids(n);
    aligner::scan_workspace ws;
    if (n) codec.assign(x.view(), ids.data(), ws);
    std::vector<std::uint32_t> panel(codec.panel_words(1));
    for (std::size_t t = 0; t != n; ++t) {
      std::fill(panel.begin(), panel.end(), 0u);
      codec.encode(x.view().row(t), ids[t], 1, 0, panel.data());
      for (std::size_t k = 0; k != dim; ++k) out[t * dim + k] = codec.decode(panel.data(), 1, 0, k);
    }
  }
  return to_numpy(std::move(out), {py::ssize_t(n), py::ssize_t(dim)});
}

}  // namespace

void bind_codec(py::module_& m) {
  m.def("default_centroids", &aligner::default_centroids, py::arg("tokens"));
  py::class_<py_codec>(m, "_ResidualCodec")
      .def_static("train", &train_codec, py::arg("tokens"), py::arg("nbits"), py::arg("centroids"), py::arg("sample"), py::arg("iterations"),
                  py::arg("anisotropy"), py::arg("seed"), py::arg("threads"))
      .def_static("from_bytes", &codec_from_bytes, py::arg("data"))
      .def("to_bytes", [](const py_codec& c) { return py::bytes(c.codec->serialize()); })
      .def_property_readonly("dim", [](const py_codec& c) { return c.codec->dim(); })
      .def_property_readonly("nbits", [](const py_codec& c) { return c.codec->nbits(); })
      .def_property_readonly("centroids", [](const py_codec& c) { return c.codec->centroids(); })
      .def_property_readonly("anisotropy", [](const py_codec& c) { return c.codec->anisotropy(); })
      .def_property_readonly("bytes_per_token", [](const py_codec& c) { return c.codec->bytes_per_token(); })
      .def("centroid_vectors", [](const py_codec& c) {
        const auto v = c.codec->centroid_values();
        return to_numpy(std::vector<float>(v.begin(), v.end()), {py::ssize_t(c.codec->centroids()), py::ssize_t(c.codec->dim())});
      })
      .def("assign", &codec_assign, py::arg("tokens"))
      .def("reconstruct", &codec_reconstruct, py::arg("tokens"))
      .def("same", [](const py_codec& a, const py_codec& b) { return a.codec == b.codec || a.codec->serialize() == b.codec->serialize(); },
           py::arg("other"));
}

}  // namespace aligner_py
