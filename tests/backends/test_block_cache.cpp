// The scratch cache of the backends (block_cache): blocks handed back are handed out again, the resource is asked only
// when no free block fits, and everything goes back to it.
#include <catch2/catch.hpp>

#include <cstddef>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <thread>
#include <vector>

#include "adalora/backends/block_cache.hpp"

using adalora::detail::block_cache;
using adalora::detail::cache_block;

namespace {

/// Host memory, counting what it hands out and takes back (shared by copies); throws past `limit` bytes.
struct counting_resource {
  struct ledger {
    std::size_t allocations = 0, deallocations = 0, bytes_out = 0;
    std::map<void*, std::size_t> live;
  };
  std::shared_ptr<ledger> log = std::make_shared<ledger>();
  std::size_t limit = 1 << 20;

  void* allocate(std::size_t bytes) {
    if (log->bytes_out + bytes > limit) throw std::bad_alloc();
    void* p = ::operator new(bytes);
    ++log->allocations;
    log->bytes_out += bytes;
    log->live[p] = bytes;
    return p;
  }
  void deallocate(void* p, std::size_t bytes) noexcept {
    // the cache must give back what it took, with the size it asked for
    if (log->live.count(p) == 0 || log->live[p] != bytes) std::terminate();
    log->live.erase(p);
    ++log->deallocations;
    log->bytes_out -= bytes;
    ::operator delete(p);
  }
};
static_assert(adalora::detail::ScratchResource<counting_resource>);

}  // namespace

TEST_CASE("block_cache hands back blocks and asks its resource only when none fits", "[backend][scratch]") {
  counting_resource r;
  const auto log = r.log;
  {
    block_cache<counting_resource> cache(r);
    // a run that needs three blocks at once
    auto run = [&] {
      const cache_block<counting_resource> keys(cache, 4000), sorted(cache, 4000), temp(cache, 700);
      REQUIRE(keys.data() != sorted.data());
      REQUIRE(keys.data() != temp.data());
      return std::vector<void*>{keys.data(), sorted.data(), temp.data()};
    };
    run();
    REQUIRE(log->allocations == 3);
    for (int i = 0; i < 10; ++i) run();
    REQUIRE(log->allocations == 3);  // the same requests again: nothing new
    REQUIRE(cache.resource_allocations() == 3);
    REQUIRE(cache.held() == std::pair<std::size_t, std::size_t>{3, 8700});

    // the smallest free block that fits
    void* small = cache.allocate(600);
    REQUIRE(log->allocations == 3);
    void* big = cache.allocate(3000);
    void* big2 = cache.allocate(3999);
    REQUIRE(log->allocations == 3);
    void* more = cache.allocate(1);  // nothing free
    REQUIRE(log->allocations == 4);
    for (void* p : {small, big, big2, more}) cache.deallocate(p);
    cache.deallocate(nullptr);  // ignored
    int not_from_cache = 0;
    cache.deallocate(&not_from_cache);  // ignored
    void* larger = cache.allocate(5000);  // larger than any: a new block, the others stay
    REQUIRE(log->allocations == 5);
    REQUIRE(cache.held().first == 5);
    cache.deallocate(larger);

    cache.release();  // every free block goes back
    REQUIRE(log->live.empty());
    REQUIRE(cache.held() == std::pair<std::size_t, std::size_t>{0, 0});
    void* again = cache.allocate(0);  // counts as 1 byte
    REQUIRE(log->allocations == 6);
    (void)again;  // still in use when the cache ends: the destructor gives it back
  }
  REQUIRE(log->live.empty());
  REQUIRE(log->deallocations == log->allocations);
}

TEST_CASE("block_cache: a failed allocation changes nothing", "[backend][scratch]") {
  counting_resource r;
  r.limit = 1000;
  block_cache<counting_resource> cache(r);
  void* a = cache.allocate(800);
  cache.deallocate(a);
  REQUIRE_THROWS_AS(cache.allocate(900), std::bad_alloc);  // the free 800 bytes do not fit, the resource refuses
  REQUIRE(cache.held() == std::pair<std::size_t, std::size_t>{1, 800});
  REQUIRE(cache.allocate(500) == a);  // the free block is still there
  cache.deallocate(a);
}

TEST_CASE("block_cache is safe to share between threads", "[backend][scratch]") {
  counting_resource r;
  r.limit = std::size_t{1} << 30;
  block_cache<counting_resource> cache(r);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 500; ++i) {
        const cache_block<counting_resource> b(cache, static_cast<std::size_t>(64 * (t + 1)));
        static_cast<volatile char*>(b.data())[0] = static_cast<char>(i);
      }
    });
  for (auto& th : threads) th.join();
  // at most one block per thread in use at once: a handful of blocks, not thousands
  REQUIRE(cache.resource_allocations() <= 4 * 4);
}
