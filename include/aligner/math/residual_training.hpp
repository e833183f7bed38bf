/** @file residual_training.hpp
 *  @brief Learning a residual codec (kernels/residual.hpp) from a sample of a collection's tokens.
 *
 *  1. Sample: `sample` of the distinct token vectors drawn without replacement (seeded; all when there are fewer),
 *     distinct among a random pool of at most 4 x sample tokens (memory bounded by the sample, not the collection).
 *     Counting each distinct vector once spreads the centroids over what the collection can express instead of
 *     piling them on the most frequent words of a static embedding (GloVe SciFact, residual:2: nDCG@10 0.485 with
 *     every occurrence counted, measured against the distinct sample in bench/RESULTS.md).
 *  2. k-means (Lloyd): the first K sample vectors are the initial centroids; each iteration assigns
 *     every sample vector to its nearest centroid (residual_codec::assign: squared L2 in double among candidates
 *     from the exact scan kernel token_topk over [c, -|c|^2 / 2], in bf16 where AMX-BF16 or AVX512-BF16 runs, else in
 *     float, with a certified fallback; the same tiles that rerank, so assignment runs at their rate on every CPU) and
 *     moves each centroid to its members' mean (accumulated in double). An empty cluster takes half of the largest
 *     one: both get its centroid nudged by +-1/1024 (as FAISS's Clustering does), and the next iteration splits
 *     them. Own Lloyd iterations rather than FAISS's `Clustering`: FAISS is an optional dependency, and its
 *     assignment would need its flat index, while this reuses the kernel every build already has.
 *  3. Quantiser: per component, the residuals x_c - centroid_c of the sample are sorted; the L - 1 cutoffs start at
 *     the quantiles b / L (equal-frequency buckets, ColBERTv2's choice) with each bucket's mean as its value, then
 *     8 Lloyd-Max steps (cutoffs to the midpoints of neighbouring values, values to their buckets' means) lower the
 *     squared reconstruction error (an empty bucket keeps its value).
 *  4. Codes: anisotropic with eta = default_anisotropy(dim) unless `anisotropy` says otherwise (kernels/residual.hpp).
 *  Deterministic for a seed and thread count (assignment does not depend on the number of threads). */
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <unordered_set>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../kernels/residual.hpp"

