#include <aligner/io/npy.hpp>

#include "test_common.hpp"

#include <cstring>

namespace {

std::string header_v1(const std::string& dict_body) {
  std::string dict = dict_body;
  while ((10 + dict.size() + 1) % 64) dict += ' ';
  dict += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char(dict.size() & 0xff);
  out += char(dict.size() >> 8);
  return out + dict;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

}  // namespace

TEST_CASE("npy: round trips for every written dtype", "[property]") {
  const std::vector<float> f = {1.5f, -2.f, 3.25f, 0.f, 1e-8f, 7.f};
  const std::size_t shape[] = {2, 3};
  const auto back = aligner::io::parse_npy<float>(aligner::io::encode_npy<float>(f, shape));
  CHECK(back.shape == std::vector<std::size_t>{2, 3});
  CHECK(back.values == f);
  const std::vector<std::int64_t> l = {0, 5, 1ll << 40};
  const std::size_t s1[] = {3};
  CHECK(aligner::io::parse_npy<std::int64_t>(aligner::io::encode_npy<std::int64_t>(l, s1)).values == l);
  const std::vector<std::int32_t> i = {-1, 2, 3};
  const auto bi = aligner::io::parse_npy<std::int64_t>(aligner::io::encode_npy<std::int32_t>(i, s1));
  CHECK(bi.values == std::vector<std::int64_t>{-1, 2, 3});  // int32 widened
  CHECK_THROWS_WITH(aligner::io::parse_npy<std::int32_t>(aligner::io::encode_npy<std::int64_t>(l, s1), "big.npy"),
                    Catch::Contains("does not fit int32"));
  const auto path = std::filesystem::temp_directory_path() / "aligner_test.npy";
  aligner::io::save_npy(path, f, {3, 2});
  const auto disk = aligner::io::load_npy<float>(path);
  CHECK(disk.shape == std::vector<std::size_t>{3, 2});
  CHECK(disk.values == f);
  std::filesystem::remove(path);
}

TEST_CASE("npy: float16 and version 2 headers", "[golden]") {
  // 1.0, -2.0, 0.5, 65504 (max half), 2^-24 (smallest subnormal)
  const std::vector<std::uint16_t> h = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001};
  const auto a = aligner::io::parse_npy<float>(header_v1("{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }") + raw(h));
  CHECK(a.values == std::vector<float>{1.f, -2.f, 0.5f, 65504.f, std::ldexp(1.f, -24)});
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  while ((12 + dict.size() + 1) % 64) dict += ' ';
  dict += '\n';
  std::string v2("\x93NUMPY\x02\x00", 8);
  for (int i = 0; i < 4; ++i) v2 += char((dict.size() >> (8 * i)) & 0xff);
  const std::vector<float> f = {4.f, 5.f};
  CHECK(aligner::io::parse_npy<float>(v2 + dict + raw(f)).values == f);
}

