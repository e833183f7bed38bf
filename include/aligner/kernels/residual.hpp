/** @file residual.hpp
 *  @brief The residual codec: a token as its nearest centroid plus its residual quantised to nbits per component.
 *
 *  A `residual_codec` holds K centroids (K x dim floats, k-means over a sample of the collection: see
 *  math/residual_training.hpp) and, per component c, L - 1 ascending bucket cutoffs and L reconstruction values
 *  (L = 2^nbits, nbits in {1, 2, 4, 8}). A token x is stored as
 *
 *      id = argmin_k |x - centroid_k|^2,   code_c = #{cutoffs of c <= x_c - centroid_id,c}   (for every c)
 *
 *  and decoded as x'_c = centroid_id,c + value_c[code_c]. Bytes per token: 2 (id, K <= 65536) + dim * nbits / 8.
 *
 *  Anisotropic codes (`anisotropy` eta > 1, the default of trained codecs): the error e = x - x' along the token's
 *  own direction u = x / |x| shifts every high score q . x (q near x) by about |q| (u . e), while the error across
 *  it only reaches a score through the part of q that differs from x. So the codes, starting from the nearest
 *  buckets above, then minimise L = |e|^2 + (eta - 1) (u . e)^2 (the score-aware loss of ScaNN, Guo et al. 2020)
 *  by greedy moves: up to `anisotropic_moves` times, the one component whose move to a neighbouring bucket lowers L
 *  most moves; no move lowers L: done. eta = 1 is the plain nearest-bucket code (ColBERTv2's), and a codec read
 *  from a file without eta has eta = 1. On SciFact ctx100 (bench/RESULTS.md) eta = 19 took residual:2 from -0.021
 *  to -0.011 nDCG@10 against float32 (Top-1) and residual:4 from -0.008 to 0.000.
 *
 *  Panel layout (the kernels' unit of W tokens, layout.hpp): ceil(W / 2) words of 16-bit centroid ids (lane l in
 *  half l), then the codes component-major: lane l's code of component c at bit (c * W + l) * nbits of the code
 *  words (a code never straddles a word, as nbits divides 32). Padding lanes are id 0, codes 0.
 *
 *  Scoring reads codes, never a float copy of a document: S_ij = q_i . centroid_id(j) + q_i . residual_j. The
 *  first term is a lookup in the query's centroid scores (q_i . centroid_k for every k, computed once per query,
 *  centroid-major: `centroid_scores_by_centroid`, so a token's scores for all query rows are one contiguous row; a
 *  panel's W rows are transposed into query-row order in registers, `centroid_rows_of_panel`, where a 16-lane
 *  gather per query row and panel had cost a third of the rerank); the second comes from the ordinary tile sweep
 *  over residual panels decoded a panel group at a time (16 KB, in L1): to bf16 pairs where the build or CPU has a
 *  bf16 dot product (`decode_residual_panel_bf16`: one table permute per component pair for nbits 1 and 2, per
 *  component for 4), else to floats (`decode_residual_panel`). `residual_engine` wraps that as a tile engine, so
 *  the fused selection of aligned_rows.hpp runs on it unchanged. The scalar `ref::residual_decode` is the
 *  specification.
 *
 *  The VNNI path (nbits 1, 2, 4 in a build with AVX512-VNNI and AVX512-VBMI, or at run time over the 4- and 8-wide
 *  panels of a build without them where the CPU has both; where AMX does not run): the residual
 *  part is computed in integers. Each component's L reconstruction values are kept in int8 as well,
 *  value_c[b] ~ a_c t_c[b] (the int8 token rule on the L values), and each query row as
 *  q8_ic = round(q_ic a_c / s_i) with s_i = max_c |q_ic a_c| / 127 (`residual_query_to_i8`), so that
 *      S_ij = q_i . centroid_id(j) + s_i Σ_c q8_ic t_c[code_jc]
 *  with the sum exact in int32. A panel group is decoded to t + 128 as unsigned bytes, four components of a token in
 *  one word (`decode_residual_panel_u8`: a vpermb gather, a vpmultishiftqb, a vpternlogd and a vpermb of a 64-byte
 *  table per four components of 16 tokens), and swept by vpdpbusd tiles (`vnni_quad_engine`: 64 multiply-adds per
 *  instruction, twice vdpbf16ps's) whose accumulators start at -128 Σ_c q8_ic, which cancels the offset. The int8
 *  query adds an error of about 5e-4 (rms) to S on SciFact ctx100, 2% of residual:2's own coding error and 6% of
 *  residual:4's (bench/RESULTS.md); the bf16 path adds 7e-5. */
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"
#include "amx.hpp"
#include "int8_vnni.hpp"
#include "layout.hpp"
#include "tile.hpp"
#include "token_scan.hpp"

ALIGNER_KERNEL_DIAGNOSTICS_BEGIN

namespace aligner {

class residual_codec {
 public:
  static constexpr std::size_t max_centroids = 65536;
  /// Greedy bucket moves per token of the anisotropic code (see the file comment).
  static constexpr std::size_t anisotropic_moves = 8;
  /// The largest anisotropy accepted (beyond it, L is the parallel error alone for any float data).
  static constexpr double max_anisotropy = 1e6;

  residual_codec() = default;
  /// A codec from its parts (checked: nbits in {1, 2, 4, 8}, 1..65536 centroids of `dim` finite components, per
  /// component 2^nbits - 1 ascending finite cutoffs and 2^nbits finite values, anisotropy in [1, max_anisotropy]).
  /// Throws aligner::invalid_argument.
  residual_codec(std::size_t dim, std::size_t nbits, std::vector<float> centroids, std::vector<float> cutoffs, std::vector<float> values,
                 double anisotropy = 1.0)
      : dim_(dim), nbits_(nbits), anisotropy_(anisotropy), centroids_(std::move(centroids)), cutoffs_(std::move(cutoffs)), values_(std::move(values)) {
    ALIGNER_EXPECTS(anisotropy >= 1.0 && anisotropy <= max_anisotropy, "residual codec anisotropy must be in [1, ", max_anisotropy,
                    "], got ", anisotropy);
    ALIGNER_EXPECTS(nbits == 1 || nbits == 2 || nbits == 4 || nbits == 8, "residual codec nbits must be 1, 2, 4 or 8, got ", nbits);
    ALIGNER_EXPECTS(dim >= 1 && dim <= (1u << 20), "residual codec dim must be in 1..2^20, got ", dim);
    ALIGNER_EXPECTS(!centroids_.empty() && centroids_.size() % dim == 0, "residual codec: ", centroids_.size(),
                    " centroid values are not a whole number of centroids of dim ", dim);
    k_ = centroids_.size() / dim;
    ALIGNER_EXPECTS(k_ <= max_centroids, "residual codec: ", k_, " centroids, at most ", max_centroids, " are supported");
    const std::size_t levels = std::size_t(1) << nbits;
    ALIGNER_EXPECTS(cutoffs_.size() == dim * (levels - 1), "residual codec: ", cutoffs_.size(), " cutoffs, expected ",
                    dim * (levels - 1));
    ALIGNER_EXPECTS(values_.size() == dim * levels, "residual codec: ", values_.size(), " values, expected ", dim * levels);
    for (float x : centroids_) ALIGNER_EXPECTS(std::isfinite(x), "residual codec: a centroid holds ", x);
    for (float x : values_) ALIGNER_EXPECTS(std::isfinite(x), "residual codec: a reconstruction value is ", x);
    for (std::size_t c = 0; c != dim; ++c)
      for (std::size_t b = 0; b + 1 < levels; ++b) {
        const float x = cutoffs_[c * (levels - 1) + b];
        ALIGNER_EXPECTS(std::isfinite(x) && (b == 0 || x >= cutoffs_[c * (levels - 1) + b - 1]), "residual codec: cutoff ", b,
                        " of component ", c, " is ", x, " (cutoffs must be finite and ascending)");
      }
    // Scan forms of the centroids: [centroid, -|centroid|^2 / 2] packed as float panels, so that the largest inner
    // product with [x, 1] is the nearest centroid (token_topk finds it); and for assign's bf16 candidate scan
    // [centroid, bias high, bias low] packed as bf16 panels, the bias as two bf16 terms (the value rounded, then its
    // remainder) against two 1s of the token, so that it keeps about 16 bits.
    std::vector<float> augmented(k_ * (dim + 1)), split(k_ * (dim + 2));
    for (std::size_t k = 0; k != k_; ++k) {
      const float* centroid = centroids_.data() + k * dim;
      double norm = 0;
      for (std::size_t c = 0; c != dim; ++c) norm += double(centroid[c]) * centroid[c];
      std::copy_n(centroid, dim, augmented.data() + k * (dim + 1));
      std::copy_n(centroid, dim, split.data() + k * (dim + 2));
      const float bias = float(-0.5 * norm), high = from_bf16(to_bf16(bias));
      augmented[k * (dim + 1) + dim] = bias;
      split[k * (dim + 2) + dim] = high;
      split[k * (dim + 2) + dim + 1] = bias - high;
      max_centroid_norm_ = std::max(max_centroid_norm_, std::sqrt(norm));
    }
    scan_panels_.resize(packed_words(storage::f32, k_, dim + 1));
    pack_panels(storage::f32, matrix_view<float>(augmented.data(), k_, dim + 1), scan_panels_.data());
    scan_panels_bf16_.resize(packed_words(storage::bf16, k_, dim + 2));
    pack_panels(storage::bf16, matrix_view<float>(split.data(), k_, dim + 2), scan_panels_bf16_.data());
    padded_values_.assign(values_.begin(), values_.end());
    padded_values_.resize(values_.size() + 16, 0.f);  // the AVX-512 decode loads 16 values from any component's table
    if (nbits <= 2) {  // bf16 pair tables: entry a + L b of pair c2 = bf16(value of 2c2, code a) | bf16(value of 2c2 + 1, code b) << 16
      const std::size_t pairs = (dim + 1) / 2;
      pair_words_.assign(pairs * 16, 0u);
      for (std::size_t c2 = 0; c2 != pairs; ++c2)
        for (std::size_t a = 0; a != levels; ++a)
          for (std::size_t b = 0; b != levels; ++b) {
            const std::uint32_t lo = to_bf16(values_[2 * c2 * levels + a]);
            const std::uint32_t hi = 2 * c2 + 1 < dim ? to_bf16(values_[(2 * c2 + 1) * levels + b]) : 0u;
            pair_words_[c2 * 16 + a + levels * b] = lo | hi << 16;
          }
    } else if (nbits == 4) {  // bf16 pair tables of 32 halves: bf16 values of component 2c2 (codes 0-15), then of 2c2 + 1
      const std::size_t pairs = (dim + 1) / 2;
      value_halves_.assign(pairs * 32, 0u);
      for (std::size_t c = 0; c != dim; ++c)
        for (std::size_t b = 0; b != 16; ++b) value_halves_[(c / 2) * 32 + (c % 2) * 16 + b] = std::uint16_t(to_bf16(values_[c * 16 + b]));
    }
    if (nbits <= 4) {  // the int8 values of the VNNI kernel: the int8 token rule on each component's L values
      value_scales_.resize(dim);
      value_i8_.resize(dim * levels);
      quad_tables_.assign((dim + 3) / 4 * 16, 0x80808080u);
      auto* bytes = reinterpret_cast<std::uint8_t*>(quad_tables_.data());
      for (std::size_t c = 0; c != dim; ++c) {
        const float scale = i8_scale(values_.data() + c * levels, levels);
        value_scales_[c] = scale;
        for (std::size_t b = 0; b != levels; ++b) {
          const double t = scale > 0.f ? std::nearbyint(double(values_[c * levels + b]) / double(scale)) : 0.0;
          value_i8_[c * levels + b] = std::int8_t(std::clamp(t, -127.0, 127.0));
          bytes[(c / 4) * 64 + (c % 4) * 16 + b] = std::uint8_t(value_i8_[c * levels + b] + 128);
        }
      }
    }
  }

