/** @file amx_emulator.hpp
 *  @brief A software model of the AMX tile instructions the engines issue, for testing them on any x86-64 CPU.
 *
 *  Built only where ALIGNER_AMX_EMULATE is defined (a test build; never for users): amx.hpp's tile statements then
 *  call these functions instead of issuing `tileloadd`, `tdpbf16ps`, ..., and cpu.hpp reports AMX as usable
 *  whatever the CPU (the vector parts of the engines, AVX-512 and VBMI, still need the CPU to have them). So the
 *  AMX engines' logic (tile shapes, tails, panel offsets, pairing, the folds on the tiles' output) is tested on
 *  machines without AMX, and their memory reads are ordinary C++ reads that sanitizers see (a hardware tile load
 *  past a buffer's end is silent).
 *
 *  The model follows the instructions' definitions (Intel SDM, palette 1): eight tiles of at most 16 rows of 64
 *  bytes; `ldtilecfg` sets each tile's rows and bytes a row and zeroes every tile; a load fills the configured rows
 *  and bytes and zeroes the rest; a dot product needs C.rows = A.rows, C.colsb = B.colsb and B.rows = A.colsb / 4,
 *  and a shape that breaks that (or a tile used unconfigured) stops the process with a message, where the hardware
 *  would fault. `tdpbf16ps`: per output element, for each of A's words in order, the two bf16 products added to the
 *  float accumulator one after the other (each product exact unless it leaves float's range; each addition rounded
 *  to nearest even); denormal inputs read as zero and denormal results are flushed to zero. Real AMX-BF16 units may
 *  round the pair's sum differently, so tests compare the emulated tiles with tolerances, as they do the hardware's.
 *  `tdpbssd`: exact, wrapping int32 sums of signed byte products. State is per thread, as the tile registers are. */
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace aligner::detail::amx_emu {

/// ldtilecfg's 64-byte operand (palette 1), as amx.hpp's amx_tile_config lays it out.
struct config_bytes {
  std::uint8_t palette, start_row;
  std::uint8_t reserved[14];
  std::uint16_t colsb[16];
  std::uint8_t rows[16];
};
static_assert(sizeof(config_bytes) == 64);

struct tile_state {
  config_bytes config{};
  alignas(64) unsigned char data[8][16][64]{};
};

inline tile_state& state() noexcept {
  thread_local tile_state s;
  return s;
}

[[noreturn]] inline void fault(const char* what, int t) noexcept {
  std::fprintf(stderr, "aligner AMX emulator: %s (tile %d); the hardware would fault here\n", what, t);
  std::abort();
}

inline void check_tile(int t) noexcept {
  const auto& c = state().config;
  if (t < 0 || t > 7) fault("no such tile", t);
  if (c.palette != 1) fault("tile used with no configuration loaded", t);
  if (c.rows[t] == 0 || c.colsb[t] == 0) fault("tile used but not configured", t);
}

inline void load_config(const void* bytes) noexcept {
  config_bytes c;
  std::memcpy(&c, bytes, sizeof c);
  tile_state& s = state();
  if (c.palette == 0) {  // releases the tiles, as the hardware does
    s = tile_state{};
    return;
  }
  if (c.palette != 1) fault("ldtilecfg: palette other than 0 or 1", -1);
  if (c.start_row != 0) fault("ldtilecfg: start_row other than 0", -1);
  for (int t = 0; t != 16; ++t) {
    if (t >= 8 && (c.rows[t] != 0 || c.colsb[t] != 0)) fault("ldtilecfg: palette 1 has 8 tiles", t);
    if (c.rows[t] > 16 || c.colsb[t] > 64) fault("ldtilecfg: more than 16 rows or 64 bytes a row", t);
    if ((c.rows[t] == 0) != (c.colsb[t] == 0)) fault("ldtilecfg: rows and bytes a row must both be 0 or neither", t);
  }
  for (auto r : c.reserved)
    if (r != 0) fault("ldtilecfg: reserved bytes not zero", -1);
  s.config = c;
  std::memset(s.data, 0, sizeof s.data);
}

inline void store_config(void* bytes) noexcept { std::memcpy(bytes, &state().config, sizeof(config_bytes)); }

inline void zero(int t) noexcept {
  check_tile(t);
  std::memset(state().data[t], 0, sizeof state().data[t]);
}

inline void load(int t, const void* base, long stride) noexcept {
  check_tile(t);
  tile_state& s = state();
  std::memset(s.data[t], 0, sizeof s.data[t]);
  for (int r = 0; r != s.config.rows[t]; ++r)
    std::memcpy(s.data[t][r], static_cast<const unsigned char*>(base) + r * stride, s.config.colsb[t]);
}

inline void store(int t, void* base, long stride) noexcept {
  check_tile(t);
  const tile_state& s = state();
  for (int r = 0; r != s.config.rows[t]; ++r)
    std::memcpy(static_cast<unsigned char*>(base) + r * stride, s.data[t][r], s.config.colsb[t]);
}

/// Checks C.rows = A.rows, C.colsb = B.colsb, B.rows = A.colsb / 4, all multiples of 4 bytes.
inline void check_shapes(int c, int a, int b) noexcept {
  check_tile(c), check_tile(a), check_tile(b);
  if (c == a || c == b || a == b) fault("dot product: C, A and B must be three different tiles", c);
  const auto& k = state().config;
  if (k.rows[c] != k.rows[a]) fault("dot product: C and A differ in rows", c);
  if (k.colsb[c] != k.colsb[b]) fault("dot product: C and B differ in bytes a row", c);
  if (k.colsb[a] % 4 != 0 || k.colsb[c] % 4 != 0) fault("dot product: bytes a row not a multiple of 4", c);
  if (k.rows[b] != k.colsb[a] / 4) fault("dot product: B's rows are not A's words a row", b);
}

inline float bf16_word(const unsigned char* p) noexcept {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  if ((h & 0x7f80u) == 0) h &= 0x8000u;  // a denormal reads as zero (DAZ)
  const std::uint32_t bits = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float flush(float x) noexcept {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;  // a denormal result becomes zero (FTZ)
  std::memcpy(&x, &bits, 4);
  return x;
}

/// C += A B with `word(acc, a, b)` adding the products of one 32-bit word of A's row m (at a) and of B's row k,
/// column n (at b) to element (m, n)'s accumulator of type Acc, A's words in order.
template <class Acc, class Word>
void dot_product(int c, int a, int b, Word word) noexcept {
  check_shapes(c, a, b);
  tile_state& s = state();
  const int rows = s.config.rows[c], cols = s.config.colsb[c] / 4, words = s.config.colsb[a] / 4;
  for (int m = 0; m != rows; ++m)
    for (int n = 0; n != cols; ++n) {
      Acc acc;
      std::memcpy(&acc, &s.data[c][m][4 * n], 4);
      for (int k = 0; k != words; ++k) acc = word(acc, &s.data[a][m][4 * k], &s.data[b][k][4 * n]);
      std::memcpy(&s.data[c][m][4 * n], &acc, 4);
    }
}

/// tdpbf16ps C += A B over bf16 pairs.
inline void dpbf16(int c, int a, int b) noexcept {
  dot_product<float>(c, a, b, [](float acc, const unsigned char* x, const unsigned char* y) {
    // volatile: each product rounded on its own, never fused into the addition
    const volatile float p0 = bf16_word(x) * bf16_word(y);
    acc = flush(acc + p0);
    const volatile float p1 = bf16_word(x + 2) * bf16_word(y + 2);
    return flush(acc + p1);
  });
}

/// tdpbssd C += A B over signed byte quads, int32 sums that wrap.
inline void dpbssd(int c, int a, int b) noexcept {
  dot_product<std::uint32_t>(c, a, b, [](std::uint32_t acc, const unsigned char* x, const unsigned char* y) {
    for (int i = 0; i != 4; ++i) acc += std::uint32_t(std::int32_t(std::int8_t(x[i])) * std::int32_t(std::int8_t(y[i])));
    return acc;
  });
}

}  // namespace aligner::detail::amx_emu
