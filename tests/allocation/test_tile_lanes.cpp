// The block form of the fused importance pass (what the GPU runs, lane by lane) against its tile form, bit for bit.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "adalora/allocation/allocator_kernels.hpp"
#include "adalora/allocation/tile_lanes.hpp"
#include "adalora/importance/sensitivity_uncertainty.hpp"
#include "support/adapter_fixture.hpp"
#include "support/backends_under_test.hpp"

using namespace adalora;
using adalora::testing::adapter_fixture;
using adalora::testing::adapter_shape;

namespace {

using metric = sensitivity_uncertainty;

/// Everything one run of a pass writes, so that two runs can be compared bit for bit.
struct pass_outputs {
  std::vector<float> state_out;
  std::vector<std::uint32_t> bad;
  std::vector<double> partial;
  std::vector<float> lambda_scores;
};

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

/// A plan over adapters with random parameters, gradients and held state, twice: over the backend's copies (what the
/// backend runs) and over the fixture's host tensors (where the tile form runs as a plain loop, the truth).
template <class B>
struct plan_case {
  B backend;
  adapter_fixture<B> fx;
  detail::step_plan<float> plan, host_plan;
  std::vector<float> state_host;
  buffer_t<B, float> state_in;
  buffer_t<B, detail::plan_tensor<float>> tensors;
  buffer_t<B, detail::plan_tile> tiles;
  std::size_t elements = 0;
  std::size_t b0 = 0;

  plan_case(B b, const std::vector<adapter_shape>& shapes, unsigned seed) : backend(b), fx(b, shapes, seed) {
    fx.perturb();
    fx.upload();
    for (std::size_t k = 0; k < fx.size(); ++k) {
      const auto v = fx.views(k);
      auto& h = fx.host[k];
      const svd_adapter_views<float, host_space> hv{
          make_matrix_view<host_space>(h.A.data(), h.r, h.in),        make_vector_view<host_space>(h.E.data(), h.r),
          make_matrix_view<host_space>(h.B.data(), h.out, h.r),       make_matrix_view<host_space>(cptr(h.grad_A), h.r, h.in),
          make_vector_view<host_space>(cptr(h.grad_E), h.r),          make_matrix_view<host_space>(cptr(h.grad_B), h.out, h.r)};
      plan.add_adapter(v, elements, b0);
      host_plan.add_adapter(hv, elements, b0);
      elements += v.rank() * (v.in_features() + 1 + v.out_features());
      b0 += v.rank();
    }
    std::mt19937 rng(seed);
    // magnitudes over 2^-30 … 2^30: the double sums of such scores are not exact, so their order shows in the bits
    std::uniform_real_distribution<float> u(0.0f, 0.5f);
    std::uniform_int_distribution<int> e(-30, 30);
    state_host.resize(metric::state_count * elements);
    for (auto& s : state_host) s = std::ldexp(u(rng), e(rng));
    state_in = upload(state_host);
    tensors = upload(plan.tensors);
    tiles = upload(plan.tiles);
  }

  /// Sets one value of the inputs (see adapter_fixture::poke) in both copies.
  void poke(std::size_t k, const std::string& which, std::size_t i, float v) {
    fx.poke(k, which, i, v);
    auto& h = fx.host[k];
    auto& host = which == "A" ? h.A : which == "E" ? h.E : which == "B" ? h.B : which == "gA" ? h.grad_A
                                                                     : which == "gE" ? h.grad_E : h.grad_B;
    host[i] = v;
  }

  /// The tile form on the host, over the host tensors: one tile after the other.
  template <bool Contiguous, bool Score, detail::state_pass Pass>
  pass_outputs run_host_tiles() const {
    pass_outputs o = fresh(Pass);
    const detail::fused_importance_fn<metric, float, Contiguous, Score, Pass> f{
        metric{},      host_plan.tensors.data(), host_plan.tiles.data(), state_host.data(),   o.state_out.data(),
        elements,      o.bad.data(),             o.partial.data(),       o.lambda_scores.data()};
    for (std::size_t t = 0; t < host_plan.tiles.size(); ++t) f(t);
    return o;
  }

  /// The pass on the backend: its block form when `block` (the backend's block launch where it has one, else the
  /// host's lane-by-lane run_tile_lanes_on_host), else its tile form through the backend's for_each.
  template <bool Contiguous, bool Score, detail::state_pass Pass>
  pass_outputs run(bool block) {
    const pass_outputs init = fresh(Pass);
    auto out = upload(init.state_out);
    auto bad = upload(init.bad);
    auto partial = upload(init.partial);
    auto lambda_scores = upload(init.lambda_scores);
    const detail::fused_importance_fn<metric, float, Contiguous, Score, Pass> f{
        metric{}, tensors.data(), tiles.data(),   state_in.data(),       out.data(),
        elements, bad.data(),     partial.data(), lambda_scores.data()};
    launch(f, block);
    pass_outputs o = fresh(Pass);
    backend.copy_to_host(out.data(), o.state_out.size(), o.state_out.data());
    backend.copy_to_host(bad.data(), o.bad.size(), o.bad.data());
    backend.copy_to_host(partial.data(), o.partial.size(), o.partial.data());
    backend.copy_to_host(lambda_scores.data(), o.lambda_scores.size(), o.lambda_scores.data());
    return o;
  }