  std::size_t dim() const noexcept { return dim_; }
  std::size_t nbits() const noexcept { return nbits_; }
  std::size_t levels() const noexcept { return std::size_t(1) << nbits_; }
  std::size_t centroids() const noexcept { return k_; }
  /// eta of the anisotropic code (1: nearest buckets).
  double anisotropy() const noexcept { return anisotropy_; }
  std::span<const float> centroid_values() const noexcept { return centroids_; }
  std::span<const float> cutoffs() const noexcept { return cutoffs_; }
  std::span<const float> values() const noexcept { return values_; }
  const float* centroid(std::size_t k) const noexcept { return centroids_.data() + k * dim_; }
  /// "residual:N", as the CLI's --storage names it.
  std::string name() const { return "residual:" + std::to_string(nbits_); }

  /// 32-bit words of one panel of W tokens.
  std::size_t panel_words(std::size_t width) const noexcept { return (width + 1) / 2 + (dim_ * width * nbits_ + 31) / 32; }
  /// Bytes per token of the codes proper (centroid id + residual bits), without panel padding.
  double bytes_per_token() const noexcept { return 2.0 + double(dim_ * nbits_) / 8.0; }

  /// How assign finds its candidates: `automatic` scans the bf16 copy of the centroids where bf16 tiles run with a
  /// rounded query (AMX-BF16, AVX512-BF16: bf16_query_rounded(), about twice the float rate) and the float copy
  /// elsewhere; `f32` and `bf16` choose one (tests, benchmarks). The choice never changes the result.
  enum class centroid_scan { automatic, f32, bf16 };
  /// Candidates of assign's scan per token: the float scan's rounding is small against the gaps between a token's
  /// nearest centroids, bf16's 2^-8 of |token| |centroid| less so (Gaussian tokens, 16,384 centroids of dim 128: 4
  /// candidates leave 1% of the tokens uncertified in bf16, 8 none; every candidate more costs the scan about 2%).
  static constexpr std::size_t assign_candidates_f32 = 4, assign_candidates_bf16 = 8;

  /// The nearest centroid of each token into ids[t]: the smallest squared L2 distance computed in double, ties toward
  /// the smaller id, whatever `how` scans with. A scan (token_topk of [token, 1] against [centroid, -|centroid|^2 /
  /// 2], in float or bfloat16) only proposes a few candidates (above), ranked by its rounded scores; the best of
  /// them in double is certified when its exact score beats the last candidate's scan score by more than the scan's
  /// rounding can move any score (a bound from the token's norm and the largest centroid norm). Tokens a bf16 scan
  /// leaves uncertified are scanned again in float, and those a float scan leaves uncertified have every centroid
  /// measured in double. Preconditions (unchecked): tokens.cols == dim(), values finite.
  void assign(matrix_view<float> tokens, std::uint32_t* ids, scan_workspace& ws, centroid_scan how = centroid_scan::automatic) const {
    const bool bf16 = how == centroid_scan::bf16 || (how == centroid_scan::automatic && bf16_query_rounded<>());
    constexpr std::size_t chunk = 1024;
    std::vector<std::size_t> open;  // tokens of the chunk not certified yet
    for (std::size_t t0 = 0; t0 < tokens.rows; t0 += chunk) {
      open.resize(std::min(chunk, tokens.rows - t0));
      std::iota(open.begin(), open.end(), t0);
      if (bf16) assign_pass(tokens, ids, ws, storage::bf16, open);
      if (!open.empty()) assign_pass(tokens, ids, ws, storage::f32, open);
      for (std::size_t t : open) {  // not certified: every centroid, in double
        std::uint32_t pick = 0;
        double nearest = std::numeric_limits<double>::infinity();
        for (std::size_t id = 0; id != k_; ++id) nearest_of(tokens.row(t), id, nearest, pick);
        ids[t] = pick;
      }
    }
  }

  /// Bucket of residual value x of component c: the number of its cutoffs <= x.
  std::size_t bucket(std::size_t c, float x) const noexcept {
    const float* cut = cutoffs_.data() + c * (levels() - 1);
    return std::size_t(std::upper_bound(cut, cut + levels() - 1, x) - cut);
  }

  /// Writes token `token` (assigned centroid `id`) into lane `lane` of a zeroed panel of width `width`: nearest
  /// buckets, then (anisotropy > 1) the greedy moves of the file comment.
  void encode(const float* token, std::uint32_t id, std::size_t width, std::size_t lane, std::uint32_t* panel) const noexcept {
    reinterpret_cast<std::uint16_t*>(panel)[lane] = std::uint16_t(id);
    std::uint32_t* codes = panel + (width + 1) / 2;
    const float* cent = centroid(id);
    for (std::size_t c = 0; c != dim_; ++c) {
      const std::size_t bit = (c * width + lane) * nbits_;
      codes[bit / 32] |= std::uint32_t(bucket(c, token[c] - cent[c])) << (bit % 32);
    }
    if (anisotropy_ > 1.0) shape_codes(token, cent, width, lane, codes);
  }

  /// L = |e|^2 + (anisotropy - 1) (u . e)^2 of token `token` coded as centroid `id` plus lane `lane`'s codes of
  /// `panel` (double; u = token / |token|, the parallel term 0 for a zero token). The encoder's objective.
  double anisotropic_loss(const float* token, const void* panel, std::size_t width, std::size_t lane) const noexcept {
    const float* cent = centroid(centroid_of(panel, lane));
    double norm = 0, e2 = 0, par = 0;
    for (std::size_t c = 0; c != dim_; ++c) norm += double(token[c]) * double(token[c]);
    norm = std::sqrt(norm);
    for (std::size_t c = 0; c != dim_; ++c) {
      const double e = double(token[c]) - double(cent[c]) - double(values_[c * levels() + code_of(panel, width, lane, c)]);
      e2 += e * e;
      if (norm > 0) par += double(token[c]) / norm * e;
    }
    return e2 + (anisotropy_ - 1.0) * par * par;
  }

  /// Centroid id of lane `lane` of a panel (any alignment).
  static std::uint32_t centroid_of(const void* panel, std::size_t lane) noexcept {
    std::uint16_t id;
    std::memcpy(&id, static_cast<const unsigned char*>(panel) + 2 * lane, 2);
    return id;
  }
  /// Code of component c of lane `lane` of a panel (any alignment).
  std::size_t code_of(const void* panel, std::size_t width, std::size_t lane, std::size_t c) const noexcept {
    const std::size_t bit = (c * width + lane) * nbits_;
    std::uint32_t word;
    std::memcpy(&word, static_cast<const unsigned char*>(panel) + 4 * ((width + 1) / 2 + bit / 32), 4);
    return (word >> (bit % 32)) & (std::uint32_t(levels()) - 1u);
  }
  /// Decoded component c of lane `lane`: centroid plus reconstruction value.
  float decode(const void* panel, std::size_t width, std::size_t lane, std::size_t c) const noexcept {
    return centroid(centroid_of(panel, lane))[c] + values_[c * levels() + code_of(panel, width, lane, c)];
  }
  /// Copies lane `from_lane` of panel `from` (width from_width) into lane `to_lane` of the zeroed panel `to`
  /// (width to_width), code for code: a file of another panel width is repacked without re-encoding.
  void copy_lane(const void* from, std::size_t from_width, std::size_t from_lane, std::uint32_t* to, std::size_t to_width,
                 std::size_t to_lane) const noexcept {
    reinterpret_cast<std::uint16_t*>(to)[to_lane] = std::uint16_t(centroid_of(from, from_lane));
    std::uint32_t* codes = to + (to_width + 1) / 2;
    for (std::size_t c = 0; c != dim_; ++c) {
      const std::size_t bit = (c * to_width + to_lane) * nbits_;
      codes[bit / 32] |= std::uint32_t(code_of(from, from_width, from_lane, c)) << (bit % 32);
    }
  }

  /// The centroids as float panels of dim + 1 components [centroid, -|centroid|^2 / 2] (the nearest-centroid scan).
  const std::uint32_t* scan_panels() const noexcept { return scan_panels_.data(); }
  /// The reconstruction table padded for the vector decode (values() followed by 16 zeros).
  const float* padded_values() const noexcept { return padded_values_.data(); }
  /// nbits 1 and 2: per component pair c2, 16 words whose entry a + L b is the bf16 pair of reconstruction values
  /// (code a of component 2c2, code b of 2c2 + 1; high half 0 past an odd dim); empty for more bits.
  const std::uint32_t* pair_words() const noexcept { return pair_words_.empty() ? nullptr : pair_words_.data(); }
  /// nbits 4: per component pair c2, 32 halves: entry b is bf16(value of component 2c2, code b), entry 16 + b that of
  /// 2c2 + 1 (0 past an odd dim); empty for other nbits.
  const std::uint16_t* value_halves() const noexcept { return value_halves_.empty() ? nullptr : value_halves_.data(); }

  /// nbits 1, 2, 4: the reconstruction values in int8, value_c[b] ~ value_scale(c) * value_i8(c, b) (the int8 token
  /// rule of storage.hpp on the component's L values: scale max |value_c| / 127, round to nearest even); the VNNI
  /// kernel scores with them. value_scales() is null for nbits 8.
  const float* value_scales() const noexcept { return value_scales_.empty() ? nullptr : value_scales_.data(); }
  std::int8_t value_i8(std::size_t c, std::size_t b) const noexcept { return value_i8_[c * levels() + b]; }
  /// nbits 1, 2, 4: per component quad c4, 64 bytes (16 words) whose byte 16 j + b is value_i8(4 c4 + j, b) + 128
  /// (128 past the levels and past dim): the vpermb table of decode_residual_panel_u8. Null for nbits 8.
  const std::uint32_t* quad_tables() const noexcept { return quad_tables_.empty() ? nullptr : quad_tables_.data(); }

