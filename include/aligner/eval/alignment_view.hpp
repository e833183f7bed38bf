/** @file alignment_view.hpp
 *  @brief A picture of why a document matched: the similarity matrix S as a heatmap (query tokens as rows,
 *  document tokens as columns), the aligned cells of the strategy outlined, query and document salience as bars
 *  beside the axes, the score and its parts; as a standalone SVG or a self-contained HTML page.
 *
 *  The page needs no network and no script: hover tooltips are SVG `<title>` elements (S_ij, the weight, both
 *  words), long documents scroll horizontally in the page, and the SVG alone is readable in any viewer. Every word
 *  is escaped (a document can hold `<script>`). Files are written atomically (core/file.hpp). */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/file.hpp"
#include "../core/types.hpp"
#include "../io/index_directory.hpp"
#include "../kernels/amx.hpp"
#include "../kernels/residual.hpp"
#include "../math/explain.hpp"
#include "../math/scorer.hpp"
#include "../pipeline/retriever.hpp"

namespace aligner {

/// Everything the picture of one alignment shows.
struct alignment_view {
  std::size_t rows = 0, cols = 0;                   ///< query tokens, document tokens
  std::vector<float> similarity;                    ///< S, rows x cols, row-major
  std::vector<float> query_salience, doc_salience;  ///< empty: no salience (bars omitted)
  std::vector<std::string> query_words, doc_words;  ///< empty: tokens are labelled by position
  explanation why;                                  ///< the aligned pairs and the score's parts
  std::string title;                                ///< e.g. "query 1 - document 42"
  std::string strategy;                             ///< e.g. "top1"

