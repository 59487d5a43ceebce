// Seeded uniform fills for the benchmarks' inputs (no backend, so CUDA programs include it too).
#pragma once

#include <cstddef>
#include <cstdint>

namespace bench {

/// Fills v with seeded uniform values in [lo, hi) (splitmix64; fast enough for 10⁸ values).
inline void fill_uniform(float* v, std::size_t n, float lo, float hi, std::uint64_t seed) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    s += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    v[i] = lo + (hi - lo) * u;
  }
}

}  // namespace bench
