// Tests of the safetensors reader and writer: round trips, the PEFT traces, and one test per kind of malformed file.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "adalora/core/bfloat16.hpp"
#include "adalora/io/safetensors.hpp"
#include "support/trace_files.hpp"

using adalora::format_error;
using adalora::shape_error;
using adalora::usage_error;
using adalora::io::dtype;
using adalora::io::safetensors_file;
using adalora::io::safetensors_writer;

namespace {

constexpr float pinf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

std::uint32_t bits_of(float f) {
  return std::bit_cast<std::uint32_t>(f);
}

/// A file made by hand: the 8-byte little-endian length of `header`, `header` itself, then `data_bytes` bytes.
std::vector<std::byte> hand_made(const std::string& header, std::size_t data_bytes, std::uint64_t length) {
  std::vector<std::byte> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((length >> (8 * i)) & 0xffu));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::byte>(i * 37 + 11));
  return out;
}
std::vector<std::byte> hand_made(const std::string& header, std::size_t data_bytes) {
  return hand_made(header, data_bytes, header.size());
}

/// Seeded random floats in [-2, 2).
std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

/// The value of a binary16 bit pattern, computed independently of the library (by scaling in double).
double f16_reference(std::uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0x1f)
    return mant ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  if (exp == 0) return sign * std::ldexp(static_cast<double>(mant), -24);
  return sign * std::ldexp(1.0 + mant / 1024.0, exp - 15);
}

/// Expects `bytes` to be rejected with a format_error whose message contains `fragment`.
void expect_malformed(const std::vector<std::byte>& bytes, const std::string& fragment) {
  INFO("expecting a format_error containing: " << fragment);
  REQUIRE_THROWS_AS(safetensors_file::parse(bytes, "bad.safetensors"), format_error);
  REQUIRE_THROWS_WITH(safetensors_file::parse(bytes, "bad.safetensors"),
                      Catch::Contains(fragment) && Catch::Contains("'bad.safetensors'"));
}

}  // namespace

// ---- element conversions ----------------------------------------------------------------------------------------

TEST_CASE("dtype names, sizes and parsing", "[io][safetensors]") {
  for (dtype t : {dtype::f32, dtype::f16, dtype::bf16})
    REQUIRE(adalora::io::parse_dtype(adalora::io::dtype_name(t)) == t);
  REQUIRE(adalora::io::dtype_name(dtype::bf16) == "BF16");
  REQUIRE(adalora::io::dtype_size(dtype::f32) == 4);
  REQUIRE(adalora::io::dtype_size(dtype::f16) == 2);
  REQUIRE(adalora::io::dtype_size(dtype::bf16) == 2);
  REQUIRE_FALSE(adalora::io::parse_dtype("f32").has_value());
  REQUIRE_FALSE(adalora::io::parse_dtype("F64").has_value());
}

TEST_CASE("every binary16 pattern widens exactly and narrows back to itself", "[io][safetensors]") {
  using adalora::io::f16_bits_to_float;
  using adalora::io::float_to_f16_bits;
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = f16_bits_to_float(h);
    const double expect = f16_reference(h);
    INFO("half bits 0x" << std::hex << i);
    if (std::isnan(expect)) {
      REQUIRE(std::isnan(f));
      REQUIRE(std::isnan(f16_bits_to_float(float_to_f16_bits(f))));
      REQUIRE((bits_of(f) & 0x80000000u) == ((i & 0x8000u) << 16));  // sign kept
    } else {
      REQUIRE(static_cast<double>(f) == expect);
      REQUIRE(std::signbit(f) == ((i & 0x8000u) != 0));  // -0 stays -0
      REQUIRE(float_to_f16_bits(f) == h);
    }
  }
}

