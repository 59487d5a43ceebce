// Scratch memory kept for reuse: blocks handed back are handed out again, so that repeated work allocates nothing.
#pragma once

#include <concepts>
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace adalora::detail {

/// Where a block_cache takes its memory from:
///  1. `r.allocate(bytes)` returns a block of at least `bytes` bytes, or throws;
///  2. `r.deallocate(p, bytes)` gives back a block that allocate(bytes) returned, and does not throw.
template <class R>
concept ScratchResource = std::move_constructible<R> && requires(R& r, void* p, std::size_t n) {
  { r.allocate(n) } -> std::same_as<void*>;
  { r.deallocate(p, n) } noexcept;
};

/// Scratch memory (a backend's temporary storage: Thrust's temporaries, a sort's buffers) kept across calls. A block
/// handed back with deallocate() stays in the cache and is handed out again to a request it fits, so that work that
/// repeats with the same sizes (the allocator's step) takes memory from the resource on its first run only.
///
///  - allocate(bytes) hands out the smallest free block of at least `bytes`, else takes a block of `bytes` from the
///    resource. Work that repeats its requests finds the blocks of its earlier run free again; what the cache holds
///    grows only with requests larger, or more at once, than any before.
///  - Memory goes back to the resource in release() (free blocks) and in the destructor (every block).
///  - Thread-safe (one lock). A device resource that orders its work on a stream may hand a block out again as soon
///    as it was handed back: work queued later on the same stream runs after the work that used it.
template <ScratchResource R>
class block_cache {
public:
  explicit block_cache(R resource) : resource_(std::move(resource)) {}
  block_cache(const block_cache&) = delete;
  block_cache& operator=(const block_cache&) = delete;
  ~block_cache() {
    release();
    for (const auto& [p, bytes] : used_) resource_.deallocate(p, bytes);
  }

  /// A block of at least `bytes` bytes (0 counts as 1).
  void* allocate(std::size_t bytes) {
    if (bytes == 0) bytes = 1;
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = free_.lower_bound(bytes); it != free_.end()) {
      const auto [size, p] = *it;
      used_.emplace(p, size);  // may throw: the block stays free
      free_.erase(it);
      return p;
    }
    void* p = resource_.allocate(bytes);
    ++taken_;
    try {
      used_.emplace(p, bytes);
    } catch (...) {
      resource_.deallocate(p, bytes);
      throw;
    }
    return p;
  }

  /// Hands back a block that allocate() returned (anything else is ignored).
  void deallocate(void* p) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = used_.find(p);
    if (it == used_.end()) return;
    const std::size_t bytes = it->second;
    used_.erase(it);
    try {
      free_.emplace(bytes, p);
    } catch (...) {  // no memory to remember it by: give it back
      resource_.deallocate(p, bytes);
    }
  }

  /// Gives every free block back to the resource (blocks in use stay).
  void release() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    release_free_blocks();
  }

  /// How many times the cache took memory from the resource, over its lifetime.
  std::size_t resource_allocations() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return taken_;
  }
  /// Blocks held (free or in use) and bytes held.
  std::pair<std::size_t, std::size_t> held() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t bytes = 0;
    for (const auto& [size, p] : free_) bytes += size;
    for (const auto& [p, size] : used_) bytes += size;
    return {free_.size() + used_.size(), bytes};
  }

  const R& resource() const noexcept { return resource_; }

private:
  void release_free_blocks() noexcept {
    for (const auto& [bytes, p] : free_) resource_.deallocate(p, bytes);
    free_.clear();
  }

  mutable std::mutex mutex_;
  R resource_;
  std::multimap<std::size_t, void*> free_;     // by size, for the smallest block that fits
  std::unordered_map<void*, std::size_t> used_;  // block → its size
  std::size_t taken_ = 0;
};

/// A block of a block_cache for one scope: handed back to the cache when it ends.
template <ScratchResource R>
class cache_block {
public:
  cache_block(block_cache<R>& cache, std::size_t bytes) : cache_(&cache), data_(cache.allocate(bytes)) {}
  cache_block(const cache_block&) = delete;
  cache_block& operator=(const cache_block&) = delete;
  ~cache_block() { cache_->deallocate(data_); }

  template <class T = void>
  T* data() const noexcept {
    return static_cast<T*>(data_);
  }

private:
  block_cache<R>* cache_;
  void* data_;
};

}  // namespace adalora::detail
