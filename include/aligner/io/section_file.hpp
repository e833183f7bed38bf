/** @file section_file.hpp
 *  @brief The container of aligner's binary files: a header, a table of typed sections, the sections.
 *
 *  Layout (all integers little-endian):
 *
 *      offset 0   magic "ALIGNER\0" (8 bytes) | u32 format version | u32 endianness mark 0x01020304
 *                 | u32 section count | u32 header CRC-32C (of the table) | u64 file size
 *      offset 32  section table: per section 64 bytes:
 *                 char[16] name (NUL padded) | u32 dtype | u32 rank (<= 2) | u64 shape[2] | u64 offset | u64 bytes
 *                 | u32 CRC-32C of the payload | u32 reserved (0)
 *      then       payloads, each starting at a multiple of 64 bytes (so a float section can be memory-mapped
 *                 and used in place), zero padding between them.
 *
 *  Reading verifies everything before anything is used: magic, version (a newer version is refused by name),
 *  endianness, table CRC, that every section lies inside the file and does not overlap the table, that
 *  bytes == element size x shape, and every payload CRC. Each failure throws aligner::io_error naming the file
 *  and the problem. Writing is atomic (temporary file + fsync + rename, io/file.hpp). */
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.hpp"
#include "crc32c.hpp"
#include "../core/file.hpp"

namespace aligner::io {

inline constexpr std::uint32_t section_format_version = 1;

enum class section_dtype : std::uint32_t { u8 = 1, u32 = 2, i64 = 3, f32 = 4 };

inline std::size_t dtype_size(section_dtype t) noexcept {
  switch (t) {
    case section_dtype::u8: return 1;
    case section_dtype::u32: return 4;
    case section_dtype::i64: return 8;
    case section_dtype::f32: return 4;
  }
  return 0;
}

/// A section to write.
struct section_out {
  std::string name;
  section_dtype dtype = section_dtype::u8;
  std::vector<std::uint64_t> shape;  ///< rank 1 or 2
  std::string_view bytes;            ///< payload (the caller keeps it alive until encode returns)
};

/// A section of a loaded file: a view into the file's bytes (mapped or read).
struct section_in {
  section_dtype dtype = section_dtype::u8;
  std::vector<std::uint64_t> shape;
  const char* data = nullptr;
  std::size_t bytes = 0;
  std::uint32_t crc = 0;  ///< the CRC-32C the table records for the payload
  template <class T>
  std::span<const T> as() const noexcept {
    return {reinterpret_cast<const T*>(data), bytes / sizeof(T)};
  }
};

namespace detail {
constexpr std::size_t header_bytes = 32, entry_bytes = 64;
inline void put_u32(std::string& s, std::size_t at, std::uint32_t v) { std::memcpy(s.data() + at, &v, 4); }
inline void put_u64(std::string& s, std::size_t at, std::uint64_t v) { std::memcpy(s.data() + at, &v, 8); }
inline std::uint32_t get_u32(const char* p) { std::uint32_t v; std::memcpy(&v, p, 4); return v; }
inline std::uint64_t get_u64(const char* p) { std::uint64_t v; std::memcpy(&v, p, 8); return v; }
}  // namespace detail

/// Encodes sections into the file format.
inline std::string encode_sections(const std::vector<section_out>& sections) {
  using namespace detail;
  const std::size_t table_end = header_bytes + entry_bytes * sections.size();
  std::size_t at = (table_end + 63) / 64 * 64;
  std::string out(at, '\0');
  std::memcpy(out.data(), "ALIGNER\0", 8);
  put_u32(out, 8, section_format_version);
  put_u32(out, 12, 0x01020304u);
  put_u32(out, 16, std::uint32_t(sections.size()));
  for (std::size_t i = 0; i != sections.size(); ++i) {
    const auto& s = sections[i];
    ALIGNER_EXPECTS(!s.name.empty() && s.name.size() < 16, "section name '", s.name, "' must have 1..15 characters");
    ALIGNER_EXPECTS(s.shape.size() == 1 || s.shape.size() == 2, "section ", s.name, " must have rank 1 or 2");
    std::uint64_t count = 1;
    for (auto d : s.shape) count *= d;
    ALIGNER_EXPECTS(count * dtype_size(s.dtype) == s.bytes.size(), "section ", s.name, " holds ", s.bytes.size(),
                    " bytes, its shape needs ", count * dtype_size(s.dtype));
    const std::size_t e = header_bytes + i * entry_bytes;
    std::memcpy(out.data() + e, s.name.data(), s.name.size());
    put_u32(out, e + 16, std::uint32_t(s.dtype));
    put_u32(out, e + 20, std::uint32_t(s.shape.size()));
    put_u64(out, e + 24, s.shape[0]);
    put_u64(out, e + 32, s.shape.size() == 2 ? s.shape[1] : 0);
    put_u64(out, e + 40, at);
    put_u64(out, e + 48, s.bytes.size());
    put_u32(out, e + 56, crc32c(s.bytes.data(), s.bytes.size()));
    out.append(s.bytes);
    at += s.bytes.size();
    const std::size_t padded = (at + 63) / 64 * 64;
    out.append(padded - at, '\0');
    at = padded;
  }
  put_u64(out, 24, out.size());
  put_u32(out, 20, crc32c(out.data() + header_bytes, entry_bytes * sections.size(),
                          crc32c(out.data(), 20)));
  return out;
}

/// The bytes of a file, read into memory or memory-mapped read-only; shared by everything loaded from it.
class file_bytes {
 public:
  /// Reads (mmap == false) or maps (mmap == true) a file. Throws aligner::io_error naming the file.
  static std::shared_ptr<const file_bytes> open(const std::filesystem::path& path, bool mmap) {
    auto f = std::shared_ptr<file_bytes>(new file_bytes());
    f->path_ = path.string();
    if (!mmap) {
      f->owned_ = read_file(path);
      f->data_ = f->owned_.data();
      f->size_ = f->owned_.size();
      return f;
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw io_error(path.string() + ": cannot open for reading (" + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      throw io_error(path.string() + ": cannot stat");
    }
    f->size_ = std::size_t(st.st_size);
    if (f->size_ > 0) {
      void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        throw io_error(path.string() + ": mmap failed (" + std::strerror(errno) + ")");
      }
      f->mapped_ = p;
      f->data_ = static_cast<const char*>(p);
    }
    ::close(fd);
    return f;
  }
  /// Wraps bytes already in memory (tests, fuzzing).
  static std::shared_ptr<const file_bytes> from_string(std::string bytes, std::string name = "<memory>") {
    auto f = std::shared_ptr<file_bytes>(new file_bytes());
    f->owned_ = std::move(bytes);
    f->data_ = f->owned_.data();
    f->size_ = f->owned_.size();
    f->path_ = std::move(name);
    return f;
  }
  ~file_bytes() {
    if (mapped_) ::munmap(mapped_, size_);
  }
  file_bytes(const file_bytes&) = delete;
  file_bytes& operator=(const file_bytes&) = delete;

