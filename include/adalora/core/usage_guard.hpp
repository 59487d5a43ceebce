// Detects an object used from two threads at once (a caller's bug) and turns it into a usage_error.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "adalora/core/error.hpp"

namespace adalora::detail {

/// Tracks the calls in progress on one object that is not thread-safe: any number of reading calls at once, or one
/// writing call and nothing else. A call that would break that throws usage_error at its start, before it reads or
/// changes anything, instead of racing. It costs one atomic read-modify-write per call. It is not a lock: it never
/// waits, and it does not make concurrent use correct; it makes it loud. Copying or moving the object gives the
/// copy a fresh guard (the copy itself must not overlap a writing call, as for any object).
class usage_guard {
public:
  usage_guard() = default;
  usage_guard(const usage_guard&) noexcept {}
  usage_guard& operator=(const usage_guard&) noexcept { return *this; }

  /// Held for the scope of one writing call.
  class writing {
  public:
    writing(const usage_guard& g, const char* what, const char* object) : g_(g) {
      std::int64_t idle = 0;
      if (!g_.state_.compare_exchange_strong(idle, -1, std::memory_order_acquire)) throw busy(what, object, idle);
    }
    ~writing() { g_.state_.store(0, std::memory_order_release); }
    writing(const writing&) = delete;
    writing& operator=(const writing&) = delete;

  private:
    const usage_guard& g_;
  };

  /// Held for the scope of one reading call.
  class reading {
  public:
    reading(const usage_guard& g, const char* what, const char* object) : g_(g) {
      std::int64_t now = g_.state_.load(std::memory_order_relaxed);
      do {
        if (now < 0) throw busy(what, object, now);
      } while (!g_.state_.compare_exchange_weak(now, now + 1, std::memory_order_acquire, std::memory_order_relaxed));
    }
    ~reading() { g_.state_.fetch_sub(1, std::memory_order_release); }
    reading(const reading&) = delete;
    reading& operator=(const reading&) = delete;

  private:
    const usage_guard& g_;
  };

private:
  static usage_error busy(const char* what, const char* object, std::int64_t state) {
    return usage_error(std::string(what) + ": another call on this " + object + " is running (" +
                       (state < 0 ? "one that changes it" : std::to_string(state) + " reading it") +
                       "), from another thread; a " + object +
                       " is used by one thread at a time (reading calls may overlap each other, nothing may overlap "
                       "a call that changes it): give each thread its own, or serialize the calls");
  }

  mutable std::atomic<std::int64_t> state_{0};  // 0 idle, n > 0 readers, -1 one writer
};

}  // namespace adalora::detail
