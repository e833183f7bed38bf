// The HTML/SVG view of an alignment: the aligned cells it outlines are exactly the strategy's, words are escaped,
// bad views are refused, and headless Chromium renders the page to a picture that is not blank.
#include <aligner/eval/alignment_view.hpp>
#include <aligner/backends/exact.hpp>
#include <aligner/io/index_file.hpp>
#include <aligner/storage/token_store.hpp>

#include "test_common.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <utility>
#if defined(ALIGNER_TEST_HAVE_ZLIB)
#include <zlib.h>
#endif

namespace {

std::set<std::pair<std::size_t, std::size_t>> outlined(const std::string& svg) {
  std::set<std::pair<std::size_t, std::size_t>> out;
  const std::regex re("<rect class=\"aligned\" data-i=\"([0-9]+)\" data-j=\"([0-9]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.insert({std::stoul((*it)[1]), std::stoul((*it)[2])});
  return out;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

/// The (i, j) cells of the k largest S_ij of every row i (ties: smaller j), computed here in double.
std::set<std::pair<std::size_t, std::size_t>> expected_cells(const std::vector<float>& q, const std::vector<float>& d, std::size_t n,
                                                             std::size_t m, std::size_t dim, std::size_t k) {
  std::set<std::pair<std::size_t, std::size_t>> out;
  for (std::size_t i = 0; i != n; ++i) {
    std::vector<std::pair<double, std::size_t>> row;
    for (std::size_t j = 0; j != m; ++j) {
      double s = 0;
      for (std::size_t c = 0; c != dim; ++c) s += double(q[i * dim + c]) * double(d[j * dim + c]);
      row.push_back({-s, j});
    }
    std::sort(row.begin(), row.end());
    for (std::size_t t = 0; t != std::min(k, m); ++t) out.insert({i, row[t].second});
  }
  return out;
}

struct small_case {
  std::size_t n = 3, m = 7, dim = 5;
  std::vector<float> q, d, ud;
  aligner::token_store store{5, aligner::storage::f32};
  small_case() {
    q = aligner_test::random_matrix(n, dim, 41), d = aligner_test::random_matrix(m, dim, 42);
    ud = aligner_test::random_weights(m, 43);
    const std::vector<std::int64_t> offsets{0, std::int64_t(m)};
    store.add(aligner::sequence_set_view{{d.data(), m, dim}, offsets}, ud);
  }
};

#if defined(ALIGNER_TEST_HAVE_ZLIB)
/// Decodes an 8-bit RGB or RGBA PNG into RGB pixels (what Chromium writes for a screenshot).
bool decode_png(const std::string& bytes, std::size_t& width, std::size_t& height, std::vector<unsigned char>& rgb) {
  if (bytes.size() < 8 || bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return false;
  auto be32 = [&](std::size_t at) {
    return (std::uint32_t(std::uint8_t(bytes[at])) << 24) | (std::uint32_t(std::uint8_t(bytes[at + 1])) << 16) |
           (std::uint32_t(std::uint8_t(bytes[at + 2])) << 8) | std::uint32_t(std::uint8_t(bytes[at + 3]));
  };
  std::string idat;
  int colour = -1, depth = 0, interlace = 0;
  for (std::size_t at = 8; at + 12 <= bytes.size();) {
    const std::size_t len = be32(at);
    const std::string type = bytes.substr(at + 4, 4);
    if (at + 12 + len > bytes.size()) return false;
    if (type == "IHDR") {
      width = be32(at + 8), height = be32(at + 12);
      depth = std::uint8_t(bytes[at + 16]), colour = std::uint8_t(bytes[at + 17]), interlace = std::uint8_t(bytes[at + 20]);
    } else if (type == "IDAT") {
      idat += bytes.substr(at + 8, len);
    }
    at += 12 + len;
  }
  if (depth != 8 || (colour != 2 && colour != 6) || interlace != 0) return false;
  const std::size_t bpp = colour == 6 ? 4 : 3, stride = width * bpp;
  std::vector<unsigned char> raw(height * (stride + 1));
  uLongf raw_len = uLongf(raw.size());
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), uLong(idat.size())) != Z_OK || raw_len != raw.size())
    return false;
  std::vector<unsigned char> img(height * stride), prev(stride, 0);
  for (std::size_t y = 0; y != height; ++y) {
    const unsigned char filter = raw[y * (stride + 1)];
    const unsigned char* in = raw.data() + y * (stride + 1) + 1;
    unsigned char* out = img.data() + y * stride;
    for (std::size_t x = 0; x != stride; ++x) {
      const int a = x >= bpp ? out[x - bpp] : 0, b = prev[x], c = x >= bpp ? prev[x - bpp] : 0;
      int pred = 0;
      switch (filter) {
        case 0: pred = 0; break;
        case 1: pred = a; break;
        case 2: pred = b; break;
        case 3: pred = (a + b) / 2; break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
          break;
        }
        default: return false;
      }
      out[x] = static_cast<unsigned char>(in[x] + pred);
    }
    std::copy(out, out + stride, prev.begin());
  }
  rgb.resize(width * height * 3);
  for (std::size_t p = 0; p != width * height; ++p)
    for (std::size_t ch = 0; ch != 3; ++ch) rgb[p * 3 + ch] = img[p * bpp + ch];
  return true;
}
#endif

}  // namespace