  const char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }
  bool mapped() const noexcept { return mapped_ != nullptr; }

 private:
  file_bytes() = default;
  std::string owned_;
  void* mapped_ = nullptr;
  const char* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

/// Parses and verifies every section of a file; views point into `file` (keep it alive). `verify_payloads` false
/// checks the header and the section table only (read_index_label: a label is read without touching the payloads).
inline std::map<std::string, section_in> decode_sections(const file_bytes& file, bool verify_payloads = true) {
  using namespace detail;
  const char* p = file.data();
  const std::size_t size = file.size();
  auto fail = [&](const std::string& what) -> void { throw io_error(file.path() + ": " + what); };
  if (size < header_bytes) fail("too short for an aligner file (" + std::to_string(size) + " bytes)");
  if (std::memcmp(p, "ALIGNER\0", 8) != 0) fail("bad magic: not an aligner index file");
  const std::uint32_t version = get_u32(p + 8);
  if (version > section_format_version)
    fail("format version " + std::to_string(version) + " is newer than this library reads (" +
         std::to_string(section_format_version) + "); upgrade aligner");
  if (version == 0) fail("format version 0 is invalid");
  if (get_u32(p + 12) != 0x01020304u) fail("endianness mark mismatch: written on a machine of the other byte order");
  const std::uint64_t count = get_u32(p + 16);
  if (count > 1024) fail("section count " + std::to_string(count) + " is implausible");
  const std::size_t table_end = header_bytes + entry_bytes * count;
  if (table_end > size) fail("truncated: the section table needs " + std::to_string(table_end) + " bytes");
  if (get_u64(p + 24) != size)
    fail("truncated or extended: header says " + std::to_string(get_u64(p + 24)) + " bytes, file has " + std::to_string(size));
  if (crc32c(p + header_bytes, entry_bytes * count, crc32c(p, 20)) != get_u32(p + 20)) fail("header checksum mismatch (corrupt)");
  std::map<std::string, section_in> out;
  for (std::size_t i = 0; i != count; ++i) {
    const char* e = p + header_bytes + i * entry_bytes;
    const std::string name(e, strnlen(e, 16));
    if (name.empty() || name.size() == 16) fail("section " + std::to_string(i) + " has an invalid name");
    section_in s;
    const std::uint32_t dtype = get_u32(e + 16), rank = get_u32(e + 20);
    if (dtype < 1 || dtype > 4) fail("section " + name + " has unknown dtype " + std::to_string(dtype));
    if (rank != 1 && rank != 2) fail("section " + name + " has rank " + std::to_string(rank));
    s.dtype = section_dtype(dtype);
    s.shape = {get_u64(e + 24)};
    if (rank == 2) s.shape.push_back(get_u64(e + 32));
    const std::uint64_t offset = get_u64(e + 40), bytes = get_u64(e + 48);
    if (offset < table_end || offset > size || bytes > size - offset || offset % 64 != 0)
      fail("section " + name + " lies outside the file");
    std::uint64_t elements = 1;
    for (auto d : s.shape) {
      if (d != 0 && elements > (std::uint64_t(1) << 62) / d) fail("section " + name + " has an impossible shape");
      elements *= d;
    }
    if (elements * dtype_size(s.dtype) != bytes) fail("section " + name + " size does not match its dtype and shape");
    s.data = p + offset;
    s.bytes = std::size_t(bytes);
    s.crc = get_u32(e + 56);
    if (verify_payloads && crc32c(s.data, s.bytes) != s.crc) fail("section " + name + " checksum mismatch (corrupt)");
    if (!out.emplace(name, std::move(s)).second) fail("section " + name + " appears twice");
  }
  return out;
}

}  // namespace aligner::io
