/** @file file.hpp
 *  @brief Whole-file reads and atomic writes (temporary file in the same directory, fsync, rename).
 *
 *  A reader or a crash during `atomic_write` sees either the old file or the new one, never a partial one. */
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "error.hpp"

namespace aligner::io {

/// Reads a whole file into memory. Throws aligner::io_error naming the file when it cannot be read.
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(path.string() + ": cannot open for reading (" + std::strerror(errno) + ")");
  std::string data;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw io_error(path.string() + ": cannot determine the file size");
  data.resize(std::size_t(size));
  in.seekg(0, std::ios::beg);
  if (size > 0 && !in.read(data.data(), size)) throw io_error(path.string() + ": read failed");
  return data;
}

/// Writes `bytes` to `path` atomically: a temporary file next to it is written, fsynced and renamed over it.
inline void atomic_write(const std::filesystem::path& path, std::string_view bytes) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::random_device rd;
  std::string name = ".";  // appended piecewise: "." + std::string&& trips GCC 12's -Wrestrict false positive at -O3
  name += path.filename().string();
  name += ".tmp.";
  name += std::to_string(rd());
  const std::filesystem::path tmp = dir / name;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error(tmp.string() + ": cannot create (" + std::strerror(errno) + ")");
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      std::filesystem::remove(tmp);
      throw io_error(tmp.string() + ": write failed (" + why + ")");
    }
    done += std::size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string why = std::strerror(errno);
    std::filesystem::remove(tmp);
    throw io_error(tmp.string() + ": fsync/close failed (" + why + ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::filesystem::remove(tmp);
    throw io_error(path.string() + ": rename failed (" + why + ")");
  }
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);  // make the rename itself durable
    ::close(dfd);
  }
}

/// Splits text into lines (without the '\n', a trailing '\r' removed). A final line without '\n' counts.
inline std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

/// Reads a text file of one entry per line (e.g. doc_ids.txt); a trailing empty line is ignored.
inline std::vector<std::string> read_lines(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  std::vector<std::string> out;
  for (std::string_view line : split_lines(text)) out.emplace_back(line);
  return out;
}

}  // namespace aligner::io
