/** @file npy.hpp
 *  @brief NumPy .npy files: read (format versions 1, 2 and 3; float16/32/64, signed and unsigned integers of 1 to
 *  8 bytes; little-endian; C or Fortran order) and write (version 1, C order, atomically).
 *
 *  Reading is defensive: a bad magic, an unsupported version, a malformed or truncated header, a dtype the
 *  caller cannot take, big-endian data, a shape whose size overflows, or a file whose length does not match the
 *  shape each throw aligner::io_error naming the file, the byte offset and what was expected. Conversions when
 *  reading as float: float16 exactly, float64 rounded to nearest (a finite value beyond float32's range is an
 *  error, not an infinity); when reading integers, any integer dtype whose values fit the type asked for (a value
 *  that does not is an error naming its index). A Fortran-order array is returned in C order (parse_npy); the
 *  memory-mapped readers (mapped_npy_matrix) take float32 / float16 in C order only. */
#pragma once

#include <bit>
#include <cmath>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/file.hpp"

namespace aligner::io {

/// An n-dimensional array read from a .npy file: values in C order and the shape.
template <class T>
struct npy_array {
  std::vector<std::size_t> shape;
  std::vector<T> values;

  std::size_t rows() const noexcept { return shape.empty() ? 1 : shape[0]; }
  /// Product of every dimension after the first (1 for 1-d arrays).
  std::size_t cols() const noexcept {
    std::size_t c = 1;
    for (std::size_t i = 1; i < shape.size(); ++i) c *= shape[i];
    return c;
  }
};

/// Header fields of a .npy file.
struct npy_header {
  char kind = 0;              ///< 'f' (float), 'i' (signed) or 'u' (unsigned integer)
  std::size_t item_size = 0;  ///< bytes per value
  bool fortran_order = false;  ///< values in Fortran (column-major) order
  std::vector<std::size_t> shape;
  std::size_t data_offset = 0;
};

namespace detail {

inline float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal half: renormalise
      int e = -1;
      std::uint32_t m = mantissa;
      do { ++e; m <<= 1; } while ((m & 0x400u) == 0);
      bits = sign | (std::uint32_t(127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

[[noreturn]] inline void npy_fail(const std::string& file, std::size_t offset, const std::string& what) {
  throw io_error(file + ": byte " + std::to_string(offset) + ": " + what);
}

/// Value of `key` in the header dict text (the text up to the next top-level ',' or '}', without trailing blanks).
inline std::string_view dict_value(std::string_view dict, std::string_view key, const std::string& file,
                                   std::size_t offset) {
  for (const char quote : {'\'', '"'}) {
    std::string needle(1, quote);  // (built in place: GCC 12 warned falsely, -Wrestrict, on a sum of temporaries)
    needle.append(key);
    needle.push_back(quote);
    std::size_t pos = dict.find(needle);
    if (pos == std::string_view::npos) continue;
    pos = dict.find(':', pos + needle.size());
    if (pos == std::string_view::npos) break;
    ++pos;
    while (pos < dict.size() && dict[pos] == ' ') ++pos;
    std::size_t end = pos;
    int depth = 0;
    while (end < dict.size()) {
      const char c = dict[end];
      if (c == '(' || c == '[') ++depth;
      if (c == ')' || c == ']') --depth;
      if (depth == 0 && (c == ',' || c == '}')) break;
      ++end;
    }
    if (depth != 0 || end >= dict.size()) break;
    while (end > pos && (dict[end - 1] == ' ' || dict[end - 1] == '\t')) --end;  // "True , ..." reads as "True"
    return dict.substr(pos, end - pos);
  }
  npy_fail(file, offset, "header has no valid '" + std::string(key) + "' entry");
}

}  // namespace detail

/// Parses and validates the header of .npy bytes; `file` names the source in messages.
inline npy_header parse_npy_header(std::string_view bytes, const std::string& file) {
  using detail::npy_fail;
  if (bytes.size() < 10) npy_fail(file, bytes.size(), "file too short for a .npy header (need at least 10 bytes)");
  if (bytes.substr(0, 6) != std::string_view("\x93NUMPY", 6)) npy_fail(file, 0, "bad magic: not a .npy file");
  const unsigned major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = std::size_t(static_cast<unsigned char>(bytes[8])) | std::size_t(static_cast<unsigned char>(bytes[9])) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) npy_fail(file, bytes.size(), "file too short for a version 2 header");
    for (int i = 0; i < 4; ++i) header_len |= std::size_t(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    header_start = 12;
  } else {
    npy_fail(file, 6, "unsupported .npy format version " + std::to_string(major) + " (supported: 1, 2, 3)");
  }
  if (header_start + header_len > bytes.size())
    npy_fail(file, bytes.size(), "truncated header: it declares " + std::to_string(header_len) + " bytes");
  const std::string_view dict = bytes.substr(header_start, header_len);
  if (dict.find('{') == std::string_view::npos || dict.find('}') == std::string_view::npos)
    npy_fail(file, header_start, "header is not a dict");

  npy_header h;
  h.data_offset = header_start + header_len;
  std::string_view descr = detail::dict_value(dict, "descr", file, header_start);
  if (descr.size() < 2 || (descr.front() != '\'' && descr.front() != '"') || descr.back() != descr.front())
    npy_fail(file, header_start, "descr is not a quoted string");
  descr = descr.substr(1, descr.size() - 2);
  if (descr.size() < 3) npy_fail(file, header_start, "dtype '" + std::string(descr) + "' is not supported");
  const char order = descr[0];
  if (order == '>') npy_fail(file, header_start, "big-endian dtype '" + std::string(descr) + "' is not supported");
  if (order != '<' && order != '|')
    npy_fail(file, header_start, "dtype '" + std::string(descr) + "' has no byte order mark");
  h.kind = descr[1];
  const std::string_view size_text = descr.substr(2);
  auto [ptr, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), h.item_size);
  if (ec != std::errc{} || ptr != size_text.data() + size_text.size())
    npy_fail(file, header_start, "dtype '" + std::string(descr) + "' is not understood");
  const bool integer_size = h.item_size == 1 || h.item_size == 2 || h.item_size == 4 || h.item_size == 8;
  const bool ok = (h.kind == 'f' && (h.item_size == 2 || h.item_size == 4 || h.item_size == 8)) ||
                  ((h.kind == 'i' || h.kind == 'u') && integer_size);
  if (!ok)
    npy_fail(file, header_start,
             "dtype '" + std::string(descr) + "' is not supported (expected a float of 2, 4 or 8 bytes or an integer of 1, 2, 4 or 8)");
  if (order == '|' && h.item_size != 1)
    npy_fail(file, header_start, "dtype '" + std::string(descr) + "' has no byte order mark");