TEST_CASE("float to binary16 rounds to nearest, ties to even, at every boundary", "[io][safetensors]") {
  using adalora::io::f16_bits_to_float;
  using adalora::io::float_to_f16_bits;
  for (std::uint16_t sign : {std::uint16_t{0}, std::uint16_t{0x8000}}) {
    for (std::uint32_t h = 0; h < 0x7c00; ++h) {  // each finite half and the next one up (0x7bff's is inf)
      const auto lo = static_cast<std::uint16_t>(h | sign);
      const auto hi = static_cast<std::uint16_t>((h + 1) | sign);
      const double a = std::fabs(f16_reference(lo));
      const double b = h + 1 == 0x7c00 ? 65536.0 : std::fabs(f16_reference(hi));  // 65536: where inf would be
      const float mid = static_cast<float>((sign ? -1.0 : 1.0) * (a + b) / 2);    // exact: 12 significant bits
      INFO("between half bits 0x" << std::hex << lo << " and 0x" << hi);
      REQUIRE(float_to_f16_bits(mid) == ((h & 1u) ? hi : lo));
      REQUIRE(float_to_f16_bits(std::nextafter(mid, 0.0f)) == lo);
      REQUIRE(float_to_f16_bits(std::nextafter(mid, sign ? -pinf : pinf)) == hi);
    }
  }
  REQUIRE(float_to_f16_bits(65504.0f) == 0x7bff);
  REQUIRE(float_to_f16_bits(65519.99f) == 0x7bff);
  REQUIRE(float_to_f16_bits(65520.0f) == 0x7c00);
  REQUIRE(float_to_f16_bits(1e30f) == 0x7c00);
  REQUIRE(float_to_f16_bits(-1e30f) == 0xfc00);
  REQUIRE(float_to_f16_bits(pinf) == 0x7c00);
  REQUIRE(float_to_f16_bits(-pinf) == 0xfc00);
  REQUIRE(float_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);  // a tie between 0 and the smallest subnormal
  REQUIRE(float_to_f16_bits(std::ldexp(1.5f, -25)) == 0x0001);
  REQUIRE(float_to_f16_bits(std::ldexp(1.0f, -26)) == 0x0000);
  REQUIRE(float_to_f16_bits(std::numeric_limits<float>::denorm_min()) == 0x0000);
  REQUIRE(float_to_f16_bits(-std::numeric_limits<float>::denorm_min()) == 0x8000);
  REQUIRE(float_to_f16_bits(-0.0f) == 0x8000);
  REQUIRE(float_to_f16_bits(std::ldexp(1023.0f, -24)) == 0x03ff);  // largest subnormal
  REQUIRE(float_to_f16_bits(std::ldexp(1.0f, -14)) == 0x0400);     // smallest normal
  const std::uint16_t n = float_to_f16_bits(qnan);
  REQUIRE((n & 0x7c00u) == 0x7c00u);
  REQUIRE((n & 0x03ffu) != 0);
  // A NaN whose payload lives only in the low bits must not collapse to infinity.
  REQUIRE(std::isnan(f16_bits_to_float(float_to_f16_bits(std::bit_cast<float>(0x7f800001u)))));
}

TEST_CASE("every bfloat16 pattern widens exactly; narrowing rounds to nearest even", "[io][safetensors]") {
  using adalora::io::bf16_bits_to_float;
  using adalora::io::float_to_bf16_bits;
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    const auto b = static_cast<std::uint16_t>(i);
    const float f = bf16_bits_to_float(b);
    INFO("bfloat16 bits 0x" << std::hex << i);
    REQUIRE(bits_of(f) == i << 16);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f))));
      continue;
    }
    REQUIRE(float_to_bf16_bits(f) == b);
    if ((i & 0x7fffu) >= 0x7f80u) continue;  // inf or NaN: no next value
    // The midpoint to the next pattern away from zero (for 0x7f7f that is +inf, reached by rounding up).
    const float mid = std::bit_cast<float>((i << 16) | 0x8000u);
    const auto next = static_cast<std::uint16_t>(i + 1);
    REQUIRE(float_to_bf16_bits(mid) == ((i & 1u) ? next : b));
    REQUIRE(float_to_bf16_bits(std::bit_cast<float>((i << 16) | 0x7fffu)) == b);
    REQUIRE(float_to_bf16_bits(std::bit_cast<float>((i << 16) | 0x8001u)) == next);
  }
  REQUIRE(float_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7f80);
  REQUIRE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(std::bit_cast<float>(0x7f800001u)))));
  REQUIRE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(std::bit_cast<float>(0xff800001u)))));
}

// ---- round trips ------------------------------------------------------------------------------------------------

