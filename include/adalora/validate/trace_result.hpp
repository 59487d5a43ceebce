// The outcome of replaying one reference trace: pass, fail with the first mismatch, or unsupported.
#pragma once

#include <cstddef>
#include <string>

namespace adalora::validate {

struct trace_result {
  enum class status { passed, failed, unsupported };
  status outcome = status::passed;
  std::string detail;        ///< the first mismatch ("step 12, adapter x, lora_E[3]: expected 0.5, got 0"), or why
  std::size_t checked = 0;   ///< steps (or cases) compared
  std::string kind;          ///< "alloc" or "layer"

  static trace_result fail(std::string why) { return {status::failed, std::move(why), 0, {}}; }
  bool passed() const noexcept { return outcome == status::passed; }
};

}  // namespace adalora::validate
