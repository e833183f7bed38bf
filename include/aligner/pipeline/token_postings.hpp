/** @file token_postings.hpp
 *  @brief The map from the token index's vector ids to documents, with identical vectors indexed once.
 *
 *  With static token embeddings (GloVe, bag-of-words, model2vec-style encoders) a word has the same vector in every
 *  document that holds it. Giving each occurrence its own entry in the MIPS index fills a query token's k' hits
 *  with copies of one vector (an exact search breaks the tie by id, an approximate graph loses its way among
 *  equal points), so few documents are found. With deduplication the backend holds one entry per distinct vector,
 *  and a hit on it expands to every document holding that vector (its posting list).
 *
 *  Identity is by value: two vectors are the same when every component compares equal (+0 and -0 count as equal),
 *  decided through a 128-bit fingerprint of the components (the chance that two different vectors of a 10^9-token
 *  collection share one is below 10^-20; the fingerprint is not a defence against vectors crafted to collide).
 *  Memory per distinct vector: 4 bytes (its first document) + 16 (fingerprint) + about 8 (hash slots); each
 *  further document holding it: 4 bytes. Without deduplication (`dedup` false, and indexes saved before it) every
 *  indexed token has its own vector id and exactly one document, as before. */
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/types.hpp"

namespace aligner {

/// 128-bit fingerprint of a float vector's values (+0 and -0 equal).
struct vector_fingerprint {
  std::uint64_t lo = 0, hi = 0;
  friend bool operator==(const vector_fingerprint&, const vector_fingerprint&) = default;
};

namespace detail {

inline std::uint64_t mix64(std::uint64_t x) noexcept {  // the splitmix64 finaliser: every input bit moves every output bit
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

/// Two independent 64-bit lanes over the components' bit patterns (each lane multiplies by its own odd constant
/// and rotates, then both are finalised together with the length).
inline vector_fingerprint fingerprint(const float* v, std::size_t dim) noexcept {
  std::uint64_t a = 0x9e3779b97f4a7c15ull ^ dim, b = 0xc2b2ae3d27d4eb4full + dim;
  for (std::size_t c = 0; c != dim; ++c) {
    const std::uint64_t w = std::bit_cast<std::uint32_t>(v[c] + 0.0f);  // -0 + 0 = +0
    a = std::rotl((a ^ w) * 0xff51afd7ed558ccdull, 29);
    b = std::rotl((b + w) * 0xc4ceb9fe1a85ec53ull, 23) ^ a;
  }
  return {mix64(a ^ std::rotl(b, 17)), mix64(b + 0x632be59bd9b4e019ull * a)};
}

}  // namespace detail

class token_postings {
 public:
  /// An empty map; `dedup` true indexes identical vectors once.
  explicit token_postings(bool dedup = true) : dedup_(dedup) {}

  bool dedup() const noexcept { return dedup_; }
  /// Vectors in the token index (distinct vectors when deduplicating).
  std::size_t size() const noexcept { return first_doc_.size(); }
  /// (vector, document) pairs: every place a hit can expand to.
  std::size_t postings() const noexcept { return first_doc_.size() + extra_docs_; }

  /// Calls fn(document) for every document holding vector v (the first-added document first, then increasing).
  template <class Fn>
  void for_each_doc(std::size_t v, Fn&& fn) const {
    fn(first_doc_[v]);
    if (more_.empty()) return;
    if (const auto it = more_.find(std::uint32_t(v)); it != more_.end())
      for (std::uint32_t d : it->second) fn(d);
  }
  /// True when pred(document) holds for some document holding vector v (stops at the first).
  template <class Pred>
  bool any_doc(std::size_t v, Pred&& pred) const {
    if (pred(first_doc_[v])) return true;
    if (more_.empty()) return false;
    if (const auto it = more_.find(std::uint32_t(v)); it != more_.end())
      for (std::uint32_t d : it->second)
        if (pred(d)) return true;
    return false;
  }

  /// What adding some tokens would change, computed without changing anything (add is all or nothing: the plan is
  /// made, the backend gets `fresh_rows`, then commit applies the plan).
  struct plan {
    std::vector<std::size_t> fresh_rows;            ///< token rows (of the add) that are new vectors, in order
    std::vector<vector_fingerprint> fresh_prints;   ///< their fingerprints (dedup only)
    std::vector<std::uint32_t> fresh_docs;          ///< their documents
    std::vector<std::pair<std::uint32_t, std::uint32_t>> more;  ///< (existing or fresh vector id, document) pairs
  };