TEST_CASE("F32 tensors and metadata round-trip bit for bit", "[io][safetensors]") {
  const std::vector<float> a = random_floats(6 * 5, 1234);
  const std::vector<float> b = random_floats(7, 99);
  const std::vector<float> special = {0.0f,
                                      -0.0f,
                                      pinf,
                                      -pinf,
                                      qnan,
                                      std::numeric_limits<float>::denorm_min(),
                                      std::numeric_limits<float>::max(),
                                      -std::numeric_limits<float>::min()};
  REQUIRE(a[0] != a[1]);  // the inputs are non-trivial
  safetensors_writer w;
  w.add("layer/A", {6, 5}, a);
  w.add("b", {7}, b);
  w.add("special", {2, 2, 2}, special);
  w.add("scalar", {}, std::vector<float>{3.5f});
  w.add_metadata("format", "test/1");
  w.add_metadata("note", "{\"json\": [1, 2]}");
  const std::vector<std::byte> bytes = w.to_bytes();

  // Header length is a multiple of 8, so the data buffer starts 8-byte aligned.
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
  REQUIRE(n % 8 == 0);
  REQUIRE(static_cast<char>(bytes[8]) == '{');

  const safetensors_file f = safetensors_file::parse(bytes);
  REQUIRE(f.metadata().size() == 2);
  REQUIRE(f.metadata().at("format") == "test/1");
  REQUIRE(f.metadata().at("note") == "{\"json\": [1, 2]}");
  REQUIRE(f.tensors().size() == 4);
  // Laid out in the order added.
  REQUIRE(f.tensors()[0].name == "layer/A");
  REQUIRE(f.tensors()[1].name == "b");
  REQUIRE(f.tensors()[2].name == "special");
  REQUIRE(f.tensors()[3].name == "scalar");
  REQUIRE(f.info("layer/A").shape == std::vector<std::size_t>{6, 5});
  REQUIRE(f.info("layer/A").type == dtype::f32);
  REQUIRE(f.info("layer/A").begin == 0);
  REQUIRE(f.info("layer/A").end == 120);
  REQUIRE(f.info("scalar").shape.empty());
  REQUIRE(f.info("scalar").numel() == 1);
  REQUIRE(f.data_size() == (30 + 7 + 8 + 1) * 4);

  auto same_bits = [](const std::vector<float>& x, const std::vector<float>& y) {
    REQUIRE(x.size() == y.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      INFO("element " << i << ": " << x[i] << " vs " << y[i]);
      REQUIRE(bits_of(x[i]) == bits_of(y[i]));
    }
  };
  same_bits(f.read_f32("layer/A"), a);
  same_bits(f.read_f32("b"), b);
  same_bits(f.read_f32("special"), special);
  REQUIRE(f.read_f32("scalar") == std::vector<float>{3.5f});
  // Raw bytes are little-endian.
  const auto raw = f.raw("scalar");
  REQUIRE(raw.size() == 4);
  REQUIRE(std::to_integer<std::uint32_t>(raw[3]) == (bits_of(3.5f) >> 24));
}

TEST_CASE("F16 and BF16 tensors round-trip, special values included", "[io][safetensors]") {
  using adalora::io::bf16_bits_to_float;
  using adalora::io::f16_bits_to_float;
  using adalora::io::float_to_bf16_bits;
  using adalora::io::float_to_f16_bits;
  std::vector<float> values = random_floats(20, 7);
  const std::vector<float> special = {0.0f,
                                      -0.0f,
                                      pinf,
                                      -pinf,
                                      qnan,
                                      std::ldexp(1.0f, -24),
                                      std::ldexp(-3.0f, -20),
                                      65504.0f,
                                      1e-40f,
                                      1.0f + std::ldexp(1.0f, -11)};
  values.insert(values.end(), special.begin(), special.end());
  safetensors_writer w;
  w.add("h", {5, 6}, values, dtype::f16);
  w.add("b", {30}, values, dtype::bf16);
  const safetensors_file f = safetensors_file::parse(w.to_bytes());
  REQUIRE(f.info("h").type == dtype::f16);
  REQUIRE(f.info("b").type == dtype::bf16);
  REQUIRE(f.raw("h").size() == 60);
  const std::vector<float> h = f.read_f32("h");
  const std::vector<float> b = f.read_f32("b");
  for (std::size_t i = 0; i < values.size(); ++i) {
    INFO("element " << i << " = " << values[i]);
    const float want_h = f16_bits_to_float(float_to_f16_bits(values[i]));
    const float want_b = bf16_bits_to_float(float_to_bf16_bits(values[i]));
    if (std::isnan(values[i])) {
      REQUIRE(std::isnan(h[i]));
      REQUIRE(std::isnan(b[i]));
      continue;
    }
    REQUIRE(bits_of(h[i]) == bits_of(want_h));
    REQUIRE(bits_of(b[i]) == bits_of(want_b));
    if (!std::isfinite(values[i])) continue;
    // Within half an ulp (relative for normals, absolute for subnormals).
    REQUIRE(std::fabs(h[i] - values[i]) <= std::max(std::fabs(values[i]) * 0x1p-11f, 0x1p-25f));
    REQUIRE(std::fabs(b[i] - values[i]) <= std::max(std::fabs(values[i]) * 0x1p-8f, 0x1p-134f));
  }
  const std::size_t s = 20;  // where the special values start
  REQUIRE(h[s + 2] == pinf);
  REQUIRE(h[s + 3] == -pinf);
  REQUIRE(std::signbit(h[s + 1]));
  REQUIRE(h[s + 5] == std::ldexp(1.0f, -24));   // smallest subnormal, exact
  REQUIRE(h[s + 6] == std::ldexp(-3.0f, -20));  // a subnormal, exact
  REQUIRE(h[s + 7] == 65504.0f);
  REQUIRE(h[s + 8] == 0.0f);
  REQUIRE(h[s + 9] == 1.0f);  // a tie, rounded to even
  REQUIRE(b[s + 2] == pinf);
  REQUIRE(b[s + 8] != 0.0f);  // bfloat16 has float's range: 1e-40 stays a (subnormal) non-zero
}