  const std::string_view fortran = detail::dict_value(dict, "fortran_order", file, header_start);
  if (fortran != "True" && fortran != "False") npy_fail(file, header_start, "fortran_order is neither True nor False");
  h.fortran_order = fortran == "True";

  std::string_view shape = detail::dict_value(dict, "shape", file, header_start);
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')')
    npy_fail(file, header_start, "shape is not a tuple");
  shape = shape.substr(1, shape.size() - 2);
  std::size_t total = 1;
  while (!shape.empty()) {
    while (!shape.empty() && (shape.front() == ' ' || shape.front() == ',')) shape.remove_prefix(1);
    if (shape.empty()) break;
    std::size_t dim = 0;
    auto res = std::from_chars(shape.data(), shape.data() + shape.size(), dim);
    if (res.ec != std::errc{}) npy_fail(file, header_start, "shape entry is not a non-negative integer");
    shape.remove_prefix(std::size_t(res.ptr - shape.data()));
    while (!shape.empty() && shape.front() == 'L') shape.remove_prefix(1);  // Python 2 long suffix
    if (dim != 0 && total > std::numeric_limits<std::size_t>::max() / dim / 8)
      npy_fail(file, header_start, "shape is too large");
    total *= dim;
    h.shape.push_back(dim);
  }
  const std::size_t data_bytes = total * h.item_size;
  const std::size_t have = bytes.size() - h.data_offset;
  if (have < data_bytes)
    npy_fail(file, bytes.size(), "truncated data: shape needs " + std::to_string(data_bytes) + " bytes, file has " +
                                     std::to_string(have));
  if (have > data_bytes)
    npy_fail(file, h.data_offset + data_bytes, "size mismatch: " + std::to_string(have - data_bytes) +
                                                    " bytes after the data the shape describes");
  return h;
}