TEST_CASE("view: the outlined cells are exactly the strategy's aligned pairs, tooltips and bars for every token", "[oracle]") {
  small_case t;
  for (std::size_t k : {1u, 2u, 7u}) {
    const auto strategy = k == 1 ? aligner::alignment::top1() : aligner::alignment::top_k(k);
    const aligner::prepared_query pq({t.q.data(), t.n, t.dim}, {.strategy = strategy});
    auto v = aligner::make_alignment_view(pq, t.store, 0);
    v.title = "query 0 - document 0";
    const std::string svg = aligner::alignment_svg(v);
    INFO("k " << k);
    CHECK(outlined(svg) == expected_cells(t.q, t.d, t.n, t.m, t.dim, k));
    CHECK(count(svg, "<rect class=\"cell\"") == t.n * t.m);
    CHECK(count(svg, "<rect class=\"doc-salience\"") == t.m);  // the store has salience
    CHECK(count(svg, "<rect class=\"query-salience\"") == 0);  // the query has none
    CHECK(count(svg, "<title>") == t.n * t.m + t.m + 1);
    CHECK(svg.find("strategy " + strategy.name()) != std::string::npos);
    // The score shown is the scorer's.
    float score = 0;
    const std::uint32_t which[] = {0};
    aligner::score_packed(pq, t.store, which, {&score, 1}, true);
    CHECK(v.why.score == score);
    char buf[32];
    std::snprintf(buf, sizeof buf, "score %.6g", double(score));
    CHECK(svg.find(buf) != std::string::npos);
    // S in the view is the kernel's q . d.
    for (std::size_t i = 0; i != t.n; ++i)
      for (std::size_t j = 0; j != t.m; ++j)
        CHECK(std::abs(double(v.similarity[i * t.m + j]) - aligner::ref::dot(t.q.data() + i * t.dim, t.d.data() + j * t.dim, t.dim)) < 1e-5);
  }
}

TEST_CASE("view: words are escaped, never markup, positions label tokens without words", "[edge]") {
  small_case t;
  const aligner::prepared_query pq({t.q.data(), t.n, t.dim}, {.strategy = aligner::alignment::top1()});
  auto v = aligner::make_alignment_view(pq, t.store, 0);
  const std::string plain = aligner::alignment_svg(v);
  CHECK(plain.find(">#0<") != std::string::npos);
  v.title = "a <b>title</b> & more";
  v.query_words = {"<script>alert('q')</script>", "a&b", "\"quoted\""};
  v.doc_words = {"<img src=x onerror=alert(1)>", "]]>", "x\x01y", "four", "five", "six", "<script>"};
  const std::string html = aligner::alignment_html(v);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  CHECK(html.find("<b>") == std::string::npos);
  CHECK(html.find("&lt;script&gt;alert(&#39;q&#39;)&lt;/script&gt;") != std::string::npos);
  CHECK(html.find("a&amp;b") != std::string::npos);
  CHECK(html.find("&quot;quoted&quot;") != std::string::npos);
  CHECK(html.find("x\xEF\xBF\xBDy") != std::string::npos);  // a control character is not valid XML
  CHECK(html.find("<!DOCTYPE html>") == 0);
  CHECK(html.find("http://") == html.find("http://www.w3.org/2000/svg"));  // no external resource
  CHECK(html.find("<script") == std::string::npos);
}

