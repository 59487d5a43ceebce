// Fuzz target: arbitrary bytes as an allocator checkpoint, through the reader, adalora-inspect's printer and, when it
// is accepted, a rank_allocator that restores it, saves it back unchanged and runs its next step.
#include <cstring>
#include <limits>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/allocator_checkpoint.hpp"
#include "fuzz_target.hpp"

namespace {

bool same(const adalora::allocator_state& a, const adalora::allocator_state& b) {
  auto bits = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  };
  return a.adapters == b.adapters && a.last_step == b.last_step && a.budget == b.budget &&
         a.threshold == b.threshold && a.frozen == b.frozen && a.importance_live == b.importance_live &&
         a.keep == b.keep && bits(a.importance, b.importance) && bits(a.scores, b.scores);
}

// Restores the state into an allocator with adapters of its shapes (zero parameters, unit gradients) and runs on.
void resume(const adalora::allocator_state& s) {
  using namespace adalora;
  std::size_t elements = 0;
  for (const auto& a : s.adapters) elements += a.r * (a.in + 1 + a.out);  // the reader checked these sums
  if (s.adapters.size() > 64 || elements > (1u << 16)) return;                // keep each run fast
  std::vector<std::vector<float>> params, grads;
  rank_allocator<eigen_backend> alloc(s.config);
  for (const auto& a : s.adapters) {
    const std::size_t n = a.r * (a.in + 1 + a.out);
    float* p = params.emplace_back(n, 0.5f).data();
    const float* g = grads.emplace_back(n, 1.0f).data();
    alloc.add_adapter(a.name, {make_matrix_view(p, a.r, a.in), make_vector_view(p + a.r * a.in, a.r),
                               make_matrix_view(p + a.r * (a.in + 1), a.out, a.r), make_matrix_view(g, a.r, a.in),
                               make_vector_view(g + a.r * a.in, a.r), make_matrix_view(g + a.r * (a.in + 1), a.out, a.r)});
  }
  try {
    alloc.restore_state(s);  // a checkpoint of another metric or schedule is a usage_error
  } catch (const usage_error&) {
    return;
  }
  if (!same(alloc.save_state(), s)) fuzz::broken("save_state after restore_state differs");
  const std::int64_t next = s.last_step ? *s.last_step + 1 : 0;
  if (next < std::numeric_limits<std::int64_t>::max()) {
    try {
      alloc.step(next);
    } catch (const error&) {
      // e.g. the target budget exceeds the ranks, or the forced mask has no importance: refused, typed
    }
  }
}

}  // namespace

ADALORA_FUZZ_TARGET(checkpoint) {
  using namespace adalora;
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  try {
    const auto file = io::safetensors_file::parse(bytes, "fuzz");
    const allocator_state s = io::read_allocator_checkpoint(file);
    if (find_allocator_state_problem(s)) fuzz::broken("the reader accepted a state with a problem");
    resume(s);
  } catch (const error&) {
  }
  // the same bytes as a file, through adalora-inspect
  const auto path = fuzz::scratch("checkpoint") / "input.safetensors";
  fuzz::write_file(path, data, size);
  fuzz::inspect_quietly(path);
  return 0;
}