  /// The codec as bytes: u64 dim, nbits, centroids, then the centroids, cutoffs and values as float32, then (only
  /// when it is not 1, so that a nearest-bucket codec keeps the bytes of earlier versions) the anisotropy as float64.
  std::string serialize() const {
    const std::uint64_t header[3] = {dim_, nbits_, k_};
    std::string out(sizeof header, '\0');
    std::memcpy(out.data(), header, sizeof header);
    auto append = [&](const std::vector<float>& v) { out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)); };
    append(centroids_);
    append(cutoffs_);
    append(values_);
    if (anisotropy_ != 1.0) out.append(reinterpret_cast<const char*>(&anisotropy_), sizeof anisotropy_);
    return out;
  }
  /// Inverse of serialize; throws aligner::io_error naming what is wrong (truncated, another size, bad values).
  static residual_codec deserialize(std::string_view bytes) {
    std::uint64_t h[3];
    if (bytes.size() < sizeof h) throw io_error("residual codec: " + std::to_string(bytes.size()) + " bytes, need at least 24");
    std::memcpy(h, bytes.data(), sizeof h);
    if (h[0] == 0 || h[0] > (1u << 20) || !(h[1] == 1 || h[1] == 2 || h[1] == 4 || h[1] == 8) || h[2] == 0 || h[2] > max_centroids)
      throw io_error("residual codec: implausible header (dim " + std::to_string(h[0]) + ", nbits " + std::to_string(h[1]) +
                     ", centroids " + std::to_string(h[2]) + ")");
    const std::size_t levels = std::size_t(1) << h[1];
    const std::size_t floats = h[2] * h[0] + h[0] * (levels - 1) + h[0] * levels;
    const std::size_t base = sizeof h + floats * sizeof(float);
    if (bytes.size() != base && bytes.size() != base + sizeof(double))
      throw io_error("residual codec: " + std::to_string(bytes.size()) + " bytes, expected " + std::to_string(base) + " or " +
                     std::to_string(base + sizeof(double)) + " (truncated or padded)");
    double anisotropy = 1.0;
    if (bytes.size() != base) {
      std::memcpy(&anisotropy, bytes.data() + base, sizeof anisotropy);
      if (!(anisotropy > 1.0 && anisotropy <= max_anisotropy))  // a stored 1 is never written
        throw io_error("residual codec: implausible anisotropy " + std::to_string(anisotropy));
    }
    auto take = [&](std::size_t offset, std::size_t count) {
      std::vector<float> v(count);
      std::memcpy(v.data(), bytes.data() + sizeof h + offset * sizeof(float), count * sizeof(float));
      return v;
    };
    try {
      return residual_codec(h[0], h[1], take(0, h[2] * h[0]), take(h[2] * h[0], h[0] * (levels - 1)),
                            take(h[2] * h[0] + h[0] * (levels - 1), h[0] * levels), anisotropy);
    } catch (const invalid_argument& e) {
      throw io_error(e.what());
    }
  }

  friend bool operator==(const residual_codec& a, const residual_codec& b) noexcept {
    return a.dim_ == b.dim_ && a.nbits_ == b.nbits_ && a.anisotropy_ == b.anisotropy_ && a.centroids_ == b.centroids_ &&
           a.cutoffs_ == b.cutoffs_ && a.values_ == b.values_;
  }

 private:
  /// The greedy moves of the anisotropic code on lane `lane` (codes: the panel's code words, nearest buckets set).
  void shape_codes(const float* token, const float* cent, std::size_t width, std::size_t lane, std::uint32_t* codes) const noexcept {
    double norm = 0;
    for (std::size_t c = 0; c != dim_; ++c) norm += double(token[c]) * double(token[c]);
    if (!(norm > 0)) return;
    norm = std::sqrt(norm);
    const std::size_t L = levels();
    const std::uint32_t mask = std::uint32_t(L) - 1u;
    auto code = [&](std::size_t c) {
      const std::size_t bit = (c * width + lane) * nbits_;
      return (codes[bit / 32] >> (bit % 32)) & mask;
    };
    auto error = [&](std::size_t c, std::uint32_t b) { return double(token[c]) - double(cent[c]) - double(values_[c * L + b]); };
    double par = 0;  // u . e
    for (std::size_t c = 0; c != dim_; ++c) par += double(token[c]) / norm * error(c, code(c));
    const double w = anisotropy_ - 1.0;
    for (std::size_t move = 0; move != anisotropic_moves; ++move) {
      double best = 0, best_par = par;
      std::size_t best_c = dim_;
      std::uint32_t best_b = 0;
      for (std::size_t c = 0; c != dim_; ++c) {
        const std::uint32_t b0 = code(c);
        const double u = double(token[c]) / norm, e0 = error(c, b0);
        for (std::uint32_t b : {b0 - 1u, b0 + 1u}) {
          if (b >= L) continue;  // below 0 wraps past L
          const double e1 = error(c, b), next = par + u * (e1 - e0);
          const double gain = (e1 * e1 - e0 * e0) + w * (next * next - par * par);
          if (gain < best) {
            best = gain;
            best_c = c;
            best_b = b;
            best_par = next;
          }
        }
      }
      if (best_c == dim_) break;
      const std::size_t bit = (best_c * width + lane) * nbits_;
      codes[bit / 32] = (codes[bit / 32] & ~(mask << (bit % 32))) | (best_b << (bit % 32));
      par = best_par;
    }
  }

  /// Keeps centroid id as (nearest, pick) if it is nearer to x than pick, or as near with a smaller id.
  void nearest_of(const float* x, std::size_t id, double& nearest, std::uint32_t& pick) const noexcept {
    const double d2 = squared_distance(x, centroid(id), dim_);
    if (d2 < nearest || (d2 == nearest && id < pick)) nearest = d2, pick = std::uint32_t(id);
  }

  /// Sum of term(i) for i < dim in double, in four interleaved partial sums (components i, i + 4, ... each) added at
  /// the end: one fixed order for any inputs (so equal vectors tie exactly), without one long chain of dependent
  /// additions.
  template <class Term>
  static double interleaved_sum(std::size_t dim, Term term) noexcept {
    double part[4] = {0, 0, 0, 0};
    std::size_t i = 0;
    for (; i + 4 <= dim; i += 4)
      for (std::size_t l = 0; l != 4; ++l) part[l] += term(i + l);
    for (std::size_t l = 0; i != dim; ++i, ++l) part[l] += term(i);
    return (part[0] + part[1]) + (part[2] + part[3]);
  }

  /// |x - c|^2 in double (interleaved_sum).
  static double squared_distance(const float* x, const float* c, std::size_t dim) noexcept {
    return interleaved_sum(dim, [&](std::size_t i) {
      const double e = double(x[i]) - double(c[i]);
      return e * e;
    });
  }

  /// One scan of assign over the tokens `open` (storage f32 or bf16): writes the certified tokens' centroids and
  /// leaves the others in `open`.
  void assign_pass(matrix_view<float> tokens, std::uint32_t* ids, scan_workspace& ws, storage st, std::vector<std::size_t>& open) const {
    const bool bf16 = st == storage::bf16;
    const std::size_t cols = dim_ + (bf16 ? 2 : 1), k = std::min(k_, bf16 ? assign_candidates_bf16 : assign_candidates_f32);
    // |scan score - exact score| <= rel * |x| * max|c| + bias_rel * max|bias| + acc * (|x| max|c| + max|bias|):
    // bf16 rounds each factor (2^-9 each, so 2^-8 + 2^-18 a product) and the bias's remainder; float rounds the bias
    // once; both sum dim + 2 terms in float: at most n = 2 (dim + 4) roundings (a product and a sum each, without
    // FMA), so the sum is within gamma_n = n u / (1 - n u) of the sum of magnitudes (u = 2^-24).
    const double nu = 2.0 * double(dim_ + 4) * 0x1p-24;
    const double rel = bf16 ? 0x1p-8 + 0x1p-17 : 0.0, bias_rel = bf16 ? 0x1p-17 : 0x1p-24, acc = nu / (1.0 - nu);
    const double max_bias = 0.5 * max_centroid_norm_ * max_centroid_norm_;
    std::vector<float>& augmented = ws.rows_in;  // the workspace's: no fresh pages for every chunk
    augmented.resize(open.size() * cols);
    for (std::size_t r = 0; r != open.size(); ++r) {
      std::copy_n(tokens.row(open[r]), dim_, augmented.data() + r * cols);
      std::fill(augmented.data() + r * cols + dim_, augmented.data() + (r + 1) * cols, 1.f);
    }
    topk_result& best = ws.rows_out;  // in the buffers of the last chunk
    best.reset(open.size(), k);
    const matrix_view<float> scan_rows(augmented.data(), open.size(), cols);
    if (bf16)
      token_topk<storage::bf16>(scan_rows, scan_panels_bf16_.data(), k_, k, best, ws);
    else
      token_topk<storage::f32>(scan_rows, scan_panels_.data(), k_, k, best, ws);
    std::size_t kept = 0;
    for (std::size_t r = 0; r != open.size(); ++r) {
      const float* x = tokens.row(open[r]);
      std::uint32_t pick = 0;
      double nearest = std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j != k; ++j)
        if (best.ids[r * k + j] >= 0) nearest_of(x, std::size_t(best.ids[r * k + j]), nearest, pick);
      bool certified = k == k_;  // every centroid was a candidate
      if (!certified) {  // a centroid outside the candidates scored at most the last one's scan score, up to rounding
        const double x2 = interleaved_sum(dim_, [&](std::size_t i) { return double(x[i]) * double(x[i]); });
        const double xc = std::sqrt(x2) * max_centroid_norm_;
        const double bound = 1.0001 * (rel * xc + bias_rel * max_bias + acc * (xc + max_bias)) + 1e-30 * double(dim_ + 2);
        certified = 0.5 * (x2 - nearest) - double(best.scores[r * k + k - 1]) > bound;
      }
      if (certified)
        ids[open[r]] = pick;
      else
        open[kept++] = open[r];
    }
    open.resize(kept);
  }

  std::size_t dim_ = 0, nbits_ = 0, k_ = 0;
  double anisotropy_ = 1.0;
  std::vector<float> centroids_, cutoffs_, values_, padded_values_;
  std::vector<std::uint32_t> pair_words_;
  std::vector<std::uint16_t> value_halves_;
  std::vector<float> value_scales_;
  std::vector<std::int8_t> value_i8_;
  aligned_vector<std::uint32_t> quad_tables_;
  aligned_vector<std::uint32_t> scan_panels_;
  aligned_vector<std::uint32_t> scan_panels_bf16_;  ///< assign's bf16 candidate scan: [centroid, bias high, bias low]
  double max_centroid_norm_ = 0;                     ///< the largest |centroid| (L2, in double): assign's rounding bound
};

namespace ref {

/// Scalar specification of the residual decode: component c of lane l (< W) of one panel into out[c * W + l], the
/// residual only (no centroid) when `with_centroid` is false.
inline void residual_decode(const residual_codec& codec, const void* panel, std::size_t width, bool with_centroid, float* out) {
  for (std::size_t c = 0; c != codec.dim(); ++c)
    for (std::size_t l = 0; l != width; ++l)
      out[c * width + l] = with_centroid ? codec.decode(panel, width, l, c) : codec.values()[c * codec.levels() + codec.code_of(panel, width, l, c)];
}

}  // namespace ref

/// The residual part of one panel, component-major (out[c * W + l] = value_c[code of lane l]): the float panel the
/// tile sweep reads. `panel` 4-byte aligned. AVX-512 (W = 16): one table permute (nbits 2, 4), blend (1) or gather
/// (8) per component. AVX2 (W = 8): the same on 8 lanes, with two 8-entry permutes and a blend for nbits 4 (a scalar
/// loop here took 44% of a SciFact postings search on a Zen 3 core, the tiles 19%).
template <class Arch = default_arch>
void decode_residual_panel(const residual_codec& codec, const std::uint32_t* panel, float* out) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
  const std::uint32_t* codes = panel + (width + 1) / 2;
  const std::size_t dim = codec.dim(), nbits = codec.nbits(), levels = codec.levels();
  const float* values = codec.padded_values();
#if defined(__AVX512F__)
  if constexpr (width == 16) {
    switch (nbits) {
      case 1: {
        const auto* masks = reinterpret_cast<const std::uint16_t*>(codes);
        for (std::size_t c = 0; c != dim; ++c)
          _mm512_storeu_ps(out + c * 16, _mm512_mask_blend_ps(__mmask16(masks[c]), _mm512_set1_ps(values[2 * c]), _mm512_set1_ps(values[2 * c + 1])));
        return;
      }
      case 2: {
        const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i mask = _mm512_set1_epi32(3);
        for (std::size_t c = 0; c != dim; ++c) {
          const __m512i idx = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(codes[c])), shifts), mask);
          _mm512_storeu_ps(out + c * 16, _mm512_permutexvar_ps(idx, _mm512_loadu_ps(values + 4 * c)));
        }
        return;
      }
      case 4: {
        const __m512i shifts = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        const __m512i mask = _mm512_set1_epi32(15);
        for (std::size_t c = 0; c != dim; ++c) {
          const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(int(codes[2 * c]))),
                                                  _mm256_set1_epi32(int(codes[2 * c + 1])), 1);
          const __m512i idx = _mm512_and_si512(_mm512_srlv_epi32(both, shifts), mask);
          _mm512_storeu_ps(out + c * 16, _mm512_permutexvar_ps(idx, _mm512_loadu_ps(values + 16 * c)));
        }
        return;
      }
      default: {  // 8
        for (std::size_t c = 0; c != dim; ++c) {
          const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 4 * c)));
          _mm512_storeu_ps(out + c * 16, _mm512_i32gather_ps(idx, values + 256 * c, 4));
        }
        return;
      }
    }
  }
