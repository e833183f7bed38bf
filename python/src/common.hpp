// Conversions between NumPy arrays and the library's views, shared by the binding's translation units.
//
// Inputs: a float32 C-contiguous array is viewed in place (no copy). Anything else NumPy can read as a real number
// array (float64, float16, integers, lists) is converted once to float32; booleans, complex numbers, strings and
// objects are refused with a TypeError naming the argument and its dtype; a wrong number of dimensions or a wrong
// width is a ValueError naming the argument and the shape. Non-finite values are reported by the library itself
// (aligner::invalid_argument -> ValueError), naming the token.
// Outputs: a std::vector is moved into a NumPy array that owns it (no copy).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <aligner/core/types.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace aligner_py {

namespace py = pybind11;

/// std::vector -> C-contiguous NumPy array of `shape` that owns the vector's buffer (no copy).
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(std::move(shape), owned->data(), free_when_done);
}

/// std::vector -> 1-d NumPy array that owns the vector's buffer.
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  const auto n = py::ssize_t(v.size());
  return to_numpy(std::move(v), {n});
}

inline std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d != a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

/// The argument as a NumPy array of real numbers (TypeError otherwise), without converting its dtype yet.
inline py::array real_array(py::handle obj, const char* name) {
  if (obj.is_none()) throw py::type_error(std::string(name) + " must be an array of numbers, got None");
  py::array a;
  try {
    a = py::array::ensure(obj);
  } catch (py::error_already_set&) {
    a = py::array();
  }
  if (!a) throw py::type_error(std::string(name) + " must be an array of numbers, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u')
    throw py::type_error(std::string(name) + " must hold real numbers (float or int), got dtype " + std::string(py::str(a.dtype())));
  return a;
}

/// A float32 C-contiguous array that keeps its data alive; `view` reads it in place.
struct f32_array {
  py::array_t<float> array;
  bool copied = false;
  const float* data() const { return array.data(); }
  std::size_t size() const { return std::size_t(array.size()); }
};

/// Converts once to float32 C-contiguous (or takes it as is) and checks the number of dimensions (and, when
/// `cols` is not 0, the width of a 2-d array).
inline f32_array as_f32(py::handle obj, const char* name, int ndim, std::size_t cols = 0) {
  py::array a = real_array(obj, name);
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be a " + std::to_string(ndim) + "-d array" +
                          (ndim == 2 ? " [tokens, dim]" : "") + ", got shape " + shape_text(a));
  if (ndim == 2 && cols != 0 && a.shape(0) != 0 && std::size_t(a.shape(1)) != cols)
    throw py::value_error(std::string(name) + " must have " + std::to_string(cols) + " columns (the dim), got shape " + shape_text(a));
  f32_array out;
  if (py::isinstance<py::array_t<float, py::array::c_style>>(a) && (a.flags() & py::array::c_style)) {
    out.array = py::reinterpret_borrow<py::array_t<float>>(a);
  } else {
    out.array = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    out.copied = true;
    if (!out.array) throw py::error_already_set();
  }
  return out;
}

/// A 2-d token matrix [tokens, dim].
struct f32_matrix : f32_array {
  aligner::matrix_view<float> view() const {
    return {array.data(), std::size_t(array.shape(0)), std::size_t(array.ndim() == 2 ? array.shape(1) : 0)};
  }
};

inline f32_matrix as_matrix(py::handle obj, const char* name, std::size_t cols = 0) {
  f32_matrix m;
  static_cast<f32_array&>(m) = as_f32(obj, name, 2, cols);
  return m;
}

/// An optional 1-d float vector (None -> empty) of `expected` entries when expected is given.
inline f32_array as_vector(py::handle obj, const char* name, std::optional<std::size_t> expected = std::nullopt) {
  f32_array v = as_f32(obj, name, 1);
  if (expected && v.size() != *expected)
    throw py::value_error(std::string(name) + " must have " + std::to_string(*expected) + " entries (one per token), got " +
                          std::to_string(v.size()));
  return v;
}