  /// Plans the addition of `tokens` (row r of document docs[r], documents in increasing order).
  plan prepare(matrix_view<float> tokens, std::span<const std::uint32_t> docs) const {
    plan p;
    if (!dedup_) {
      p.fresh_rows.resize(tokens.rows);
      for (std::size_t r = 0; r != tokens.rows; ++r) p.fresh_rows[r] = r;
      p.fresh_docs.assign(docs.begin(), docs.end());
      return p;
    }
    std::unordered_map<std::uint64_t, std::uint32_t> batch;  // fingerprint.lo -> the latest fresh index with it
    std::vector<std::uint32_t> chain;                        // fresh index -> the previous one with its .lo (or none)
    constexpr std::uint32_t none = std::uint32_t(-1);
    std::vector<std::uint32_t> last_doc;                                  // per fresh vector: its last document
    std::unordered_map<std::uint32_t, std::uint32_t> last_doc_old;        // existing vectors touched by this add
    for (std::size_t r = 0; r != tokens.rows; ++r) {
      const vector_fingerprint f = detail::fingerprint(tokens.row(r), tokens.cols);
      const std::uint32_t doc = docs[r];
      if (const std::size_t v = find(f); v != npos) {
        // An existing vector: a new document for its posting list unless it already holds this document.
        std::uint32_t last = last_of(v);
        if (const auto it = last_doc_old.find(std::uint32_t(v)); it != last_doc_old.end()) last = it->second;
        if (last != doc) {
          p.more.emplace_back(std::uint32_t(v), doc);
          last_doc_old[std::uint32_t(v)] = doc;
        }
        continue;
      }
      const auto [it, inserted] = batch.try_emplace(f.lo, none);
      std::uint32_t hit = it->second;
      while (hit != none && !(p.fresh_prints[hit] == f)) hit = chain[hit];
      if (hit != none) {
        if (last_doc[hit] != doc) {
          p.more.emplace_back(std::uint32_t(size() + hit), doc);
          last_doc[hit] = doc;
        }
        continue;
      }
      chain.push_back(it->second);
      it->second = std::uint32_t(p.fresh_rows.size());
      p.fresh_rows.push_back(r);
      p.fresh_prints.push_back(f);
      p.fresh_docs.push_back(doc);
      last_doc.push_back(doc);
    }
    return p;
  }

  /// Applies a plan made by prepare on this object (after the backend accepted the plan's fresh rows).
  void commit(plan&& p) {
    first_doc_.reserve(first_doc_.size() + p.fresh_docs.size());
    if (dedup_) {
      prints_.reserve(prints_.size() + p.fresh_prints.size());
      for (std::size_t i = 0; i != p.fresh_prints.size(); ++i) {
        prints_.push_back(p.fresh_prints[i]);
        first_doc_.push_back(p.fresh_docs[i]);
        insert_slot(first_doc_.size() - 1);
      }
    } else {
      first_doc_.insert(first_doc_.end(), p.fresh_docs.begin(), p.fresh_docs.end());
    }
    for (const auto& [v, d] : p.more) more_[v].push_back(d);
    extra_docs_ += p.more.size();
  }

  /// The state as flat arrays (for saving): first documents, fingerprints (2 words each), and the further
  /// documents as (vector ids ascending, offsets, documents).
  std::span<const std::uint32_t> first_docs() const noexcept { return first_doc_; }
  std::span<const vector_fingerprint> fingerprints() const noexcept { return prints_; }
  struct more_arrays {
    std::vector<std::uint32_t> vectors;
    std::vector<std::uint64_t> offsets;
    std::vector<std::uint32_t> docs;
  };
  more_arrays more() const {
    more_arrays m;
    for (const auto& [v, docs] : more_) m.vectors.push_back(v);
    std::sort(m.vectors.begin(), m.vectors.end());
    m.offsets.push_back(0);
    for (std::uint32_t v : m.vectors) {
      const auto& docs = more_.at(v);
      m.docs.insert(m.docs.end(), docs.begin(), docs.end());
      m.offsets.push_back(m.docs.size());
    }
    return m;
  }