namespace detail {

template <class U>
inline U npy_load(const char* p) noexcept {
  U v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Value i of float data of item_size bytes (2, 4 or 8), as double, from its little-endian bytes.
inline double npy_float_at(const char* src, std::size_t item_size, std::size_t i) noexcept {
  const char* p = src + item_size * i;
  if (item_size == 2) return half_to_float(npy_load<std::uint16_t>(p));
  if (item_size == 4) return npy_load<float>(p);
  return npy_load<double>(p);
}

/// The positions in a file's data of the values in C order: i itself, or for Fortran-order data of 2+ dimensions the
/// value's column-major position, walked index by index (O(1) amortised a step, no table).
class npy_positions {
 public:
  npy_positions(const std::vector<std::size_t>& shape, bool fortran) : shape_(shape), walk_(fortran && shape.size() > 1) {
    if (!walk_) return;
    stride_.resize(shape.size());
    index_.assign(shape.size(), 0);
    std::size_t s = 1;
    for (std::size_t d = 0; d != shape.size(); ++d) stride_[d] = s, s *= shape[d];
  }
  /// The position of the current value; advance() moves to the next value in C order.
  std::size_t position(std::size_t c_index) const noexcept { return walk_ ? pos_ : c_index; }
  void advance() noexcept {
    if (!walk_) return;
    for (std::size_t d = shape_.size(); d-- > 0;) {
      ++index_[d];
      pos_ += stride_[d];
      if (index_[d] < shape_[d] || d == 0) return;
      pos_ -= index_[d] * stride_[d];
      index_[d] = 0;
    }
  }
  bool reordered() const noexcept { return walk_; }

 private:
  const std::vector<std::size_t>& shape_;
  bool walk_;
  std::vector<std::size_t> stride_, index_;
  std::size_t pos_ = 0;
};

}  // namespace detail

/// Decodes .npy bytes into values of type T (float, std::int32_t or std::int64_t), in C order.
template <class T>
npy_array<T> parse_npy(std::string_view bytes, const std::string& file = "<memory>") {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>,
                "parse_npy reads float, int32 or int64");
  static_assert(std::endian::native == std::endian::little, "this reader assumes a little-endian host");
  const npy_header h = parse_npy_header(bytes, file);
  npy_array<T> out;
  out.shape = h.shape;
  std::size_t total = 1;
  for (std::size_t d : h.shape) total *= d;
  out.values.resize(total);
  const char* src = bytes.data() + h.data_offset;
  detail::npy_positions where(h.shape, h.fortran_order && total > 0);
  if constexpr (std::is_same_v<T, float>) {
    if (h.kind != 'f') detail::npy_fail(file, 0, "expected a float array (float16, float32 or float64), found an integer array");
    if (h.item_size == 4 && !where.reordered()) {
      if (total) std::memcpy(out.values.data(), src, total * 4);
    } else {
      for (std::size_t i = 0; i != total; ++i, where.advance()) {
        const std::size_t at = where.position(i);
        const double v = detail::npy_float_at(src, h.item_size, at);
        const float f = static_cast<float>(v);
        if (std::isfinite(v) && !std::isfinite(f)) {
          char text[32];  // the shortest text that reads back as v
          const auto written = std::to_chars(text, text + sizeof text, v).ptr;
          detail::npy_fail(file, h.data_offset + at * h.item_size,
                           "value " + std::string(text, written) + " at index " + std::to_string(i) + " does not fit float32");
        }
        out.values[i] = f;
      }
    }
  } else {
    if (h.kind == 'f') detail::npy_fail(file, 0, "expected an integer array, found a float array");
    for (std::size_t i = 0; i != total; ++i, where.advance()) {
      const char* p = src + where.position(i) * h.item_size;
      std::int64_t v = 0;
      if (h.kind == 'i') {
        switch (h.item_size) {
          case 1: v = detail::npy_load<std::int8_t>(p); break;
          case 2: v = detail::npy_load<std::int16_t>(p); break;
          case 4: v = detail::npy_load<std::int32_t>(p); break;
          default: v = detail::npy_load<std::int64_t>(p); break;
        }
      } else {
        std::uint64_t u = 0;
        switch (h.item_size) {
          case 1: u = detail::npy_load<std::uint8_t>(p); break;
          case 2: u = detail::npy_load<std::uint16_t>(p); break;
          case 4: u = detail::npy_load<std::uint32_t>(p); break;
          default: u = detail::npy_load<std::uint64_t>(p); break;
        }
        if (u > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
          detail::npy_fail(file, std::size_t(p - bytes.data()),
                           "value " + std::to_string(u) + " at index " + std::to_string(i) + " does not fit int64");
        v = std::int64_t(u);
      }
      if constexpr (std::is_same_v<T, std::int32_t>)
        if (v < std::numeric_limits<std::int32_t>::min() || v > std::numeric_limits<std::int32_t>::max())
          detail::npy_fail(file, std::size_t(p - bytes.data()),
                           "value " + std::to_string(v) + " at index " + std::to_string(i) + " does not fit int32");
      out.values[i] = T(v);
    }
  }
  return out;
}

/// Reads a .npy file as T; see the file comment for what is accepted.
template <class T>
npy_array<T> load_npy(const std::filesystem::path& path) {
  return parse_npy<T>(read_file(path), path.string());
}

namespace detail {
template <class T>
constexpr const char* npy_descr() {
  if constexpr (std::is_same_v<T, float>) return "<f4";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "<i4";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "<i8";
  else static_assert(sizeof(T) == 0, "save_npy writes float, int32 or int64");
}
}  // namespace detail

/// Encodes values (C order) with the given shape as version-1 .npy bytes.
template <class T>
std::string encode_npy(std::span<const T> values, std::span<const std::size_t> shape) {
  std::size_t total = 1;
  for (std::size_t d : shape) total *= d;
  ALIGNER_EXPECTS(total == values.size(), "save_npy: shape holds ", total, " values but ", values.size(),
                  " were given");
  std::string dict = std::string("{'descr': '") + detail::npy_descr<T>() + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i != shape.size(); ++i) dict += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  dict += "), }";
  std::size_t total_header = 10 + dict.size() + 1;
  const std::size_t pad = (64 - total_header % 64) % 64;
  dict.append(pad, ' ');
  dict += '\n';
  ALIGNER_EXPECTS(dict.size() <= 65535, "save_npy: header too long for format version 1");
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char(dict.size() & 0xff);
  out += char(dict.size() >> 8);
  out += dict;
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return out;
}

/// Writes a .npy file atomically (temporary file + fsync + rename).
template <class T>
void save_npy(const std::filesystem::path& path, std::span<const T> values, std::span<const std::size_t> shape) {
  atomic_write(path, encode_npy<T>(values, shape));
}

template <class T>
void save_npy(const std::filesystem::path& path, const std::vector<T>& values, std::initializer_list<std::size_t> shape) {
  save_npy<T>(path, std::span<const T>(values), std::span<const std::size_t>(shape.begin(), shape.size()));
}

}  // namespace aligner::io
