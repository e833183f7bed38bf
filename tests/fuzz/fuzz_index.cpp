// libFuzzer target: the index loader on arbitrary bytes (written to a temporary file, loaded mapped and read).
// Each input is also loaded with its checksums repaired, so mutations reach the structural and semantic
// checks behind the CRCs (offsets, shapes, ids, backend bytes) instead of stopping at the first checksum.
#include <aligner/aligner.hpp>
#include <aligner/io/index_file.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace {

/// Recomputes every section CRC and the table CRC where the table lies inside the bytes; returns false when
/// the header is too damaged to repair.
bool repair_checksums(std::string& b) {
  if (b.size() < 32) return false;
  std::uint32_t count;
  std::memcpy(&count, b.data() + 16, 4);
  if (count > 64 || 32 + std::size_t(count) * 64 > b.size()) return false;
  for (std::size_t i = 0; i != count; ++i) {
    char* e = b.data() + 32 + i * 64;
    std::uint64_t offset, bytes;
    std::memcpy(&offset, e + 40, 8);
    std::memcpy(&bytes, e + 48, 8);
    if (offset > b.size() || bytes > b.size() - offset) continue;
    const std::uint32_t crc = aligner::io::crc32c(b.data() + offset, bytes);
    std::memcpy(e + 56, &crc, 4);
  }
  const std::uint64_t size = b.size();
  std::memcpy(b.data() + 24, &size, 8);
  const std::uint32_t crc = aligner::io::crc32c(b.data() + 32, std::size_t(count) * 64, aligner::io::crc32c(b.data(), 20));
  std::memcpy(b.data() + 20, &crc, 4);
  return true;
}

void try_load(const std::filesystem::path& path, std::string_view bytes) {
  aligner::io::atomic_write(path, bytes);
  for (bool mmap : {true, false}) {
    try {
      const auto r = aligner::load_index<aligner::exact_backend>(path, {.mmap = mmap});
      if (r.dim() <= 64 && r.indexed_tokens() > 0) {  // a valid index must also search without trouble
        std::vector<float> q(2 * r.dim(), 0.5f);
        (void)r.search({q.data(), 2, r.dim()}, {.candidates_per_token = 3, .top = 3});
        (void)r.search({q.data(), 2, r.dim()}, {.top = 3, .exhaustive = true});
      }
    } catch (const aligner::io_error&) {
    } catch (const aligner::invalid_argument&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("aligner_fuzz_index_" + std::to_string(::getpid()) + ".bin");
  std::string bytes(reinterpret_cast<const char*>(data), size);
  try_load(path, bytes);
  if (repair_checksums(bytes)) try_load(path, bytes);
  return 0;
}