  /// The in-place check on the backend (block or tile form) and on the host; `over` as a previous in-place pass left
  /// it. Returns {backend's counts, host's counts}.
  template <bool Contiguous>
  std::pair<std::vector<std::uint32_t>, std::vector<std::uint32_t>> check(bool block,
                                                                          const std::vector<std::uint32_t>& over) {
    std::vector<std::uint32_t> host(plan.tiles.size(), 77u), got(plan.tiles.size(), 77u);
    const detail::input_check_fn<metric, float, Contiguous> h{metric{}, host_plan.tensors.data(),
                                                               host_plan.tiles.data(), over.data(), host.data()};
    for (std::size_t t = 0; t < host_plan.tiles.size(); ++t) h(t);
    auto over_d = upload(over);
    auto suspect = upload(got);
    launch(detail::input_check_fn<metric, float, Contiguous>{metric{}, tensors.data(), tiles.data(), over_d.data(),
                                                             suspect.data()},
           block);
    backend.copy_to_host(suspect.data(), got.size(), got.data());
    return {got, host};
  }

private:
  template <class F>
  void launch(const F& f, bool block) {
    static_assert(detail::TileLanePass<F>);
    const std::size_t n = plan.tiles.size();
    if (!block)
      backend.for_each(n, f);
    else if constexpr (requires { backend.for_each_tile_lanes(n, f); })
      backend.for_each_tile_lanes(n, f);
    else
      detail::run_tile_lanes_on_host(f, n);
  }
  static const float* cptr(const std::vector<float>& v) { return v.data(); }
  pass_outputs fresh(detail::state_pass pass) const {
    pass_outputs o;
    // in place, the pass reads the state where it writes it
    if (pass == detail::state_pass::update_in_place)
      o.state_out = state_host;
    else
      o.state_out.assign(state_host.size(), -1.0f);
    o.bad.assign(plan.tiles.size(), 77u);
    o.partial.assign(plan.partials, -1.0);
    o.lambda_scores.assign(b0, -1.0f);
    return o;
  }
  template <class V>
  buffer_t<B, V> upload(const std::vector<V>& host) {
    auto buf = backend.template allocate<V>(host.size());
    backend.copy_from_host(host.data(), host.size(), buf.data());
    return buf;
  }
};

template <class B>
void check_same(const pass_outputs& got, const pass_outputs& truth, const char* what) {
  INFO(B::name << ": " << what);
  CHECK(same_bits(got.state_out, truth.state_out));
  CHECK(same_bits(got.bad, truth.bad));
  CHECK(same_bits(got.partial, truth.partial));
  CHECK(same_bits(got.lambda_scores, truth.lambda_scores));
}

template <bool Contiguous, bool Score, detail::state_pass Pass, class B>
void check_forms_agree(plan_case<B>& pc) {
  const pass_outputs truth = pc.template run_host_tiles<Contiguous, Score, Pass>();
  check_same<B>(pc.template run<Contiguous, Score, Pass>(true), truth, "block form");
  check_same<B>(pc.template run<Contiguous, Score, Pass>(false), truth, "tile form");
  if constexpr (Score) {
    // every partial and λ score was written (none left at the fill value)
    for (double p : truth.partial) REQUIRE(p >= 0.0);
    for (float s : truth.lambda_scores) REQUIRE(s >= 0.0f);
  }
}

}  // namespace

TEST_CASE("lane_tree adds every group of every column exactly once", "[allocator][lanes]") {
  for (std::size_t cols = 1; cols <= 13; ++cols) {
    for (std::size_t groups = 1; groups * cols <= detail::plan_lanes; ++groups) {
      const detail::tile_lanes lanes{groups, cols};
      // two sets of exact integer values: a group missed or added twice changes one of the totals
      for (const std::size_t power : {0u, 2u}) {
        std::vector<double> sums(lanes.width());
        double expect = 0.0;
        for (std::size_t g = 0; g < groups; ++g) {
          const double w = power == 0 ? 1.0 : static_cast<double>((g + 1) * (g + 1));
          expect += w;
          for (std::size_t c = 0; c < cols; ++c) sums[g * cols + c] = w * static_cast<double>(c + 1);
        }
        detail::lane_tree(sums.data(), lanes);
        for (std::size_t c = 0; c < cols; ++c) REQUIRE(sums[c] == expect * static_cast<double>(c + 1));
      }
    }
  }
}