inline std::span<const float> span_of(const std::optional<f32_array>& v) {
  return v ? std::span<const float>(v->data(), v->size()) : std::span<const float>();
}

/// Integers (offsets, ids) as int64, converted once; refuses float arrays (TypeError; an empty one is an empty list) and
/// uint64 values above 2^63 - 1.
inline std::vector<std::int64_t> as_int64(py::handle obj, const char* name) {
  py::array a = real_array(obj, name);
  if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be a 1-d array, got shape " + shape_text(a));
  if (a.size() == 0) return {};  // an empty list reaches here as float64: it holds no number of the wrong kind
  if (a.dtype().kind() == 'f') throw py::type_error(std::string(name) + " must hold integers, got dtype " + std::string(py::str(a.dtype())));
  auto ints = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  if (a.dtype().kind() == 'u') {  // uint64 above 2^63 would wrap
    auto u = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    for (py::ssize_t i = 0; i != u.size(); ++i)
      if (u.data()[i] > std::uint64_t(INT64_MAX))
        throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(u.data()[i]) + " is too large");
  }
  return std::vector<std::int64_t>(ints.data(), ints.data() + ints.size());
}

/// One Python int, or integers as as_int64 reads them (ids to remove, an example's documents).
inline std::vector<std::int64_t> int_or_int64s(py::handle obj, const char* name) {
  if (py::isinstance<py::int_>(obj)) return {py::cast<std::int64_t>(obj)};
  return as_int64(obj, name);
}

/// Sequences stored back to back: either a list of 2-d arrays (one per sequence), or one 2-d array with `offsets`
/// (sequence s is rows offsets[s]..offsets[s+1]), or one 2-d array alone (one sequence).
struct f32_sequences {
  f32_matrix tokens;
  std::vector<float> joined;  ///< the list form, joined
  std::vector<std::int64_t> offsets;
  std::size_t dim = 0, rows = 0;  ///< the tokens held (the offsets are checked against it by the library)
  aligner::sequence_set_view view() const {
    const float* data = rows == 0 ? nullptr : joined.empty() ? tokens.data() : joined.data();
    return {aligner::matrix_view<float>(data, rows, dim), std::span<const std::int64_t>(offsets)};
  }
};

inline f32_sequences as_sequences(py::handle obj, py::handle offsets, const char* name, std::size_t dim_hint = 0) {
  f32_sequences out;
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    if (!offsets.is_none())
      throw py::value_error(std::string(name) + " is a list of arrays: pass offsets only with one 2-d array of all tokens");
    py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    std::vector<f32_matrix> parts;
    parts.reserve(seq.size());
    out.offsets.assign(1, 0);
    std::size_t dim = dim_hint;
    for (std::size_t s = 0; s != seq.size(); ++s) {
      const std::string item = std::string(name) + "[" + std::to_string(s) + "]";
      parts.push_back(as_matrix(seq[s], item.c_str(), dim));
      if (parts.back().view().rows) dim = parts.back().view().cols;
      out.offsets.push_back(out.offsets.back() + std::int64_t(parts.back().view().rows));
    }
    out.dim = dim;
    out.joined.reserve(std::size_t(out.offsets.back()) * dim);
    for (const auto& p : parts) out.joined.insert(out.joined.end(), p.data(), p.data() + p.size());
    out.rows = std::size_t(out.offsets.back());
    return out;
  }
  out.tokens = as_matrix(obj, name, dim_hint);
  out.dim = out.tokens.view().cols;
  out.rows = out.tokens.view().rows;
  if (offsets.is_none()) {
    out.offsets = {0, std::int64_t(out.tokens.view().rows)};
  } else {
    out.offsets = as_int64(offsets, "offsets");
  }
  return out;
}

}  // namespace aligner_py
