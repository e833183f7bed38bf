/** @file storage.hpp
 *  @brief The one list of token storages: how a precision packs, decodes and loads into registers.
 *
 *  A storage is defined in exactly one place, its `storage_traits<St>` specialisation:
 *  - `name` (CLI and messages) and `disk_tag`, the byte index files store (an explicit table, never the enum's
 *    value, so reordering the enum cannot change what a file means);
 *  - `panel_words(dim, W)`: 32-bit words of one packed panel of W tokens (layout.hpp describes panels), of which
 *    `header_words(W)` come first (int8's per-token scales);
 *  - `encode`: writes one token into lane l of a zeroed panel; `decode`: reads component c of lane l back exactly as
 *    the kernels see it (from any, possibly unaligned, bytes);
 *  - `check`: rejects values the storage cannot hold (float16's range);
 *  - `load_row<Arch>`: component c of W lanes widened to float in registers (f32, f16, i8), or `load_pair` for
 *    bfloat16, whose words hold two components; `scaled`: the finished dot products are multiplied by a per-token
 *    scale loaded with `load_scales`.
 *  `visit_storage(st, f)` turns a run-time storage into a compile-time one; adding a storage is one enum value,
 *  one traits specialisation and one entry in `all_storages`. */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>
#if defined(__SSE2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

/// Storage precision of packed document tokens (scoring always accumulates in float32):
/// - f32: as given;
/// - bf16: bfloat16 (round to nearest even), 2 bytes per component;
/// - f16: IEEE binary16 (round to nearest even), 2 bytes per component; values must lie within +-65504;
/// - i8: int8 per component with one float scale per token (symmetric, scale = max |x| / 127, round to nearest
///   even), 1 byte per component + 4 per token;
/// - residual: a centroid id plus nbits per component of quantised residual, decoded through a codebook
///   (residual.hpp). Its panels cannot be read without the codec, so it has no storage_traits: code that visits
///   storages (visit_storage) handles it first, and `all_storages` lists the self-contained storages only.
enum class storage { f32, bf16, f16, i8, residual };

/// Every self-contained storage (every storage but residual), in the order help texts list them.
inline constexpr storage all_storages[] = {storage::f32, storage::bf16, storage::f16, storage::i8};

// ------------------------------------------------------------------------------------------ scalar conversions

/// float -> bfloat16 bits, round to nearest even (inputs are finite).
inline std::uint16_t to_bf16(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::uint16_t(u >> 16);
}