TEST_CASE("bfloat16 tensors are written and read as BF16 bit for bit", "[io][safetensors][bfloat16]") {
  using adalora::bfloat16;
  std::vector<bfloat16> values;
  for (float x : random_floats(12, 31)) values.push_back(x);
  // every kind of pattern: zeros, subnormals, the extremes, infinities, NaNs with payloads (kept as they are)
  for (std::uint16_t b : {0x0000, 0x8000, 0x0001, 0x807f, 0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81})
    values.push_back(bfloat16::from_bits(b));
  REQUIRE(values[0].bits() != values[1].bits());  // the inputs are non-trivial
  safetensors_writer w;
  w.add("w", {3, 4}, std::span<const bfloat16>(values.data(), 12));
  w.add("special", {11}, std::span<const bfloat16>(values.data() + 12, 11));
  w.add("empty", {0, 3}, std::vector<bfloat16>{});
  w.add("f", {2}, std::vector<float>{1.0f, 2.0f});
  const safetensors_file f = safetensors_file::parse(w.to_bytes(), "bf16.safetensors");
  REQUIRE(f.info("w").type == dtype::bf16);
  REQUIRE(f.info("special").type == dtype::bf16);
  REQUIRE(f.info("w").shape == std::vector<std::size_t>{3, 4});
  REQUIRE(f.raw("w").size() == 24);
  // little-endian bytes of the bits, as PyTorch writes them
  REQUIRE(std::to_integer<unsigned>(f.raw("w")[0]) == (values[0].bits() & 0xffu));
  REQUIRE(std::to_integer<unsigned>(f.raw("w")[1]) == (values[0].bits() >> 8));

  std::vector<bfloat16> got = f.read_bf16("w");
  const std::vector<bfloat16> special = f.read_bf16("special");
  got.insert(got.end(), special.begin(), special.end());
  REQUIRE(got.size() == values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    INFO("element " << i << ": 0x" << std::hex << values[i].bits() << " read back as 0x" << got[i].bits());
    REQUIRE(got[i].bits() == values[i].bits());
    // read_f32 widens the same bits exactly
    REQUIRE(bits_of(f.read_f32(i < 12 ? "w" : "special")[i < 12 ? i : i - 12]) ==
            static_cast<std::uint32_t>(values[i].bits()) << 16);
  }
  REQUIRE(f.read_bf16("empty").empty());

  // A BF16 tensor written from floats reads back as the rounded values (finite values round as bfloat16 does).
  safetensors_writer w2;
  const std::vector<float> floats = random_floats(16, 32);
  w2.add("r", {16}, floats, dtype::bf16);
  const safetensors_file f2 = safetensors_file::parse(w2.to_bytes());
  const std::vector<bfloat16> r = f2.read_bf16("r");
  for (std::size_t i = 0; i < floats.size(); ++i) REQUIRE(r[i].bits() == bfloat16(floats[i]).bits());

  // Only BF16 tensors are read without conversion; wrong sizes and missing tensors fail loudly.
  REQUIRE_THROWS_AS(f.read_bf16("f"), format_error);
  REQUIRE_THROWS_WITH(f.read_bf16("f"), Catch::Contains("tensor 'f'") && Catch::Contains("is F32, not BF16") &&
                                            Catch::Contains("bf16.safetensors"));
  REQUIRE_THROWS_AS(f.read_bf16("nope"), format_error);
  std::vector<bfloat16> out(11);
  REQUIRE_THROWS_AS(f.read_bf16_into("w", out), shape_error);
  REQUIRE_THROWS_WITH(f.read_bf16_into("w", out), Catch::Contains("'w'") && Catch::Contains("11 bfloat16"));
  out.resize(12);
  f.read_bf16_into("w", out);
  for (std::size_t i = 0; i < 12; ++i) REQUIRE(out[i].bits() == values[i].bits());
  // the bf16 writer checks as the float one does, and a failed add leaves nothing behind
  REQUIRE_THROWS_AS(w2.add("r", {1}, std::vector<bfloat16>(1)), usage_error);
  REQUIRE_THROWS_AS(w2.add("__metadata__", {1}, std::vector<bfloat16>(1)), usage_error);
  REQUIRE_THROWS_AS(w2.add("s", {2, 3}, std::vector<bfloat16>(5)), shape_error);
  REQUIRE(safetensors_file::parse(w2.to_bytes()).tensors().size() == 1);
}