  /// Throws aligner::invalid_argument naming the first field that does not fit rows x cols.
  void validate() const {
    ALIGNER_EXPECTS(similarity.size() == rows * cols, "alignment_view.similarity has ", similarity.size(), " values, expected rows * cols = ",
                    rows * cols);
    ALIGNER_EXPECTS(query_salience.empty() || query_salience.size() == rows, "alignment_view.query_salience has ",
                    query_salience.size(), " values for ", rows, " query tokens");
    ALIGNER_EXPECTS(doc_salience.empty() || doc_salience.size() == cols, "alignment_view.doc_salience has ", doc_salience.size(),
                    " values for ", cols, " document tokens");
    ALIGNER_EXPECTS(query_words.empty() || query_words.size() == rows, "alignment_view.query_words has ", query_words.size(),
                    " words for ", rows, " query tokens");
    ALIGNER_EXPECTS(doc_words.empty() || doc_words.size() == cols, "alignment_view.doc_words has ", doc_words.size(), " words for ",
                    cols, " document tokens");
    for (const auto& p : why.pairs)
      ALIGNER_EXPECTS(p.query_token < rows && p.doc_token < cols, "alignment_view.why holds the pair (", p.query_token, ", ",
                      p.doc_token, ") outside ", rows, " x ", cols);
    for (float x : similarity) ALIGNER_EXPECTS(std::isfinite(x), "alignment_view.similarity holds a non-finite value");
  }
};

/// The view of packed document `s` of `docs` for a prepared query: S from the kernel the scorer uses (so the
/// outlined cells and the score are the scorer's), the explanation, the salience the score used. Words are left
/// empty (the caller knows its vocabulary). Validation as explain_packed.
inline alignment_view make_alignment_view(const prepared_query& q, const packed_sequences& docs, std::size_t s,
                                          bool use_doc_salience = true) {
  alignment_view v;
  v.why = explain_packed(q, docs, s, use_doc_salience);  // validates s and the query
  const matrix_view<float> query = q.rows();
  v.rows = query.rows;
  v.cols = docs.length(s);
  v.strategy = q.strategy().name();
  v.similarity.resize(v.rows * v.cols);
  if (v.rows && v.cols) {
    const std::size_t stride = panel_count(v.cols) * panel_width<>;
    std::vector<float> full(v.rows * stride);
    if (docs.precision == storage::residual) {
      score_workspace ws;
      const residual_query rq = detail::prepare_residual_query(q, docs, ws);
      residual_similarity_rows(query, *docs.codec, docs.panels(s), v.cols, full.data(), stride, rq.centroid_scores, ws.rows.decoded,
                               q.bf16_pairs(), rq.i8, q.wide());
    } else {
      packed_similarity_rows(query, docs.precision, docs.panels(s), v.cols, full.data(), stride, q.forms());
    }
    for (std::size_t i = 0; i != v.rows; ++i) std::copy_n(full.data() + i * stride, v.cols, v.similarity.data() + i * v.cols);
  }
  if (q.salience()) v.query_salience.assign(q.salience(), q.salience() + v.rows);
  if (use_doc_salience && docs.salience_of(s)) v.doc_salience.assign(docs.salience_of(s), docs.salience_of(s) + v.cols);
  return v;
}

/// The view of document `id` of a retriever for `query` under p's strategy, normalisation and salience (as
/// aligner_retriever::explain: its score equals the document's score in a search with the same parameters).
template <class Backend>
alignment_view make_alignment_view(const aligner_retriever<Backend>& index, matrix_view<float> query, std::int64_t id,
                                   const search_params& p = {}) {
  ALIGNER_EXPECTS(id >= 0 && std::size_t(id) < index.size(), "alignment view: unknown document id ", id);
  ALIGNER_EXPECTS(!index.is_removed(id), "alignment view: document id ", id, " was removed");
  ALIGNER_EXPECTS(query.rows == 0 || query.cols == index.dim(), "query dim ", query.cols, " does not match the index dim ", index.dim());
  p.strategy.validate();
  const prepared_query pq(query, {.strategy = p.strategy, .norm = p.norm, .query_salience = p.rerank_query_salience()}, index.params().precision);
  return make_alignment_view(pq, index.store(), std::size_t(id), p.use_doc_salience);
}

/// The view of live document `id` of an index directory's current snapshot (as index_directory_reader::explain:
/// its score equals the document's score in a search with the same parameters).
inline alignment_view make_alignment_view(const index_directory_reader& reader, matrix_view<float> query, std::int64_t id,
                                          const search_params& p = {}) {
  const auto s = reader.snapshot();
  const auto where = s->locate(id);
  ALIGNER_EXPECTS(where && !s->deleted[where->first][where->second], "alignment view: document id ", id, " is not a live document");
  ALIGNER_EXPECTS(query.rows == 0 || query.cols == s->dim, "query dim ", query.cols, " does not match the index dim ", s->dim);
  p.strategy.validate();
  const prepared_query pq(query, {.strategy = p.strategy, .norm = p.norm, .query_salience = p.rerank_query_salience()}, s->precision);
  return make_alignment_view(pq, s->segments[where->first]->store(), where->second, p.use_doc_salience);
}

namespace detail {

/// Text for XML/HTML content and attribute values: & < > " ' escaped, control characters (which XML 1.0 forbids)
/// replaced by U+FFFD.
inline std::string xml_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
          out += "\xEF\xBF\xBD";
        else
          out += ch;
    }
  }
  return out;
}

inline std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

/// Colour of S / max|S|: white at 0, blue toward +1, red toward -1.
inline std::string heat(double t) {
  t = std::clamp(t, -1.0, 1.0);
  const double r0 = t >= 0 ? 33 : 178, g0 = t >= 0 ? 102 : 24, b0 = t >= 0 ? 172 : 43, a = std::abs(t);
  auto mix = [&](double c) { return int(std::lround(255.0 + (c - 255.0) * a)); };
  return "rgb(" + std::to_string(mix(r0)) + "," + std::to_string(mix(g0)) + "," + std::to_string(mix(b0)) + ")";
}

inline std::string label(const std::vector<std::string>& words, std::size_t k) {
  if (!words.empty()) return words[k];
  std::string out(1, '#');  // (appending, not "#" + std::to_string: GCC 12 warns falsely on that, -Wrestrict)
  out += std::to_string(k);
  return out;
}

}  // namespace detail

