// The backends this build tests: every generic test body runs once per type in `backends_under_test`.
#pragma once

#include <tuple>

#include "adalora/backends/eigen/eigen_backend.hpp"

namespace adalora::testing {

using backends_under_test = std::tuple<adalora::eigen_backend>;

}  // namespace adalora::testing
