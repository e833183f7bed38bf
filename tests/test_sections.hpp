// Test helper: rewrites an index file with one section's payload changed and valid checksums (the loader must then
// catch the inconsistency by its structure, not by a checksum).
#pragma once

#include <aligner/io/section_file.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace aligner_test {

/// Writes `path` from `sections` (decoded from the original file) with mutate(payload) applied to section `victim`
/// (a 1-d section's shape follows its new size).
template <class Sections, class Mutate>
void forge_section(const std::filesystem::path& path, const Sections& sections, const std::string& victim, Mutate&& mutate) {
  std::vector<std::string> payloads;
  std::vector<aligner::io::section_out> out;
  for (const auto& [name, sec] : sections) payloads.emplace_back(sec.data, sec.bytes);
  std::size_t i = 0;
  for (const auto& [name, sec] : sections) {
    auto shape = sec.shape;
    if (name == victim) {
      mutate(payloads[i]);
      if (shape.size() == 1) shape[0] = payloads[i].size() / aligner::io::dtype_size(sec.dtype);  // a resized 1-d payload
    }
    out.push_back({name, sec.dtype, shape, payloads[i]});
    ++i;
  }
  aligner::io::atomic_write(path, aligner::io::encode_sections(out));
}

}  // namespace aligner_test
