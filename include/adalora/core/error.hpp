// Typed exceptions raised by adalora: every bad input fails loudly, before any state changes.
#pragma once

#include <stdexcept>
#include <string>

namespace adalora {

/// Base of every exception the library throws.
class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A configuration value is out of range or inconsistent with another one.
class config_error : public error {
public:
  using error::error;
};

/// A tensor view has the wrong extents, or views of one adapter disagree.
class shape_error : public error {
public:
  using error::error;
};

/// A gradient view is missing (null) where the importance metric needs one.
class missing_gradient_error : public error {
public:
  using error::error;
};

/// A parameter or gradient holds NaN or infinity.
class non_finite_error : public error {
public:
  using error::error;
};

/// The allocator was driven out of order (steps going backwards, registering after training started, ...).
class usage_error : public error {
public:
  using error::error;
};

/// A file is malformed, truncated or of an unsupported kind.
class format_error : public error {
public:
  using error::error;
};

/// A collective of a distributed allocator failed: the communicator reported an error, or a rank waited past its
/// time limit for the others (one rank skipped a collective).
class communication_error : public error {
public:
  using error::error;
};

/// Data-parallel replicas that should hold equal adapters computed different importance (distributed allocator with
/// the replica check on).
class replica_divergence_error : public error {
public:
  using error::error;
};

}  // namespace adalora
