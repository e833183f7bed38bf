// libFuzzer target: the index loader on arbitrary bytes (written to a temporary file, loaded mapped and read).
#include <aligner/aligner.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("aligner_fuzz_index_" + std::to_string(::getpid()) + ".bin");
  aligner::io::atomic_write(path, std::string_view(reinterpret_cast<const char*>(data), size));
  for (bool mmap : {true, false}) {
    try {
      const auto r = aligner::aligner_retriever<aligner::exact_backend>::load(path, {.mmap = mmap});
      if (r.dim() <= 64 && r.indexed_tokens() > 0) {  // a valid index must also search without trouble
        std::vector<float> q(2 * r.dim(), 0.5f);
        (void)r.search({q.data(), 2, r.dim()}, {.candidates_per_token = 3, .top = 3});
        (void)r.search({q.data(), 2, r.dim()}, {.top = 3, .exhaustive = true});
      }
    } catch (const aligner::io_error&) {
    } catch (const aligner::invalid_argument&) {
    }
  }
  return 0;
}
