// Safe safetensors reading and writing: every malformed file raises format_error before anything is trusted.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "adalora/core/bfloat16.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/bounded_json.hpp"

namespace adalora::io {

// ---- element types --------------------------------------------------------------------------------------------

/// The element types this library reads and writes (the safetensors names are "F32", "F16" and "BF16").
enum class dtype { f32, f16, bf16 };

/// Bytes per element.
constexpr std::size_t dtype_size(dtype t) noexcept {
  return t == dtype::f32 ? 4 : 2;
}

/// The safetensors name: "F32", "F16" or "BF16".
constexpr std::string_view dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32:
      return "F32";
    case dtype::f16:
      return "F16";
    case dtype::bf16:
      return "BF16";
  }
  return "?";
}

/// The dtype with this safetensors name, or nullopt for any other name (names are case-sensitive, as in the spec).
constexpr std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  if (name == "F32") return dtype::f32;
  if (name == "F16") return dtype::f16;
  if (name == "BF16") return dtype::bf16;
  return std::nullopt;
}

// ---- half and bfloat16 conversions (bit patterns, exact for every input) ---------------------------------------

/// The float equal to the IEEE binary16 value with these bits (subnormals, ±inf and NaN payloads included).
constexpr float f16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf, NaN (payload kept)
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);  // ±0
  // Subnormal: mant × 2^-24. Normalize so that the leading 1 sits at bit 10.
  std::uint32_t e = 127 - 14;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign | (e << 23) | ((mant & 0x3ffu) << 13));
}

/// The IEEE binary16 bits nearest to f, ties to even; overflow gives ±inf, NaN stays a (quiet) NaN.
constexpr std::uint16_t float_to_f16_bits(float f) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t exp = (bits >> 23) & 0xffu;
  const std::uint32_t mant = bits & 0x7fffffu;
  if (exp == 0xff)  // inf, or NaN: keep the top payload bits and force the quiet bit so it stays a NaN
    return static_cast<std::uint16_t>(sign | 0x7c00u | (mant != 0 ? 0x200u | (mant >> 13) : 0u));
  const int e = static_cast<int>(exp) - 127;
  if (e > 15) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (e >= -14) {  // normal range; a carry out of the mantissa correctly bumps the exponent (up to inf)
    std::uint32_t h = (static_cast<std::uint32_t>(e + 15) << 10) | (mant >> 13);
    const std::uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0)) ++h;
    return static_cast<std::uint16_t>(sign | h);
  }
  if (e < -25) return sign;  // below half the smallest subnormal (2^-25): rounds to ±0
  // Subnormal result in units of 2^-24: the 24-bit significand m is worth m × 2^(e-23) = (m >> shift) units.
  const std::uint32_t m = mant | 0x800000u;
  const auto shift = static_cast<std::uint32_t>(-(e + 1));  // 14 ... 24
  std::uint32_t h = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (h & 1u) != 0)) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

/// The float equal to the bfloat16 value with these bits.
constexpr float bf16_bits_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

/// The bfloat16 bits nearest to f, ties to even; overflow gives ±inf, NaN stays a (quiet) NaN with its sign and top
/// payload bits (adalora::bfloat16, like PyTorch, makes every NaN 0x7FC0 instead; finite values agree).
constexpr std::uint16_t float_to_bf16_bits(float f) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  const std::uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

// ---- tensors in a file ----------------------------------------------------------------------------------------

/// One tensor of a safetensors file: its element type, row-major shape and byte range in the data buffer.
struct tensor_info {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::size_t> shape;
  std::size_t begin = 0;  ///< offset of the first byte, relative to the start of the data buffer
  std::size_t end = 0;    ///< one past the last byte

  /// Number of elements: the product of the shape (1 for a scalar, 0 when any extent is 0).
  std::size_t numel() const noexcept {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    return n;
  }
};

/// The largest JSON header accepted (the limit of the reference safetensors implementation).
inline constexpr std::size_t max_header_bytes = 100'000'000;
/// The most tensors one file may hold (a PEFT adapter of 100,000 modules holds 300,000); with the header limit, this
/// bounds what opening a file takes to a few times its header's size.
inline constexpr std::size_t max_tensors = std::size_t{1} << 20;
/// The most `__metadata__` entries one file may hold (files written by PyTorch, PEFT or this library hold a few).
inline constexpr std::size_t max_metadata_entries = std::size_t{1} << 16;
/// The largest number of dimensions accepted (NumPy's limit); it bounds what a header can make us allocate.
inline constexpr std::size_t max_rank = 64;