TEST_CASE("view: a view that does not fit is refused by name, a failed write leaves the old file", "[edge]") {
  small_case t;
  const aligner::prepared_query pq({t.q.data(), t.n, t.dim}, {.strategy = aligner::alignment::top1()});
  const auto good = aligner::make_alignment_view(pq, t.store, 0);
  auto bad = good;
  bad.doc_words = {"only", "two"};
  CHECK_THROWS_WITH(aligner::alignment_svg(bad), Catch::Contains("alignment_view.doc_words"));
  bad = good;
  bad.similarity.pop_back();
  CHECK_THROWS_WITH(aligner::alignment_html(bad), Catch::Contains("alignment_view.similarity"));
  bad = good;
  bad.why.pairs.push_back({7, 0, 0.f, 1.f});
  CHECK_THROWS_WITH(aligner::alignment_svg(bad), Catch::Contains("outside"));
  bad = good;
  bad.similarity[0] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(aligner::alignment_svg(bad), aligner::invalid_argument);
  CHECK_THROWS_AS(aligner::make_alignment_view(pq, t.store, 1), aligner::invalid_argument);

  const auto file = std::filesystem::temp_directory_path() / "aligner_view_test.html";
  aligner::write_alignment_html(file, good);
  const std::string before = aligner::io::read_file(file);
  CHECK_THROWS_AS(aligner::write_alignment_html(file, bad), aligner::invalid_argument);
  CHECK(aligner::io::read_file(file) == before);
  CHECK_THROWS_AS(aligner::write_alignment_svg("/nonexistent-dir/x.svg", good), aligner::io_error);
  std::filesystem::remove(file);
}

TEST_CASE("view: a retriever's view equals its explain, with the search's score", "[oracle]") {
  const aligner_test::random_corpus corpus(30, 40, 16, 5);
  aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(16));
  index.add(corpus.view(), corpus.salience);
  const auto q = aligner_test::random_matrix(6, 16, 6, true);
  const aligner::search_params p{.strategy = aligner::alignment::top_k(3), .top = 5};
  const auto hits = index.search({q.data(), 6, 16}, p);
  REQUIRE(!hits.ids.empty());
  const auto v = aligner::make_alignment_view(index, {q.data(), 6, 16}, hits.ids[0], p);
  CHECK(v.why.score == hits.scores[0]);
  CHECK(outlined(aligner::alignment_svg(v)).size() == v.why.pairs.size());
  CHECK_THROWS_AS(aligner::make_alignment_view(index, {q.data(), 6, 16}, 999, p), aligner::invalid_argument);
}

TEST_CASE("view: headless Chromium renders the page to a picture that is not blank", "[render]") {
#if !defined(ALIGNER_TEST_HAVE_ZLIB)
  std::printf("note: zlib not found at build time; the Chromium rendering test is skipped\n");
#else
  const char* candidates[] = {"chromium", "chromium-browser", "google-chrome"};
  std::string browser;
  for (const char* c : candidates)
    if (std::system((std::string("command -v ") + c + " >/dev/null 2>&1").c_str()) == 0) {
      browser = c;
      break;
    }
  if (browser.empty()) {
    std::printf("note: Chromium not found (apt-get install chromium); the rendering test is skipped\n");
    return;
  }
  small_case t;
  const aligner::prepared_query pq({t.q.data(), t.n, t.dim}, {.strategy = aligner::alignment::top_k(2)});
  auto v = aligner::make_alignment_view(pq, t.store, 0);
  v.title = "render test";
  const auto dir = std::filesystem::temp_directory_path() / "aligner_view_render";
  std::filesystem::create_directories(dir);
  const auto page = dir / "page.html", png = dir / "shot.png";
  std::filesystem::remove(png);
  aligner::write_alignment_html(page, v);
  const std::string cmd = browser + " --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir=" + (dir / "profile").string() +
                          " --window-size=640,360 --screenshot=" + png.string() + " file://" + page.string() + " >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  REQUIRE(std::filesystem::exists(png));
  std::size_t w = 0, h = 0;
  std::vector<unsigned char> rgb;
  REQUIRE(decode_png(aligner::io::read_file(png), w, h, rgb));
  CHECK(w == 640);
  CHECK(h == 360);
  std::set<std::uint32_t> colours;
  std::size_t non_white = 0, orange = 0;
  for (std::size_t p = 0; p != w * h; ++p) {
    const unsigned char r = rgb[p * 3], g = rgb[p * 3 + 1], b = rgb[p * 3 + 2];
    colours.insert((std::uint32_t(r) << 16) | (std::uint32_t(g) << 8) | b);
    if (r < 250 || g < 250 || b < 250) ++non_white;
    if (r > 230 && g > 100 && g < 150 && b < 40) ++orange;  // the outline colour #ff7f0e
  }
  std::printf("rendered %zux%zu: %zu colours, %.1f%% not white, %zu outline pixels\n", w, h, colours.size(),
              100.0 * double(non_white) / double(w * h), orange);
  CHECK(colours.size() > 16);
  CHECK(non_white > w * h / 50);
  CHECK(orange > 20);
  std::filesystem::remove_all(dir);
#endif
}