TEST_CASE("zero-element tensors round-trip", "[io][safetensors]") {
  safetensors_writer w;
  w.add("empty", {0}, std::vector<float>{});
  w.add("r0", {3, 0}, std::vector<float>{});
  w.add("x", {2}, std::vector<float>{1.0f, 2.0f});
  w.add("zero_r", {0, 5}, std::vector<float>{}, dtype::f16);
  const safetensors_file f = safetensors_file::parse(w.to_bytes());
  REQUIRE(f.info("r0").shape == std::vector<std::size_t>{3, 0});
  REQUIRE(f.info("r0").numel() == 0);
  REQUIRE(f.info("r0").begin == f.info("r0").end);
  REQUIRE(f.read_f32("r0").empty());
  REQUIRE(f.read_f32("empty").empty());
  REQUIRE(f.read_f32("zero_r").empty());
  REQUIRE(f.raw("zero_r").empty());
  REQUIRE(f.read_f32("x") == std::vector<float>{1.0f, 2.0f});

  const safetensors_file nothing = safetensors_file::parse(safetensors_writer{}.to_bytes());
  REQUIRE(nothing.tensors().empty());
  REQUIRE(nothing.metadata().empty());
  REQUIRE(nothing.data_size() == 0);
}

TEST_CASE("files written to disk are read back", "[io][safetensors]") {
  const auto path = std::filesystem::temp_directory_path() / "adalora-test_io-roundtrip.safetensors";
  const std::vector<float> v = random_floats(12, 5);
  safetensors_writer w;
  w.add("v", {3, 4}, v);
  w.add_metadata("k", "v");
  w.write(path);
  const safetensors_file f = safetensors_file::open(path);
  std::filesystem::remove(path);
  REQUIRE(f.source() == path.string());
  REQUIRE(f.read_f32("v") == v);
  REQUIRE(f.metadata().at("k") == "v");

  REQUIRE_THROWS_AS(safetensors_file::open(path), format_error);
  REQUIRE_THROWS_WITH(safetensors_file::open(path), Catch::Contains("cannot open") && Catch::Contains(path.string()));
}

TEST_CASE("lookups of missing tensors and wrong-sized outputs fail loudly", "[io][safetensors]") {
  safetensors_writer w;
  w.add("a", {2, 3}, random_floats(6, 3));
  const safetensors_file f = safetensors_file::parse(w.to_bytes(), "mem.safetensors");
  REQUIRE(f.contains("a"));
  REQUIRE_FALSE(f.contains("b"));
  REQUIRE_THROWS_AS(f.info("b"), format_error);
  REQUIRE_THROWS_WITH(f.info("b"), Catch::Contains("no tensor 'b'") && Catch::Contains("mem.safetensors"));
  REQUIRE_THROWS_AS(f.read_f32("b"), format_error);
  REQUIRE_THROWS_AS(f.raw("b"), format_error);
  std::vector<float> out(5);
  REQUIRE_THROWS_AS(f.read_f32_into("a", out), shape_error);
  REQUIRE_THROWS_WITH(f.read_f32_into("a", out), Catch::Contains("'a'") && Catch::Contains("5 floats"));
  out.resize(6);
  REQUIRE_NOTHROW(f.read_f32_into("a", out));
  REQUIRE(out == f.read_f32("a"));
}

