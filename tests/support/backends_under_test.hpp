// The backends this build tests: every generic test body runs once per type in `backends_under_test`.
#pragma once

#include <tuple>

#if defined(ADALORA_TEST_CUDA_ONLY)
// The CUDA tests (tests/cuda/, nvcc) run the generic bodies on the CUDA backend alone.
#include "adalora/backends/cuda/cuda_backend.cuh"
namespace adalora::testing {
using backends_under_test = std::tuple<adalora::cuda_backend>;
}  // namespace adalora::testing
#elif defined(ADALORA_TEST_THRUST_OMP_ONLY)
// The ThreadSanitizer build (scripts/test.sh) runs the generic bodies on Thrust's OpenMP system alone: the tests in
// which threads meet. (Eigen stays available to the tests that name it.)
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/backends/thrust/thrust_backend.hpp"
namespace adalora::testing {
using backends_under_test = std::tuple<adalora::thrust_omp_backend>;
}  // namespace adalora::testing
#else
#include "adalora/backends/eigen/eigen_backend.hpp"
#if defined(ADALORA_TEST_XTENSOR)
#include "adalora/backends/xtensor/xtensor_backend.hpp"
#define ADALORA_XTENSOR_BACKENDS , adalora::xtensor_backend
#else
#define ADALORA_XTENSOR_BACKENDS
#endif
#if defined(ADALORA_TEST_THRUST)
#include "adalora/backends/thrust/thrust_backend.hpp"
#if defined(ADALORA_TEST_THRUST_CPP)
#define ADALORA_THRUST_BACKENDS , adalora::thrust_cpp_backend, adalora::thrust_omp_backend
#else
#define ADALORA_THRUST_BACKENDS , adalora::thrust_omp_backend
#endif
#else
#define ADALORA_THRUST_BACKENDS
#endif

namespace adalora::testing {

using backends_under_test = std::tuple<adalora::eigen_backend ADALORA_XTENSOR_BACKENDS ADALORA_THRUST_BACKENDS>;

}  // namespace adalora::testing
#endif
