/** @file token_store.hpp
 *  @brief Owning store of many token sequences (documents), packed once into the kernels' panel layout.
 *
 *  Scoring a query against packed documents skips the per-call packing of score_batch, which costs about as
 *  much as the scoring itself for short queries. Precision: float32, or bfloat16 (half the memory and
 *  bandwidth; AVX512-BF16 CPUs score it with vdpbf16ps, others decode to float). Sequences are appended (never modified); each may carry
 *  per-token salience (either every sequence has it or none does). Memory: (rows rounded up to the panel
 *  width) x dim floats per sequence. Const member functions are safe to call from many threads; `add` is not
 *  safe concurrently with anything else. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/types.hpp"
#include "kernels/panels.hpp"
#include "scorer.hpp"

namespace aligner {

class token_store {
 public:
  token_store() = default;
  /// An empty store of vectors of dimension `dim` (>= 1), packed with precision `precision`.
  explicit token_store(std::size_t dim, storage precision = storage::f32) : dim_(dim), storage_(precision) {
    ALIGNER_EXPECTS(dim >= 1, "token_store dim must be >= 1, got ", dim);
  }
  /// A store holding every sequence of `sequences`; `salience` empty or one value per token of the set.
  explicit token_store(const sequence_set_view& sequences, std::span<const float> salience = {}, bool check_finite = true,
                       storage precision = storage::f32)
      : token_store(sequences.tokens.cols == 0 ? 1 : sequences.tokens.cols, precision) {
    add(sequences, salience, check_finite);
  }

  std::size_t dim() const noexcept { return dim_; }
  storage precision() const noexcept { return storage_; }
  std::size_t size() const noexcept { return offsets_.size() - 1; }
  std::size_t tokens() const noexcept { return std::size_t(offsets_.back()); }
  std::size_t length(std::size_t s) const noexcept { return std::size_t(offsets_[s + 1] - offsets_[s]); }
  std::int64_t first_token(std::size_t s) const noexcept { return offsets_[s]; }
  bool has_salience() const noexcept { return has_salience_; }
  /// Bytes of the packed vectors (including panel padding) and salience.
  std::size_t memory_bytes() const noexcept { return packed_elements() * 4 + salience_.size() * sizeof(float); }

  /// Packed panels of sequence s: floats (storage::f32) or 32-bit words (bf16, f16, i8); see kernels/panels.hpp.
  const void* panels(std::size_t s) const noexcept { return static_cast<const std::uint32_t*>(base()) + panel_offsets_[s]; }
  /// Every packed 4-byte element of the store (for saving); offsets into it are panel_offsets().
  const void* packed_data() const noexcept { return base(); }
  std::size_t packed_elements() const noexcept {
    return keep_alive_ ? adopted_size_ : (storage_ == storage::f32 ? panels_.size() : words_.size());
  }
  std::span<const std::int64_t> panel_offsets() const noexcept { return panel_offsets_; }
  std::span<const std::int64_t> offsets() const noexcept { return offsets_; }
  std::span<const float> all_salience() const noexcept { return salience_; }
  /// True when the panels live in adopted (e.g. memory-mapped, read-only) memory.
  bool is_adopted() const noexcept { return keep_alive_ != nullptr; }

  /// Salience of sequence s (empty when the store has none).
  std::span<const float> salience(std::size_t s) const noexcept {
    if (!has_salience_) return {};
    return {salience_.data() + offsets_[s], length(s)};
  }
  /// Component c of token j of sequence s (as stored: bf16 values are returned exactly).
  float at(std::size_t s, std::size_t j, std::size_t c) const noexcept {
    return packed_value(storage_, panels(s), panel_width<>, dim_, j, c);
  }
  /// Copies sequence s back to row-major order (length(s) x dim floats).
  void unpack(std::size_t s, float* out) const noexcept {
    for (std::size_t j = 0; j != length(s); ++j)
      for (std::size_t c = 0; c != dim_; ++c) out[j * dim_ + c] = at(s, j, c);
  }
  std::vector<float> unpack(std::size_t s) const {
    std::vector<float> out(length(s) * dim_);
    unpack(s, out.data());
    return out;
  }

  /// The packed bytes of sequence which[t] (empty past the end): passed to the kernel scoring which[t - 1], which
  /// prefetches them while it computes.
  prefetch_hint prefetch_hint_of(std::span<const std::uint32_t> which, std::size_t t) const noexcept {
    if (t >= which.size()) return {};
    return {panels(which[t]), packed_elements_for(length(which[t])) * 4};
  }

  /// Packed elements (4-byte) of a sequence of `rows` tokens in this store's precision.
  std::size_t packed_elements_for(std::size_t rows) const noexcept {
    return packed_words(storage_, rows, dim_);
  }

  /// A store over packed panels held elsewhere (this build's panel width, 64-byte aligned, `elements` 4-byte
  /// elements), kept alive by `owner`. Offsets and panel offsets are validated; a later add() copies first.
  static token_store adopt(std::size_t dim, storage precision, std::vector<std::int64_t> offsets,
                           std::vector<std::int64_t> panel_offsets, const void* packed, std::size_t elements,
                           std::vector<float> salience, bool has_salience, std::shared_ptr<const void> owner) {
    token_store t(dim, precision);
    ALIGNER_EXPECTS(!offsets.empty() && panel_offsets.size() + 1 == offsets.size(), "token_store: ", panel_offsets.size(),
                    " panel offsets for ", offsets.size(), " token offsets");
    detail::check_offsets(offsets, std::size_t(offsets.back()), "token_store offsets");
    std::int64_t expect = 0;
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
      ALIGNER_EXPECTS(offsets[s + 1] - offsets[s] < (std::int64_t(1) << 24), "token_store sequence ", s, " has ",
                      offsets[s + 1] - offsets[s], " tokens; at most 2^24 - 1 are supported");
      ALIGNER_EXPECTS(panel_offsets[s] == expect, "token_store panel offset ", s, " is ", panel_offsets[s], ", expected ", expect);
      expect += std::int64_t(t.packed_elements_for(std::size_t(offsets[s + 1] - offsets[s])));
    }
    ALIGNER_EXPECTS(std::size_t(expect) == elements, "token_store holds ", elements, " packed elements, offsets need ", expect);
    ALIGNER_EXPECTS(reinterpret_cast<std::uintptr_t>(packed) % 64 == 0 || elements == 0, "adopted panels must be 64-byte aligned");
    ALIGNER_EXPECTS(!has_salience || salience.size() == std::size_t(offsets.back()), "token_store salience has ", salience.size(),
                    " values for ", offsets.back(), " tokens");
    t.offsets_ = std::move(offsets);
    t.panel_offsets_ = std::move(panel_offsets);
    t.salience_ = std::move(salience);
    t.has_salience_ = has_salience;
    t.adopted_ = packed;
    t.adopted_size_ = elements;
    t.keep_alive_ = owner ? std::move(owner) : std::make_shared<int>(0);
    return t;
  }

  /// Copies adopted panels into memory the store owns (no-op when it owns them already).
  void detach() { own(); }

  /// Appends one sequence. Throws (store unchanged) on a dim mismatch, NaN/Inf, or a salience that is missing,
  /// surplus, of the wrong length, negative or non-finite.
  std::size_t add(matrix_view<float> tokens, std::span<const float> salience = {}, bool check_finite = true) {
    check_one(tokens, salience, check_finite);
    return append(tokens, salience);
  }

  /// Appends every sequence of a set (salience: one value per token of the set, or empty). All or nothing.
  void add(const sequence_set_view& sequences, std::span<const float> salience = {}, bool check_finite = true) {
    detail::check_offsets(sequences.offsets, sequences.tokens.rows, "offsets");
    ALIGNER_EXPECTS(sequences.tokens.rows == 0 || sequences.tokens.cols == dim_, "token_store of dim ", dim_,
                    " cannot take tokens of dim ", sequences.tokens.cols);
    detail::check_matrix(sequences.tokens, "tokens", check_finite);
    check_range(sequences.tokens);
    detail::check_weights(salience, sequences.tokens.rows, "salience");
    check_salience_mode(!salience.empty(), sequences.size());
    own();
    if (storage_ == storage::f32) panels_.reserve(panels_.size() + packed_elements_for(sequences.tokens.rows) + sequences.size() * panel_width<> * dim_);
    else words_.reserve(words_.size() + packed_elements_for(sequences.tokens.rows) + sequences.size() * panel_width<> * dim_);
    for (std::size_t s = 0; s != sequences.size(); ++s)
      append(sequences.sequence(s), salience.empty() ? salience
                                                     : salience.subspan(std::size_t(sequences.offsets[s]), sequences.length(s)));
  }

 private:
  void check_salience_mode(bool with, std::size_t count) const {
    if (count == 0) return;
    if (size() > 0)
      ALIGNER_EXPECTS(with == has_salience_, "token_store ", has_salience_ ? "has" : "has no",
                      " salience; every sequence must ", has_salience_ ? "come with" : "come without", " one");
  }
  void check_one(matrix_view<float> tokens, std::span<const float> salience, bool check_finite) const {
    ALIGNER_EXPECTS(tokens.rows == 0 || tokens.cols == dim_, "token_store of dim ", dim_, " cannot take tokens of dim ",
                    tokens.cols);
    ALIGNER_EXPECTS(tokens.rows < (std::size_t{1} << 24), "a sequence holds ", tokens.rows,
                    " tokens; at most 2^24 - 1 are supported");
    detail::check_matrix(tokens, "tokens", check_finite);
    check_range(tokens);
    detail::check_weights(salience, tokens.rows, "salience");
    const bool with = !salience.empty() || (tokens.rows == 0 && has_salience_);
    check_salience_mode(with, 1);
  }
  /// float16 storage holds magnitudes below 65520 (larger ones would round to infinity); non-finite values are
  /// rejected too, also when the caller skipped the finiteness check.
  void check_range(matrix_view<float> tokens) const {
    std::size_t row = 0, col = 0;
    if (storage_ == storage::f16)
      ALIGNER_EXPECTS(fits_f16(tokens, row, col), "tokens[", row, "][", col, "] = ", tokens.row(row)[col],
                      " is outside the float16 range (|x| < 65520) of this store");
  }
  const void* base() const noexcept {
    if (keep_alive_) return adopted_;
    return storage_ == storage::f32 ? static_cast<const void*>(panels_.data()) : static_cast<const void*>(words_.data());
  }
  void own() {
    if (!keep_alive_) return;
    if (storage_ == storage::f32) {
      const auto* p = static_cast<const float*>(adopted_);
      panels_.assign(p, p + adopted_size_);
    } else {
      const auto* p = static_cast<const std::uint32_t*>(adopted_);
      words_.assign(p, p + adopted_size_);
    }
    adopted_ = nullptr;
    keep_alive_.reset();
    adopted_size_ = 0;
  }
  std::size_t append(matrix_view<float> tokens, std::span<const float> salience) {
    own();
    if (size() == 0) has_salience_ = !salience.empty();
    const std::size_t at = packed_elements();
    if (storage_ == storage::f32) {
      panels_.resize(at + packed_size(tokens.rows, dim_));
      if (tokens.rows) pack_panels(tokens, panels_.data() + at);
    } else {
      words_.resize(at + packed_elements_for(tokens.rows));
      if (tokens.rows) pack_panels_as(storage_, tokens, words_.data() + at);
    }
    panel_offsets_.push_back(std::int64_t(at));
    offsets_.push_back(offsets_.back() + std::int64_t(tokens.rows));
    if (has_salience_) salience_.insert(salience_.end(), salience.begin(), salience.end());
    return size() - 1;
  }

  std::size_t dim_ = 1;
  storage storage_ = storage::f32;
  aligned_vector<float> panels_;           ///< owned float panels (storage::f32)
  aligned_vector<std::uint32_t> words_;    ///< owned panels of the other storages, as 32-bit words
  const void* adopted_ = nullptr;          ///< adopted panels (valid while keep_alive_ is set)
  std::size_t adopted_size_ = 0;
  std::shared_ptr<const void> keep_alive_;  ///< owner of adopted memory (e.g. a memory-mapped file)
  std::vector<std::int64_t> panel_offsets_;
  std::vector<std::int64_t> offsets_{0};
  std::vector<float> salience_;
  bool has_salience_ = false;
};

/// Scores one query against sequences `which` of a store into out (out[t] for which[t]). The store's salience
/// is used when `use_store_salience` and the store has one; params.doc_salience must be empty. Validation as
/// aligner::score; nothing is written on error.
inline void score_store(matrix_view<float> query, const token_store& store, std::span<const std::uint32_t> which,
                        std::span<float> out, const score_params& params = {}, bool use_store_salience = true) {
  ALIGNER_EXPECTS(params.doc_salience.empty(), "score_store takes document salience from the store, not params.doc_salience");
  ALIGNER_EXPECTS(query.rows == 0 || query.cols == store.dim(), "query dim ", query.cols, " does not match the store's dim ",
                  store.dim());
  detail::check_score_inputs(query, matrix_view<float>(nullptr, 0, store.dim()), params, 0);
  ALIGNER_EXPECTS(out.size() == which.size(), "score_store output has ", out.size(), " entries for ", which.size(),
                  " sequences");
  for (std::uint32_t s : which) ALIGNER_EXPECTS(s < store.size(), "sequence index ", s, " is outside the store of ", store.size());
  const bool sal = use_store_salience && store.has_salience();
  const float* uq = detail::data_or_null(params.query_salience);
  for (std::size_t t = 0; t != which.size(); ++t) {
    const std::size_t s = which[t];
    out[t] = detail::score_packed(query, store.panels(s), store.length(s), store.precision(), params.strategy, params.norm, uq,
                                  sal ? store.salience(s).data() : nullptr, store.prefetch_hint_of(which, t + 1));
  }
}

/// Scores one query against sequences `which` under several strategies in one pass over each S:
/// out[t * strategies.size() + g] is sequence which[t] under strategies[g]. Validation as score_store.
inline void score_store_multi(matrix_view<float> query, const token_store& store, std::span<const std::uint32_t> which,
                              std::span<const alignment> strategies, std::span<float> out, const score_params& params = {},
                              bool use_store_salience = true) {
  ALIGNER_EXPECTS(params.doc_salience.empty(), "score_store_multi takes document salience from the store, not params.doc_salience");
  ALIGNER_EXPECTS(query.rows == 0 || query.cols == store.dim(), "query dim ", query.cols, " does not match the store's dim ",
                  store.dim());
  detail::check_score_inputs(query, matrix_view<float>(nullptr, 0, store.dim()), params, 0);
  for (const auto& a : strategies) a.validate();
  ALIGNER_EXPECTS(out.size() == which.size() * strategies.size(), "score_store_multi output has ", out.size(), " entries for ",
                  which.size(), " sequences x ", strategies.size(), " strategies");
  for (std::uint32_t s : which) ALIGNER_EXPECTS(s < store.size(), "sequence index ", s, " is outside the store of ", store.size());
  const bool sal = use_store_salience && store.has_salience();
  for (std::size_t t = 0; t != which.size(); ++t)
    detail::score_packed_multi(query, store.panels(which[t]), store.length(which[t]), store.precision(), strategies, params.norm,
                               detail::data_or_null(params.query_salience), sal ? store.salience(which[t]).data() : nullptr,
                               out.data() + t * strategies.size(), store.prefetch_hint_of(which, t + 1));
}

/// Scores one query against every sequence of a store (out has store.size() entries).
inline void score_store(matrix_view<float> query, const token_store& store, std::span<float> out,
                        const score_params& params = {}, bool use_store_salience = true) {
  std::vector<std::uint32_t> all(store.size());
  std::iota(all.begin(), all.end(), std::uint32_t{0});
  score_store(query, store, all, out, params, use_store_salience);
}

}  // namespace aligner