TEST_CASE("the writer rejects duplicate names and mismatched sizes", "[io][safetensors]") {
  safetensors_writer w;
  w.add("a", {2}, std::vector<float>{1.0f, 2.0f});
  REQUIRE_THROWS_AS(w.add("a", {1}, std::vector<float>{1.0f}), usage_error);
  REQUIRE_THROWS_AS(w.add("__metadata__", {1}, std::vector<float>{1.0f}), usage_error);
  REQUIRE_THROWS_AS(w.add("b", {2, 3}, std::vector<float>(5)), shape_error);
  REQUIRE_THROWS_WITH(w.add("b", {2, 3}, std::vector<float>(5)),
                      Catch::Contains("[2, 3]") && Catch::Contains("5 values"));
  REQUIRE_THROWS_AS(w.add("c", {0}, std::vector<float>(1)), shape_error);
  const std::size_t big = std::size_t{1} << 40;
  REQUIRE_THROWS_AS(w.add("d", {big, big}, std::vector<float>(1)), shape_error);  // the product overflows
  w.add_metadata("m", "1");
  REQUIRE_THROWS_AS(w.add_metadata("m", "2"), usage_error);
  // The failed adds left the writer as it was.
  const safetensors_file f = safetensors_file::parse(w.to_bytes());
  REQUIRE(f.tensors().size() == 1);
  REQUIRE(f.metadata().at("m") == "1");
}

// ---- the PEFT traces --------------------------------------------------------------------------------------------

TEST_CASE("the PEFT allocation trace reads and every range is in bounds", "[io][safetensors][traces]") {
  const std::filesystem::path dir = ADALORA_TRACES_DIR;
  const safetensors_file f = safetensors_file::open(dir / "alloc-edge.safetensors");
  REQUIRE(f.metadata().at("format") == "adalora-trace/alloc/1");
  REQUIRE(f.metadata().count("config") == 1);
  const auto& e = f.info("0/layers.0.q/lora_E");
  REQUIRE(e.type == dtype::f32);
  REQUIRE(e.shape == std::vector<std::size_t>{4, 1});
  REQUIRE(f.read_f32("0/layers.0.q/lora_E").size() == 4);
  REQUIRE(f.tensors().size() > 100);
  std::size_t covered = 0;
  for (const auto& t : f.tensors()) {
    INFO("tensor " << t.name);
    REQUIRE(t.begin == covered);
    REQUIRE(t.end <= f.data_size());
    REQUIRE(t.end - t.begin == t.numel() * 4);
    REQUIRE(f.raw(t.name).size() == t.end - t.begin);
    covered = t.end;
  }
  REQUIRE(covered == f.data_size());
}

TEST_CASE("every trace re-encodes to the same tensors", "[io][safetensors][traces]") {
  const auto files = adalora::testing::trace_files("");
  REQUIRE(files.size() >= 9);
  for (const auto& path : files) {
    INFO("trace " << path.filename().string());
    const safetensors_file f = safetensors_file::open(path);
    REQUIRE(f.metadata().at("format").rfind("adalora-trace/", 0) == 0);
    safetensors_writer w;
    for (const auto& [k, v] : f.metadata()) w.add_metadata(k, v);
    bool non_trivial = false;
    for (const auto& t : f.tensors()) {
      const std::vector<float> v = f.read_f32(t.name);
      for (float x : v) non_trivial = non_trivial || x != 0.0f;
      w.add(t.name, t.shape, v, t.type);
    }
    REQUIRE(non_trivial);
    const safetensors_file g = safetensors_file::parse(w.to_bytes());
    REQUIRE(g.metadata() == f.metadata());
    REQUIRE(g.tensors().size() == f.tensors().size());
    for (const auto& t : f.tensors()) {
      INFO("tensor " << t.name);
      REQUIRE(g.info(t.name).shape == t.shape);
      const auto a = f.raw(t.name);
      const auto b = g.raw(t.name);
      REQUIRE(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
  }
}

// ---- malformed files: each is rejected with a format_error that says what is wrong --------------------------------

TEST_CASE("malformed: file shorter than 8 bytes", "[io][safetensors][malformed]") {
  expect_malformed({}, "0 bytes");
  expect_malformed(std::vector<std::byte>(7, std::byte{0}), "7 bytes, fewer than the 8");
}

TEST_CASE("malformed: header length past the end of the file", "[io][safetensors][malformed]") {
  expect_malformed(hand_made("{}", 0, 3), "goes past the end of the file");
  expect_malformed(hand_made("{}", 0, 1000), "header length 1000 goes past the end of the file (10 bytes");
  // The largest length must not overflow the bounds check.
  expect_malformed(hand_made("{}", 0, std::numeric_limits<std::uint64_t>::max()), "over the limit");
}

TEST_CASE("malformed: header length over 100 MB", "[io][safetensors][malformed]") {
  expect_malformed(hand_made("{}", 0, 100'000'001), "header length 100000001 is over the limit of 100000000");
}

TEST_CASE("malformed: header that is not JSON or not an object", "[io][safetensors][malformed]") {
  expect_malformed(hand_made("", 0), "not valid JSON");
  expect_malformed(hand_made("{\"a\": {\"dtype\": \"F32\",, }}", 0), "not valid JSON");
  expect_malformed(hand_made("{} trailing", 0), "not valid JSON");
  expect_malformed(hand_made("{\"a\": {", 0), "not valid JSON");
  expect_malformed(hand_made("\xff\xfe", 0), "not valid JSON");
  expect_malformed(hand_made("{\"\xc3\x28\": 1}", 0), "not valid JSON");  // invalid UTF-8 in a key
  expect_malformed(hand_made("[1, 2]", 0), "the header is an array, not a JSON object");
  expect_malformed(hand_made("42      ", 0), "the header is a number, not a JSON object");
  expect_malformed(hand_made("\"text\"", 0), "the header is a string, not a JSON object");
  expect_malformed(hand_made("null", 0), "the header is null, not a JSON object");
}

TEST_CASE("malformed: a tensor entry that is not an object", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": [4, 1]})", 0), "tensor 'w': its entry is an array");
  expect_malformed(hand_made(R"({"w": "F32"})", 0), "tensor 'w': its entry is a string");
  expect_malformed(hand_made(R"({"w": 3})", 0), "tensor 'w': its entry is a number");
  expect_malformed(hand_made(R"({"w": null})", 0), "tensor 'w': its entry is null");
}