namespace detail {

inline std::uint16_t load_le16(const std::byte* p) noexcept {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | (std::to_integer<unsigned>(p[1]) << 8));
}

inline std::uint32_t load_le32(const std::byte* p) noexcept {
  return std::to_integer<std::uint32_t>(p[0]) | (std::to_integer<std::uint32_t>(p[1]) << 8) |
         (std::to_integer<std::uint32_t>(p[2]) << 16) | (std::to_integer<std::uint32_t>(p[3]) << 24);
}

inline std::uint64_t load_le64(const std::byte* p) noexcept {
  return static_cast<std::uint64_t>(load_le32(p)) | (static_cast<std::uint64_t>(load_le32(p + 4)) << 32);
}

inline void store_le(std::byte* p, std::uint64_t v, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
}

inline std::string shape_string(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

inline std::string range_string(std::size_t begin, std::size_t end) {
  // appended piece by piece: g++ 12 -O2 warns falsely (-Wrestrict) on "[" + std::to_string(...)
  std::string s = "[";
  s += std::to_string(begin);
  s += ", ";
  s += std::to_string(end);
  s += ")";
  return s;
}

/// Number of elements of a shape, or nullopt if it does not fit in size_t (a zero extent makes it 0, always).
inline std::optional<std::size_t> checked_numel(const std::vector<std::size_t>& shape) noexcept {
  if (std::find(shape.begin(), shape.end(), std::size_t{0}) != shape.end()) return std::size_t{0};
  std::size_t n = 1;
  for (std::size_t d : shape) {
    if (n > std::numeric_limits<std::size_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

/// Validating SAX handler for a safetensors header. Builds only what it needs (so a hostile header cannot make it
/// allocate much more than its own size), detects duplicate keys, and throws format_error at the first problem.
class header_parser {
public:
  using json = nlohmann::json;

  header_parser(std::string_view source, std::size_t buffer_size) : source_(source), buffer_size_(buffer_size) {}

  std::vector<tensor_info> tensors;
  std::map<std::string, std::string> metadata;

  bool finished() const noexcept { return state_ == state::after_root; }

  [[noreturn]] void fail(const std::string& what) const {
    throw format_error("safetensors file '" + std::string(source_) + "': " + what);
  }
  [[noreturn]] void fail_tensor(const std::string& what) const {
    fail("tensor '" + clip(state_ == state::in_root ? key_ : current_.name) + "': " + what);
  }

  // ---- nlohmann SAX interface ----
  bool null() { wrong_type("null"); }
  bool boolean(bool) { wrong_type("a boolean"); }
  bool binary(json::binary_t&) { wrong_type("binary data"); }
  bool number_integer(json::number_integer_t v) {
    if (in_list()) {
      if (v < 0) fail_tensor(list_name() + " holds the negative number " + std::to_string(v) + list_expect());
      push(static_cast<std::uint64_t>(v));
      return true;
    }
    wrong_type("a number");
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (in_list()) {
      push(v);
      return true;
    }
    wrong_type("a number");
  }
  bool number_float(json::number_float_t, const json::string_t& text) {
    if (in_list()) fail_tensor(list_name() + " holds " + clip(text) + ", which is not an integer below 2^64" + list_expect());
    wrong_type("a number");
  }
  bool string(json::string_t& s) {
    if (state_ == state::in_metadata) {
      metadata.emplace(std::move(field_), std::move(s));
      return true;
    }
    if (state_ == state::in_entry && field_ == "dtype") {
      const auto t = parse_dtype(s);
      if (!t) fail_tensor("unsupported dtype \"" + clip(s) + "\" (supported: F32, F16, BF16)");
      current_.type = *t;
      return true;
    }
    wrong_type("a string");
  }
  bool start_object(std::size_t) {
    if (state_ == state::before_root) {
      state_ = state::in_root;
    } else if (state_ == state::in_root && key_ == "__metadata__") {
      state_ = state::in_metadata;
    } else if (state_ == state::in_root) {
      state_ = state::in_entry;
      current_ = tensor_info{};
      current_.name = std::move(key_);
      has_dtype_ = has_shape_ = has_offsets_ = false;
    } else {
      wrong_type("an object");
    }
    return true;
  }
  bool key(json::string_t& k) {
    if (state_ == state::in_root) {
      if (k == "__metadata__") {
        if (seen_metadata_) fail("the header has two \"__metadata__\" entries");
        seen_metadata_ = true;
      } else if (tensors.size() == max_tensors) {
        fail("the header lists more than " + std::to_string(max_tensors) + " tensors (the limit of this reader)");
      }  // a tensor named twice is found once all are read (safetensors_file::validate), without a set of names here
      key_ = std::move(k);
    } else if (state_ == state::in_metadata) {
      if (metadata.count(k) != 0) fail("__metadata__ has the key \"" + clip(k) + "\" twice");
      if (metadata.size() == max_metadata_entries)
        fail("__metadata__ has more than " + std::to_string(max_metadata_entries) +
             " entries (the limit of this reader)");
      field_ = std::move(k);
    } else {  // in_entry
      bool* seen = k == "dtype"          ? &has_dtype_
                   : k == "shape"        ? &has_shape_
                   : k == "data_offsets" ? &has_offsets_
                                         : nullptr;
      if (seen == nullptr)
        fail_tensor("unknown field \"" + clip(k) + "\" (a tensor entry holds only dtype, shape and data_offsets)");
      if (*seen) fail_tensor("field \"" + k + "\" appears twice");
      *seen = true;
      field_ = std::move(k);
    }
    return true;
  }
  bool end_object() {
    if (state_ == state::in_entry) {
      finish_entry();
      state_ = state::in_root;
    } else if (state_ == state::in_metadata) {
      state_ = state::in_root;
    } else {  // in_root
      state_ = state::after_root;
    }
    return true;
  }
  bool start_array(std::size_t) {
    if (state_ == state::in_entry && field_ == "shape") {
      state_ = state::in_shape;
    } else if (state_ == state::in_entry && field_ == "data_offsets") {
      state_ = state::in_offsets;
      offsets_count_ = 0;
    } else {
      wrong_type("an array");
    }
    return true;
  }
  bool end_array() {
    if (state_ == state::in_offsets && offsets_count_ != 2)
      fail_tensor("data_offsets has " + std::to_string(offsets_count_) + " elements; expected [begin, end]");
    state_ = state::in_entry;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) {
    fail(std::string("the header is not valid JSON: ") + e.what());
  }

private:
  enum class state { before_root, in_root, in_metadata, in_entry, in_shape, in_offsets, after_root };

  static std::string clip(const std::string& s) { return clip_text(s); }

  bool in_list() const noexcept { return state_ == state::in_shape || state_ == state::in_offsets; }
  std::string list_name() const { return state_ == state::in_shape ? "shape" : "data_offsets"; }
  static std::string list_expect() { return "; expected non-negative integers"; }

  void push(std::uint64_t v) {
    if constexpr (sizeof(std::uint64_t) > sizeof(std::size_t)) {
      if (v > std::numeric_limits<std::size_t>::max())
        fail_tensor(list_name() + " holds " + std::to_string(v) + ", too large for this platform");
    }
    const auto n = static_cast<std::size_t>(v);
    if (state_ == state::in_shape) {
      if (current_.shape.size() == max_rank)
        fail_tensor("shape has more than " + std::to_string(max_rank) + " dimensions");
      current_.shape.push_back(n);
    } else {
      if (offsets_count_ == 2) fail_tensor("data_offsets has more than 2 elements; expected [begin, end]");
      (offsets_count_ == 0 ? current_.begin : current_.end) = n;
      ++offsets_count_;
    }
  }

  [[noreturn]] void wrong_type(const std::string& kind) const {
    switch (state_) {
      case state::before_root:
        fail("the header is " + kind + ", not a JSON object");
      case state::in_root:
        if (key_ == "__metadata__") fail("__metadata__ is " + kind + "; expected an object of strings");
        fail_tensor("its entry is " + kind + "; expected an object with dtype, shape and data_offsets");
      case state::in_metadata:
        fail("__metadata__ value of key \"" + clip(field_) + "\" is " + kind + "; every value must be a string");
      case state::in_entry:
        if (field_ == "dtype") fail_tensor("dtype is " + kind + "; expected a string such as \"F32\"");
        fail_tensor(field_ + " is " + kind + "; expected an array of non-negative integers");
      case state::in_shape:
      case state::in_offsets:
        fail_tensor(list_name() + " holds " + kind + list_expect());
      case state::after_root:
        break;
    }
    fail("unexpected " + kind + " after the header object");
  }

  void finish_entry() {
    std::string missing;
    if (!has_dtype_) missing += " dtype";
    if (!has_shape_) missing += " shape";
    if (!has_offsets_) missing += " data_offsets";
    if (!missing.empty()) fail_tensor("its entry lacks" + missing);
    const tensor_info& t = current_;
    if (t.begin > t.end)
      fail_tensor("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] has begin > end");
    if (t.end > buffer_size_)
      fail_tensor("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                  "] go past the end of the data buffer (" + std::to_string(buffer_size_) + " bytes)");
    const auto numel = checked_numel(t.shape);
    const std::size_t size = dtype_size(t.type);
    if (!numel || *numel > std::numeric_limits<std::size_t>::max() / size)
      fail_tensor("shape " + shape_string(t.shape) + " has more elements than can be addressed");
    if (*numel * size != t.end - t.begin)
      fail_tensor("shape " + shape_string(t.shape) + " with dtype " + std::string(dtype_name(t.type)) + " needs " +
                  std::to_string(*numel * size) + " bytes, but data_offsets [" + std::to_string(t.begin) + ", " +
                  std::to_string(t.end) + "] span " + std::to_string(t.end - t.begin));
    tensors.push_back(std::move(current_));
  }

  std::string_view source_;
  std::size_t buffer_size_;
  state state_ = state::before_root;
  std::string key_;    // the current top-level key (tensor name or "__metadata__"), until its entry starts
  std::string field_;  // the current key inside a tensor entry or __metadata__
  tensor_info current_;
  bool has_dtype_ = false, has_shape_ = false, has_offsets_ = false, seen_metadata_ = false;
  std::size_t offsets_count_ = 0;
};

}  // namespace detail

// ---- reading --------------------------------------------------------------------------------------------------

/// A whole safetensors file in memory, validated on construction: header well formed, no duplicate names, every
/// tensor's byte range inside the buffer and consistent with its shape, ranges neither overlapping nor leaving
/// gaps. Reads decode little-endian bytes explicitly, so they work on any host and any alignment.
class safetensors_file {
public:
  /// Reads and validates the file at `path`; throws format_error if it cannot be read or is malformed.
  static safetensors_file open(const std::filesystem::path& path) {
    const std::string source = path.string();
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) throw format_error("cannot open safetensors file '" + source + "': " + ec.message());
    if (size > std::numeric_limits<std::size_t>::max())
      throw format_error("safetensors file '" + source + "' is too large for this platform");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw format_error("cannot open safetensors file '" + source + "' for reading");
    std::vector<std::byte> bytes(static_cast<std::size_t>(size));
    // char may alias any object, so reading into std::byte storage through char* is well defined.
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (static_cast<std::size_t>(in.gcount()) != bytes.size())
      throw format_error("safetensors file '" + source + "': could read only " + std::to_string(in.gcount()) +
                         " of its " + std::to_string(bytes.size()) + " bytes");
    return parse(std::move(bytes), source);
  }

  /// Validates a safetensors file held in memory; `source` names it in error messages.
  static safetensors_file parse(std::vector<std::byte> bytes, std::string source = "<memory>") {
    safetensors_file f;
    f.source_ = std::move(source);
    f.bytes_ = std::move(bytes);
    f.validate();
    return f;
  }

  /// The name given to open() or parse(), as used in error messages.
  const std::string& source() const noexcept { return source_; }

  bool contains(std::string_view name) const { return find(name) != nullptr; }

  /// The tensor called `name`; throws format_error naming it and the file if there is none.
  const tensor_info& info(std::string_view name) const {
    const tensor_info* t = find(name);
    if (t == nullptr)
      throw format_error("safetensors file '" + source_ + "' has no tensor '" + detail::clip_text(name) +
                         "' (it holds " + std::to_string(tensors_.size()) + " tensors)");
    return *t;
  }

  /// Every tensor, in the order of their bytes in the data buffer.
  const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }

  /// The `__metadata__` entries (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  /// Size in bytes of the data buffer that follows the header.
  std::size_t data_size() const noexcept { return bytes_.size() - data_start_; }

  /// The stored bytes of a tensor (little-endian, row-major, with no alignment guarantee).
  std::span<const std::byte> raw(std::string_view name) const {
    const tensor_info& t = info(name);
    return std::span<const std::byte>(bytes_).subspan(data_start_ + t.begin, t.end - t.begin);
  }

  /// The tensor's elements as floats (F16 and BF16 are widened exactly).
  std::vector<float> read_f32(std::string_view name) const {
    std::vector<float> out(info(name).numel());
    read_f32_into(name, out);
    return out;
  }

  /// Writes the tensor's elements as floats into `out`, which must hold exactly numel() of them (else shape_error).
  void read_f32_into(std::string_view name, std::span<float> out) const {
    const tensor_info& t = info(name);
    if (out.size() != t.numel())
      throw shape_error("reading tensor '" + t.name + "' of '" + source_ + "' (shape " + detail::shape_string(t.shape) +
                        ", " + std::to_string(t.numel()) + " elements) into a buffer of " + std::to_string(out.size()) +
                        " floats");
    const std::byte* p = bytes_.data() + data_start_ + t.begin;
    switch (t.type) {
      case dtype::f32:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::bit_cast<float>(detail::load_le32(p + 4 * i));
        break;
      case dtype::f16:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = f16_bits_to_float(detail::load_le16(p + 2 * i));
        break;
      case dtype::bf16:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = bf16_bits_to_float(detail::load_le16(p + 2 * i));
        break;
    }
  }

  /// The elements of a BF16 tensor as bfloat16, bit for bit (no conversion, NaN payloads kept). Throws format_error
  /// if the tensor is stored as another dtype: read_f32 widens any dtype, and rounding is the caller's choice.
  std::vector<bfloat16> read_bf16(std::string_view name) const {
    std::vector<bfloat16> out(info(name).numel());
    read_bf16_into(name, out);
    return out;
  }

  /// Writes a BF16 tensor's elements into `out`, which must hold exactly numel() of them (else shape_error); throws
  /// format_error if the tensor is not BF16.
  void read_bf16_into(std::string_view name, std::span<bfloat16> out) const {
    const tensor_info& t = info(name);
    if (t.type != dtype::bf16)
      throw format_error("tensor '" + t.name + "' of '" + source_ + "' is " + std::string(dtype_name(t.type)) +
                         ", not BF16; read_bf16 copies BF16 tensors bit for bit (read_f32 widens any dtype)");
    if (out.size() != t.numel())
      throw shape_error("reading tensor '" + t.name + "' of '" + source_ + "' (shape " + detail::shape_string(t.shape) +
                        ", " + std::to_string(t.numel()) + " elements) into a buffer of " + std::to_string(out.size()) +
                        " bfloat16");
    const std::byte* p = bytes_.data() + data_start_ + t.begin;
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = bfloat16::from_bits(detail::load_le16(p + 2 * i));
  }

private:
  safetensors_file() = default;

  [[noreturn]] void fail(const std::string& what) const {
    throw format_error("safetensors file '" + source_ + "': " + what);
  }

  void validate() {
    const std::size_t size = bytes_.size();
    if (size < 8)
      fail("it has " + std::to_string(size) +
           " bytes, fewer than the 8 of the header length; it is truncated or "
           "not a safetensors file");
    const std::uint64_t header_len = detail::load_le64(bytes_.data());
    if (header_len > max_header_bytes)
      fail("header length " + std::to_string(header_len) + " is over the limit of " + std::to_string(max_header_bytes) +
           " bytes (the file has " + std::to_string(size) + " bytes); it is corrupt or not a safetensors file");
    if (header_len > size - 8)
      fail("header length " + std::to_string(header_len) + " goes past the end of the file (" + std::to_string(size) +
           " bytes, so at most " + std::to_string(size - 8) + "); the file is truncated");
    data_start_ = 8 + static_cast<std::size_t>(header_len);

    detail::header_parser handler(source_, size - data_start_);
    // char may alias any object: the header is viewed as the chars it is made of.
    const char* first = reinterpret_cast<const char*>(bytes_.data() + 8);
    // JSON text holds no NUL (nlohmann's reader would take one for the end, and accept the bytes after it unread)
    if (const void* nul = std::memchr(first, 0, static_cast<std::size_t>(header_len)))
      fail("the header holds a NUL byte at offset " +
           std::to_string(static_cast<const char*>(nul) - first) + "; JSON text cannot");
    const bool ok = nlohmann::json::sax_parse(first, first + header_len, &handler, nlohmann::json::input_format_t::json,
                                              true, false);
    if (!ok || !handler.finished()) fail("the header is not a complete JSON object");
    tensors_ = std::move(handler.tensors);
    metadata_ = std::move(handler.metadata);

    // The ranges must tile the data buffer exactly: sorted by offsets, each starts where the previous ended.
    std::stable_sort(tensors_.begin(), tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
      return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
    });
    std::size_t covered = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const tensor_info& t = tensors_[i];
      if (t.begin < covered)
        fail("tensors '" + tensors_[i - 1].name + "' " +
             detail::range_string(tensors_[i - 1].begin, tensors_[i - 1].end) + " and '" + t.name + "' " +
             detail::range_string(t.begin, t.end) + " overlap");
      if (t.begin > covered)
        fail("bytes " + detail::range_string(covered, t.begin) + " of the data buffer belong to no tensor (gap " +
             (i == 0 ? std::string("before") : "between '" + tensors_[i - 1].name + "' and") + " '" + t.name +
             "'); safetensors requires the buffer to be fully covered");
      covered = t.end;
    }
    if (covered != data_size())
      fail("the last " + std::to_string(data_size() - covered) + " bytes of the data buffer (from offset " +
           std::to_string(covered) + ") belong to no tensor; safetensors requires the buffer to be fully covered");
    // the index by name, which also finds a name used twice (nlohmann would keep the last of the two)
    by_name_.resize(tensors_.size());
    for (std::size_t i = 0; i < tensors_.size(); ++i) by_name_[i] = i;
    std::sort(by_name_.begin(), by_name_.end(),
              [&](std::size_t a, std::size_t b) { return tensors_[a].name < tensors_[b].name; });
    for (std::size_t i = 1; i < by_name_.size(); ++i)
      if (tensors_[by_name_[i - 1]].name == tensors_[by_name_[i]].name)
        fail("tensor '" + detail::clip_text(tensors_[by_name_[i]].name) + "' appears twice in the header");
  }

  // The tensor called `name`, or nullptr: a binary search of the index by name.
  const tensor_info* find(std::string_view name) const noexcept {
    const auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                                     [&](std::size_t i, std::string_view n) { return tensors_[i].name < n; });
    return it != by_name_.end() && tensors_[*it].name == name ? &tensors_[*it] : nullptr;
  }

  std::string source_;
  std::vector<std::byte> bytes_;
  std::size_t data_start_ = 0;
  std::vector<tensor_info> tensors_;
  std::vector<std::size_t> by_name_;  // indices of tensors_, sorted by name
  std::map<std::string, std::string> metadata_;
};

