// Shared helpers of the test suite: random token matrices, data-folder lookup with a printed skip note.
#pragma once

#include <aligner/core/types.hpp>
#include <aligner/kernels/layout.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace aligner_test {

/// Panel width of the architecture these tests are compiled for (the kernel tests' tile arithmetic).
inline constexpr std::size_t W = aligner::panel_width<>;

/// Row-major random normal matrix (rows x cols), optionally L2-normalised rows.
inline std::vector<float> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed, bool normalise = false) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> m(rows * cols);
  for (auto& x : m) x = nd(rng);
  if (normalise)
    for (std::size_t r = 0; r != rows; ++r) {
      double n = 0;
      for (std::size_t c = 0; c != cols; ++c) n += double(m[r * cols + c]) * m[r * cols + c];
      n = std::sqrt(n);
      if (n > 0)
        for (std::size_t c = 0; c != cols; ++c) m[r * cols + c] = float(m[r * cols + c] / n);
    }
  return m;
}

/// The query values the AMX-INT8 path multiplies (amx.hpp, query_to_i8_quads), computed here from the rule: per
/// row s = max |q| / 127, x = q / s, a = round(x) in +-127, b = round((x - a) F) with F = min(254, 132623 / dim),
/// value = (a F + b) * float(s / F). Rows are `cols` wide.
inline std::vector<float> amx_i8_query_values(std::vector<float> q, std::size_t cols) {
  const double factor = double(std::min<std::size_t>(254, std::size_t(132623) / cols));
  for (std::size_t r = 0; r * cols < q.size(); ++r) {
    float* row = q.data() + r * cols;
    double amax = 0;
    for (std::size_t c = 0; c != cols; ++c) amax = std::max(amax, double(std::fabs(row[c])));
    const float s = float(amax / 127.0), combined = float(double(s) / factor);
    for (std::size_t c = 0; c != cols; ++c) {
      if (!(s > 0)) {
        row[c] = 0.f;
        continue;
      }
      const double x = double(row[c]) / double(s);
      const double a = std::max(-127.0, std::min(127.0, std::nearbyint(x)));
      const double b = std::nearbyint((x - a) * factor);
      row[c] = float((a * factor + b) * double(combined));
    }
  }
  return q;
}

/// Non-negative random weights (salience-like), some exactly 0 when `zeros`.
inline std::vector<float> random_weights(std::size_t n, std::uint64_t seed, bool zeros = false) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> ud(0.f, 2.f);
  std::vector<float> w(n);
  for (std::size_t i = 0; i != n; ++i) w[i] = (zeros && i % 3 == 1) ? 0.f : ud(rng);
  return w;
}

/// Documents stored back to back: unit token vectors, lengths 1..max_len (every 17th document empty when
/// `with_empty`), salience in [0, 2) with some zeros.
struct random_corpus {
  std::size_t dim = 0;
  std::vector<float> tokens;
  std::vector<std::int64_t> offsets{0};
  std::vector<float> salience;

  random_corpus(std::size_t docs, std::size_t max_len, std::size_t dim_, std::uint64_t seed, bool with_empty = true) : dim(dim_) {
    std::mt19937_64 rng(seed);
    for (std::size_t d = 0; d != docs; ++d) {
      const std::size_t len = (with_empty && d % 17 == 5) ? 0 : 1 + rng() % max_len;
      offsets.push_back(offsets.back() + std::int64_t(len));
    }
    tokens = random_matrix(std::size_t(offsets.back()), dim, seed + 1, true);
    salience = random_weights(std::size_t(offsets.back()), seed + 2, true);
  }
  aligner::sequence_set_view view() const { return {{tokens.data(), std::size_t(offsets.back()), dim}, offsets}; }
};

/// Bundled Cranfield (always present in a clone).
inline std::filesystem::path cranfield_dir() { return std::filesystem::path(ALIGNER_DATA_DIR) / "cranfield"; }

/// ../shared/data/<name>, or an empty path with a printed note when it is absent (the test then skips).
inline std::filesystem::path shared_dataset(const std::string& name) {
  const auto dir = std::filesystem::path(ALIGNER_SHARED_DATA_DIR) / name;
  if (!std::filesystem::is_directory(dir / "glove100")) {
    std::printf("note: %s not found; skipping the cases that need it\n", dir.string().c_str());
    return {};
  }
  return dir;
}

inline float nan_f() { return std::numeric_limits<float>::quiet_NaN(); }
inline float inf_f() { return std::numeric_limits<float>::infinity(); }

}  // namespace aligner_test

using aligner_test::W;