inline float from_bf16(std::uint16_t h) noexcept {
  const std::uint32_t u = std::uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

/// float -> IEEE binary16 bits, round to nearest even; overflow gives infinity (stores reject it first).
/// Magnitudes below the smallest normal half become subnormal halves (rounded by a float addition that aligns
/// them to the half subnormal grid), normal ones are rounded on the mantissa bits.
inline std::uint16_t to_f16(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  std::uint32_t h;
  if (u >= 0x47800000u) {  // >= 65536 (or Inf/NaN): Inf, NaN stays NaN
    h = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // below 2^-14: subnormal half or zero
    float f;
    std::memcpy(&f, &u, 4);
    f += 0.5f;  // 2^-1 has ulp 2^-24, the half subnormal step: the addition rounds to nearest even
    std::uint32_t v;
    std::memcpy(&v, &f, 4);
    h = v - 0x3f000000u;
  } else {
    const std::uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000fffu + odd;  // rebias the exponent (-112 << 23) and round half to even
    h = u >> 13;             // a carry into the exponent (up to 0x7c00, Inf) is the correct rounding
  }
  return std::uint16_t(h | sign);
}

/// IEEE binary16 bits -> float (exact): normal and subnormal halves alike are shifted into float position and
/// scaled by 2^112; Inf/NaN get the float exponent; the sign goes back on last. (storage_traits<f16>::load_row is
/// the same computation on W lanes.)
inline float from_f16(std::uint16_t h) noexcept {
  const std::uint32_t em = h & 0x7fffu, sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t u;
  if (em >= 0x7c00u) {
    u = 0x7f800000u | ((em & 0x3ffu) << 13);
  } else {
    const std::uint32_t shifted = em << 13;
    float f;
    std::memcpy(&f, &shifted, 4);
    f *= 5.192296858534828e33f;  // 2^112
    std::memcpy(&u, &f, 4);
  }
  u |= sign;
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

/// Symmetric int8 scale of a token: max |x| / 127 (0 for an all-zero token).
inline float i8_scale(const float* token, std::size_t dim) noexcept {
  double amax = 0.0;
  for (std::size_t c = 0; c != dim; ++c) amax = std::max(amax, std::fabs(double(token[c])));
  return float(amax / 127.0);
}

// ------------------------------------------------------------------------------------------ the traits

template <storage St>
struct storage_traits;

/// What a storage has unless its traits say otherwise: one component per row of lanes, no per-token scale, no
/// header words, every finite value representable.
struct storage_defaults {
  static constexpr bool pairs = false, scaled = false;
  static constexpr std::size_t header_words(std::size_t) noexcept { return 0; }
  static void check(matrix_view<float>) noexcept {}
};

template <>
struct storage_traits<storage::f32> : storage_defaults {
  static constexpr std::string_view name = "f32";
  static constexpr std::uint8_t disk_tag = 0;
  static constexpr std::size_t panel_words(std::size_t dim, std::size_t width) noexcept { return dim * width; }
  static void encode(const float* token, std::size_t dim, std::size_t width, std::size_t lane, std::uint32_t* panel) noexcept {
    for (std::size_t c = 0; c != dim; ++c) std::memcpy(panel + c * width + lane, token + c, 4);
  }
  static float decode(const unsigned char* panel, std::size_t width, std::size_t, std::size_t lane, std::size_t c) noexcept {
    float x;
    std::memcpy(&x, panel + (c * width + lane) * 4, 4);
    return x;
  }
  template <class Arch>
  ALIGNER_ALWAYS_INLINE static xsimd::batch<float, Arch> load_row(const unsigned char* panel, std::size_t c) noexcept {
    using batch = xsimd::batch<float, Arch>;
    return batch::load_aligned(reinterpret_cast<const float*>(panel) + c * batch::size);
  }
};

/// bfloat16: component pairs (2c, 2c+1) of a token share one 32-bit word (low half = component 2c), so a panel holds
/// ceil(dim / 2) rows of W words, word (pair c2, lane l) at c2 * W + l; an odd dim pads the last high half with 0.
template <>
struct storage_traits<storage::bf16> : storage_defaults {
  static constexpr std::string_view name = "bf16";
  static constexpr std::uint8_t disk_tag = 1;
  static constexpr bool pairs = true;
  static constexpr std::size_t panel_words(std::size_t dim, std::size_t width) noexcept { return (dim + 1) / 2 * width; }
  static void encode(const float* token, std::size_t dim, std::size_t width, std::size_t lane, std::uint32_t* panel) noexcept {
    for (std::size_t c2 = 0; c2 != (dim + 1) / 2; ++c2) {
      const std::uint32_t lo = to_bf16(token[2 * c2]), hi = 2 * c2 + 1 < dim ? to_bf16(token[2 * c2 + 1]) : 0u;
      panel[c2 * width + lane] = lo | (hi << 16);
    }
  }
  static float decode(const unsigned char* panel, std::size_t width, std::size_t, std::size_t lane, std::size_t c) noexcept {
    std::uint32_t word;
    std::memcpy(&word, panel + ((c / 2) * width + lane) * 4, 4);
    return from_bf16(std::uint16_t(c % 2 ? word >> 16 : word & 0xffffu));
  }
  /// Components 2 c2 and 2 c2 + 1 of W lanes, widened to float (a shift and a mask).
  template <class Arch>
  ALIGNER_ALWAYS_INLINE static void load_pair(const std::uint32_t* panel, std::size_t c2, xsimd::batch<float, Arch>& lo,
                        xsimd::batch<float, Arch>& hi) noexcept {
    using batch = xsimd::batch<float, Arch>;
    using words = xsimd::batch<std::uint32_t, Arch>;
    const words w = words::load_aligned(panel + c2 * batch::size);
    lo = xsimd::bitwise_cast<batch>(words(w << 16));
    hi = xsimd::bitwise_cast<batch>(words(w & words(0xffff0000u)));
  }
};

/// IEEE binary16: half (c, l) at c * W + l (W / 2 words per component row).
template <>
struct storage_traits<storage::f16> : storage_defaults {
  static constexpr std::string_view name = "f16";
  static constexpr std::uint8_t disk_tag = 2;
  static constexpr std::size_t panel_words(std::size_t dim, std::size_t width) noexcept { return dim * width / 2; }
  /// Magnitudes of 65520 and more would round to infinity; non-finite values are refused too.
  static void check(matrix_view<float> tokens) {
    for (std::size_t j = 0; j != tokens.rows; ++j)
      for (std::size_t c = 0; c != tokens.cols; ++c)
        ALIGNER_EXPECTS(std::fabs(tokens.row(j)[c]) < 65520.f, "tokens[", j, "][", c, "] = ", tokens.row(j)[c],
                        " is outside the float16 range (|x| < 65520) of this store");
  }
  static void encode(const float* token, std::size_t dim, std::size_t width, std::size_t lane, std::uint32_t* panel) noexcept {
    auto* bytes = reinterpret_cast<unsigned char*>(panel);
    for (std::size_t c = 0; c != dim; ++c) {
      const std::uint16_t h = to_f16(token[c]);
      std::memcpy(bytes + (c * width + lane) * 2, &h, 2);
    }
  }
  static float decode(const unsigned char* panel, std::size_t width, std::size_t, std::size_t lane, std::size_t c) noexcept {
    std::uint16_t h;
    std::memcpy(&h, panel + (c * width + lane) * 2, 2);
    return from_f16(h);
  }
  /// F16C where the build has it, else from_f16's computation on W lanes.
  template <class Arch>
  ALIGNER_ALWAYS_INLINE static xsimd::batch<float, Arch> load_row(const unsigned char* panel, std::size_t c) noexcept {
    using batch = xsimd::batch<float, Arch>;
    using words = xsimd::batch<std::uint32_t, Arch>;
    constexpr std::size_t width = batch::size;
    const unsigned char* p = panel + c * width * 2;
#if defined(__AVX512F__)
    if constexpr (width == 16) return batch(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__)
    if constexpr (width == 8) return batch(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    if constexpr (width == 4) return batch(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#endif
    words h;
#if defined(__SSE2__)
    if constexpr (width == 4) {
      h = words(_mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128()));
    } else
#endif
    {
      alignas(64) std::uint32_t wide[width];
      for (std::size_t l = 0; l != width; ++l) {
        std::uint16_t half;
        std::memcpy(&half, p + 2 * l, 2);
        wide[l] = half;
      }
      h = words::load_aligned(wide);
    }
    const words em = h & words(0x7fffu), sign = (h & words(0x8000u)) << 16;
    const words finite = xsimd::bitwise_cast<words>(batch(xsimd::bitwise_cast<batch>(words(em << 13)) * batch(5.192296858534828e33f)));
    const words special = words(0x7f800000u) | words((em & words(0x3ffu)) << 13);
    // The choice is made on float batches: xsimd 8.1's select of 32-bit integer batches on AVX-512BW goes through
    // _mm512_mask_blend_epi8/16, which an unoptimised (-O0) build rejects for these operand types. em < 2^15
    // converts to float exactly, so the float compare is the integer one.
    const auto is_special = xsimd::batch_cast<float>(xsimd::bitwise_cast<xsimd::batch<std::int32_t, Arch>>(em)) >= batch(float(0x7c00));
    const batch value = xsimd::select(is_special, xsimd::bitwise_cast<batch>(special), xsimd::bitwise_cast<batch>(finite));
    return xsimd::bitwise_cast<batch>(words(xsimd::bitwise_cast<words>(value) | sign));
  }
};

/// int8 with a per-token scale: W float scales (header), then byte (c, l) at 4 W + c W + l.
template <>
struct storage_traits<storage::i8> : storage_defaults {
  static constexpr std::string_view name = "i8";
  static constexpr std::uint8_t disk_tag = 3;
  static constexpr bool scaled = true;
  static constexpr std::size_t header_words(std::size_t width) noexcept { return width; }
  static constexpr std::size_t panel_words(std::size_t dim, std::size_t width) noexcept { return header_words(width) + dim * width / 4; }
  /// q = round_even(x / scale), clamped to [-127, 127].
  static void encode(const float* token, std::size_t dim, std::size_t width, std::size_t lane, std::uint32_t* panel) noexcept {
    const float scale = i8_scale(token, dim);
    std::memcpy(panel + lane, &scale, 4);
    auto* bytes = reinterpret_cast<unsigned char*>(panel + header_words(width));
    for (std::size_t c = 0; c != dim; ++c) {
      const double q = scale > 0.f ? std::nearbyint(double(token[c]) / double(scale)) : 0.0;
      const auto v = std::int8_t(std::clamp(q, -127.0, 127.0));
      std::memcpy(bytes + c * width + lane, &v, 1);
    }
  }
  static float decode(const unsigned char* panel, std::size_t width, std::size_t, std::size_t lane, std::size_t c) noexcept {
    float scale;
    std::memcpy(&scale, panel + lane * 4, 4);
    std::int8_t q;
    std::memcpy(&q, panel + header_words(width) * 4 + c * width + lane, 1);
    return float(q) * scale;
  }
  /// Sign-extended and converted to float (the scale is applied to the finished dot products).
  template <class Arch>
  ALIGNER_ALWAYS_INLINE static xsimd::batch<float, Arch> load_row(const unsigned char* panel, std::size_t c) noexcept {
    using batch = xsimd::batch<float, Arch>;
    constexpr std::size_t width = batch::size;
    const unsigned char* p = panel + header_words(width) * 4 + c * width;
#if defined(__AVX512F__)
    if constexpr (width == 16)
      return batch(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__AVX2__)
    if constexpr (width == 8)
      return batch(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__SSE2__)
    if constexpr (width == 4) {  // sign-extend 4 bytes: duplicate them up to the top byte of each lane, shift back
      std::int32_t word;
      std::memcpy(&word, p, 4);
      __m128i x = _mm_cvtsi32_si128(word);
      x = _mm_unpacklo_epi8(x, x);
      x = _mm_unpacklo_epi16(x, x);
      return batch(_mm_cvtepi32_ps(_mm_srai_epi32(x, 24)));
    }
#endif
    alignas(64) float lane[width];
    for (std::size_t l = 0; l != width; ++l) lane[l] = float(static_cast<std::int8_t>(p[l]));
    return batch::load_aligned(lane);
  }
  template <class Arch>
  ALIGNER_ALWAYS_INLINE static xsimd::batch<float, Arch> load_scales(const unsigned char* panel) noexcept {
    return xsimd::batch<float, Arch>::load_unaligned(reinterpret_cast<const float*>(panel));
  }
};

// ------------------------------------------------------------------------------------------ run time -> compile time

/// Calls f(std::integral_constant<storage, St>{}) for the run-time storage `st` and returns its result.
template <class F>
decltype(auto) visit_storage(storage st, F&& f) {
  switch (st) {
    case storage::bf16: return f(std::integral_constant<storage, storage::bf16>{});
    case storage::f16: return f(std::integral_constant<storage, storage::f16>{});
    case storage::i8: return f(std::integral_constant<storage, storage::i8>{});
    case storage::f32: break;
    case storage::residual: ALIGNER_ASSERT(false && "residual storage has no traits: callers handle it first"); break;
  }
  return f(std::integral_constant<storage, storage::f32>{});
}

inline const char* to_string(storage st) noexcept {
  if (st == storage::residual) return "residual";
  return visit_storage(st, []<storage S>(std::integral_constant<storage, S>) { return storage_traits<S>::name.data(); });
}

/// Parses a storage name ("f32", "bf16", "f16", "i8"); false for anything else.
inline bool parse_storage(std::string_view text, storage& out) noexcept {
  for (storage s : all_storages)
    if (text == to_string(s)) {
      out = s;
      return true;
    }
  return false;
}

/// The storage names joined by `separator` ("f32|bf16|f16|i8"), for help texts and messages.
inline std::string storage_names(std::string_view separator = "|") {
  std::string out;
  for (storage s : all_storages) (out.empty() ? out : out.append(separator)).append(to_string(s));
  return out;
}

/// The byte an index file stores for a storage.
inline std::uint8_t disk_tag(storage st) noexcept {
  if (st == storage::residual) return 4;
  return visit_storage(st, []<storage S>(std::integral_constant<storage, S>) { return storage_traits<S>::disk_tag; });
}

/// The storage of an index file's byte; false for a tag no storage has.
inline bool storage_from_disk_tag(std::uint8_t tag, storage& out) noexcept {
  if (tag == disk_tag(storage::residual)) {
    out = storage::residual;
    return true;
  }
  for (storage s : all_storages)
    if (disk_tag(s) == tag) {
      out = s;
      return true;
    }
  return false;
}

/// Throws aligner::invalid_argument when `tokens` hold a value storage `st` cannot represent.
inline void check_storable(storage st, matrix_view<float> tokens) {
  if (st == storage::residual) return;  // any finite value has a nearest centroid and a bucket
  visit_storage(st, [&]<storage S>(std::integral_constant<storage, S>) { storage_traits<S>::check(tokens); });
}

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