TEST_CASE("the allocator's lane layouts fit in a block and keep a lane in one column", "[allocator][lanes]") {
  using detail::tile_kind;
  CHECK(detail::lanes_of(tile_kind::q_row, 4096).width() == detail::plan_lanes);
  CHECK(detail::lanes_of(tile_kind::q_row, 4096).cols == 1);
  CHECK(detail::lanes_of(tile_kind::lambda, 1).groups == 0);
  for (std::size_t r = 1; r <= detail::plan_lanes; ++r) {
    const auto l = detail::lanes_of(tile_kind::p_rows, r);
    REQUIRE(l.cols == r);
    REQUIRE(l.width() <= detail::plan_lanes);
    REQUIRE(l.width() + r > detail::plan_lanes);  // as many whole groups as fit
  }
  CHECK(detail::lanes_of(tile_kind::p_rows, detail::plan_lanes + 1).groups == 0);
}

TEST_CASE("the block form of the fused pass leaves what the tile form leaves, bit for bit", "[allocator][lanes]") {
  // The backend under test: Eigen on the host (the block form then runs lane by lane), the CUDA backend in the CUDA
  // build (its block launch against its tile form and against the host, which is the GPU's check).
  using B = std::tuple_element_t<0, adalora::testing::backends_under_test>;
  // Q rows split over several tiles (in > plan_tile_elements), P tiles of 12 and of 1 column, a P wider than a block
  // (r > plan_lanes: summed by columns), λ over several lanes, and tiny adapters.
  const std::vector<adapter_shape> shapes{{12, 5000, 300}, {300, 40, 70}, {1, 3000, 2600}, {7, 11, 2500}, {3, 2, 2}};
  plan_case<B> pc(B{}, shapes, 11);
  REQUIRE(pc.plan.tiles.size() > 50);

  using detail::state_pass;
  SECTION("update and score (mask steps)") {
    check_forms_agree<true, true, state_pass::update_into>(pc);
    check_forms_agree<true, true, state_pass::update_in_place>(pc);
  }
  SECTION("update only") {
    check_forms_agree<true, false, state_pass::update_into>(pc);
    check_forms_agree<true, false, state_pass::update_in_place>(pc);
    check_forms_agree<true, false, state_pass::trial>(pc);
  }
  SECTION("score only (the forced mask)") {
    check_forms_agree<true, true, state_pass::score_held>(pc);
  }
  SECTION("through the strides") {
    check_forms_agree<false, true, state_pass::update_into>(pc);
    check_forms_agree<false, true, state_pass::update_in_place>(pc);
  }
  SECTION("in place and double-buffered leave the same state and sums") {
    const auto into = pc.run_host_tiles<true, true, state_pass::update_into>();
    const auto in_place = pc.run_host_tiles<true, true, state_pass::update_in_place>();
    CHECK(same_bits(into.state_out, in_place.state_out));
    CHECK(same_bits(into.partial, in_place.partial));
    CHECK(same_bits(into.lambda_scores, in_place.lambda_scores));
    for (auto b : in_place.bad) REQUIRE(b == 0);  // nothing near the safe bound
  }
  SECTION("non-finite inputs are counted per tile in both forms") {
    pc.poke(0, "gA", 4097, std::numeric_limits<float>::quiet_NaN());
    pc.poke(1, "B", 300 * 69 + 299, std::numeric_limits<float>::infinity());
    pc.poke(2, "gE", 0, -std::numeric_limits<float>::infinity());
    for (const auto& truth : {pc.run_host_tiles<true, true, state_pass::update_into>(),
                              pc.run_host_tiles<true, false, state_pass::trial>()}) {
      std::uint32_t total = 0;
      for (auto b : truth.bad) total += b;
      CHECK(total == 3);
    }
    check_same<B>(pc.run<true, true, state_pass::update_into>(true), pc.run_host_tiles<true, true, state_pass::update_into>(),
                  "block form");
    check_same<B>(pc.run<true, false, state_pass::trial>(true), pc.run_host_tiles<true, false, state_pass::trial>(),
                  "block form, trial");
  }
  SECTION("the in-place check counts inputs beyond the safe bound and adds the previous pass's counts") {
    std::vector<std::uint32_t> over(pc.plan.tiles.size(), 0u);
    over[5] = 2;
    over[pc.plan.tiles.size() - 1] = 1;
    pc.poke(0, "gA", 4097, std::numeric_limits<float>::quiet_NaN());
    pc.poke(1, "A", 7, -std::numeric_limits<float>::infinity());
    pc.poke(2, "B", 100, 0x1p40f);  // finite, but |θ·g| = 2^70, beyond the safe bound (2^48)
    pc.poke(2, "gB", 100, 0x1p30f);
    pc.poke(3, "B", 8, 0x1p24f);  // finite and |θ·g| = 2^48: on the bound, within it
    pc.poke(3, "gB", 8, 0x1p24f);
    for (bool block : {true, false}) {
      const auto [got, host] = pc.check<true>(block, over);
      CHECK(same_bits(got, host));
      std::uint32_t total = 0;
      for (auto b : host) total += b;
      CHECK(total == 3 + 3);
      CHECK(host[5] >= 2);
    }
    const auto [strided, host] = pc.check<false>(true, over);
    CHECK(same_bits(strided, host));
  }
}
