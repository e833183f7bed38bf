/** @file trec.hpp
 *  @brief Relevance judgments and runs: BEIR qrels TSV, TREC qrels ("qid 0 docid grade") and TREC runs
 *  ("qid Q0 docid rank score tag"), read defensively (errors name file and line) and written atomically. */
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/file.hpp"

namespace aligner::io {

/// qrels[query id][document id] = graded relevance (> 0 relevant, <= 0 judged non-relevant).
using qrels = std::map<std::string, std::map<std::string, int>>;

/// One ranked document of a run.
struct run_entry {
  std::string doc_id;
  double score = 0.0;
};

/// run[query id] = ranked documents, best first.
using run = std::map<std::string, std::vector<run_entry>>;

namespace detail {

inline std::vector<std::string_view> split_fields(std::string_view line, bool tabs_only) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    auto is_sep = [&](char c) { return tabs_only ? c == '\t' : (c == ' ' || c == '\t'); };
    if (!tabs_only)
      while (i < line.size() && is_sep(line[i])) ++i;
    if (i >= line.size()) break;
    std::size_t j = i;
    while (j < line.size() && !is_sep(line[j])) ++j;
    out.push_back(line.substr(i, j - i));
    i = j + (tabs_only ? 1 : 0);
    if (tabs_only && j == line.size()) break;
  }
  return out;
}

[[noreturn]] inline void line_fail(const std::string& file, std::size_t line, const std::string& what) {
  throw io_error(file + ":" + std::to_string(line) + ": " + what);
}

inline int parse_grade(std::string_view text, const std::string& file, std::size_t line) {
  int v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || p != text.data() + text.size()) {
    // BEIR files sometimes write grades as "1.0"
    double d = 0;
    auto [p2, ec2] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (ec2 != std::errc{} || p2 != text.data() + text.size() || d != std::floor(d) || std::abs(d) > 1e9)
      line_fail(file, line, "relevance grade '" + std::string(text) + "' is not an integer");
    v = int(d);
  }
  return v;
}

}  // namespace detail

/// Parses qrels text: BEIR TSV ("query-id<TAB>corpus-id<TAB>score", optional header line) or TREC
/// ("qid iter docid grade"), detected per line by the number of fields (3 or 4).
inline qrels parse_qrels(std::string_view text, const std::string& file = "<memory>") {
  qrels out;
  const auto lines = split_lines(text);
  for (std::size_t n = 0; n != lines.size(); ++n) {
    const std::string_view line = lines[n];
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const auto f = detail::split_fields(line, false);
    if (n == 0 && f.size() == 3 && f[0] == "query-id") continue;  // BEIR header
    if (f.size() != 3 && f.size() != 4)
      detail::line_fail(file, n + 1, "expected 'query-id corpus-id score' or 'qid 0 docid grade', got " +
                                         std::to_string(f.size()) + " fields");
    const std::string_view qid = f[0], did = f.size() == 3 ? f[1] : f[2], grade = f.back();
    out[std::string(qid)][std::string(did)] = detail::parse_grade(grade, file, n + 1);
  }
  return out;
}

inline qrels load_qrels(const std::filesystem::path& path) { return parse_qrels(read_file(path), path.string()); }

/// Parses a TREC run ("qid Q0 docid rank score tag"); entries of each query are re-sorted by score descending
/// (ties: document id descending, as trec_eval does).
inline run parse_run(std::string_view text, const std::string& file = "<memory>") {
  run out;
  const auto lines = split_lines(text);
  for (std::size_t n = 0; n != lines.size(); ++n) {
    const std::string_view line = lines[n];
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const auto f = detail::split_fields(line, false);
    if (f.size() != 6) detail::line_fail(file, n + 1, "expected 6 fields 'qid Q0 docid rank score tag', got " + std::to_string(f.size()));
    double score = 0;
    auto [p, ec] = std::from_chars(f[4].data(), f[4].data() + f[4].size(), score);
    if (ec != std::errc{} || p != f[4].data() + f[4].size() || !std::isfinite(score))
      detail::line_fail(file, n + 1, "score '" + std::string(f[4]) + "' is not a finite number");
    out[std::string(f[0])].push_back({std::string(f[2]), score});
  }
  for (auto& [qid, entries] : out)
    std::stable_sort(entries.begin(), entries.end(), [](const run_entry& a, const run_entry& b) {
      return a.score > b.score || (a.score == b.score && a.doc_id > b.doc_id);
    });
  return out;
}

inline run load_run(const std::filesystem::path& path) { return parse_run(read_file(path), path.string()); }

/// Formats a run in TREC format, ranks from 1 in the stored order; scores with 9 significant digits.
inline std::string format_run(const run& r, std::string_view tag = "aligner") {
  std::string out;
  char buf[64];
  for (const auto& [qid, entries] : r)
    for (std::size_t i = 0; i != entries.size(); ++i) {
      const int len = std::snprintf(buf, sizeof buf, "%.9g", entries[i].score);
      out.append(qid).append(" Q0 ").append(entries[i].doc_id).append(" ").append(std::to_string(i + 1)).append(" ");
      out.append(buf, std::size_t(len)).append(" ").append(tag).append("\n");
    }
  return out;
}

/// Writes a run atomically.
inline void save_run(const std::filesystem::path& path, const run& r, std::string_view tag = "aligner") {
  atomic_write(path, format_run(r, tag));
}

}  // namespace aligner::io
