// Checks that a call throws one of the library's typed errors with a given message (Catch2 v2 has no matcher for an
// exception's type and part of its message at once).
#pragma once

#include <catch2/catch.hpp>

#include <exception>
#include <string>

namespace adalora::testing {

/// Runs f, which must throw E (not another adalora::error) with a message containing `fragment`.
template <class E, class F>
void require_throws(F&& f, const std::string& fragment) {
  try {
    f();
  } catch (const E& e) {
    INFO("message: " << e.what());
    CHECK_THAT(std::string(e.what()), Catch::Contains(fragment));
    return;
  } catch (const std::exception& e) {
    FAIL("threw another exception: " << e.what());
  }
  FAIL("did not throw; expected a message containing: " << fragment);
}
/// The same with the whole message.
template <class E, class F>
void require_throws_exactly(F&& f, const std::string& message) {
  try {
    f();
  } catch (const E& e) {
    CHECK(std::string(e.what()) == message);
    return;
  } catch (const std::exception& e) {
    FAIL("threw another exception: " << e.what());
  }
  FAIL("did not throw; expected: " << message);
}

}  // namespace adalora::testing

// Debian's libtorch logs through glog, whose CHECK macro replaces Catch2's when torch's headers come after catch.hpp
// (a failed glog CHECK aborts the whole program instead of reporting). Include this header after torch's: CHECK is
// Catch2's again from here on.
#undef CHECK
#define CHECK(...) INTERNAL_CATCH_TEST("CHECK", Catch::ResultDisposition::ContinueOnFailure, __VA_ARGS__)