// ---- writing --------------------------------------------------------------------------------------------------

/// Builds a safetensors file: tensors are laid out in the order added, the JSON header is padded with spaces to a
/// multiple of 8 bytes (so the data buffer starts 8-byte aligned in the file).
class safetensors_writer {
public:
  /// Adds a tensor from floats, stored as `stored_as` (F16 and BF16 round to nearest, ties to even). The values are
  /// copied. Throws shape_error if `values` does not hold the shape's number of elements, usage_error if the name
  /// is taken or is "__metadata__".
  void add(std::string name, std::vector<std::size_t> shape, std::span<const float> values,
           dtype stored_as = dtype::f32) {
    check_new(name, shape, values.size());
    const std::size_t size = dtype_size(stored_as);
    std::vector<std::byte> data(values.size() * size);
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::uint64_t bits = stored_as == dtype::f32   ? std::bit_cast<std::uint32_t>(values[i])
                                 : stored_as == dtype::f16 ? float_to_f16_bits(values[i])
                                                           : float_to_bf16_bits(values[i]);
      detail::store_le(data.data() + i * size, bits, size);
    }
    push(entry{std::move(name), stored_as, std::move(shape), std::move(data)});
  }

  /// Adds a tensor of bfloat16 values, stored as BF16 bit for bit (no rounding, NaN payloads kept). The values are
  /// copied; errors as for the float overload.
  void add(std::string name, std::vector<std::size_t> shape, std::span<const bfloat16> values) {
    check_new(name, shape, values.size());
    std::vector<std::byte> data(values.size() * 2);
    for (std::size_t i = 0; i < values.size(); ++i) detail::store_le(data.data() + 2 * i, values[i].bits(), 2);
    push(entry{std::move(name), dtype::bf16, std::move(shape), std::move(data)});
  }

  /// Adds a `__metadata__` entry; throws usage_error if the key was already added.
  void add_metadata(std::string key, std::string value) {
    const auto [it, inserted] = metadata_keys_.insert(key);
    if (!inserted) throw usage_error("safetensors_writer: metadata key '" + key + "' was already added");
    try {
      metadata_.emplace_back(std::move(key), std::move(value));
    } catch (...) {
      metadata_keys_.erase(it);
      throw;
    }
  }

  /// The complete file. Throws usage_error if a name or metadata string is not valid UTF-8.
  std::vector<std::byte> to_bytes() const {
    // The header text is written out entry by entry (as nlohmann's compact dump would write it, in the order added):
    // an ordered_json object finds each new key by a linear search, which made writing n tensors O(n²).
    std::string text = "{";
    std::size_t offset = 0;
    try {
      auto quoted = [](const std::string& s) { return nlohmann::json(s).dump(); };  // escapes; checks the UTF-8
      if (!metadata_.empty()) {
        text += "\"__metadata__\":{";
        for (std::size_t i = 0; i < metadata_.size(); ++i)
          text += (i ? "," : "") + quoted(metadata_[i].first) + ":" + quoted(metadata_[i].second);
        text += "}";
      }
      for (const entry& e : entries_) {
        if (text.size() > 1) text += ",";
        text += quoted(e.name);
        text += ":{\"dtype\":\"";
        text += dtype_name(e.type);
        text += "\",\"shape\":[";
        for (std::size_t d = 0; d < e.shape.size(); ++d) text += (d ? "," : "") + std::to_string(e.shape[d]);
        text += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + e.data.size()) + "]}";
        offset += e.data.size();
      }
    } catch (const nlohmann::json::exception& ex) {
      throw usage_error(std::string("safetensors_writer: a tensor name or metadata string is not valid UTF-8: ") +
                        ex.what());
    }
    text += "}";
    text.append((8 - text.size() % 8) % 8, ' ');
    if (text.size() > max_header_bytes)
      throw usage_error("safetensors_writer: the header would take " + std::to_string(text.size()) +
                        " bytes, over the limit of " + std::to_string(max_header_bytes));
    std::vector<std::byte> out(8 + text.size() + offset);
    detail::store_le(out.data(), text.size(), 8);
    std::transform(text.begin(), text.end(), out.begin() + 8, [](char c) { return static_cast<std::byte>(c); });
    auto pos = out.begin() + static_cast<std::ptrdiff_t>(8 + text.size());
    for (const entry& e : entries_) pos = std::copy(e.data.begin(), e.data.end(), pos);
    return out;
  }

  /// Writes the file to `path` (replacing it); throws adalora::error if it cannot be written.
  void write(const std::filesystem::path& path) const {
    const std::vector<std::byte> bytes = to_bytes();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    // char may alias any object, so writing std::byte storage through char* is well defined.
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) throw error("safetensors_writer: cannot write '" + path.string() + "'");
  }

