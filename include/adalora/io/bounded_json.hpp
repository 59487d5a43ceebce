// JSON text from outside (configs, file metadata) parsed within limits, and read field by field with typed errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "adalora/core/error.hpp"

namespace adalora::io {

/// The deepest nesting of arrays and objects accepted in a JSON text (a PEFT config nests three levels). Deeper text
/// is refused while it is read, so that nothing downstream (printing, copying, comparing) recurses without bound.
inline constexpr std::size_t max_json_depth = 64;
/// The most values (numbers, strings, booleans, nulls, arrays and objects, keys not counted) kept from one JSON text:
/// a PEFT config of 100,000 modules with a rank pattern of init_r = 32 holds 3.3 million. It bounds the memory a
/// parse takes (about 100 bytes per value kept at most, plus the strings' characters).
inline constexpr std::size_t max_json_values = std::size_t{1} << 22;

namespace detail {

/// "…" after the first `n` bytes of `s`, for error messages that quote text from outside.
inline std::string clip_text(std::string_view s, std::size_t n = 64) {
  return s.size() <= n ? std::string(s) : std::string(s.substr(0, n)) + "...";
}

/// A SAX handler that builds the document (as nlohmann's DOM parser does, without recursion) within the limits, refuses
/// a key repeated in one object, and, when `keep` is not empty, stores only those members of the top-level object
/// (the others are read, so the text must still be valid JSON, but take no memory and are not limited in values).
class bounded_json_builder {
public:
  using json = nlohmann::json;

  bounded_json_builder(std::string what, std::span<const std::string_view> keep, std::size_t max_values)
      : what_(std::move(what)), keep_(keep), max_values_(max_values) {}

  json root;