#endif
#if defined(__AVX2__)
  if constexpr (width == 8) {  // one component of 8 lanes a step: the permutes of the AVX-512 decode on 8 lanes
    switch (nbits) {
      case 1: {
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(codes);
        const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        for (std::size_t c = 0; c != dim; ++c) {
          const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(int(bytes[c])), bits), bits);
          _mm256_storeu_ps(out + c * 8, _mm256_blendv_ps(_mm256_set1_ps(values[2 * c]), _mm256_set1_ps(values[2 * c + 1]),
                                                         _mm256_castsi256_ps(set)));
        }
        return;
      }
      case 2: {
        const auto* halves = reinterpret_cast<const std::uint16_t*>(codes);
        const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        const __m256i mask = _mm256_set1_epi32(3);
        for (std::size_t c = 0; c != dim; ++c) {
          const __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(halves[c])), shifts), mask);
          _mm256_storeu_ps(out + c * 8, _mm256_permutevar8x32_ps(_mm256_loadu_ps(values + 4 * c), idx));
        }
        return;
      }
      case 4: {
        const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        const __m256i mask = _mm256_set1_epi32(15);
        for (std::size_t c = 0; c != dim; ++c) {
          const __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(codes[c])), shifts), mask);
          const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(values + 16 * c), idx);
          const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(values + 16 * c + 8), idx);
          // codes 8..15 take the upper half of the table: bit 3 of the code, moved to the sign bit, picks it
          _mm256_storeu_ps(out + c * 8, _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28))));
        }
        return;
      }
      default: {  // 8
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(codes);
        for (std::size_t c = 0; c != dim; ++c) {
          const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes + 8 * c)));
          _mm256_storeu_ps(out + c * 8, _mm256_i32gather_ps(values + 256 * c, idx, 4));
        }
        return;
      }
    }
  }
#endif
  const std::uint32_t mask = std::uint32_t(levels) - 1u;
  for (std::size_t c = 0; c != dim; ++c) {
    const float* table = values + c * levels;
    for (std::size_t l = 0; l != width; ++l) {
      const std::size_t bit = (c * width + l) * nbits;
      out[c * width + l] = table[(codes[bit / 32] >> (bit % 32)) & mask];
    }
  }
}

/// A float panel (dim component rows of W lanes, as decode_residual_panel writes it; 64-byte aligned) as a bf16
/// panel: components (2c2, 2c2 + 1) of lane l in word c2 * W + l, rounded to nearest even exactly as to_bf16 (the
/// AMX tiles' input). W integer lanes at a time.
template <class Arch = default_arch>
void float_panel_to_bf16_pairs(const float* in, std::size_t dim, std::uint32_t* out) noexcept {
  using ub = xsimd::batch<std::uint32_t, Arch>;
  constexpr std::size_t width = panel_width<Arch>;
  static_assert(ub::size == width);
  const ub bias(0x7fffu), one(1u), high(0xffff0000u);
  auto round_bits = [&](const float* x) {
    const ub u = ub::load_aligned(reinterpret_cast<const std::uint32_t*>(x));
    return u + bias + ((u >> 16) & one);
  };
  const std::size_t full = dim / 2;
  for (std::size_t c2 = 0; c2 != full; ++c2) {
    const float* lo = in + 2 * c2 * width;
    ((round_bits(lo) >> 16) | (round_bits(lo + width) & high)).store_aligned(out + c2 * width);
  }
  if (dim % 2) (round_bits(in + 2 * full * width) >> 16).store_aligned(out + full * width);
}

/// The residual values of one panel straight into bf16 pairs (the layout float_panel_to_bf16_pairs writes, with the
/// same rounding): AVX-512 with W = 16 and nbits 1, 2 (one vpermd of the codec's 16-entry pair table per component
/// pair) or 4 (one vpermw of the pair's 32 bf16 values per pair). Returns false (nothing written) where that does not
/// apply (nbits 8, other widths); the caller then decodes to float and rounds.
/// Code words are broadcast from memory (a broadcast from a general register costs a transfer each, and made the
/// 4-bit decode twice as slow), and vpermd / vpermw read only the low 4 / 5 bits of each index, so the bits above a
/// lane's code need no mask where nothing is placed above them.
template <class Arch = default_arch>
bool decode_residual_panel_bf16(const residual_codec& codec, const std::uint32_t* panel, std::uint32_t* out) noexcept {
#if defined(__AVX512BW__)  // vpermw, vpbroadcastw
  if constexpr (panel_width<Arch> == 16) {
    const std::size_t dim = codec.dim(), full = dim / 2;
    const auto* words = reinterpret_cast<const unsigned char*>(panel + 8);
    if (const std::uint32_t* table = codec.pair_words()) {
      // Component c's 16 codes: word c (nbits 2) or the low or high 16 bits of word c / 2 (nbits 1); lane l's code at
      // bit B * l. A pair's table index is its low component's code plus its high one's shifted by B.
      const auto sweep = [&]<int B>() {
        const __m512i shifts = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(B));
        const __m512i mask = _mm512_set1_epi32((1 << B) - 1);
        auto shifted = [&](std::size_t c) {  // lane l: the codes of component c from lane l's up
          if constexpr (B == 2)
            return _mm512_srlv_epi32(_mm512_broadcastd_epi32(_mm_loadu_si32(words + 4 * c)), shifts);
          else  // the 16-bit word in both halves of every lane; lane l < 16 reads bit l of the low one
            return _mm512_srlv_epi32(_mm512_broadcastw_epi16(_mm_loadu_si16(words + 2 * c)), shifts);
        };
#if defined(__AVX512VBMI__)
        if constexpr (B == 2) {
          // A pair's 32 codes are 8 contiguous bytes: broadcast as one qword, vpmultishiftqb gives lane l its code of
          // 2c2 in byte 0 (bits from 2l) and of 2c2 + 1 in byte 1 (bits from 32 + 2l), a mask keeps the two codes and
          // vpmaddubsw makes low + 4 * high (was two broadcasts, two shifts and two logic ops).
          const __m512i at = _mm512_setr_epi32(0x2000, 0x2202, 0x2404, 0x2606, 0x2808, 0x2A0A, 0x2C0C, 0x2E0E, 0x3010, 0x3212,
                                               0x3414, 0x3616, 0x3818, 0x3A1A, 0x3C1C, 0x3E1E);
          const __m512i two_codes = _mm512_set1_epi32(0x0303), weights = _mm512_set1_epi32(0x0401);
          for (std::size_t c2 = 0; c2 != full; ++c2) {
            std::uint64_t pair;
            std::memcpy(&pair, words + 8 * c2, 8);
            const __m512i codes = _mm512_and_si512(_mm512_multishift_epi64_epi8(at, _mm512_set1_epi64(std::int64_t(pair))), two_codes);
            const __m512i idx = _mm512_maddubs_epi16(codes, weights);
            _mm512_store_si512(out + c2 * 16, _mm512_permutexvar_epi32(idx, _mm512_loadu_si512(table + c2 * 16)));
          }
          if (dim % 2)
            _mm512_store_si512(out + full * 16, _mm512_permutexvar_epi32(_mm512_and_si512(shifted(2 * full), mask), _mm512_loadu_si512(table + full * 16)));
          return;
        }
#endif
        for (std::size_t c2 = 0; c2 != full; ++c2) {
          // (low & mask) | high << B, one vpternlogd (0xEA = (a & b) | c); the high code needs its own mask only where
          // the bits above it would reach the index's low 4 (B = 1)
          __m512i high = shifted(2 * c2 + 1);
          if constexpr (B == 1) high = _mm512_and_si512(high, mask);
          const __m512i idx = _mm512_ternarylogic_epi32(shifted(2 * c2), mask, _mm512_slli_epi32(high, B), 0xEA);
          _mm512_store_si512(out + c2 * 16, _mm512_permutexvar_epi32(idx, _mm512_loadu_si512(table + c2 * 16)));
        }
        if (dim % 2)
          _mm512_store_si512(out + full * 16, _mm512_permutexvar_epi32(_mm512_and_si512(shifted(2 * full), mask), _mm512_loadu_si512(table + full * 16)));
      };
      if (codec.nbits() == 2)
        sweep.template operator()<2>();
      else
        sweep.template operator()<1>();
      return true;
    }
    if (const std::uint16_t* table = codec.value_halves()) {
      // nbits 4: component c's 16 codes are the 64 bits at byte 8c, lane l's at bit 4l: lanes 0-7 read the low word,
      // 8-15 the high one. Lane l's vpermw index: low half = its code of 2c2, high half = 16 + its code of 2c2 + 1.
      const __m512i shifts = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
      const __m512i low4 = _mm512_set1_epi32(0xF), high_table = _mm512_set1_epi32(0x100000);
      auto codes_of = [&](std::size_t c) {
        const __m512i low = _mm512_broadcastd_epi32(_mm_loadu_si32(words + 8 * c));
        return _mm512_srlv_epi32(_mm512_mask_broadcastd_epi32(low, 0xFF00, _mm_loadu_si32(words + 8 * c + 4)), shifts);
      };
#if defined(__AVX512VBMI__)
      // A pair's 32 codes are 16 contiguous bytes: one load, one vpermb that gives lane l the byte holding its code of
      // 2c2 (byte l / 2, copied into the lane's bytes 0-1) and of 2c2 + 1 (byte 8 + l / 2, into bytes 2-3), one shift
      // of the odd lanes by 4 (their codes are the high nibbles), one vpternlogd: (x & 0x000F000F) | 0x00100000.
      alignas(64) static constexpr std::uint8_t spread[64] = {
          0, 0, 8, 8, 0, 0, 8, 8, 1, 1, 9, 9, 1, 1, 9, 9, 2, 2, 10, 10, 2, 2, 10, 10, 3, 3, 11, 11, 3, 3, 11, 11,
          4, 4, 12, 12, 4, 4, 12, 12, 5, 5, 13, 13, 5, 5, 13, 13, 6, 6, 14, 14, 6, 6, 14, 14, 7, 7, 15, 15, 7, 7, 15, 15};
      const __m512i spread_ix = _mm512_load_si512(spread);
      const __m512i odd_shift = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
      const __m512i both4 = _mm512_set1_epi32(0x000F000F);
      for (std::size_t c2 = 0; c2 != full; ++c2) {
        const __m512i bytes = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(words + 16 * c2)));
        const __m512i idx = _mm512_ternarylogic_epi32(
            _mm512_srlv_epi32(_mm512_permutexvar_epi8(spread_ix, bytes), odd_shift), both4, high_table, 0xEA);
        _mm512_store_si512(out + c2 * 16, _mm512_permutexvar_epi16(idx, _mm512_loadu_si512(table + c2 * 32)));
      }
#else
      for (std::size_t c2 = 0; c2 != full; ++c2) {
        // bits 0-3: the low code (vpternlogd 0xCA = a ? b : c), 4-15: 0, 16-19: the high code, 20: 1 (the OR)
        const __m512i idx = _mm512_or_si512(
            _mm512_ternarylogic_epi32(low4, codes_of(2 * c2), _mm512_slli_epi32(codes_of(2 * c2 + 1), 16), 0xCA), high_table);
        _mm512_store_si512(out + c2 * 16, _mm512_permutexvar_epi16(idx, _mm512_loadu_si512(table + c2 * 32)));
      }
#endif
      if (dim % 2)  // the high halves index the zero entries 16 + 0 of the last pair's table
        _mm512_store_si512(out + full * 16,
                           _mm512_permutexvar_epi16(_mm512_or_si512(_mm512_and_si512(codes_of(2 * full), low4), high_table),
                                                    _mm512_loadu_si512(table + full * 32)));
      return true;
    }
    return false;
  }
