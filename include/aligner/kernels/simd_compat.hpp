/** @file simd_compat.hpp
 *  @brief Every difference between xsimd 8.1 (Debian 12) and later xsimd goes through here. */
#pragma once

#include <xsimd/xsimd.hpp>

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

/// Horizontal maximum of a batch.
template <class Batch>
auto reduce_max(const Batch& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(v);
#else
  alignas(64) typename Batch::value_type lanes[Batch::size];
  v.store_aligned(lanes);
  auto best = lanes[0];
  for (std::size_t i = 1; i != Batch::size; ++i) best = lanes[i] > best ? lanes[i] : best;
  return best;
#endif
}

}  // namespace aligner::detail