/// The view as a standalone SVG document. Aligned cells are `<rect class="aligned" data-i="i" data-j="j" .../>`,
/// heatmap cells `<rect class="cell" ...>` each with a `<title>` tooltip. Throws invalid_argument (validate()).
inline std::string alignment_svg(const alignment_view& v) {
  v.validate();
  using detail::fmt;
  using detail::xml_escape;
  constexpr double cell = 16, bar = 48, char_w = 7, gap = 6;
  auto longest = [](const std::vector<std::string>& words, std::size_t n) {
    std::size_t l = std::to_string(n).size() + 1;
    for (const auto& w : words) l = std::max(l, w.size());
    return std::min<std::size_t>(l, 24);
  };
  const double label_w = double(longest(v.query_words, v.rows)) * char_w + gap;
  const double label_h = double(longest(v.doc_words, v.cols)) * char_w + gap;
  const double qbar = v.query_salience.empty() ? 0 : bar + gap, dbar = v.doc_salience.empty() ? 0 : bar + gap;
  const double head = 58, x0 = qbar + label_w, y0 = head + label_h;
  const double width = std::max(x0 + double(v.cols) * cell + gap, 420.0), height = y0 + double(v.rows) * cell + dbar + gap;
  double smax = 0;
  for (float x : v.similarity) smax = std::max(smax, std::abs(double(x)));
  if (smax == 0) smax = 1;
  std::vector<float> weight(v.rows * v.cols, 0.f);
  std::vector<char> aligned(v.rows * v.cols, 0);
  for (const auto& p : v.why.pairs) aligned[p.query_token * v.cols + p.doc_token] = 1, weight[p.query_token * v.cols + p.doc_token] = p.weight;
  auto trunc = [](const std::string& w) { return w.size() > 24 ? w.substr(0, 23) + "~" : w; };

  std::string s;
  s.reserve(256 + v.rows * v.cols * 160);
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt("%.0f", width) + "\" height=\"" + fmt("%.0f", height) +
       "\" viewBox=\"0 0 " + fmt("%.0f", width) + " " + fmt("%.0f", height) + "\" font-family=\"monospace\" font-size=\"11\">\n";
  s += "<title>" + xml_escape(v.title) + "</title>\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">" + xml_escape(v.title) + "</text>\n";
  s += "<text x=\"4\" y=\"34\">strategy " + xml_escape(v.strategy) + "  score " + fmt("%.6g", double(v.why.score)) + " = " +
       fmt("%.6g", v.why.numerator) + " (sum of S x A) / " + fmt("%.6g", v.why.z) + " (Z)  aligned pairs " +
       std::to_string(v.why.pairs.size()) + "</text>\n";
  s += "<text x=\"4\" y=\"50\" fill=\"#555\">cells: S = q_i . d_j, blue &gt; 0, red &lt; 0 (max |S| " + fmt("%.4g", smax) +
       "); outlined: aligned; rows: query tokens; columns: document tokens</text>\n";
  // Column labels (rotated) and row labels.
  for (std::size_t j = 0; j != v.cols; ++j) {
    const double x = x0 + double(j) * cell + cell * 0.7, y = y0 - gap / 2;
    s += "<text class=\"doc-word\" transform=\"translate(" + fmt("%.1f", x) + "," + fmt("%.1f", y) + ") rotate(-90)\">" +
         xml_escape(trunc(detail::label(v.doc_words, j))) + "</text>\n";
  }
  for (std::size_t i = 0; i != v.rows; ++i)
    s += "<text class=\"query-word\" x=\"" + fmt("%.1f", x0 - gap / 2) + "\" y=\"" + fmt("%.1f", y0 + double(i) * cell + cell * 0.75) +
         "\" text-anchor=\"end\">" + xml_escape(trunc(detail::label(v.query_words, i))) + "</text>\n";
  // Heatmap cells with tooltips.
  for (std::size_t i = 0; i != v.rows; ++i)
    for (std::size_t j = 0; j != v.cols; ++j) {
      const double x = double(v.similarity[i * v.cols + j]);
      s += "<rect class=\"cell\" x=\"" + fmt("%.0f", x0 + double(j) * cell) + "\" y=\"" + fmt("%.0f", y0 + double(i) * cell) +
           "\" width=\"16\" height=\"16\" fill=\"" + detail::heat(x / smax) + "\"><title>" +
           xml_escape(detail::label(v.query_words, i) + " (q" + std::to_string(i) + ") x " + detail::label(v.doc_words, j) + " (d" +
                      std::to_string(j) + "): S=" + fmt("%.6g", x) +
                      (aligned[i * v.cols + j] ? ", aligned, weight " + fmt("%.6g", double(weight[i * v.cols + j])) : ", not aligned")) +
           "</title></rect>\n";
    }
  for (const auto& p : v.why.pairs)
    s += "<rect class=\"aligned\" data-i=\"" + std::to_string(p.query_token) + "\" data-j=\"" + std::to_string(p.doc_token) + "\" x=\"" +
         fmt("%.0f", x0 + double(p.doc_token) * cell + 1) + "\" y=\"" + fmt("%.0f", y0 + double(p.query_token) * cell + 1) +
         "\" width=\"14\" height=\"14\" fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\"/>\n";
  // Salience bars: query to the left of the row labels, documents under the columns (scaled to the largest).
  auto bars_scale = [](const std::vector<float>& u) {
    float m = 0;
    for (float x : u) m = std::max(m, x);
    return m > 0 ? double(m) : 1.0;
  };
  if (!v.query_salience.empty()) {
    const double m = bars_scale(v.query_salience);
    for (std::size_t i = 0; i != v.rows; ++i) {
      const double w = bar * std::max(0.0, double(v.query_salience[i])) / m;
      s += "<rect class=\"query-salience\" x=\"" + fmt("%.1f", bar - w) + "\" y=\"" + fmt("%.0f", y0 + double(i) * cell + 2) + "\" width=\"" +
           fmt("%.1f", w) + "\" height=\"12\" fill=\"#7f7f7f\"><title>query salience " + fmt("%.6g", double(v.query_salience[i])) +
           "</title></rect>\n";
    }
  }
  if (!v.doc_salience.empty()) {
    const double m = bars_scale(v.doc_salience), top = y0 + double(v.rows) * cell + gap;
    for (std::size_t j = 0; j != v.cols; ++j) {
      const double h = bar * std::max(0.0, double(v.doc_salience[j])) / m;
      s += "<rect class=\"doc-salience\" x=\"" + fmt("%.0f", x0 + double(j) * cell + 2) + "\" y=\"" + fmt("%.1f", top) +
           "\" width=\"12\" height=\"" + fmt("%.1f", h) + "\" fill=\"#7f7f7f\"><title>document salience " +
           fmt("%.6g", double(v.doc_salience[j])) + "</title></rect>\n";
    }
  }
  s += "</svg>\n";
  return s;
}