TEST_CASE("malformed: a tensor entry lacking dtype, shape or data_offsets", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': its entry lacks dtype");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8), "lacks shape");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2]}})", 8), "lacks data_offsets");
  expect_malformed(hand_made(R"({"w": {}})", 0), "lacks dtype shape data_offsets");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "extra": 1}})", 8),
                   "unknown field \"extra\"");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "dtype": "F16", "shape": [2], "data_offsets": [0, 8]}})", 8),
                   "field \"dtype\" appears twice");
}

TEST_CASE("malformed: wrongly typed dtype, shape or data_offsets", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"dtype": 32, "shape": [2], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': dtype is a number");
  expect_malformed(hand_made(R"({"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': dtype is an array");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': shape is a number");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": {"0": 2}, "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': shape is an object");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}})", 8),
                   "tensor 'w': data_offsets is a string");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [[2]], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': shape holds an array");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': shape holds a string");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, true]}})", 8),
                   "tensor 'w': data_offsets holds a boolean");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8]}})", 8),
                   "data_offsets has 1 elements");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}})", 8),
                   "data_offsets has more than 2 elements");
  std::string rank65 = "[1";
  for (int i = 0; i < 64; ++i) rank65 += ",1";
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": )" + rank65 + R"(], "data_offsets": [0, 4]}})", 4),
                   "more than 64 dimensions");
}

TEST_CASE("malformed: unknown dtype", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': unsupported dtype \"F64\"");
  expect_malformed(hand_made(R"({"w": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}})", 4),
                   "unsupported dtype \"f32\"");
}

TEST_CASE("malformed: negative or non-integer shape or offsets", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': shape holds the negative number -2");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8),
                   "tensor 'w': shape holds 2.5, which is not an integer");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", 8),
                   "shape holds 2.0, which is not an integer");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", 8),
                   "tensor 'w': data_offsets holds the negative number -8");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8e0]}})", 8),
                   "data_offsets holds 8e0, which is not an integer");
  // Past 2^64 nlohmann reads a number as a float: it is reported, not wrapped.
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 18446744073709551616]}})", 8),
                   "which is not an integer");
}

TEST_CASE("malformed: begin > end", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 8),
                   "tensor 'w': data_offsets [8, 4] has begin > end");
}

TEST_CASE("malformed: shape that does not match the byte range", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 20),
                   "tensor 'w': shape [2, 3] with dtype F32 needs 24 bytes, but data_offsets [0, 20] span 20");
  expect_malformed(hand_made(R"({"w": {"dtype": "F16", "shape": [3], "data_offsets": [0, 12]}})", 12),
                   "shape [3] with dtype F16 needs 6 bytes");
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 4]}})", 4),
                   "needs 0 bytes");
  // A product that overflows 64 bits must not wrap around to the right size: 2^32 × 2^32 × 4 would wrap to 0.
  expect_malformed(
      hand_made(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0),
      "more elements than can be addressed");
  // 2^62 elements fit in size_t, but 2^62 × 4 bytes wrap to 0.
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0),
                   "more elements than can be addressed");
  // Huge extents with a zero among them are a valid empty tensor (no false overflow).
  const auto ok = safetensors_file::parse(
      hand_made(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})", 0));
  REQUIRE(ok.info("w").numel() == 0);
}