#endif
  (void)codec, (void)panel, (void)out;
  return false;
}

namespace detail {

#if ALIGNER_HAVE_AMX
/// Controls of decode_residual_panels_bf16_wide for W-wide panels (W = 4, 8) at nbits B. The codes of one component
/// pair in panel P are its chunk of 2 W B bits: W codes of the low component, then W of the high one, lane l's at bit
/// B l of each half; the chunks of the 16 / W panels sit side by side from byte 0 (chunk P at byte P W B / 4).
/// For B = 1, 2 (`shift`, vpmultishiftqb over the chunks broadcast to every qword): byte 0 of dword L = P W + l takes
/// the bits from its low code on, byte 1 from its high code on. For B = 4 (`spread`, vpermb): dword L takes the
/// byte holding its low code twice, then the byte holding its high code twice (an odd lane's code is the high nibble).
struct bf16_wide_controls {
  alignas(64) std::uint8_t shift[64], spread[64];
};
inline constexpr bf16_wide_controls make_bf16_wide_controls(std::size_t W, std::size_t B) {
  bf16_wide_controls k{};
  for (std::size_t L = 0; L != 16; ++L) {
    const std::size_t P = L / W, l = L % W, first = P * 2 * W * B;
    k.shift[4 * L] = std::uint8_t(first + l * B);
    k.shift[4 * L + 1] = std::uint8_t(first + W * B + l * B);
    const std::size_t low = P * W + l / 2, high = P * W + W / 2 + l / 2;  // B = 4: chunk P is W bytes
    k.spread[4 * L] = k.spread[4 * L + 1] = std::uint8_t(low);
    k.spread[4 * L + 2] = k.spread[4 * L + 3] = std::uint8_t(high);
  }
  return k;
}

#define ALIGNER_TARGET_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

/// One component pair's chunks of codes (`chunk` bytes a panel, `bytes` of them read: a whole chunk, or the low half
/// of the last pair of an odd dim) of `count` W-wide panels side by side from byte 0; the rest of the register is 0.
/// Only masked-in bytes are read.
template <std::size_t W>
ALIGNER_TARGET_VBMI inline __m128i residual_pair_chunks(const std::uint32_t* panel, std::size_t panel_words, std::size_t count,
                                                        std::size_t c2, std::size_t chunk, std::size_t bytes) noexcept {
  __m128i g = _mm_setzero_si128();
  const auto first = std::uint32_t((1u << bytes) - 1);
  for (std::size_t P = 0; P != count; ++P) {
    const auto* src = reinterpret_cast<const unsigned char*>(panel + P * panel_words + W / 2) + c2 * chunk;  // past W / 2 id words
    const auto* from = reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(src) - P * chunk);
    g = _mm_mask_loadu_epi8(g, __mmask16(first << (P * chunk)), from);
  }
  return g;
}

/// Dwords P W .. P W + W - 1 of v into word c2 W of panel P's bf16 rows (out + P out_words), for P < count.
template <std::size_t W>
ALIGNER_TARGET_VBMI inline void store_pair_rows(std::uint32_t* out, std::size_t out_words, std::size_t count, std::size_t c2, __m512i v) noexcept {
  for (std::size_t P = 0; P != count; ++P) {
    auto* to = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(out + P * out_words + c2 * W) - P * W * 4);
    _mm512_mask_storeu_epi32(to, __mmask16(((1u << W) - 1) << (P * W)), v);
  }
}

/// decode_residual_panel_bf16 for `count` (1 .. 16 / W) consecutive W-wide panels (W = 4, 8; `panel_words` apart),
/// each into its own bf16 panel (word c2 W + l: the pair of lane l, as float_panel_to_bf16_pairs writes it) at out +
/// P out_words, decoded 16 tokens at a time: per component pair, one masked load of each panel's chunk of codes into
/// a 16-byte register, the W = 16 steps with controls for that order (make_bf16_wide_controls), one masked store
/// per panel. For the AMX path of a build whose panels are narrower than 16 (no AVX-512 flags), where the float
/// decode had cost 7x the 16-wide build's time. Compiled for AVX512-VBMI whatever the build's flags: callers check
/// avx512_vbmi_usable(). Returns false (nothing written) for nbits 8 (no pair tables).
template <std::size_t W>
ALIGNER_NOINLINE ALIGNER_TARGET_VBMI bool decode_residual_panels_bf16_wide(const residual_codec& codec, const std::uint32_t* panel,
                                                                          std::size_t panel_words, std::size_t count, std::uint32_t* out,
                                                                          std::size_t out_words) noexcept {
  static_assert(W == 4 || W == 8, "16 / W panels of W tokens make one 16-lane register");
  static constexpr bf16_wide_controls by_bits[3] = {make_bf16_wide_controls(W, 1), make_bf16_wide_controls(W, 2),
                                                    make_bf16_wide_controls(W, 4)};
  const std::size_t B = codec.nbits(), dim = codec.dim(), pairs = (dim + 1) / 2, full = dim / 2, chunk = W * B / 4;
  const std::uint32_t* pair_table = codec.pair_words();
  const std::uint16_t* half_table = codec.value_halves();
  if (pair_table == nullptr && half_table == nullptr) return false;
  if (B <= 2) {
    // Pair table index: low code + high code shifted by B (vpmaddubsw of the two masked code bytes); the last pair of
    // an odd dim takes its high code as 0 (its table's high halves are 0). The chunks are at most 4 B <= 8 bytes.
    const __m512i shift = _mm512_load_si512(by_bits[B - 1].shift);
    const __m512i both = _mm512_set1_epi32(B == 2 ? 0x0303 : 0x0101), low_only = _mm512_set1_epi32(B == 2 ? 0x03 : 0x01);
    const __m512i weights = _mm512_set1_epi32(B == 2 ? 0x0401 : 0x0201);
    for (std::size_t c2 = 0; c2 != pairs; ++c2) {
      const bool whole = c2 != full;
      const __m512i g = _mm512_broadcastq_epi64(residual_pair_chunks<W>(panel, panel_words, count, c2, chunk, whole ? chunk : (W * B + 7) / 8));
      const __m512i codes = _mm512_and_si512(_mm512_multishift_epi64_epi8(shift, g), whole ? both : low_only);
      store_pair_rows<W>(out, out_words, count, c2,
                         _mm512_permutexvar_epi32(_mm512_maddubs_epi16(codes, weights), _mm512_loadu_si512(pair_table + c2 * 16)));
    }
  } else {
    // vpermw index: low half = low code, high half = 16 + high code (nibbles: an odd lane's dword shifted by 4); the
    // last pair of an odd dim reads no high chunk, so its high codes are 0 and index the table's zero entry 16.
    const __m512i spread = _mm512_load_si512(by_bits[2].spread);
    const __m512i odd_shift = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    const __m512i both4 = _mm512_set1_epi32(0x000F000F), high_table = _mm512_set1_epi32(0x100000);
    for (std::size_t c2 = 0; c2 != pairs; ++c2) {
      const __m512i g = _mm512_zextsi128_si512(residual_pair_chunks<W>(panel, panel_words, count, c2, chunk, c2 != full ? chunk : W / 2));
      const __m512i idx = _mm512_ternarylogic_epi32(_mm512_srlv_epi32(_mm512_permutexvar_epi8(spread, g), odd_shift), both4, high_table, 0xEA);
      store_pair_rows<W>(out, out_words, count, c2, _mm512_permutexvar_epi16(idx, _mm512_loadu_si512(half_table + c2 * 32)));
    }
  }
  return true;
}
#undef ALIGNER_TARGET_VBMI
#endif

}  // namespace detail

/// True where the AMX path of a build with W-wide panels (W < 16) decodes residual codes 16 tokens at a time
/// (detail::decode_residual_panels_bf16_wide: nbits 1, 2, 4 and AVX512-VBMI), rather than to float and then to bf16.
template <class Arch = default_arch>
bool residual_bf16_wide_decode(const residual_codec& codec) noexcept {
  return ALIGNER_HAVE_AMX && (panel_width<Arch> == 4 || panel_width<Arch> == 8) && codec.nbits() <= 4 && avx512_vbmi_usable();
}

namespace ref {

/// Scalar specification of decode_residual_panel_u8: word c4 * W + l holds in byte j the value value_i8(4 c4 + j,
/// code of lane l) + 128, 128 past dim. nbits 1, 2, 4.
inline void residual_decode_u8(const residual_codec& codec, const void* panel, std::size_t width, std::uint32_t* out) {
  const std::size_t quads = (codec.dim() + 3) / 4;
  for (std::size_t c4 = 0; c4 != quads; ++c4)
    for (std::size_t l = 0; l != width; ++l) {
      std::uint32_t word = 0;
      for (std::size_t j = 0; j != 4; ++j) {
        const std::size_t c = 4 * c4 + j;
        const int v = c < codec.dim() ? codec.value_i8(c, codec.code_of(panel, width, l, c)) : 0;
        word |= std::uint32_t(v + 128) << (8 * j);
      }
      out[c4 * width + l] = word;
    }
}

}  // namespace ref


/// The largest dim the VNNI kernel takes: its int32 sums stay below 2^31 (|bias| + dim * 127 * 255 < dim * 127 * 383).
inline constexpr std::size_t residual_vnni_max_dim = 32768;

/// True when the VNNI kernel can score residual panels of `codec` now for this architecture (compile time: the
/// instructions and panel width 16, or their run-time form over 4- and 8-wide panels; run time: nbits <= 4 and
/// dim <= residual_vnni_max_dim).
template <class Arch = default_arch>
bool residual_vnni_fits(const residual_codec& codec) noexcept {
  return codec.nbits() <= 4 && codec.dim() <= residual_vnni_max_dim && vnni_runs<Arch>();
}

/// True when residual panels of `codec` are scored by AMX-BF16 tiles now: where amx_bf16 runs, in a build of 16-wide
/// panels, or in a build of 4- or 8-wide panels where the VNNI kernel cannot take them. There the AMX tiles hold one
/// narrow panel each, and the run-time VNNI kernel (16 tokens a register) was faster: on a 2-core Xeon with AMX, a
/// portable build, residual:2 n = 32, m = 128, dim = 128: Top-1 110 GFLOP/s VNNI against 87 AMX (with the 16-token
/// decode of decode_residual_panels_bf16_wide; 48 before it); SciFact ctx100 postings search 7.5 against 11.5 ms a
/// query (bench/RESULTS.md, "Residual codes in a portable build on AMX").
template <class Arch = default_arch>
bool residual_on_amx(const residual_codec& codec) noexcept {
  return bf16_on_amx<Arch>() && (panel_width<Arch> == 16 || !residual_vnni_fits<Arch>(codec));
}

/// True when residual panels of `codec` are scored by the VNNI kernel now (residual_vnni_fits, and AMX not taking them).
template <class Arch = default_arch>
bool residual_on_vnni(const residual_codec& codec) noexcept {
  return residual_vnni_fits<Arch>(codec) && !residual_on_amx<Arch>(codec);
}

/// The query as the VNNI kernel reads it, for one codec: row i's components scaled by the codec's value scales,
/// x_c = q_ic * value_scale(c) (float), then the int8 token rule: s_i = max_c |x_c| / 127, q8_ic = round_even(x_c /
/// s_i) in [-127, 127]. quads: ceil(dim / 4) words a row, component 4 c4 + j in byte j (0 past dim); bias_i = -128
/// Σ_c q8_ic, which cancels the +128 of the documents' unsigned bytes. The residual part of S_ij is then
/// s_i Σ_c q8_ic value_i8(c, code_jc), about q_i . residual_j.
struct residual_i8_query {
  std::vector<std::uint32_t> quads;
  std::vector<float> scales;
  std::vector<std::int32_t> bias;
};

