/** @file simd_compat.hpp
 *  @brief Every difference between xsimd 8.1 (Debian 12) and later xsimd goes through here. */
#pragma once

#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#if defined(__SSE2__)
#include <immintrin.h>
#endif

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner::detail {

/// Horizontal sum of a batch (xsimd 8 calls it hadd; xsimd 9+ reduce_add).
template <class Batch>
auto reduce_add(const Batch& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(v);
#else
  return xsimd::hadd(v);
#endif
}

/// Bit l set when lane l of a float mask is true (xsimd 9+ has batch_bool::mask(); 8.1 does not).
template <class Arch>
std::uint64_t mask_bits(const xsimd::batch_bool<float, Arch>& m) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return std::uint64_t(m.mask());
#else
  constexpr std::size_t lanes = xsimd::batch<float, Arch>::size;
#if defined(__AVX512F__)
  if constexpr (lanes == 16 && std::is_base_of_v<xsimd::avx512f, Arch>)
    return std::uint64_t(static_cast<__mmask16>(m));
#endif
#if defined(__AVX__)
  if constexpr (lanes == 8 && std::is_base_of_v<xsimd::avx, Arch>)
    return std::uint64_t(unsigned(_mm256_movemask_ps(static_cast<__m256>(m))));
#endif
#if defined(__SSE2__)
  if constexpr (lanes == 4 && std::is_base_of_v<xsimd::sse2, Arch>)
    return std::uint64_t(unsigned(_mm_movemask_ps(static_cast<__m128>(m))));
#endif
  alignas(64) bool lane[lanes];
  m.store_aligned(lane);
  std::uint64_t bits = 0;
  for (std::size_t l = 0; l != lanes; ++l) bits |= std::uint64_t(lane[l]) << l;
  return bits;
#endif
}

}  // namespace aligner::detail

ALIGNER_KERNEL_DIAGNOSTICS_END