private:
  // The checks of every add(), before anything is added.
  void check_new(const std::string& name, const std::vector<std::size_t>& shape, std::size_t count) const {
    if (name == "__metadata__") throw usage_error("safetensors_writer: \"__metadata__\" cannot name a tensor");
    if (names_.count(name) != 0)
      throw usage_error("safetensors_writer: a tensor named '" + name + "' was already added");
    const auto numel = detail::checked_numel(shape);
    if (shape.size() > max_rank)
      throw shape_error("safetensors_writer: tensor '" + name + "' has " + std::to_string(shape.size()) +
                        " dimensions, more than " + std::to_string(max_rank));
    if (!numel || *numel != count)
      throw shape_error("safetensors_writer: tensor '" + name + "' has shape " + detail::shape_string(shape) + " but " +
                        std::to_string(count) + " values were given");
  }

  struct entry {
    std::string name;
    dtype type;
    std::vector<std::size_t> shape;
    std::vector<std::byte> data;
  };
  // every add appends through push(): the names are indexed, so that adding n tensors takes O(n log n)
  void push(entry e) {
    const auto it = names_.insert(e.name).first;
    try {
      entries_.push_back(std::move(e));
    } catch (...) {
      names_.erase(it);
      throw;
    }
  }

  std::vector<entry> entries_;
  std::set<std::string, std::less<>> names_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::set<std::string, std::less<>> metadata_keys_;
};

}  // namespace adalora::io