/// Fills `out` for `query` and `codec` (nbits 1, 2, 4; query.cols == codec.dim()).
inline void residual_query_to_i8(matrix_view<float> query, const residual_codec& codec, residual_i8_query& out) {
  const std::size_t dim = query.cols, words = (dim + 3) / 4;
  const float* scale_of = codec.value_scales();
  out.quads.assign(query.rows * words, 0u);
  out.scales.resize(query.rows);
  out.bias.resize(query.rows);
  std::vector<float> x(dim);
  for (std::size_t i = 0; i != query.rows; ++i) {
    for (std::size_t c = 0; c != dim; ++c) x[c] = query.row(i)[c] * scale_of[c];
    const float s = i8_scale(x.data(), dim);
    std::int64_t sum = 0;
    for (std::size_t c = 0; c != dim; ++c) {
      const double q = s > 0.f ? std::clamp(std::nearbyint(double(x[c]) / double(s)), -127.0, 127.0) : 0.0;
      out.quads[i * words + c / 4] |= std::uint32_t(std::uint8_t(std::int8_t(q))) << (8 * (c % 4));
      sum += std::int64_t(q);
    }
    out.scales[i] = s;
    out.bias[i] = std::int32_t(-128 * sum);
  }
}

/// `given` (a query's int8 form for `codec`, prepared by the caller), or the query converted into `buffer`.
inline const residual_i8_query* residual_i8_or_convert(matrix_view<float> query, const residual_codec& codec, const residual_i8_query* given,
                                                       residual_i8_query& buffer) {
  if (given != nullptr) return given;
  residual_query_to_i8(query, codec, buffer);
  return &buffer;
}

namespace detail {

/// The byte controls of the u8 decode (decode_residual_panel_u8's vpermb gather and vpmultishiftqb shifts) for a
/// quad's codes laid out as W-wide panels' chunks one after the other: the chunk of panel P (4 components of its W
/// lanes, 4 W B bits) first for P = 0, then 1, ...; lane L of the 16 is lane L % W of panel L / W, its code of
/// component j at bit (P 4 W + j W + L % W) B of the chunks. Output byte 8 p + 4 h + j (lane 2 p + h, component j):
/// gather brings the byte holding lanes 2 p and 2 p + 1 (the same byte: both codes fit in one) to byte j of qword p,
/// and shift is the bit of lane 2 p + h's code in that qword. W = 16 is decode_residual_panel_u8's own layout.
struct u8_decode_controls {
  alignas(64) std::uint8_t gather[64], shift[64], high[64];
};
inline constexpr u8_decode_controls make_u8_decode_controls(std::size_t W, std::size_t B) {
  u8_decode_controls k{};
  for (std::size_t p = 0; p != 8; ++p)
    for (std::size_t h = 0; h != 2; ++h)
      for (std::size_t j = 0; j != 4; ++j) {
        const std::size_t o = 8 * p + 4 * h + j, lane = 2 * p, bit = ((lane / W) * 4 * W + j * W + lane % W) * B;
        k.gather[o] = std::uint8_t(h == 0 ? bit / 8 : 0);
        k.shift[o] = std::uint8_t(8 * j + bit % 8 + B * h);
        k.high[o] = std::uint8_t(16 * j);
      }
  return k;
}

}  // namespace detail

/// The residual codes of one panel as the VNNI kernel's unsigned bytes (ref::residual_decode_u8, word for word):
/// per component quad, one masked load of its codes (8 nbits bytes), a vpermb that brings the byte holding lanes 2p
/// and 2p + 1's codes of component 4 c4 + j into byte j of qword p, a vpmultishiftqb that moves each lane's code to
/// the bottom of its own byte, one vpternlogd (code & mask) | 16 j, and a vpermb of the quad's 64-byte value table.
/// Returns false (nothing written) where the VNNI kernel is not compiled or nbits is 8.
template <class Arch = default_arch>
bool decode_residual_panel_u8(const residual_codec& codec, const std::uint32_t* panel, std::uint32_t* out) noexcept {
#if ALIGNER_HAVE_VNNI_VBMI
  if constexpr (panel_width<Arch> == 16) {
    const std::uint32_t* tables = codec.quad_tables();
    if (tables == nullptr) return false;
    const std::size_t B = codec.nbits(), dim = codec.dim(), quads = (dim + 3) / 4;
    // Component j's 16 codes are the 2B bytes from 2B j, lane l's at bit B l: lanes 2p and 2p + 1 share byte
    // 2B j + B p / 4, from bit 2B p mod 8 (make_u8_decode_controls at W = 16).
    static constexpr detail::u8_decode_controls by_bits[3] = {detail::make_u8_decode_controls(16, 1), detail::make_u8_decode_controls(16, 2),
                                                              detail::make_u8_decode_controls(16, 4)};
    const detail::u8_decode_controls& k = by_bits[B == 1 ? 0 : B == 2 ? 1 : 2];
    const __m512i gather = _mm512_load_si512(k.gather), shift = _mm512_load_si512(k.shift), high = _mm512_load_si512(k.high);
    const __m512i mask = _mm512_set1_epi8(char((1 << B) - 1));
    const auto* words = reinterpret_cast<const unsigned char*>(panel + 8);
    for (std::size_t c4 = 0; c4 != quads; ++c4) {
      const std::size_t comps = std::min<std::size_t>(4, dim - 4 * c4), bytes = 2 * B * comps;
      const __m512i codes = _mm512_maskz_loadu_epi8(__mmask64((std::uint64_t(1) << bytes) - 1), words + 8 * B * c4);
      const __m512i at = _mm512_multishift_epi64_epi8(shift, _mm512_permutexvar_epi8(gather, codes));
      const __m512i idx = _mm512_ternarylogic_epi32(at, mask, high, 0xEA);  // (at & mask) | high
      _mm512_store_si512(out + c4 * 16, _mm512_permutexvar_epi8(idx, _mm512_load_si512(tables + c4 * 16)));
    }
    return true;
  }
#endif
  (void)codec, (void)panel, (void)out;
  return false;
}

/// Register tiles of the residual part of S over decoded u8 quad panels (decode_residual_panel_u8), by AVX512-VNNI
/// vpdpbusd: per step of four components, acc_int32 += doc bytes x the query's int8 quad, from bias_i; then
/// S = float(acc) * s_i. The interface of tile_engine (residual_engine's inner engine). Only where
/// ALIGNER_HAVE_VNNI_VBMI (elsewhere it is never constructed).
/// 4- and 8-wide panels (at run time, a build without AVX-512 flags): the residual_engine decodes 16 / W of them into
/// one 16-token panel (detail::decode_residual_panels_u8_wide), and a tile is 8 query rows x 4 panels, Z = W / 4
/// zmm accumulators a row, handed to the folds as W-wide batches.
template <class Arch>
struct vnni_quad_engine : tile_engine_base<vnni_quad_engine<Arch>, Arch, 4> {
  using base = tile_engine_base<vnni_quad_engine<Arch>, Arch, 4>;
  using typename base::batch;
  using base::width;
  using base::block_panels;
  static constexpr bool wide = width != 16;
  static constexpr std::size_t zmm_per_row = (width * 4 + 15) / 16;
  static constexpr std::size_t block_rows = wide ? 8 : 4;
  static constexpr std::size_t span_bytes = std::size_t(256) << 10;

  const void* panels;
  std::size_t dim, doc_rows, panel_total, quads;
  matrix_view<float> query;
  const residual_i8_query* q8;
  prefetch_hint next{};

  vnni_quad_engine(const void* panels_, std::size_t doc_rows_, matrix_view<float> query_, const residual_i8_query* q8_,
                   prefetch_hint next_ = {}) noexcept
      : panels(panels_), dim(query_.cols), doc_rows(doc_rows_), panel_total(panel_count<Arch>(doc_rows_)), quads((query_.cols + 3) / 4),
        query(query_), q8(q8_), next(next_) {}

  std::size_t panel_bytes() const noexcept { return quads * width * 4; }

  template <std::size_t R, std::size_t V>
  ALIGNER_NOINLINE void tile(std::size_t i0, std::size_t p0, batch (&out)[R][V]) const noexcept {
#if ALIGNER_HAVE_VNNI_VBMI
    if constexpr (width == 16) {
      __m512i a[R][V];
      const std::uint32_t* q[R];
      for (std::size_t r = 0; r != R; ++r) {
        q[r] = q8->quads.data() + (i0 + r) * quads;
        for (std::size_t v = 0; v != V; ++v) a[r][v] = _mm512_set1_epi32(q8->bias[i0 + r]);
      }
      pf.with_slice([&](auto slice) {
        detail::vnni_tile<detail::vnni_op::dpbusd, R, V>(a, static_cast<const std::uint32_t*>(panels) + p0 * quads * width, quads, q, slice, 2);
      });
      for (std::size_t r = 0; r != R; ++r) {
        const __m512 s = _mm512_set1_ps(q8->scales[i0 + r]);
        for (std::size_t v = 0; v != V; ++v) out[r][v] = batch(_mm512_mul_ps(_mm512_cvtepi32_ps(a[r][v]), s));
      }
      return;
    }
#endif
#if ALIGNER_HAVE_WIDE_VNNI
    if constexpr (wide) {
      static_assert(R == block_rows, "the run-time VNNI tiles are block_rows query rows");
      const std::uint32_t* q[R];
      std::int32_t bias[R];
      float scale[R];
      for (std::size_t r = 0; r != R; ++r) {
        const std::size_t i = std::min(i0 + r, query.rows - 1);  // rows past the query: any valid row, ignored
        q[r] = q8->quads.data() + i * quads;
        bias[r] = q8->bias[i];
        scale[r] = q8->scales[i];
      }
      // p0 is a multiple of 4 panels: whole decoded 16-token panels
      const auto* base_words = static_cast<const std::uint32_t*>(panels) + p0 * quads * width;
      pf.with_slice([&](auto slice) {
        detail::wide_vnni_tile<detail::vnni_op::dpbusd, R, zmm_per_row>(base_words, quads, q, bias, nullptr, scale, slice, 2,
                                                                        reinterpret_cast<float*>(&out[0][0]), V * width);
      });
      return;
    }
#endif
    (void)i0, (void)p0;
    base::zero(out);
  }

  template <class Visit>
  void sweep(Visit&& visit) const {
    sweep_tiles<block_rows, block_panels, !wide>(panels, panel_total, panel_bytes(), span_bytes, query.rows, next, pf, visit);
  }

 private:
  tile_prefetch pf;
};

// ------------------------------------------------------------- the VNNI path over 4- and 8-wide panels, at run time

