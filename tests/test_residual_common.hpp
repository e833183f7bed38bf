// Helpers of the residual codec's tests (test_residual.cpp, test_residual_kernels.cpp): clustered tokens, a trained
// codec, and the int8 values of the VNNI kernel computed here from their rule (not by the library).
#pragma once

#include <aligner/aligner.hpp>

#include "test_common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

namespace aligner_test {

/// Tokens around a few cluster centres (so that centroids mean something), unit-ish scale.
inline std::vector<float> clustered_tokens(std::size_t rows, std::size_t dim, std::size_t clusters, std::uint64_t seed) {
  const auto centres = random_matrix(clusters, dim, seed, true);
  auto noise = random_matrix(rows, dim, seed + 1);
  std::mt19937_64 rng(seed + 2);
  for (std::size_t t = 0; t != rows; ++t) {
    const std::size_t k = rng() % clusters;
    for (std::size_t c = 0; c != dim; ++c) noise[t * dim + c] = centres[k * dim + c] + 0.1f * noise[t * dim + c];
  }
  return noise;
}

/// A codec of k centroids trained on x (seed 3); anisotropy 0: the default.
inline std::shared_ptr<const aligner::residual_codec> trained_codec(const std::vector<float>& x, std::size_t dim, std::size_t nbits,
                                                                    std::size_t k, double anisotropy = 0) {
  return std::make_shared<const aligner::residual_codec>(aligner::train_residual_codec(
      {x.data(), x.size() / dim, dim}, {.nbits = nbits, .centroids = k, .anisotropy = anisotropy, .seed = 3}));
}

/// The int8 rule of the VNNI kernel on `count` values: scale = float(max |x| / 127) (0 for all zeros), codes
/// round-to-even(x / scale) clamped to +-127, both computed here in double.
inline float int8_rule(const float* x, std::size_t count, std::int8_t* codes) {
  double amax = 0;
  for (std::size_t i = 0; i != count; ++i) amax = std::max(amax, double(std::fabs(x[i])));
  const float scale = float(amax / 127.0);
  for (std::size_t i = 0; i != count; ++i)
    codes[i] = scale > 0 ? std::int8_t(std::max(-127.0, std::min(127.0, std::nearbyint(double(x[i]) / double(scale))))) : std::int8_t(0);
  return scale;
}

/// The codec's reconstruction values in int8 (component c, level b at [c * L + b]) and their per-component scales.
struct int8_values {
  std::vector<std::int8_t> codes;
  std::vector<float> scales;
};
inline int8_values residual_int8_values(const aligner::residual_codec& codec) {
  const std::size_t L = codec.levels();
  int8_values v{std::vector<std::int8_t>(codec.dim() * L), std::vector<float>(codec.dim())};
  for (std::size_t c = 0; c != codec.dim(); ++c) v.scales[c] = int8_rule(codec.values().data() + c * L, L, v.codes.data() + c * L);
  return v;
}

/// The query of the VNNI kernel: row i's components times the value scales (float), the int8 rule on the row; out:
/// the int8 codes (n x dim) and each row's scale.
inline void residual_int8_query(const aligner::residual_codec& codec, const std::vector<float>& q, std::size_t n, std::vector<std::int8_t>& codes,
                                std::vector<float>& scales) {
  const std::size_t dim = codec.dim();
  const auto values = residual_int8_values(codec);
  codes.assign(n * dim, 0);
  scales.assign(n, 0.f);
  std::vector<float> x(dim);
  for (std::size_t i = 0; i != n; ++i) {
    for (std::size_t c = 0; c != dim; ++c) x[c] = q[i * dim + c] * values.scales[c];
    scales[i] = int8_rule(x.data(), dim, codes.data() + i * dim);
  }
}

}  // namespace aligner_test
