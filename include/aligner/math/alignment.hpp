/** @file alignment.hpp
 *  @brief Sparse alignment strategies: which document tokens each query token aligns with (SPEC section 2).
 *
 *  - Top-k: query token i aligns with the k largest entries of row S_i (k = 1 is ColBERT's MaxSim);
 *  - Top-p: k_i = max(floor(p * m), 1) for a document of m tokens;
 *  - dense: only the first token of each side (the [CLS] position) is aligned.
 *  k is clamped to m, ties break toward the smaller document-token index, and the mask is chosen on S
 *  alone (salience only weights the chosen pairs). Strategies are small values; thread-safe. */
#pragma once

#include <charconv>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>

#include "../core/error.hpp"

namespace aligner {

/// How the aligned pairs are normalised: `mean` divides by Z = Σ A_ij (the paper), `none` returns the sum
/// (with Top-1 and no salience, ColBERT's MaxSim).
enum class normalization { mean, none };

inline const char* to_string(normalization n) noexcept { return n == normalization::mean ? "mean" : "none"; }

/// Parses "mean" or "none".
inline normalization parse_normalization(std::string_view text) {
  if (text == "mean") return normalization::mean;
  if (text == "none") return normalization::none;
  ALIGNER_EXPECTS(false, "normalization must be 'mean' or 'none', got '", text, "'");
  return normalization::mean;
}

/// One alignment strategy. Build with the named constructors; `validate()` runs at every public boundary.
struct alignment {
  enum class kind_t { top_k, top_p, dense };
  kind_t kind = kind_t::top_k;
  std::size_t k = 1;  ///< Top-k budget (kind top_k)
  double p = 1.0;     ///< Top-p fraction in (0, 1] (kind top_p)

  static alignment top1() noexcept { return {}; }
  static alignment top_k(std::size_t k) noexcept { return {kind_t::top_k, k, 1.0}; }
  static alignment top_p(double p) noexcept { return {kind_t::top_p, 1, p}; }
  static alignment dense() noexcept { return {kind_t::dense, 1, 1.0}; }

  /// Throws aligner::invalid_argument for k < 1, or p outside (0, 1] or not finite.
  void validate() const {
    if (kind == kind_t::top_k) ALIGNER_EXPECTS(k >= 1, "alignment top-k needs k >= 1, got k = ", k);
    if (kind == kind_t::top_p)
      ALIGNER_EXPECTS(std::isfinite(p) && p > 0.0 && p <= 1.0, "alignment top-p needs p in (0, 1], got p = ", p);
  }

  /// Number of document tokens each query token aligns with, for a document of `doc_rows` tokens (0 when
  /// the document is empty; always <= doc_rows). Dense aligns only token 0 of query row 0.
  std::size_t row_budget(std::size_t doc_rows) const noexcept {
    if (doc_rows == 0) return 0;
    switch (kind) {
      case kind_t::top_k: return k < doc_rows ? k : doc_rows;
      case kind_t::top_p: {
        const double raw = std::floor(p * double(doc_rows));
        const std::size_t kk = raw < 1.0 ? 1 : std::size_t(raw);
        return kk < doc_rows ? kk : doc_rows;
      }
      case kind_t::dense: return 1;
    }
    return 1;
  }

  /// Canonical name: "top1", "topk:K", "topp:P" (shortest decimal of P), "dense". parse(name()) == *this.
  std::string name() const {
    switch (kind) {
      case kind_t::top_k: return k == 1 ? "top1" : "topk:" + std::to_string(k);
      case kind_t::top_p: {
        char buf[64];
        const auto res = std::to_chars(buf, buf + sizeof buf, p);
        return "topp:" + std::string(buf, res.ptr);
      }
      case kind_t::dense: return "dense";
    }
    return "?";
  }

  /// Parses "top1", "topk:K", "topp:P", "dense" (also "topK" for "topk:K", and "topp:P%" for a percentage).
  /// Throws aligner::invalid_argument naming the text on anything else, and validates the result.
  static alignment parse(std::string_view text) {
    alignment a;
    auto number_after = [&](std::string_view rest, auto& value) {
      const auto res = std::from_chars(rest.data(), rest.data() + rest.size(), value);
      return res.ec == std::errc{} && res.ptr == rest.data() + rest.size();
    };
    if (text == "top1") {
      a = top1();
    } else if (text == "dense") {
      a = dense();
    } else if (text.starts_with("topk:")) {
      std::size_t k = 0;
      ALIGNER_EXPECTS(number_after(text.substr(5), k), "strategy '", text, "': expected topk:K with an integer K >= 1");
      a = top_k(k);
    } else if (text.starts_with("topp:")) {
      std::string_view rest = text.substr(5);
      double scale = 1.0;
      if (rest.ends_with('%')) rest.remove_suffix(1), scale = 0.01;
      double p = 0.0;
      ALIGNER_EXPECTS(number_after(rest, p), "strategy '", text, "': expected topp:P with a number P in (0, 1]");
      a = top_p(p * scale);
    } else if (text.size() > 3 && text.starts_with("top")) {
      std::size_t k = 0;
      ALIGNER_EXPECTS(number_after(text.substr(3), k), "unknown alignment strategy '", text,
                      "' (expected top1, topk:K, topp:P or dense)");
      a = top_k(k);
    } else {
      ALIGNER_EXPECTS(false, "unknown alignment strategy '", text, "' (expected top1, topk:K, topp:P or dense)");
    }
    a.validate();
    return a;
  }

  friend bool operator==(const alignment&, const alignment&) = default;
};

}  // namespace aligner