namespace aligner {

/// Settings of train_residual_codec.
struct residual_params {
  std::size_t nbits = 2;       ///< bits per residual component: 1, 2, 4 or 8
  std::size_t centroids = 0;   ///< K; 0 = default_centroids(tokens)
  std::size_t sample = 0;      ///< tokens to train on; 0 = max(64 K, 65536), at most all
  std::size_t iterations = 10; ///< Lloyd iterations
  double anisotropy = 0;       ///< eta of the anisotropic codes (kernels/residual.hpp); 0 = default_anisotropy(dim); 1 = nearest buckets
  std::uint64_t seed = 0;
  unsigned threads = 1;        ///< assignment threads (0 = all cores)
};

/// PLAID's rule for the number of centroids: 2^floor(log2(16 sqrt(tokens))), at most 65536 and at most `tokens`.
inline std::size_t default_centroids(std::size_t tokens) noexcept {
  if (tokens == 0) return 1;
  const double target = 16.0 * std::sqrt(double(tokens));
  std::size_t k = std::size_t(1) << std::size_t(std::floor(std::log2(target)));
  k = std::min<std::size_t>(k, residual_codec::max_centroids);
  return std::max<std::size_t>(1, std::min(k, tokens));
}

/// The default eta of the anisotropic codes: ScaNN's weight for inner products at or above a cosine T = 0.4,
/// (dim - 1) T^2 / (1 - T^2) (about 18.9 at dim 100, 24.2 at dim 128), at least 1. A random error vector puts
/// 1/dim of its square along the token; eta makes that part count as much as the token's best matches feel it.
inline double default_anisotropy(std::size_t dim) noexcept {
  constexpr double t2 = 0.4 * 0.4;
  return std::max(1.0, double(dim - 1) * t2 / (1.0 - t2));
}

/// A valid residual_params::anisotropy: 0 (the default) or eta in [1, residual_codec::max_anisotropy] (NaN is not).
inline bool anisotropy_setting_valid(double eta) noexcept {
  return eta == 0 || (eta >= 1 && eta <= residual_codec::max_anisotropy);
}

namespace detail {

struct hash_row {
  std::size_t dim;
  matrix_view<float> x;
  std::size_t operator()(std::size_t i) const noexcept {
    std::uint64_t h = 0x9e3779b97f4a7c15ull;
    for (std::size_t c = 0; c != dim; ++c) h = (h ^ std::bit_cast<std::uint32_t>(x.row(i)[c] + 0.f)) * 0x100000001b3ull;
    return std::size_t(h ^ (h >> 29));
  }
};
struct equal_row {
  std::size_t dim;
  matrix_view<float> x;
  bool operator()(std::size_t a, std::size_t b) const noexcept {
    for (std::size_t c = 0; c != dim; ++c)
      if (x.row(a)[c] != x.row(b)[c]) return false;
    return true;
  }
};

/// Nearest of `centroids` (K x dim) for each row of `x`, on `threads` threads, chunk by chunk.
inline void nearest_centroids(matrix_view<float> x, const std::vector<float>& centroids, std::size_t dim, std::uint32_t* ids,
                              unsigned threads) {
  const std::size_t K = centroids.size() / dim;
  // A codec only for its scan panels (one level of dummy quantiser).
  const residual_codec scan(dim, 1, centroids, std::vector<float>(dim, 0.f), std::vector<float>(2 * dim, 0.f));
  constexpr std::size_t chunk = 4096;
  const std::size_t chunks = (x.rows + chunk - 1) / chunk;
  (void)K;
  parallel_for(chunks, threads, [&](std::size_t ch) {
    scan_workspace ws;
    const std::size_t t0 = ch * chunk, rows = std::min(chunk, x.rows - t0);
    scan.assign(x.middle_rows(t0, rows), ids + t0, ws);
  });
}

}  // namespace detail

/// Trains a residual codec on `tokens` (row-major, finite). Throws aligner::invalid_argument for nbits outside
/// {1, 2, 4, 8}, no tokens, more centroids than distinct token vectors or than 65536, or non-finite values. The
/// default K (centroids = 0) is at most the number of distinct vectors.
inline residual_codec train_residual_codec(matrix_view<float> tokens, const residual_params& p = {}) {
  ALIGNER_EXPECTS(p.nbits == 1 || p.nbits == 2 || p.nbits == 4 || p.nbits == 8, "residual nbits must be 1, 2, 4 or 8, got ", p.nbits);
  ALIGNER_EXPECTS(tokens.rows >= 1 && tokens.cols >= 1, "training a residual codec needs tokens, got ", tokens.rows, " x ", tokens.cols);
  ALIGNER_EXPECTS(p.centroids <= tokens.rows, "residual centroids = ", p.centroids, " is more than the ", tokens.rows, " tokens");
  ALIGNER_EXPECTS(p.centroids <= residual_codec::max_centroids, "residual centroids = ", p.centroids, " is more than ",
                  residual_codec::max_centroids);
  ALIGNER_EXPECTS(p.iterations >= 1, "residual training iterations must be >= 1, got ", p.iterations);
  ALIGNER_EXPECTS(anisotropy_setting_valid(p.anisotropy), "residual anisotropy must be 0 (default) or in [1, ",
                  residual_codec::max_anisotropy, "], got ", p.anisotropy);
  detail::check_matrix(tokens, "tokens", true);
  const std::size_t dim = tokens.cols, levels = std::size_t(1) << p.nbits;
  std::size_t K = p.centroids ? p.centroids : default_centroids(tokens.rows);
  const std::size_t want_sample = p.sample ? p.sample : std::max<std::size_t>(64 * K, 65536);
  ALIGNER_EXPECTS(want_sample >= K, "residual training sample = ", want_sample, " is smaller than the ", K, " centroids");

  // 1. The sample, in shuffled order, from the distinct vectors (a word of a static embedding counts once).
  // Deduplication looks at a random pool of at most 4x the sample (all tokens when fewer), so that its hash set
  // stays proportional to the sample, not to the collection.
  std::mt19937_64 pool_rng(p.seed ^ 0x5bd1e995u);
  std::vector<std::size_t> pool(tokens.rows);
  std::iota(pool.begin(), pool.end(), std::size_t{0});
  const std::size_t pool_size = std::min(tokens.rows, 4 * want_sample);
  if (pool_size < tokens.rows) {
    for (std::size_t i = 0; i != pool_size; ++i) std::swap(pool[i], pool[i + std::size_t(pool_rng() % (tokens.rows - i))]);
    pool.resize(pool_size);
    std::sort(pool.begin(), pool.end());
  }
  std::vector<std::size_t> order;
  {
    std::unordered_set<std::size_t, detail::hash_row, detail::equal_row> seen(pool.size() / 4 + 16, detail::hash_row{dim, tokens},
                                                                              detail::equal_row{dim, tokens});
    for (std::size_t t : pool)
      if (seen.insert(t).second) order.push_back(t);
  }
  ALIGNER_EXPECTS(p.centroids <= order.size(), "residual centroids = ", p.centroids, " is more than the ", order.size(),
                  " distinct token vectors", pool_size < tokens.rows ? " of the training pool" : "");
  K = std::min(K, order.size());
  std::mt19937_64 rng(p.seed);
  const std::size_t n = std::min(want_sample, order.size());
  for (std::size_t i = 0; i != n; ++i) std::swap(order[i], order[i + std::size_t(rng() % (order.size() - i))]);
  std::vector<float> sample(n * dim);
  for (std::size_t i = 0; i != n; ++i) std::copy_n(tokens.row(order[i]), dim, sample.data() + i * dim);
  const matrix_view<float> xs(sample.data(), n, dim);

  // 2. k-means from K sample vectors (distinct, as the sample is).
  std::vector<float> centroids(sample.begin(), sample.begin() + std::ptrdiff_t(K * dim));
  std::vector<std::uint32_t> assign(n);
  std::vector<double> sums(K * dim);
  std::vector<std::size_t> counts(K);
  for (std::size_t it = 0; it != p.iterations; ++it) {
    detail::nearest_centroids(xs, centroids, dim, assign.data(), p.threads);
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), std::size_t{0});
    for (std::size_t i = 0; i != n; ++i) {
      ++counts[assign[i]];
      double* s = sums.data() + std::size_t(assign[i]) * dim;
      for (std::size_t c = 0; c != dim; ++c) s[c] += double(sample[i * dim + c]);
    }
    for (std::size_t k = 0; k != K; ++k)
      if (counts[k])
        for (std::size_t c = 0; c != dim; ++c) centroids[k * dim + c] = float(sums[k * dim + c] / double(counts[k]));
    for (std::size_t k = 0; k != K; ++k) {  // empty clusters split the largest
      if (counts[k]) continue;
      const std::size_t big = std::size_t(std::max_element(counts.begin(), counts.end()) - counts.begin());
      for (std::size_t c = 0; c != dim; ++c) {
        const float x = centroids[big * dim + c];
        centroids[k * dim + c] = x * (1.f + 1.f / 1024.f);
        centroids[big * dim + c] = x * (1.f - 1.f / 1024.f);
      }
      counts[k] = counts[big] / 2;
      counts[big] -= counts[k];
    }
  }

  // 3. The quantiser from the final assignment's residuals.
  detail::nearest_centroids(xs, centroids, dim, assign.data(), p.threads);
  std::vector<float> cutoffs(dim * (levels - 1)), values(dim * levels), r(n);
  for (std::size_t c = 0; c != dim; ++c) {
    for (std::size_t i = 0; i != n; ++i) r[i] = sample[i * dim + c] - centroids[std::size_t(assign[i]) * dim + c];
    std::sort(r.begin(), r.end());
    float* cut = cutoffs.data() + c * (levels - 1);
    for (std::size_t b = 1; b != levels; ++b) cut[b - 1] = r[std::min(n - 1, b * n / levels)];
    // Bucket means: bucket b holds r with cut[b-1] <= r < cut[b] (the codec's upper_bound rule); an empty bucket
    // keeps its previous value (first pass: the middle of its cutoffs).
    float* val = values.data() + c * levels;
    auto bucket_means = [&](bool first) {
      std::size_t i = 0;
      for (std::size_t b = 0; b != levels; ++b) {
        double sum = 0;
        std::size_t count = 0;
        while (i != n && (b + 1 == levels || r[i] < cut[b])) {
          sum += r[i];
          ++count;
          ++i;
        }
        if (count) val[b] = float(sum / double(count));
        else if (first) val[b] = b == 0 ? cut[0] : b + 1 == levels ? cut[levels - 2] : float(0.5 * (double(cut[b - 1]) + double(cut[b])));
      }
    };
    bucket_means(true);
    // Lloyd-Max: cutoffs move to the midpoints of neighbouring values, values to their buckets' means (each step
    // lowers the squared reconstruction error of the sample).
    for (std::size_t it = 0; it != 8; ++it) {
      for (std::size_t b = 0; b + 1 < levels; ++b) cut[b] = float(0.5 * (double(val[b]) + double(val[b + 1])));
      bucket_means(false);
    }
  }
  return residual_codec(dim, p.nbits, std::move(centroids), std::move(cutoffs), std::move(values),
                        p.anisotropy == 0 ? default_anisotropy(dim) : p.anisotropy);
}

}  // namespace aligner
