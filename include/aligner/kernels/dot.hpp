/** @file dot.hpp
 *  @brief Inner product of two float vectors: sum_i a_i b_i.
 *
 *  `ref::dot` is the specification (double accumulation); `dot_kernel` is the xsimd body (two FMA chains,
 *  scalar tail), defined out of class so that per-arch translation units may instantiate it explicitly.
 *  Complexity O(n). Thread-safe (pure functions). */
#pragma once

#include <cstddef>

#include "../core/config.hpp"
#include "simd_compat.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner::ref {

/// Scalar specification: sum of a[i] * b[i] in double.
inline double dot(const float* a, const float* b, std::size_t n) noexcept {
  double sum = 0.0;
  for (std::size_t i = 0; i != n; ++i) sum += double(a[i]) * double(b[i]);
  return sum;
}

}  // namespace aligner::ref

namespace aligner {

struct dot_kernel {
  template <class Arch>
  float operator()(Arch, const float* a, const float* b, std::size_t n) const noexcept;
};

template <class Arch>
float dot_kernel::operator()(Arch, const float* a, const float* b, std::size_t n) const noexcept {
  using batch = xsimd::batch<float, Arch>;
  constexpr std::size_t lanes = batch::size;
  batch sum_even(0.f), sum_odd(0.f);
  std::size_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    sum_even = detail::fmadd(batch::load_unaligned(a + i), batch::load_unaligned(b + i), sum_even);
    sum_odd = detail::fmadd(batch::load_unaligned(a + i + lanes), batch::load_unaligned(b + i + lanes), sum_odd);
  }
  for (; i + lanes <= n; i += lanes)
    sum_even = detail::fmadd(batch::load_unaligned(a + i), batch::load_unaligned(b + i), sum_even);
  float sum = detail::reduce_add(sum_even + sum_odd);
  for (; i != n; ++i) sum += a[i] * b[i];  // scalar tail: xsimd 8.1 has no masked loads
  return sum;
}

/// Inner product with the architecture of the user's compiler flags.
inline float dot(const float* a, const float* b, std::size_t n) noexcept {
  return dot_kernel{}(default_arch{}, a, b, n);
}

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
