/** @file salience_heads.hpp
 *  @brief Saving and loading learned salience heads (a query head and a document head, each w, b and its gate).
 *
 *  The file is text, one `key value...` line each, so that it can be read and diffed by people and parsed from any
 *  language:
 *
 *      aligner-salience-heads 1
 *      dim 100
 *      trained_with top1 mean          (strategy and normalisation of the training; informational)
 *      query_gate 0.5 0.002            (alpha epsilon; "query_gate none" for a head without a gate)
 *      doc_gate 0.4 0.002
 *      query_bias 0.73
 *      doc_bias 1.2
 *      query_weights w_1 ... w_dim     (9 significant digits: a float round-trips exactly)
 *      doc_weights w_1 ... w_dim
 *
 *  Written atomically (temporary file, fsync, rename). Reading checks every line: a wrong magic, a newer format
 *  version, a missing or repeated key, a count that does not match dim, or a non-finite value is an
 *  aligner::io_error naming the file and the line. */
#pragma once

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/file.hpp"
#include "../math/salience.hpp"

namespace aligner::io {

/// Format version written by save_salience_heads; newer versions are refused by load.
inline constexpr int salience_heads_version = 1;

namespace detail {

inline std::string format_float(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

inline std::string gate_line(const std::optional<gate_params>& g) {
  if (!g) return "none";
  std::string out = format_float(g->alpha);
  return out.append(" ").append(format_float(g->epsilon));
}

[[noreturn]] inline void heads_fail(const std::filesystem::path& path, std::size_t line, const std::string& what) {
  throw io_error(path.string() + (line ? ":" + std::to_string(line) : std::string()) + ": " + what);
}

inline std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

}  // namespace detail

/// The text of a heads file (what save_salience_heads writes). `trained_with` is free text without line breaks.
inline std::string format_salience_heads(const salience_heads& heads, std::string_view trained_with = "unknown") {
  ALIGNER_EXPECTS(trained_with.find_first_of("\r\n") == std::string_view::npos && !trained_with.empty(),
                  "trained_with must be one non-empty line");
  // Appended piecewise: "literal" + std::string&& trips GCC 12's -Wrestrict false positive in consumers' builds.
  std::string out;
  auto line = [&out](std::string_view key, std::string_view value) { out.append(key).append(" ").append(value).append("\n"); };
  line("aligner-salience-heads", std::to_string(salience_heads_version));
  line("dim", std::to_string(heads.dim()));
  line("trained_with", trained_with);
  line("query_gate", detail::gate_line(heads.query.gate()));
  line("doc_gate", detail::gate_line(heads.doc.gate()));
  line("query_bias", detail::format_float(heads.query.bias()));
  line("doc_bias", detail::format_float(heads.doc.bias()));
  for (const auto* head : {&heads.query, &heads.doc}) {
    std::string values;
    for (float w : head->weights()) (values.empty() ? values : values.append(" ")).append(detail::format_float(w));
    line(head == &heads.query ? "query_weights" : "doc_weights", values);
  }
  return out;
}

/// Writes the heads to `path` atomically. Throws aligner::io_error naming the path when it cannot.
inline void save_salience_heads(const std::filesystem::path& path, const salience_heads& heads,
                                std::string_view trained_with = "unknown") {
  atomic_write(path, format_salience_heads(heads, trained_with));
}

/// What a heads file holds besides the heads.
struct salience_heads_file {
  salience_heads heads;
  std::string trained_with;
};

/// Reads a heads file. Throws aligner::io_error naming the file (and line) on anything malformed.
inline salience_heads_file load_salience_heads(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  const auto lines = split_lines(text);
  std::map<std::string, std::pair<std::size_t, std::vector<std::string_view>>> fields;  // key -> (line, values)
  for (std::size_t l = 0; l != lines.size(); ++l) {
    auto words = detail::split_words(lines[l]);
    if (words.empty()) continue;
    if (l == 0) {
      if (words[0] != "aligner-salience-heads" || words.size() != 2)
        detail::heads_fail(path, 1, "not an aligner salience heads file (it must start with 'aligner-salience-heads VERSION')");
      int version = 0;
      const auto r = std::from_chars(words[1].data(), words[1].data() + words[1].size(), version);
      if (r.ec != std::errc{} || r.ptr != words[1].data() + words[1].size() || version < 1)
        detail::heads_fail(path, 1, "malformed format version '" + std::string(words[1]) + "'");
      if (version > salience_heads_version)
        detail::heads_fail(path, 1, "format version " + std::to_string(version) + " is newer than this library reads (" +
                                        std::to_string(salience_heads_version) + ")");
      continue;
    }
    const std::string key(words[0]);
    if (fields.count(key)) detail::heads_fail(path, l + 1, "key '" + key + "' is repeated");
    words.erase(words.begin());
    fields.emplace(key, std::make_pair(l + 1, std::move(words)));
  }
  if (lines.empty()) detail::heads_fail(path, 0, "the file is empty");
  auto field = [&](const char* key) -> const std::pair<std::size_t, std::vector<std::string_view>>& {
    const auto it = fields.find(key);
    if (it == fields.end()) detail::heads_fail(path, 0, std::string("key '") + key + "' is missing");
    return it->second;
  };
  auto number = [&](std::size_t line, std::string_view word, const char* what) {
    double v = 0;
    const auto r = std::from_chars(word.data(), word.data() + word.size(), v);
    if (r.ec != std::errc{} || r.ptr != word.data() + word.size() || !std::isfinite(v))
      detail::heads_fail(path, line, std::string(what) + ": '" + std::string(word) + "' is not a finite number");
    return v;
  };
  const auto& dim_field = field("dim");
  if (dim_field.second.size() != 1) detail::heads_fail(path, dim_field.first, "dim takes one value");
  const double dim_value = number(dim_field.first, dim_field.second[0], "dim");
  if (!(dim_value >= 1 && dim_value <= 65536 && dim_value == std::floor(dim_value)))
    detail::heads_fail(path, dim_field.first, "dim must be an integer in [1, 65536]");
  const std::size_t dim = std::size_t(dim_value);
  auto gate = [&](const char* key) -> std::optional<gate_params> {
    const auto& [line, values] = field(key);
    if (values.size() == 1 && values[0] == "none") return std::nullopt;
    if (values.size() != 2) detail::heads_fail(path, line, std::string(key) + " takes 'none' or 'ALPHA EPSILON'");
    gate_params g;
    g.alpha = number(line, values[0], key);
    g.epsilon = number(line, values[1], key);
    if (!(g.alpha > 0.0 && g.alpha <= 1.0)) detail::heads_fail(path, line, std::string(key) + " alpha must be in (0, 1]");
    if (!(g.epsilon > 0.0)) detail::heads_fail(path, line, std::string(key) + " epsilon must be > 0");
    return g;
  };
  auto head = [&](const char* weights_key, const char* bias_key, const char* gate_key) {
    const auto& [line, values] = field(weights_key);
    if (values.size() != dim)
      detail::heads_fail(path, line, std::string(weights_key) + " has " + std::to_string(values.size()) + " values, dim is " +
                                         std::to_string(dim));
    std::vector<float> w(dim);
    for (std::size_t c = 0; c != dim; ++c) w[c] = float(number(line, values[c], weights_key));
    const auto& [bias_line, bias_values] = field(bias_key);
    if (bias_values.size() != 1) detail::heads_fail(path, bias_line, std::string(bias_key) + " takes one value");
    const float b = float(number(bias_line, bias_values[0], bias_key));
    for (std::size_t c = 0; c != dim; ++c)
      if (!std::isfinite(w[c])) detail::heads_fail(path, line, std::string(weights_key) + " overflows float");
    if (!std::isfinite(b)) detail::heads_fail(path, bias_line, std::string(bias_key) + " overflows float");
    return salience_scorer(std::move(w), b, gate(gate_key));
  };
  const auto& trained = field("trained_with");
  std::string trained_with;
  for (auto word : trained.second) (trained_with.empty() ? trained_with : trained_with.append(" ")).append(word);
  auto query_head = head("query_weights", "query_bias", "query_gate");  // in file order: the first bad line is reported
  auto doc_head = head("doc_weights", "doc_bias", "doc_gate");
  salience_heads heads(std::move(query_head), std::move(doc_head));
  for (const auto& [key, value] : fields)
    if (key != "dim" && key != "trained_with" && key != "query_gate" && key != "doc_gate" && key != "query_bias" &&
        key != "doc_bias" && key != "query_weights" && key != "doc_weights")
      detail::heads_fail(path, value.first, "unknown key '" + key + "'");
  return {std::move(heads), std::move(trained_with)};
}

}  // namespace aligner::io