namespace detail {

#if ALIGNER_HAVE_WIDE_VNNI
/// decode_residual_panel_u8 for `count` (1 .. 16 / W) consecutive W-wide panels (W = 4, 8; `panel_words` apart) as
/// one 16-token panel of unsigned bytes (lane 4 P + l: panel P's lane l; lanes of missing panels decode code 0): per
/// component quad, one masked load of each panel's chunk of codes into a 32-byte register, then the W = 16 steps with
/// controls for that order (make_u8_decode_controls).
template <std::size_t W>
ALIGNER_NOINLINE ALIGNER_TARGET_WIDE_VNNI void decode_residual_panels_u8_wide(const std::uint32_t* tables, std::size_t nbits, std::size_t dim,
                                                                              const std::uint32_t* panel, std::size_t panel_words,
                                                                              std::size_t count, std::uint32_t* out) noexcept {
  static constexpr u8_decode_controls by_bits[3] = {make_u8_decode_controls(W, 1), make_u8_decode_controls(W, 2),
                                                     make_u8_decode_controls(W, 4)};
  const std::size_t B = nbits, quads = (dim + 3) / 4, chunk = W * B / 2;  // bytes of a full quad's codes in one panel
  const u8_decode_controls& k = by_bits[B == 1 ? 0 : B == 2 ? 1 : 2];
  const __m512i gather = _mm512_load_si512(k.gather), shift = _mm512_load_si512(k.shift), high = _mm512_load_si512(k.high);
  const __m512i mask = _mm512_set1_epi8(char((1 << B) - 1));
  constexpr std::size_t id_words = (W + 1) / 2;
  for (std::size_t c4 = 0; c4 != quads; ++c4) {
    const std::size_t comps = std::min<std::size_t>(4, dim - 4 * c4), bytes = (comps * W * B + 7) / 8;
    const __mmask32 first = __mmask32((std::uint64_t(1) << bytes) - 1);
    __m256i codes = _mm256_setzero_si256();
    for (std::size_t P = 0; P != count; ++P) {
      // bytes [P chunk, P chunk + bytes) of the register from this panel's codes of the quad (nothing else is read)
      const auto* src = reinterpret_cast<const unsigned char*>(panel + P * panel_words + id_words) + c4 * chunk;
      const auto* from = reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(src) - P * chunk);  // only masked-in bytes are read
      codes = _mm256_mask_loadu_epi8(codes, __mmask32(first << (P * chunk)), from);
    }
    const __m512i at = _mm512_multishift_epi64_epi8(shift, _mm512_permutexvar_epi8(gather, _mm512_zextsi256_si512(codes)));
    const __m512i idx = _mm512_ternarylogic_epi32(at, mask, high, 0xEA);  // (at & mask) | high
    _mm512_store_si512(out + c4 * 16, _mm512_permutexvar_epi8(idx, _mm512_load_si512(tables + c4 * 16)));
  }
}

#endif

}  // namespace detail

/// Row stride of centroid_scores: the centroid count rounded up to whole panels.
template <class Arch = default_arch>
std::size_t centroid_score_stride(const residual_codec& codec) noexcept {
  return panel_count<Arch>(codec.centroids()) * panel_width<Arch>;
}

/// q_i . centroid_k for every query row i and centroid k into out[i * centroid_score_stride + k] (query-major: a
/// query token's scores over all centroids, what the postings probe ranks), by the float tile sweep over the codec's
/// centroid panels (the query is extended by a 0 that meets the panels' -|c|^2 / 2 term). `scratch` is resized to
/// hold the extended query.
template <class Arch = default_arch>
void centroid_scores(matrix_view<float> query, const residual_codec& codec, float* out, std::vector<float>& scratch) {
  const std::size_t dim = codec.dim();
  scratch.assign(query.rows * (dim + 1), 0.f);
  for (std::size_t i = 0; i != query.rows; ++i) std::copy_n(query.row(i), dim, scratch.data() + i * (dim + 1));
  similarity_rows<Arch>(matrix_view<float>(scratch.data(), query.rows, dim + 1), storage::f32, codec.scan_panels(), codec.centroids(),
                        out, centroid_score_stride<Arch>(codec));
}

/// Row stride of centroid_scores_by_centroid: the query rows rounded up to whole panels.
template <class Arch = default_arch>
constexpr std::size_t centroid_score_rows(std::size_t query_rows) noexcept {
  return panel_count<Arch>(query_rows) * panel_width<Arch>;
}

namespace detail {

#if defined(__AVX512F__)
/// out[c * out_stride + l] = in[l][c] for l, c < 16: 16 row loads and a 4-stage in-register transpose (64 shuffles).
inline void transpose16(const float* const* in, float* out, std::size_t out_stride) noexcept {
  __m512 a[16], t[16];
  for (std::size_t l = 0; l != 16; ++l) a[l] = _mm512_loadu_ps(in[l]);
  for (std::size_t k = 0; k != 8; ++k) {  // pairs of rows interleaved within 128-bit lanes
    t[2 * k] = _mm512_unpacklo_ps(a[2 * k], a[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(a[2 * k], a[2 * k + 1]);
  }
  for (std::size_t k = 0; k != 4; ++k) {  // a[4k + c]: lane j holds element 4j + c of rows 4k .. 4k + 3
    a[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * k]), _mm512_castps_pd(t[4 * k + 2])));
    a[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * k]), _mm512_castps_pd(t[4 * k + 2])));
    a[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * k + 1]), _mm512_castps_pd(t[4 * k + 3])));
    a[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * k + 1]), _mm512_castps_pd(t[4 * k + 3])));
  }
  for (std::size_t c = 0; c != 4; ++c) {  // gather lane j of a[c], a[4 + c], a[8 + c], a[12 + c]: element 4j + c
    const __m512 v0 = _mm512_shuffle_f32x4(a[c], a[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(a[c], a[4 + c], 0xEE);
    const __m512 w0 = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], 0x44), w1 = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], 0xEE);
    _mm512_storeu_ps(out + c * out_stride, _mm512_shuffle_f32x4(v0, w0, 0x88));
    _mm512_storeu_ps(out + (4 + c) * out_stride, _mm512_shuffle_f32x4(v0, w0, 0xDD));
    _mm512_storeu_ps(out + (8 + c) * out_stride, _mm512_shuffle_f32x4(v1, w1, 0x88));
    _mm512_storeu_ps(out + (12 + c) * out_stride, _mm512_shuffle_f32x4(v1, w1, 0xDD));
  }
}
#endif

