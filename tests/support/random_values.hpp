// Seeded normal random values for the tests' inputs (one generator, so every test file draws the same way).
#pragma once

#include <cstddef>
#include <random>
#include <vector>

namespace adalora::testing {

/// n values drawn from N(0, scale²) by `rng` (which advances).
inline std::vector<float> normal_values(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

/// n values drawn from N(0, scale²) by a fresh std::mt19937(seed).
inline std::vector<float> normal_values(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  return normal_values(n, rng, scale);
}

}  // namespace adalora::testing
