// The Communicator concept (static positive and negative cases), self_communicator and thread_communicator.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "adalora/distributed/communicator.hpp"
#include "adalora/distributed/self_communicator.hpp"
#include "adalora/distributed/thread_communicator.hpp"

using namespace adalora;

namespace {

// The members a communicator needs, without the tag: joins nothing by accident.
struct untagged {
  using memory_space = host_space;
  static constexpr const char* name = "untagged";
  int rank() const { return 0; }
  int size() const { return 1; }
  void all_gather(const double*, std::size_t, double*) {}
  void all_gather_host(const std::uint64_t*, std::size_t, std::uint64_t*) {}
};
struct tagged : untagged {
  using communicator_concept = communicator_tag;
};
struct no_host_gather {
  using communicator_concept = communicator_tag;
  using memory_space = host_space;
  static constexpr const char* name = "no_host_gather";
  int rank() const { return 0; }
  int size() const { return 1; }
  void all_gather(const double*, std::size_t, double*) {}
};
struct long_rank : tagged {
  long rank() const { return 0; }
};
struct float_gather : tagged {
  void all_gather(const float*, std::size_t, float*) = delete;
  void all_gather(const double*, std::size_t, double*) = delete;
};
struct not_a_space {};
struct bad_space : tagged {
  using memory_space = not_a_space;
};
struct unnamed {
  using communicator_concept = communicator_tag;
  using memory_space = host_space;
  int rank() const { return 0; }
  int size() const { return 1; }
  void all_gather(const double*, std::size_t, double*) {}
  void all_gather_host(const std::uint64_t*, std::size_t, std::uint64_t*) {}
};
struct claims_many : tagged {
  static constexpr bool single_process = false;
};

static_assert(Communicator<self_communicator>);
static_assert(Communicator<thread_communicator>);
static_assert(Communicator<tagged>);
static_assert(!Communicator<untagged>, "the tag is required");
static_assert(!Communicator<no_host_gather>, "all_gather_host is required");
static_assert(!Communicator<long_rank>, "rank() returns int");
static_assert(!Communicator<float_gather>, "all_gather takes doubles");
static_assert(!Communicator<bad_space>, "memory_space is a MemorySpace");
static_assert(!Communicator<unnamed>, "a name is required");
static_assert(!Communicator<int>);
static_assert(single_process_communicator<self_communicator>);
static_assert(!single_process_communicator<thread_communicator>);
static_assert(!single_process_communicator<tagged>, "only a declared single process compiles collectives away");
static_assert(!single_process_communicator<claims_many>);

}  // namespace

TEST_CASE("self_communicator: one rank, gathers copy", "[distributed][communicator]") {
  self_communicator c;
  REQUIRE(c.rank() == 0);
  REQUIRE(c.size() == 1);
  const std::vector<double> d{1.5, -2.0};
  std::vector<double> out(2);
  c.all_gather(d.data(), d.size(), out.data());
  REQUIRE(out == d);
  REQUIRE(all_reduce_sum(c, 41) == 41);
}

TEST_CASE("thread_communicator: all_gather in rank order, on every rank", "[distributed][communicator]") {
  for (int size : {1, 2, 3, 4}) {
    thread_group group(size);
    std::vector<std::vector<double>> got(static_cast<std::size_t>(size));
    std::vector<std::uint64_t> sums(static_cast<std::size_t>(size));
    std::vector<int> sizes(static_cast<std::size_t>(size));
    // (Catch2's assertions are not thread-safe: the threads record, the test checks after they joined)
    const auto errors = group.run([&](thread_communicator c) {
      sizes[static_cast<std::size_t>(c.rank())] = c.size();
      // several rounds: buffers are reused at once after each collective
      std::vector<double> out;
      for (int round = 0; round < 5; ++round) {
        const std::vector<double> mine{c.rank() + 0.25 * round, -1.0 * c.rank(), 7.0};
        out.assign(mine.size() * static_cast<std::size_t>(c.size()), 0.0);
        c.all_gather(mine.data(), mine.size(), out.data());
      }
      got[static_cast<std::size_t>(c.rank())] = out;
      sums[static_cast<std::size_t>(c.rank())] = all_reduce_sum(c, static_cast<std::uint64_t>(c.rank() + 1));
    });
    for (const auto& e : errors) REQUIRE_FALSE(e);
    for (int k = 0; k < size; ++k) {
      INFO("size " << size << ", rank " << k);
      const auto& out = got[static_cast<std::size_t>(k)];
      REQUIRE(sizes[static_cast<std::size_t>(k)] == size);
      REQUIRE(out.size() == 3u * static_cast<std::size_t>(size));
      for (int j = 0; j < size; ++j) {
        REQUIRE(out[3 * static_cast<std::size_t>(j)] == j + 1.0);
        REQUIRE(out[3 * static_cast<std::size_t>(j) + 1] == -1.0 * j);
      }
      REQUIRE(sums[static_cast<std::size_t>(k)] == static_cast<std::uint64_t>(size * (size + 1) / 2));
    }
  }
}

TEST_CASE("thread_communicator: unequal contributions fail on every rank", "[distributed][communicator]") {
  thread_group group(3, std::chrono::milliseconds(5000));
  const auto errors = group.run([](thread_communicator c) {
    std::vector<std::uint64_t> mine(c.rank() == 1 ? 2 : 1, 0), out(6);
    c.all_gather_host(mine.data(), mine.size(), out.data());
  });
  for (const auto& e : errors) {
    REQUIRE(e);
    REQUIRE_THROWS_AS(std::rethrow_exception(e), communication_error);
    REQUIRE_THROWS_WITH(std::rethrow_exception(e), Catch::Contains("every rank must contribute the same amount"));
  }
}

TEST_CASE("thread_communicator: a rank that skips a collective ends in errors, not a hang",
          "[distributed][communicator]") {
  thread_group group(3, std::chrono::milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  const auto errors = group.run([](thread_communicator c) {
    if (c.rank() == 2) return;  // never comes
    std::uint64_t w = 1, out[3];
    c.all_gather_host(&w, 1, out);
  });
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  REQUIRE(errors[0]);
  REQUIRE(errors[1]);
  REQUIRE_FALSE(errors[2]);
  REQUIRE_THROWS_WITH(std::rethrow_exception(errors[0]), Catch::Contains("never came"));
  // the group is broken from then on: a later collective fails at once
  const auto again = group.run([](thread_communicator c) {
    std::uint64_t w = 1, out[3];
    c.all_gather_host(&w, 1, out);
  });
  for (const auto& e : again) REQUIRE_THROWS_AS(std::rethrow_exception(e), communication_error);
}

TEST_CASE("thread_group: bad sizes and ranks are refused", "[distributed][communicator]") {
  REQUIRE_THROWS_AS(thread_group(0), usage_error);
  thread_group g(2);
  REQUIRE_THROWS_AS(g.communicator(2), usage_error);
  REQUIRE_THROWS_AS(g.communicator(-1), usage_error);
}
