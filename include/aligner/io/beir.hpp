/** @file beir.hpp
 *  @brief BEIR `corpus.jsonl` / `queries.jsonl`: one JSON object per line with string fields "_id", "title",
 *  "text" (other members, nested objects and arrays included, are parsed and skipped).
 *
 *  The parser is strict JSON (RFC 8259) for what it reads: a malformed line throws aligner::io_error naming the
 *  file, the line and the column. \uXXXX escapes (surrogate pairs included) are decoded to UTF-8. */
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/file.hpp"

namespace aligner::io {

/// One BEIR record.
struct beir_record {
  std::string id, title, text;
};

namespace detail {

class json_line {
 public:
  json_line(std::string_view text, const std::string& file, std::size_t line) : s_(text), file_(file), line_(line) {}

  beir_record parse_record() {
    beir_record r;
    bool has_id = false;
    ws();
    expect('{');
    ws();
    if (peek() == '}') fail("object has no \"_id\"");
    while (true) {
      ws();
      const std::string key = string();
      ws();
      expect(':');
      ws();
      if (key == "_id" || key == "title" || key == "text") {
        std::string value;
        if (peek() == '"') value = string();
        else if (key == "_id" && (peek() == '-' || (peek() >= '0' && peek() <= '9'))) value = number_text();
        else if (key != "_id" && peek() == 'n') literal("null");
        else fail("\"" + key + "\" must be a string");
        if (key == "_id") r.id = std::move(value), has_id = true;
        else if (key == "title") r.title = std::move(value);
        else r.text = std::move(value);
      } else {
        skip_value(0);
      }
      ws();
      if (peek() == ',') { ++pos_; continue; }
      expect('}');
      break;
    }
    ws();
    if (pos_ != s_.size()) fail("unexpected text after the object");
    if (!has_id) fail("object has no \"_id\"");
    return r;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw io_error(file_ + ":" + std::to_string(line_) + ":" + std::to_string(pos_ + 1) + ": " + what);
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void ws() { while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r' || s_[pos_] == '\n')) ++pos_; }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  void literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) fail("invalid literal");
    pos_ += word.size();
  }
  std::string number_text() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (!(peek() >= '0' && peek() <= '9')) fail("invalid number");
    while ((peek() >= '0' && peek() <= '9') || peek() == '.' || peek() == 'e' || peek() == 'E' || peek() == '+' || peek() == '-') ++pos_;
    return std::string(s_.substr(start, pos_ - start));
  }
  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else fail("invalid hex digit in \\u escape");
    }
    return v;
  }
  static void utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) out += char(0xc0 | (cp >> 6)), out += char(0x80 | (cp & 0x3f));
    else if (cp < 0x10000) out += char(0xe0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3f)), out += char(0x80 | (cp & 0x3f));
    else out += char(0xf0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3f)), out += char(0x80 | ((cp >> 6) & 0x3f)), out += char(0x80 | (cp & 0x3f));
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (s_.substr(pos_, 2) != "\\u") fail("unpaired surrogate");
            pos_ += 2;
            const std::uint32_t low = hex4();
            if (low < 0xdc00 || low > 0xdfff) fail("invalid low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            fail("unpaired surrogate");
          }
          utf8(out, cp);
          break;
        }
        default: fail("invalid escape \\" + std::string(1, e));  // (string + char: a false -Wstringop-overflow in GCC 12 at -O2)
      }
    }
  }
  void skip_value(int depth) {
    if (depth > 256) fail("nesting too deep");
    ws();
    const char c = peek();
    if (c == '"') { string(); return; }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      ws();
      if (peek() == close) { ++pos_; return; }
      while (true) {
        ws();
        if (c == '{') { string(); ws(); expect(':'); }
        skip_value(depth + 1);
        ws();
        if (peek() == ',') { ++pos_; continue; }
        expect(close);
        return;
      }
    }
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    if (c == '-' || (c >= '0' && c <= '9')) { number_text(); return; }
    fail("expected a JSON value");
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  const std::string& file_;
  std::size_t line_;
};

}  // namespace detail

/// Parses JSON-lines text of BEIR records; blank lines are skipped.
inline std::vector<beir_record> parse_beir_jsonl(std::string_view text, const std::string& file = "<memory>") {
  std::vector<beir_record> out;
  const auto lines = split_lines(text);
  for (std::size_t n = 0; n != lines.size(); ++n) {
    if (lines[n].find_first_not_of(" \t\r") == std::string_view::npos) continue;
    out.push_back(detail::json_line(lines[n], file, n + 1).parse_record());
  }
  return out;
}

inline std::vector<beir_record> load_beir_jsonl(const std::filesystem::path& path) {
  return parse_beir_jsonl(read_file(path), path.string());
}

}  // namespace aligner::io