TEST_CASE("malformed: offsets past the end of the byte buffer", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4),
                   "tensor 'w': data_offsets [0, 8] go past the end of the data buffer (4 bytes)");
  expect_malformed(
      hand_made(
          R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [18446744073709551608, 18446744073709551615]}})", 8),
      "go past the end of the data buffer");
}

TEST_CASE("malformed: overlapping ranges", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                             R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                             12),
                   "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  expect_malformed(hand_made(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                             R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                             8),
                   "overlap");
  // An empty tensor placed inside another one's bytes is also rejected (as the reference implementation does).
  expect_malformed(hand_made(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                             R"( "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                             8),
                   "overlap");
}

TEST_CASE("malformed: gaps and unused trailing bytes", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                             R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                             12),
                   "bytes [4, 8) of the data buffer belong to no tensor (gap between 'a' and 'b')");
  expect_malformed(hand_made(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8),
                   "bytes [0, 4) of the data buffer belong to no tensor (gap before 'b')");
  expect_malformed(hand_made(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 6),
                   "the last 2 bytes of the data buffer (from offset 4) belong to no tensor");
  expect_malformed(hand_made("{}", 3), "the last 3 bytes");
  // Tensors listed out of order but tiling the buffer are fine.
  const auto ok = safetensors_file::parse(hand_made(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},)"
                                                    R"( "a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})",
                                                    8));
  REQUIRE(ok.tensors()[0].name == "a");
  REQUIRE(ok.tensors()[1].name == "b");
}

TEST_CASE("malformed: duplicate tensor names", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                             R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                             8),
                   "tensor 'w' appears twice");
  expect_malformed(hand_made(R"({"__metadata__": {}, "__metadata__": {}})", 0), "two \"__metadata__\" entries");
}

TEST_CASE("malformed: __metadata__ that is not an object of strings", "[io][safetensors][malformed]") {
  expect_malformed(hand_made(R"({"__metadata__": ["a"]})", 0),
                   "__metadata__ is an array; expected an object of strings");
  expect_malformed(hand_made(R"({"__metadata__": "a"})", 0), "__metadata__ is a string");
  expect_malformed(hand_made(R"({"__metadata__": {"k": 1}})", 0), "__metadata__ value of key \"k\" is a number");
  expect_malformed(hand_made(R"({"__metadata__": {"k": {"x": "y"}}})", 0), "value of key \"k\" is an object");
  expect_malformed(hand_made(R"({"__metadata__": {"k": null}})", 0), "value of key \"k\" is null");
  expect_malformed(hand_made(R"({"__metadata__": {"k": "a", "k": "b"}})", 0), "__metadata__ has the key \"k\" twice");
  // Well formed: strings only, with a tensor after it.
  const auto ok = safetensors_file::parse(hand_made(
      R"({"__metadata__": {"k": "a", "j": "[1]"}, "w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}})", 2));
  REQUIRE(ok.metadata().at("j") == "[1]");
}

TEST_CASE("malformed: deeply nested headers fail fast", "[io][safetensors][malformed]") {
  // Nesting is rejected at the first level a safetensors header never has, before anything deep is built.
  expect_malformed(hand_made(std::string(1'000'000, '[') + std::string(1'000'000, ']'), 0), "the header is an array");
  expect_malformed(hand_made("{\"w\": {\"shape\": [" + std::string(1'000'000, '[') + "]}}", 0), "shape holds an array");
}

TEST_CASE("seeded corruptions of a valid file never crash or read out of bounds", "[io][safetensors][malformed]") {
  safetensors_writer w;
  w.add("a", {3, 2}, random_floats(6, 11));
  w.add("b", {4}, random_floats(4, 12), dtype::f16);
  w.add_metadata("format", "x");
  const std::vector<std::byte> good = w.to_bytes();
  std::mt19937 gen(2024);
  std::uniform_int_distribution<std::size_t> pos(0, good.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::byte> bad = good;
    for (int k = 0; k < 1 + trial % 3; ++k) bad[pos(gen)] = static_cast<std::byte>(byte(gen));
    if (trial % 5 == 0) bad.resize(pos(gen));  // truncate
    try {
      const safetensors_file f = safetensors_file::parse(bad);
      for (const auto& t : f.tensors()) REQUIRE(f.read_f32(t.name).size() == t.numel());
    } catch (const format_error&) {
      ++rejected;
    }
  }
  REQUIRE(rejected > 500);
}
