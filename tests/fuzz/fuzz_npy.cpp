// libFuzzer target: the .npy reader must reject or accept any bytes, never crash or read out of bounds.
#include <aligner/io/npy.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    (void)aligner::io::parse_npy<float>(bytes, "fuzz.npy");
  } catch (const aligner::io_error&) {
  }
  try {
    (void)aligner::io::parse_npy<std::int64_t>(bytes, "fuzz.npy");
  } catch (const aligner::io_error&) {
  }
  try {
    (void)aligner::io::parse_npy<std::int32_t>(bytes, "fuzz.npy");
  } catch (const aligner::io_error&) {
  }
  return 0;
}
