/** @file crc32c.hpp
 *  @brief CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the index file format.
 *  Uses the SSE4.2 crc32 instruction when the translation unit is compiled with it, else a table. */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace aligner::io {

namespace detail {
inline const std::array<std::uint32_t, 256>& crc32c_table() noexcept {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i != 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k != 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}
}  // namespace detail

/// Continues a CRC-32C over `size` bytes; start with crc = 0. crc32c("123456789") == 0xE3069283.
inline std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
#if defined(__SSE4_2__)
  std::uint64_t c64 = c;
  for (; size >= 8; size -= 8, p += 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    c64 = _mm_crc32_u64(c64, word);
  }
  c = std::uint32_t(c64);
  for (; size; --size, ++p) c = _mm_crc32_u8(c, *p);
#else
  const auto& table = detail::crc32c_table();
  for (; size; --size, ++p) c = table[(c ^ *p) & 0xffu] ^ (c >> 8);
#endif
  return ~c;
}

}  // namespace aligner::io
