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

/// a * b + c with one rounding where the batch's architecture has an FMA. xsimd 8.1's fma() has no AVX-512 version:
/// on avx512 batches it is a * b + c, fused only where the compiler contracts it (GCC from -O2 on, never with
/// -ffp-contract=off), so the 16-wide float tiles computed other bits at -O1 than at -O3 and, with contraction off,
/// ran 1.3x slower. The AVX-512 instruction is issued here directly; other architectures keep xsimd's.
template <class T, class Arch>
ALIGNER_ALWAYS_INLINE xsimd::batch<T, Arch> fmadd(const xsimd::batch<T, Arch>& a, const xsimd::batch<T, Arch>& b,
                                                  const xsimd::batch<T, Arch>& c) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && std::is_base_of_v<xsimd::avx512f, Arch>)
    return xsimd::batch<T, Arch>(_mm512_fmadd_ps(a, b, c));
  else
#endif
    return xsimd::fma(a, b, c);
}

}  // namespace aligner::detail

ALIGNER_KERNEL_DIAGNOSTICS_END