  bool null() { return scalar(json(nullptr)); }
  bool boolean(bool v) { return scalar(json(v)); }
  bool number_integer(json::number_integer_t v) { return scalar(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return scalar(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return scalar(json(v)); }
  bool string(json::string_t& v) { return scalar(json(std::move(v))); }
  bool binary(json::binary_t&) { fail("holds binary data"); }
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    if (skipping_ > 0) return true;
    if (stack_.size() == 1 && !keep_.empty() && !kept(k)) {
      skip_next_ = true;
      return true;
    }
    if (stack_.back()->contains(k)) fail("has the key \"" + clip_text(k) + "\" twice in one object");
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) {
    fail("is not valid JSON: " + clip_text(e.what(), 200));
  }

private:
  [[noreturn]] void fail(const std::string& why) const { throw format_error(what_ + " " + why); }

  bool kept(std::string_view k) const noexcept {
    for (std::string_view name : keep_)
      if (name == k) return true;
    return false;
  }

  void count() {
    if (++values_ > max_values_)
      fail("holds more than " + std::to_string(max_values_) + " values (the limit of a JSON text)");
  }

  // Stores v where the parser stands; returns where it went (for containers, which then receive values).
  json* place(json&& v) {
    count();
    if (stack_.empty()) {
      root = std::move(v);
      return &root;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }

  bool scalar(json&& v) {
    if (skipping_ > 0) return true;
    if (skip_next_) {
      skip_next_ = false;
      return true;
    }
    place(std::move(v));
    return true;
  }

  bool open(json&& container) {
    if (stack_.size() + static_cast<std::size_t>(skipping_) >= max_json_depth)
      fail("nests arrays and objects more than " + std::to_string(max_json_depth) + " deep");
    if (skipping_ > 0 || skip_next_) {
      skip_next_ = false;
      ++skipping_;
      return true;
    }
    stack_.push_back(place(std::move(container)));
    return true;
  }

  bool close() {
    if (skipping_ > 0)
      --skipping_;
    else
      stack_.pop_back();
    return true;
  }

  std::string what_;
  std::span<const std::string_view> keep_;
  std::vector<json*> stack_;  // the open containers; a parent gets no new element while its child is open
  std::string key_;
  std::size_t max_values_;
  std::size_t values_ = 0;
  std::ptrdiff_t skipping_ = 0;  // depth inside a top-level member that is not kept
  bool skip_next_ = false;       // the next value belongs to a top-level member that is not kept
};

}  // namespace detail

/// Parses JSON text from outside; `what` names it in messages ("adapter_config.json of PEFT adapter 'dir'"). Throws
/// format_error for text that is not JSON (a NUL byte included), nests deeper than max_json_depth, keeps more than max_json_values values
/// or repeats a key within an object. With `keep`, only those members of a top-level object are stored. Linear time;
/// memory for the values kept only, never a recursion deeper than a constant. `max_values` lowers the value limit.
inline nlohmann::json parse_json(std::string_view text, const std::string& what,
                                 std::span<const std::string_view> keep = {},
                                 std::size_t max_values = max_json_values) {
  // JSON text holds no NUL; nlohmann's reader would take one for the end and accept the bytes after it unread
  if (const auto nul = text.find('\0'); nul != std::string_view::npos)
    throw format_error(what + " holds a NUL byte at offset " + std::to_string(nul) + "; JSON text cannot");
  detail::bounded_json_builder builder(what, keep, max_values);
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &builder, nlohmann::json::input_format_t::json,
                                            true, false);
  if (!ok) throw format_error(what + " is not valid JSON");
  return std::move(builder.root);
}

/// A short description of a JSON value for error messages ("string \"abc\"", "number 1e+300", "array of 3 values");
/// it never prints a whole array or object, and clips long strings.
inline std::string describe_json(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::string:
      return "string \"" + detail::clip_text(v.get_ref<const std::string&>(), 40) + "\"";
    case nlohmann::json::value_t::array:
      return "array of " + std::to_string(v.size()) + " values";
    case nlohmann::json::value_t::object:
      return "object of " + std::to_string(v.size()) + " members";
    default:  // booleans and numbers: a few characters
      return std::string(v.type_name()) + " " + v.dump();
  }
}

// ---- typed reads: each throws format_error "<what> is <description>; expected ..." ----------------------------

/// Member `key` of `obj`, or nullptr when there is none (or `obj` is not an object).
inline const nlohmann::json* json_find(const nlohmann::json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

/// Member `key` of `obj`; format_error "<where> lacks the field '<key>'" when there is none.
inline const nlohmann::json& json_require(const nlohmann::json& obj, std::string_view key, const std::string& where) {
  if (!obj.is_object()) throw format_error(where + " is " + describe_json(obj) + ", not an object");
  const nlohmann::json* v = json_find(obj, key);
  if (v == nullptr) throw format_error(where + " lacks the field '" + std::string(key) + "'");
  return *v;
}

[[noreturn]] inline void json_wrong_type(const nlohmann::json& v, const std::string& what, const char* expected) {
  throw format_error(what + " is " + describe_json(v) + "; expected " + expected);
}

/// An integer that fits in int64.
inline std::int64_t json_int(const nlohmann::json& v, const std::string& what) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      json_wrong_type(v, what, "an integer below 2^63");
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<std::int64_t>();
  json_wrong_type(v, what, "an integer");
}

/// A non-negative integer at most `most`.
inline std::size_t json_size(const nlohmann::json& v, const std::string& what,
                             std::size_t most = std::numeric_limits<std::size_t>::max()) {
  if (!v.is_number_integer()) json_wrong_type(v, what, "a non-negative integer");
  const bool negative = !v.is_number_unsigned() && v.get<std::int64_t>() < 0;
  if (negative || v.get<std::uint64_t>() > most)
    throw format_error(what + " is " + describe_json(v) + "; expected an integer in [0, " + std::to_string(most) + "]");
  return static_cast<std::size_t>(v.get<std::uint64_t>());
}

/// A number (integer or not); JSON numbers are always finite (the parser refuses 1e999).
inline double json_number(const nlohmann::json& v, const std::string& what) {
  if (!v.is_number()) json_wrong_type(v, what, "a number");
  return v.get<double>();
}

inline bool json_bool(const nlohmann::json& v, const std::string& what) {
  if (!v.is_boolean()) json_wrong_type(v, what, "true or false");
  return v.get<bool>();
}

inline std::string json_string(const nlohmann::json& v, const std::string& what) {
  if (!v.is_string()) json_wrong_type(v, what, "a string");
  return v.get<std::string>();
}

}  // namespace adalora::io
