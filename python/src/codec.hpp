// aligner.ResidualCodec's C++ side, shared by the Retriever, the index directory and the streamed build: one trained
// residual codec (centroids, bucket cutoffs and values) that several indexes can be given, so that a collection split
// into shards or directories is coded once and every part scores its documents alike.
#pragma once

#include <aligner/kernels/residual.hpp>

#include "common.hpp"

namespace aligner_py {

struct py_codec {
  std::shared_ptr<const aligner::residual_codec> codec;
};

/// The codec passed from Python (None or a _ResidualCodec) as the library's shared pointer (null for None).
inline std::shared_ptr<const aligner::residual_codec> codec_arg(py::handle obj) {
  if (obj.is_none()) return nullptr;
  if (!py::isinstance<py_codec>(obj))
    throw py::type_error("codec must be an aligner.ResidualCodec or None, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
  return py::cast<const py_codec&>(obj).codec;
}

/// An index's codec as Python sees it: a _ResidualCodec, or None when the index has none.
inline py::object codec_object(std::shared_ptr<const aligner::residual_codec> codec) {
  return codec ? py::cast(py_codec{std::move(codec)}) : py::object(py::none());
}

/// A residual storage given with a codec: "residual" takes the codec's bits, "residual:N" must name them.
inline void check_codec_storage(const std::shared_ptr<const aligner::residual_codec>& codec, const std::string& storage, std::size_t nbits) {
  if (!codec) return;
  if (storage != "residual" && storage.rfind("residual:", 0) != 0)
    throw py::value_error("codec is given but storage is '" + storage + "': a codec needs storage 'residual' or 'residual:N'");
  if (storage != "residual" && nbits != codec->nbits())
    throw py::value_error("storage '" + storage + "' does not match the codec's " + std::to_string(codec->nbits()) +
                          " bits (give storage 'residual' or 'residual:" + std::to_string(codec->nbits()) + "')");
}

}  // namespace aligner_py