/// The view as a self-contained HTML page (the SVG inline, no script, no external resource); the picture scrolls
/// horizontally when the document is long.
inline std::string alignment_html(const alignment_view& v) {
  const std::string svg = alignment_svg(v);  // validates
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + detail::xml_escape(v.title) +
                   "</title>\n<style>body{font-family:sans-serif;margin:16px} .scroll{overflow-x:auto;border:1px solid #ddd}"
                   " rect.cell:hover{stroke:#000;stroke-width:1}</style>\n</head>\n<body>\n<div class=\"scroll\">\n";
  h += svg;
  h += "</div>\n<p>Hover a cell for S<sub>ij</sub>, its weight and both tokens. Aligned pairs: " + std::to_string(v.why.pairs.size()) +
       "; score " + detail::fmt("%.6g", double(v.why.score)) + ".</p>\n</body>\n</html>\n";
  return h;
}

/// Writes alignment_html(v) to `path` atomically (io_error on failure; invalid_argument before anything is written).
inline void write_alignment_html(const std::filesystem::path& path, const alignment_view& v) { io::atomic_write(path, alignment_html(v)); }

/// Writes alignment_svg(v) to `path` atomically.
inline void write_alignment_svg(const std::filesystem::path& path, const alignment_view& v) { io::atomic_write(path, alignment_svg(v)); }

}  // namespace aligner