  /// Rebuilds from the arrays of first_docs/fingerprints/more, checking that they fit together and that every
  /// document is below `documents`; throws aligner::invalid_argument naming what does not fit.
  static token_postings from_arrays(bool dedup, std::span<const std::uint32_t> first_docs, std::span<const vector_fingerprint> prints,
                                    std::span<const std::uint32_t> more_vectors, std::span<const std::uint64_t> more_offsets,
                                    std::span<const std::uint32_t> more_docs, std::size_t documents) {
    token_postings t(dedup);
    ALIGNER_EXPECTS(dedup ? prints.size() == first_docs.size() : prints.empty(), "token postings: ", prints.size(),
                    " fingerprints for ", first_docs.size(), " vectors");
    ALIGNER_EXPECTS(dedup || more_vectors.empty(), "token postings: posting lists without deduplication");
    ALIGNER_EXPECTS(more_offsets.size() == more_vectors.size() + 1 && more_offsets.front() == 0 && more_offsets.back() == more_docs.size(),
                    "token postings: posting offsets do not match the posting lists");
    for (std::size_t v = 0; v != first_docs.size(); ++v)
      ALIGNER_EXPECTS(first_docs[v] < documents, "token map names document ", first_docs[v], " (entry ", v, ") of ", documents);
    t.first_doc_.assign(first_docs.begin(), first_docs.end());
    t.prints_.assign(prints.begin(), prints.end());
    for (std::size_t v = 0; v != t.prints_.size(); ++v) {
      ALIGNER_EXPECTS(t.find(t.prints_[v]) == npos, "token postings: vector ", v, " repeats an earlier vector");
      t.insert_slot(v);
    }
    for (std::size_t i = 0; i != more_vectors.size(); ++i) {
      ALIGNER_EXPECTS(more_vectors[i] < first_docs.size() && (i == 0 || more_vectors[i] > more_vectors[i - 1]),
                      "token postings: posting list ", i, " names vector ", more_vectors[i]);
      ALIGNER_EXPECTS(more_offsets[i + 1] > more_offsets[i], "token postings: posting list ", i, " is empty");
      auto& docs = t.more_[more_vectors[i]];
      std::uint32_t last = first_docs[more_vectors[i]];
      for (std::uint64_t k = more_offsets[i]; k != more_offsets[i + 1]; ++k) {
        ALIGNER_EXPECTS(more_docs[k] < documents && more_docs[k] > last, "token postings: posting list ", i, " names document ",
                        more_docs[k], " out of order or beyond ", documents);
        docs.push_back(last = more_docs[k]);
      }
      t.extra_docs_ += docs.size();
    }
    return t;
  }

  /// Bytes held (the first-document map, fingerprints, hash slots and posting lists, without allocator overhead).
  std::size_t memory_bytes() const noexcept {
    return first_doc_.size() * 4 + prints_.size() * sizeof(vector_fingerprint) + slots_.size() * 4 + extra_docs_ * 4 +
           more_.size() * 32;
  }

 private:
  static constexpr std::size_t npos = std::size_t(-1);

  std::uint32_t last_of(std::size_t v) const {
    if (!more_.empty())
      if (const auto it = more_.find(std::uint32_t(v)); it != more_.end()) return it->second.back();
    return first_doc_[v];
  }
  std::size_t find(const vector_fingerprint& f) const noexcept {
    if (slots_.empty()) return npos;
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t s = std::size_t(f.lo) & mask;; s = (s + 1) & mask) {
      if (slots_[s] == 0) return npos;
      if (prints_[slots_[s] - 1] == f) return slots_[s] - 1;
    }
  }
  void insert_slot(std::size_t v) {
    if (2 * (prints_.size()) > slots_.size()) {  // keep the load at most 1/2
      std::vector<std::uint32_t> old = std::move(slots_);
      slots_.assign(std::max<std::size_t>(64, std::bit_ceil(4 * prints_.size())), 0u);
      for (std::uint32_t s : old)
        if (s) place(s - 1);
    }
    place(v);
  }
  void place(std::size_t v) noexcept {
    const std::size_t mask = slots_.size() - 1;
    std::size_t s = std::size_t(prints_[v].lo) & mask;
    while (slots_[s] != 0) s = (s + 1) & mask;
    slots_[s] = std::uint32_t(v + 1);
  }

  bool dedup_ = true;
  std::vector<std::uint32_t> first_doc_;       ///< vector id -> its first document
  std::vector<vector_fingerprint> prints_;     ///< vector id -> fingerprint (dedup only)
  std::vector<std::uint32_t> slots_;           ///< open-addressing table of vector id + 1 (0 = empty)
  std::unordered_map<std::uint32_t, std::vector<std::uint32_t>> more_;  ///< vector id -> its further documents
  std::size_t extra_docs_ = 0;
};

}  // namespace aligner