TEST_CASE("npy: float64, integers of every width and Fortran order are read as their values in C order", "[golden]") {
  // numpy.save of np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float64, order="F"): the data column by column.
  const std::vector<double> columns = {1, 4, 2, 5, 3, 6};
  const auto a = aligner::io::parse_npy<float>(header_v1("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }") + raw(columns));
  CHECK(a.shape == std::vector<std::size_t>{2, 3});
  CHECK(a.values == std::vector<float>{1, 2, 3, 4, 5, 6});
  // float64 rounds to nearest float32; a finite value beyond float32 is an error, an infinity stays one.
  const std::vector<double> d = {0.1, -1e-40, std::numeric_limits<double>::infinity()};
  const auto b = aligner::io::parse_npy<float>(header_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }") + raw(d));
  CHECK(b.values[0] == 0.1f);
  CHECK(b.values[1] == static_cast<float>(-1e-40));
  CHECK(std::isinf(b.values[2]));
  const std::vector<double> huge = {1.0, 1e300};
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }") + raw(huge), "h.npy"),
                    Catch::Contains("h.npy") && Catch::Contains("index 1") && Catch::Contains("does not fit float32"));
  // A 3-d Fortran array: element (i, j, k) at i + 2 j + 6 k of the data.
  std::vector<float> f3(2 * 3 * 4);
  for (std::size_t i = 0; i != 2; ++i)
    for (std::size_t j = 0; j != 3; ++j)
      for (std::size_t k = 0; k != 4; ++k) f3[i + 2 * j + 6 * k] = float(100 * i + 10 * j + k);
  const auto c = aligner::io::parse_npy<float>(header_v1("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }") + raw(f3));
  for (std::size_t i = 0; i != 2; ++i)
    for (std::size_t j = 0; j != 3; ++j)
      for (std::size_t k = 0; k != 4; ++k) CHECK(c.values[(i * 3 + j) * 4 + k] == float(100 * i + 10 * j + k));
  // Integers: int8, uint8 ('|' order mark), int16, uint16, uint32 and uint64, read as int32 and int64.
  const std::vector<std::int8_t> i1 = {-128, 0, 127};
  CHECK(aligner::io::parse_npy<std::int32_t>(header_v1("{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }") + raw(i1)).values ==
        std::vector<std::int32_t>{-128, 0, 127});
  const std::vector<std::uint8_t> u1 = {0, 200, 255};
  CHECK(aligner::io::parse_npy<std::int64_t>(header_v1("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }") + raw(u1)).values ==
        std::vector<std::int64_t>{0, 200, 255});
  const std::vector<std::int16_t> i2 = {-32768, 7, 32767};
  CHECK(aligner::io::parse_npy<std::int64_t>(header_v1("{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }") + raw(i2)).values ==
        std::vector<std::int64_t>{-32768, 7, 32767});
  const std::vector<std::uint16_t> u2 = {65535, 1};
  CHECK(aligner::io::parse_npy<std::int32_t>(header_v1("{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }") + raw(u2)).values ==
        std::vector<std::int32_t>{65535, 1});
  const std::vector<std::uint32_t> u4 = {4000000000u, 3};
  CHECK(aligner::io::parse_npy<std::int64_t>(header_v1("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }") + raw(u4)).values ==
        std::vector<std::int64_t>{4000000000, 3});
  CHECK_THROWS_WITH(aligner::io::parse_npy<std::int32_t>(header_v1("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }") + raw(u4)),
                    Catch::Contains("4000000000") && Catch::Contains("does not fit int32"));
  const std::vector<std::uint64_t> u8 = {5, std::uint64_t(1) << 63};
  CHECK_THROWS_WITH(aligner::io::parse_npy<std::int64_t>(header_v1("{'descr': '<u8', 'fortran_order': False, 'shape': (2,), }") + raw(u8)),
                    Catch::Contains("index 1") && Catch::Contains("does not fit int64"));
  // A Fortran-order integer matrix.
  const std::vector<std::int64_t> icols = {1, 3, 2, 4};
  CHECK(aligner::io::parse_npy<std::int32_t>(header_v1("{'descr': '<i8', 'fortran_order': True, 'shape': (2, 2), }") + raw(icols)).values ==
        std::vector<std::int32_t>{1, 2, 3, 4});
  // A multi-byte dtype needs its byte order.
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }") + raw(std::vector<float>{1.f})),
                    Catch::Contains("byte order"));
}

TEST_CASE("npy: rejects malformed files with the file and offset", "[edge]") {
  const std::vector<float> f = {1.f, 2.f};
  const std::string good = header_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }") + raw(f);
  CHECK_NOTHROW(aligner::io::parse_npy<float>(good));
  std::string bad_magic = good;
  bad_magic[1] = 'X';
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(bad_magic, "m.npy"), Catch::Contains("m.npy") && Catch::Contains("magic"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(good.substr(0, good.size() - 1), "t.npy"), Catch::Contains("truncated"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(good.substr(0, 30)), Catch::Contains("truncated header"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(good.substr(0, 5)), Catch::Contains("too short"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(good + "xx"), Catch::Contains("size mismatch"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }") + raw(f)),
                    Catch::Contains("big-endian"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }") + raw(f)),
                    Catch::Contains("not supported"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '|b1', 'fortran_order': False, 'shape': (8,), }") + raw(f)),
                    Catch::Contains("not supported"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }") + raw(f)),
                    Catch::Contains("fortran_order"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }") + raw(f)),
                    Catch::Contains("expected a float array"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<std::int64_t>(good), Catch::Contains("expected an integer array"));
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(header_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }") + raw(f)),
                    Catch::Contains("truncated data"));
  CHECK_THROWS_AS(aligner::io::parse_npy<float>(header_v1("{'descr': '<f4', 'fortran_order': False, }") + raw(f)), aligner::io_error);
  CHECK_THROWS_AS(aligner::io::parse_npy<float>(header_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }") + raw(f)),
                  aligner::io_error);
  CHECK_THROWS_AS(aligner::io::parse_npy<float>(header_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }")),
                  aligner::io_error);
  std::string v9 = good;
  v9[6] = 9;
  CHECK_THROWS_WITH(aligner::io::parse_npy<float>(v9), Catch::Contains("version 9"));
  CHECK_THROWS_AS(aligner::io::load_npy<float>("/nonexistent/x.npy"), aligner::io_error);
}

TEST_CASE("npy: every truncation of a valid file is an error, never a crash", "[edge]") {
  const std::vector<float> f = {1.f, 2.f, 3.f};
  const std::size_t shape[] = {3};
  const std::string good = aligner::io::encode_npy<float>(f, shape);
  for (std::size_t len = 0; len < good.size(); ++len) CHECK_THROWS_AS(aligner::io::parse_npy<float>(good.substr(0, len)), aligner::io_error);
}
