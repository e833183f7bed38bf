/** @file token_store.hpp
 *  @brief Owning store of many token sequences (documents), packed once into the kernels' panel layout.
 *
 *  Scoring a query against packed documents (math/scorer.hpp: score_packed, score_store) skips the per-call
 *  packing of score_batch. Precision: any storage of kernels/storage.hpp (f32; bf16 and f16 halve the memory and
 *  bandwidth; i8 with a per-token scale quarters it). Sequences are appended (never modified); each may carry
 *  per-token salience (either every sequence has it or none does). The panels are owned, or adopted from memory
 *  held elsewhere (a memory-mapped index file), read-only until the next add copies them.
 *  Memory: packed_words(precision, rows, dim) * 4 bytes per sequence, plus 4 bytes of salience per token.
 *  Const member functions are safe to call from many threads; `add` is not safe concurrently with anything else. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"
#include "../kernels/layout.hpp"
#include "../kernels/residual.hpp"
#include "../kernels/storage.hpp"

namespace aligner {

class token_store {
 public:
  token_store() = default;
  /// An empty store of vectors of dimension `dim` (>= 1), packed with precision `precision`; storage::residual
  /// needs the codec (of the same dim) that encodes and decodes its tokens.
  explicit token_store(std::size_t dim, storage precision = storage::f32, std::shared_ptr<const residual_codec> codec = {})
      : dim_(dim), storage_(precision), codec_(std::move(codec)) {
    ALIGNER_EXPECTS(dim >= 1, "token_store dim must be >= 1, got ", dim);
    ALIGNER_EXPECTS((precision == storage::residual) == (codec_ != nullptr),
                    precision == storage::residual ? "a residual token_store needs a codec" : "only a residual token_store takes a codec");
    if (codec_) ALIGNER_EXPECTS(codec_->dim() == dim, "residual codec has dim ", codec_->dim(), " but the token_store has dim ", dim);
  }
  /// A store holding every sequence of `sequences`; `salience` empty or one value per token of the set.
  explicit token_store(const sequence_set_view& sequences, std::span<const float> salience = {}, bool check_finite = true,
                       storage precision = storage::f32)
      : token_store(sequences.tokens.cols == 0 ? 1 : sequences.tokens.cols, precision) {
    add(sequences, salience, check_finite);
  }

  std::size_t dim() const noexcept { return dim_; }
  storage precision() const noexcept { return storage_; }
  /// The codec of a residual store (null otherwise), shared with copies of the store.
  const std::shared_ptr<const residual_codec>& codec() const noexcept { return codec_; }
  std::size_t size() const noexcept { return offsets_.size() - 1; }
  std::size_t tokens() const noexcept { return std::size_t(offsets_.back()); }
  std::size_t length(std::size_t s) const noexcept { return std::size_t(offsets_[s + 1] - offsets_[s]); }
  std::int64_t first_token(std::size_t s) const noexcept { return offsets_[s]; }
  bool has_salience() const noexcept { return has_salience_; }
  /// Bytes of the packed vectors (including panel padding) and salience.
  std::size_t memory_bytes() const noexcept { return packed_elements() * 4 + salience_.size() * sizeof(float); }

  /// Packed panels of sequence s, in 32-bit words (kernels/layout.hpp).
  const std::uint32_t* panels(std::size_t s) const noexcept { return base() + panel_offsets_[s]; }
  /// Every packed word of the store (for saving); offsets into it are panel_offsets().
  const std::uint32_t* packed_data() const noexcept { return base(); }
  std::size_t packed_elements() const noexcept { return adopted_ ? adopted_size_ : words_.size(); }
  std::span<const std::int64_t> panel_offsets() const noexcept { return panel_offsets_; }
  std::span<const std::int64_t> offsets() const noexcept { return offsets_; }
  std::span<const float> all_salience() const noexcept { return salience_; }
  /// True when the panels live in adopted (e.g. memory-mapped, read-only) memory.
  bool is_adopted() const noexcept { return adopted_ != nullptr; }

  /// The store as the scorer reads it (valid until the next add or until the store is destroyed).
  packed_sequences view() const noexcept {
    return {storage_, dim_, base(), panel_offsets_, offsets_, has_salience_ ? std::span<const float>(salience_) : std::span<const float>(),
            codec_.get(), codec_ ? codec_->panel_words(panel_width<>) : 0};
  }
  operator packed_sequences() const noexcept { return view(); }  // NOLINT(google-explicit-constructor): score_store(q, store, ...)

  /// Salience of sequence s (empty when the store has none).
  std::span<const float> salience(std::size_t s) const noexcept {
    if (!has_salience_) return {};
    return {salience_.data() + offsets_[s], length(s)};
  }
  /// Component c of token j of sequence s (as stored: bf16/f16 values exactly, i8 as q * scale).
  float at(std::size_t s, std::size_t j, std::size_t c) const noexcept {
    if (codec_) return codec_->decode(panels(s) + (j / panel_width<>)*codec_->panel_words(panel_width<>), panel_width<>, j % panel_width<>, c);
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

  /// Packed words of a sequence of `rows` tokens in this store's precision.
  std::size_t packed_elements_for(std::size_t rows) const noexcept {
    if (codec_) return panel_count(rows) * codec_->panel_words(panel_width<>);
    return packed_words(storage_, rows, dim_);
  }

  /// A store over packed panels held elsewhere (this build's panel width, 64-byte aligned, `elements` 32-bit
  /// words), kept alive by `owner`. Offsets and panel offsets are validated; a later add() copies first.
  static token_store adopt(std::size_t dim, storage precision, std::vector<std::int64_t> offsets,
                           std::vector<std::int64_t> panel_offsets, const void* packed, std::size_t elements,
                           std::vector<float> salience, bool has_salience, std::shared_ptr<const void> owner,
                           std::shared_ptr<const residual_codec> codec = {}) {
    token_store t(dim, precision, std::move(codec));
    ALIGNER_EXPECTS(!offsets.empty() && panel_offsets.size() + 1 == offsets.size(), "token_store: ", panel_offsets.size(),
                    " panel offsets for ", offsets.size(), " token offsets");
    detail::check_offsets(offsets, std::size_t(offsets.back()), "token_store offsets");
    std::int64_t expect = 0;
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
      ALIGNER_EXPECTS(panel_offsets[s] == expect, "token_store panel offset ", s, " is ", panel_offsets[s], ", expected ", expect);
      expect += std::int64_t(t.packed_elements_for(std::size_t(offsets[s + 1] - offsets[s])));
    }
    ALIGNER_EXPECTS(std::size_t(expect) == elements, "token_store holds ", elements, " packed elements, offsets need ", expect);
    ALIGNER_EXPECTS(reinterpret_cast<std::uintptr_t>(packed) % 64 == 0 || elements == 0, "adopted panels must be 64-byte aligned");
    if (t.codec_) {  // every lane's centroid id (padding included: the kernel looks them all up) must name a centroid
      const std::size_t width = panel_width<>, words = t.codec_->panel_words(width), K = t.codec_->centroids();
      const auto* base = static_cast<const std::uint32_t*>(packed);
      for (std::size_t p = 0; p < elements; p += words)
        for (std::size_t l = 0; l != width; ++l)
          ALIGNER_EXPECTS(residual_codec::centroid_of(base + p, l) < K, "token_store: panel ", p / words, " lane ", l, " names centroid ",
                          residual_codec::centroid_of(base + p, l), " of ", K);
    }
    ALIGNER_EXPECTS(!has_salience || salience.size() == std::size_t(offsets.back()), "token_store salience has ", salience.size(),
                    " values for ", offsets.back(), " tokens");
    t.offsets_ = std::move(offsets);
    t.panel_offsets_ = std::move(panel_offsets);
    t.salience_ = std::move(salience);
    t.has_salience_ = has_salience;
    t.adopted_ = elements ? static_cast<const std::uint32_t*>(packed) : nullptr;
    t.adopted_size_ = elements;
    t.keep_alive_ = std::move(owner);
    return t;
  }

  /// Copies adopted panels into memory the store owns (no-op when it owns them already).
  void detach() { own(); }

  /// Appends one sequence. Throws (store unchanged) on a dim mismatch, a sequence over max_sequence_tokens, NaN/Inf,
  /// a value the precision cannot hold, or a salience that is missing, surplus, of the wrong length, negative or
  /// non-finite.
  std::size_t add(matrix_view<float> tokens, std::span<const float> salience = {}, bool check_finite = true) {
    const std::int64_t offsets[] = {0, std::int64_t(tokens.rows)};
    add(sequence_set_view{tokens, offsets}, salience, check_finite);
    return size() - 1;
  }

  /// Appends every sequence of a set (salience: one value per token of the set, or empty). All or nothing.
  void add(const sequence_set_view& sequences, std::span<const float> salience = {}, bool check_finite = true) {
    detail::check_offsets(sequences.offsets, sequences.tokens.rows, "offsets");
    ALIGNER_EXPECTS(sequences.tokens.rows == 0 || sequences.tokens.cols == dim_, "token_store of dim ", dim_,
                    " cannot take tokens of dim ", sequences.tokens.cols);
    detail::check_matrix(sequences.tokens, "tokens", check_finite);
    check_storable(storage_, sequences.tokens);
    detail::check_weights(salience, sequences.tokens.rows, "salience");
    if (size() > 0 && sequences.size() > 0) {
      const bool with = !salience.empty() || (sequences.tokens.rows == 0 && has_salience_);
      ALIGNER_EXPECTS(with == has_salience_, "token_store ", has_salience_ ? "has" : "has no",
                      " salience; every sequence must ", has_salience_ ? "come with" : "come without", " one");
    }
    own();
    // The first sequences decide whether the store has salience (also when the very first one is empty).
    if (size() == 0 && sequences.size() > 0) has_salience_ = !salience.empty();
    std::size_t words = 0;
    for (std::size_t s = 0; s != sequences.size(); ++s) words += packed_elements_for(sequences.length(s));
    // Geometric growth: reserving exactly what this add needs reallocated (and copied) the whole store on every
    // add, which made adding documents one at a time (and loading a file of another panel width) quadratic.
    if (const std::size_t need = words_.size() + words; need > words_.capacity()) words_.reserve(std::max(need, words_.capacity() + words_.capacity() / 2));
    for (std::size_t s = 0; s != sequences.size(); ++s)
      append(sequences.sequence(s), salience.empty() ? salience : salience.subspan(std::size_t(sequences.offsets[s]), sequences.length(s)));
  }

 private:
  const std::uint32_t* base() const noexcept { return adopted_ ? adopted_ : words_.data(); }
  void own() {
    if (!adopted_) {
      keep_alive_.reset();
      return;
    }
    words_.assign(adopted_, adopted_ + adopted_size_);
    adopted_ = nullptr;
    keep_alive_.reset();
    adopted_size_ = 0;
  }
  void append(matrix_view<float> tokens, std::span<const float> salience) {
    const std::size_t at = words_.size();
    words_.resize(at + packed_elements_for(tokens.rows));
    if (tokens.rows && codec_) {
      std::vector<std::uint32_t> ids(tokens.rows);
      scan_workspace ws;
      codec_->assign(tokens, ids.data(), ws);
      constexpr std::size_t width = panel_width<>;
      const std::size_t words = codec_->panel_words(width);
      for (std::size_t j = 0; j != tokens.rows; ++j) codec_->encode(tokens.row(j), ids[j], width, j % width, words_.data() + at + (j / width) * words);
    } else if (tokens.rows) {
      pack_panels(storage_, tokens, words_.data() + at);
    }
    panel_offsets_.push_back(std::int64_t(at));
    offsets_.push_back(offsets_.back() + std::int64_t(tokens.rows));
    if (has_salience_) salience_.insert(salience_.end(), salience.begin(), salience.end());
  }

  std::size_t dim_ = 1;
  storage storage_ = storage::f32;
  std::shared_ptr<const residual_codec> codec_;  ///< storage::residual only
  aligned_vector<std::uint32_t> words_;     ///< owned panels
  const std::uint32_t* adopted_ = nullptr;  ///< adopted panels (kept alive by keep_alive_)
  std::size_t adopted_size_ = 0;
  std::shared_ptr<const void> keep_alive_;  ///< owner of adopted memory (e.g. a memory-mapped file)
  std::vector<std::int64_t> panel_offsets_;
  std::vector<std::int64_t> offsets_{0};
  std::vector<float> salience_;
  bool has_salience_ = false;
};

}  // namespace aligner