#if defined(__AVX2__)
/// out[c * out_stride + l] = in[l][c] for l, c < 8: 8 row loads, unpacks of row pairs, shuffles of those pairs, and
/// 128-bit lane swaps (24 shuffles).
inline void transpose8(const float* const* in, float* out, std::size_t out_stride) noexcept {
  __m256 t[8], s[8];
  for (std::size_t l = 0; l != 8; l += 2) {
    const __m256 a = _mm256_loadu_ps(in[l]), b = _mm256_loadu_ps(in[l + 1]);
    t[l] = _mm256_unpacklo_ps(a, b);      // a0 b0 a1 b1 | a4 b4 a5 b5
    t[l + 1] = _mm256_unpackhi_ps(a, b);  // a2 b2 a3 b3 | a6 b6 a7 b7
  }
  for (std::size_t h = 0; h != 8; h += 4) {  // rows h .. h + 3, by their components mod 4
    s[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
    s[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
    s[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    s[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (std::size_t c = 0; c != 4; ++c) {
    _mm256_storeu_ps(out + c * out_stride, _mm256_permute2f128_ps(s[c], s[c + 4], 0x20));
    _mm256_storeu_ps(out + (c + 4) * out_stride, _mm256_permute2f128_ps(s[c], s[c + 4], 0x31));
  }
}
#endif

}  // namespace detail

/// The same scores centroid-major, what the residual rerank reads: q_i . centroid_k into
/// out[k * centroid_score_rows(query.rows) + i] (K rows), rows past the query 0. Computed query-major into
/// `by_query` (centroid_scores, with `extended` as its scratch: the faster sweep, as it blocks 4 query rows against 4
/// centroid panels) and transposed in 16 x 16 blocks, so the values are those of centroid_scores bit for bit.
template <class Arch = default_arch>
void centroid_scores_by_centroid(matrix_view<float> query, const residual_codec& codec, float* out, std::vector<float>& by_query,
                                 std::vector<float>& extended) {
  const std::size_t n = query.rows, K = codec.centroids(), stride = centroid_score_stride<Arch>(codec), rows = centroid_score_rows<Arch>(n);
  by_query.resize(n * stride);
  centroid_scores<Arch>(query, codec, by_query.data(), extended);
#if defined(__AVX512F__)
  if constexpr (panel_width<Arch> == 16) {
    alignas(64) static constexpr float zeros[16] = {};
    alignas(64) float tail[16 * 16];
    for (std::size_t i0 = 0; i0 < rows; i0 += 16)
      for (std::size_t k0 = 0; k0 < K; k0 += 16) {  // rows of by_query hold `stride` >= k0 + 16 columns
        const float* in[16];
        for (std::size_t l = 0; l != 16; ++l) in[l] = i0 + l < n ? by_query.data() + (i0 + l) * stride + k0 : zeros;
        if (k0 + 16 <= K) {
          detail::transpose16(in, out + k0 * rows + i0, rows);
        } else {  // the last centroids: only K - k0 rows of out exist
          detail::transpose16(in, tail, 16);
          for (std::size_t c = 0; c != K - k0; ++c) std::copy_n(tail + c * 16, 16, out + (k0 + c) * rows + i0);
        }
      }
    return;
  }
#endif
  for (std::size_t k = 0; k != K; ++k)
    for (std::size_t i = 0; i != rows; ++i) out[k * rows + i] = i < n ? by_query[i * stride + k] : 0.f;
}

/// Gathers the centroid-major scores of one panel's W tokens into rows: out[i * out_stride + l] =
/// scores[ids[l] * rows + i] for i < rows (a multiple of W). AVX-512 (W = 16): 16 x 16 blocks (detail::transpose16),
/// where a per-row 16-lane gather per query row cost a third of the rerank; AVX2 (W = 8): 8 x 8 blocks
/// (detail::transpose8), where scalar copies took 13% of a SciFact postings search on a Zen 3 core.
template <class Arch = default_arch>
void centroid_rows_of_panel(const float* scores, std::size_t rows, const std::uint16_t* ids, float* out, std::size_t out_stride) noexcept {
  constexpr std::size_t width = panel_width<Arch>;
#if defined(__AVX512F__)
  if constexpr (width == 16) {
    for (std::size_t b = 0; b < rows; b += 16) {
      const float* in[16];
      for (std::size_t l = 0; l != 16; ++l) in[l] = scores + std::size_t(ids[l]) * rows + b;
      detail::transpose16(in, out + b * out_stride, out_stride);
    }
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (width == 8) {
    for (std::size_t b = 0; b < rows; b += 8) {
      const float* in[8];
      for (std::size_t l = 0; l != 8; ++l) in[l] = scores + std::size_t(ids[l]) * rows + b;
      detail::transpose8(in, out + b * out_stride, out_stride);
    }
    return;
  }
#endif
  for (std::size_t l = 0; l != width; ++l) {
    const float* from = scores + std::size_t(ids[l]) * rows;
    for (std::size_t i = 0; i != rows; ++i) out[i * out_stride + l] = from[i];
  }
}

/// How residual panels are swept (residual_engine): the vector tiles of the build (over float panels, or bf16 pairs
/// where bf16_rounds_query), AMX-BF16 tiles, or the VNNI tiles over unsigned int8 quads (residual_on_vnni).
enum class residual_path { vector, amx, vnni };

namespace detail {
template <class Arch, residual_path P>
using residual_inner_t =
    std::conditional_t<P == residual_path::amx, amx_bf16_engine<Arch>,
                       std::conditional_t<P == residual_path::vnni,
                                          vnni_quad_engine<Arch>,
                                          tile_engine<Arch, bf16_rounds_query<Arch> ? storage::bf16 : storage::f32>>>;
}  // namespace detail

/// A tile engine over residual panels (the interface of tile_engine that aligned_rows.hpp uses): S = centroid
/// scores + a sweep over residual panels decoded a group at a time into `scratch` (>= scratch_floats(dim, rows)
/// floats, 64-byte aligned). `qct` holds centroid_scores_by_centroid of the query; with each decoded group, the
/// group's tokens' rows of it are laid out query-row-major in the scratch (centroid_rows_of_panel), so a tile adds
/// them with aligned loads.
/// P = amx (residual_on_amx): the residuals are decoded, rounded to bf16 pairs and swept by AMX-BF16 tiles (with 4-
/// and 8-wide panels, decoded 16 tokens at a time where residual_bf16_wide_decode).
/// P = vnni (residual_on_vnni): decoded to the codec's int8 values as unsigned bytes and swept by vpdpbusd against
/// the query's int8 form `query_i8` (residual_query_to_i8), four components per instruction.
/// P = vector: where bf16_rounds_query<Arch> (an AVX512-BF16 build) they are decoded to bf16 pairs the same way and
/// swept by the vector bf16 tiles (vdpbf16ps); otherwise decoded to float panels and swept by the float vector tiles.
/// `query_bf16` holds query_to_bf16_pairs of the query wherever the residuals are rounded (`rounds`). `query_wide`:
/// on the vector path over float panels of width 4 or 8, the query expanded for the run-time AVX-512 tiles (wide.hpp,
/// where wide_runs(storage::f32)), else null.
template <class Arch, residual_path P = residual_path::vector>
struct residual_engine : tile_engine_base<residual_engine<Arch, P>, Arch, detail::residual_inner_t<Arch, P>::block_panels> {
  /// The residuals are rounded to bf16 pairs (AMX or vdpbf16ps) rather than kept in float.
  static constexpr bool rounds = P == residual_path::amx || (P == residual_path::vector && bf16_rounds_query<Arch>);
  using inner_t = detail::residual_inner_t<Arch, P>;
  using base = tile_engine_base<residual_engine<Arch, P>, Arch, inner_t::block_panels>;
  using typename base::batch;
  using base::width;
  static constexpr std::size_t block_rows = inner_t::block_rows;
  using base::block_panels;

  const residual_codec& codec;
  const std::uint32_t* panels;
  std::size_t dim, doc_rows, panel_total;
  matrix_view<float> query;
  const float* qct;
  float* scratch;
  const std::uint32_t* query_bf16;
  const residual_i8_query* query_i8;
  const std::uint32_t* query_wide;
  std::size_t group_panels, score_rows;
  prefetch_hint next;   ///< what the caller scores next (prefetched during the last group)
  float* group_scores;  ///< the decoded group's centroid scores: score_rows rows of group_panels * W floats
  mutable std::size_t group_first = 0;  ///< first panel of the decoded group
  mutable inner_t inner;
  /// The AMX path of a build with 4- or 8-wide panels decodes 16 tokens at a time (residual_bf16_wide_decode).
  bool wide_decode = P == residual_path::amx && residual_bf16_wide_decode<Arch>(codec);

  /// 32-bit words of one decoded panel.
  static std::size_t decoded_words(std::size_t dim) noexcept {
    return P == residual_path::vnni ? (dim + 3) / 4 * width : rounds ? (dim + 1) / 2 * width : dim * width;
  }
  /// Scratch floats a document needs (one decoded group, one float panel on the way to bf16 where the residuals
  /// are rounded, the group's centroid scores for a query of `rows` tokens).
  static std::size_t scratch_floats(std::size_t dim, std::size_t rows) noexcept {
    return group_of(dim) * decoded_words(dim) + staging_floats(dim) + centroid_score_rows<Arch>(rows) * group_of(dim) * width;
  }
  static std::size_t staging_floats(std::size_t dim) noexcept { return rounds ? dim * width : 0; }
  /// Panels decoded at once: as many block_panels groups as fit 16 KB (at least one), so that the decoded group, its
  /// centroid scores (8 KB at 32 query rows) and the query stay within a 32-48 KB L1 together.
  static std::size_t group_of(std::size_t dim) noexcept { return panels_per_group(decoded_words(dim), block_panels); }

  residual_engine(const residual_codec& codec_, const std::uint32_t* panels_, std::size_t doc_rows_, matrix_view<float> query_,
                  const float* qct_, float* scratch_, const std::uint32_t* query_bf16_ = nullptr, prefetch_hint next_ = {},
                  const residual_i8_query* query_i8_ = nullptr, const std::uint32_t* query_wide_ = nullptr) noexcept
      : codec(codec_), panels(panels_), dim(query_.cols), doc_rows(doc_rows_), panel_total(panel_count<Arch>(doc_rows_)),
        query(query_), qct(qct_), scratch(scratch_), query_bf16(query_bf16_), query_i8(query_i8_), query_wide(query_wide_),
        group_panels(group_of(query_.cols)),
        score_rows(centroid_score_rows<Arch>(query_.rows)), next(next_),
        group_scores(scratch_ + group_of(query_.cols) * decoded_words(query_.cols) + staging_floats(query_.cols)),
        inner(make_inner(0, {})) {}

  /// The inner engine over the decoded group in the scratch (rows: the group's tokens).
  inner_t make_inner(std::size_t rows, prefetch_hint hint) const noexcept {
    if constexpr (P == residual_path::vnni)
      return inner_t(scratch, rows, query, query_i8, hint);
    else if constexpr (P == residual_path::vector && !rounds)
      return inner_t(scratch, rows, query, query_bf16, hint, query_wide);
    else
      return inner_t(scratch, rows, query, query_bf16, hint);
  }

  std::size_t panel_stride() const noexcept { return codec.panel_words(width); }

  template <std::size_t R, std::size_t V>
  void tile(std::size_t i0, std::size_t p0, batch (&acc)[R][V]) const noexcept {
    inner.template tile<R, V>(i0, p0 - group_first, acc);
    const std::size_t rows = std::min(R, query.rows - i0);  // AMX tiles: 16 rows, maybe past the query
    const std::size_t stride = group_panels * width;
    const float* scores = group_scores + i0 * stride + (p0 - group_first) * width;
    for (std::size_t r = 0; r != rows; ++r)
      for (std::size_t v = 0; v != V; ++v) acc[r][v] += batch::load_aligned(scores + r * stride + v * width);
  }

  /// Decodes each group of panels, then visits its tiles (panel indices are the document's).
  template <class Visit>
  void sweep(Visit&& visit) const {
    const std::size_t words = decoded_words(dim);
    float* staging = scratch + group_panels * words;  // rounds: one float panel before rounding to bf16
    for (std::size_t g0 = 0; g0 < panel_total; g0 += group_panels) {
      const std::size_t g1 = std::min(panel_total, g0 + group_panels);
      for (std::size_t p = g0; p != g1; ++p)
        centroid_rows_of_panel<Arch>(qct, score_rows, reinterpret_cast<const std::uint16_t*>(panels + p * panel_stride()),
                                     group_scores + (p - g0) * width, group_panels * width);
#if ALIGNER_HAVE_WIDE_VNNI
      if constexpr (P == residual_path::vnni && width < 16) {  // 16 / W panels at a time into one 16-token panel
        constexpr std::size_t per = 16 / width;
        for (std::size_t p = g0; p < g1; p += per)
          detail::decode_residual_panels_u8_wide<width>(codec.quad_tables(), codec.nbits(), dim, panels + p * panel_stride(), panel_stride(),
                                                        std::min(per, g1 - p), reinterpret_cast<std::uint32_t*>(scratch + (p - g0) * words));
      } else
#endif
#if ALIGNER_HAVE_AMX
      if constexpr (P == residual_path::amx && (width == 4 || width == 8)) {
        constexpr std::size_t per = 16 / width;
        if (wide_decode)
          for (std::size_t p = g0; p < g1; p += per)
            detail::decode_residual_panels_bf16_wide<width>(codec, panels + p * panel_stride(), panel_stride(), std::min(per, g1 - p),
                                                            reinterpret_cast<std::uint32_t*>(scratch + (p - g0) * words), words);
      }
#endif
      for (std::size_t p = g0; p != g1 && !wide_decode; ++p) {
        float* out = scratch + (p - g0) * words;
        if constexpr (P == residual_path::vnni) {
          decode_residual_panel_u8<Arch>(codec, panels + p * panel_stride(), reinterpret_cast<std::uint32_t*>(out));
        } else if constexpr (rounds) {
          if (decode_residual_panel_bf16<Arch>(codec, panels + p * panel_stride(), reinterpret_cast<std::uint32_t*>(out))) continue;
          decode_residual_panel<Arch>(codec, panels + p * panel_stride(), staging);
          float_panel_to_bf16_pairs<Arch>(staging, dim, reinterpret_cast<std::uint32_t*>(out));
        } else {
          decode_residual_panel<Arch>(codec, panels + p * panel_stride(), out);
        }
      }
      group_first = g0;
      const std::size_t rows_here = std::min(doc_rows, g1 * width) - g0 * width;
      inner = make_inner(rows_here, g1 < panel_total ? prefetch_hint{panels + g1 * panel_stride(), (g1 - g0) * panel_stride() * 4} : next);
      inner.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) { visit.template operator()<R>(i0, g0 + p0, here); });
    }
  }
};

/// Calls run(std::integral_constant<residual_path, P>{}) with the path that scores `codec`'s panels now: AMX where
/// residual_on_amx(codec), else VNNI where residual_on_vnni(codec), else the vector tiles.
template <class Arch, class Run>
decltype(auto) with_residual_path(const residual_codec& codec, Run&& run) {
  if constexpr (amx_tiles_fit<Arch>)
    if (residual_on_amx<Arch>(codec)) return run(std::integral_constant<residual_path, residual_path::amx>{});
  if constexpr (vnni_compiled<Arch>)
    if (residual_on_vnni<Arch>(codec)) return run(std::integral_constant<residual_path, residual_path::vnni>{});
  return run(std::integral_constant<residual_path, residual_path::vector>{});
}

/// Every S_ij of one residual document into s_out (query.rows x panels * W, row stride s_stride; padding lanes hold
/// the padding's score): the tiles the fused kernel folds (the path of with_residual_path, as
/// aligned_row_sums_residual), for explain. `qct`: centroid_scores_by_centroid of the query; `scratch` is resized as
/// needed; `query_bf16` and `query_i8` as aligned_row_sums_residual.
template <class Arch = default_arch>
void residual_similarity_rows(matrix_view<float> query, const residual_codec& codec, const std::uint32_t* panels, std::size_t doc_rows,
                              float* s_out, std::size_t s_stride, const float* qct, aligned_vector<float>& scratch,
                              const std::uint32_t* query_bf16 = nullptr, const residual_i8_query* query_i8 = nullptr,
                              const std::uint32_t* query_wide = nullptr) {
  std::vector<std::uint32_t> converted;
  aligned_vector<std::uint32_t> converted_wide;
  residual_i8_query converted_i8;
  with_residual_path<Arch>(codec, [&]<residual_path P>(std::integral_constant<residual_path, P>) {
    using engine_t = residual_engine<Arch, P>;
    if constexpr (engine_t::rounds) query_bf16 = bf16_pairs_or_convert(query, query_bf16, converted);
    if constexpr (P == residual_path::vnni) query_i8 = residual_i8_or_convert(query, codec, query_i8, converted_i8);
    const std::uint32_t* wide = nullptr;
    if constexpr (P == residual_path::vector && !engine_t::rounds) wide = wide_query_or_convert<Arch>(storage::f32, query, query_wide, converted_wide);
    if (scratch.size() < engine_t::scratch_floats(query.cols, query.rows)) scratch.resize(engine_t::scratch_floats(query.cols, query.rows));
    const engine_t engine(codec, panels, doc_rows, query, qct, scratch.data(), query_bf16, {}, query_i8, wide);
    engine.sweep([&]<std::size_t R>(std::size_t i0, std::size_t p0, std::size_t here) { engine.template store_rows<R>(i0, p0, here, s_out, s_stride); });
  });
}

#ifdef ALIGNER_KERNEL_INSTANCE  // separate compilation (core/config.hpp)
ALIGNER_KERNEL_INSTANCE void residual_similarity_rows<default_arch>(matrix_view<float>, const residual_codec&, const std::uint32_t*,
                                                                    std::size_t, float*, std::size_t, const float*,
                                                                    aligned_vector<float>&, const std::uint32_t*,
                                                                    const residual_i8_query*, const std::uint32_t*);
#endif

}  // namespace aligner

ALIGNER_KERNEL_DIAGNOSTICS_END
