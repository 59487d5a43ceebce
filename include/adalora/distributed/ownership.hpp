// How the ranks of a distributed allocator hold the adapters: replicated, or partitioned into whole adapters or slices.
#pragma once

#include <cstddef>
#include <cstdint>

namespace adalora {

/// Who holds what, for an allocator that runs on several ranks (see README, "Many processes, one budget").
enum class ownership : std::uint8_t {
  /// Data parallel: every rank registers every adapter, whole, with equal values and gradients (all-reduced by the
  /// trainer). Each rank computes the whole step itself; the ranks compare their configs and adapters at the first
  /// step, refuse a step together, and (with `check_replicas`) compare their scores on mask steps.
  replicated,
  /// Pipeline / ZeRO-3 / FSDP (whole tensors per rank) and tensor parallel (slices): each rank registers what it
  /// holds — whole adapters with add_adapter(name, views), slices with add_adapter(name, views, adapter_shard) —
  /// and updates the importance of those elements only. On mask steps the ranks all-gather their score sums and
  /// every rank computes the same threshold and masks, those of one process holding every adapter.
  partitioned,
};

/// How a partitioned allocator combines the score sums of a row of lora_A or a column of lora_B that several ranks
/// hold parts of (lines held whole by one rank are combined exactly either way).
enum class shard_sums : std::uint8_t {
  /// Bit for bit the sums of one process: a rank sends the sum of every 2048-element tile it holds whole
  /// (docs/allocator_step.md) and the element scores of tiles that a slice boundary cuts, from which every rank
  /// recomputes those tiles' sums in the single process's lane order. Free when slice boundaries fall on tile
  /// boundaries (lora_A columns at multiples of 2048, lora_B rows at multiples of max(1, 2048 / r)); otherwise
  /// up to one tile of element scores per line and boundary.
  exact,
  /// Two doubles per singular value and rank (the sums of the rank's part of its Q row and P column), added in the
  /// order of the slices: O(total rank) bytes whatever the slices, identical on every rank, but a split line's mean
  /// can differ from one process's in its last bits (and so can a mask, where two scores tie that closely).
  per_triplet,
};

/// The settings of a distributed allocator beyond its ownership.
struct distributed_options {
  /// Partitioned: how split lines are summed.
  shard_sums sums = shard_sums::exact;
  /// Replicated: on mask steps, compare a hash of every rank's triplet scores (8 bytes per rank, in the step's
  /// status exchange) and raise replica_divergence_error on every rank when they differ.
  bool check_replicas = false;
};

/// The part of one adapter that a rank of a partitioned allocator holds, in the adapter's global coordinates. The
/// views registered with it are: lora_A (r, in_count) = global columns [in_offset, in_offset + in_count) of Q (0
/// columns when this rank holds none of Q, e.g. a replicated Q that another rank counts); lora_E (r) = λ, which
/// every rank that holds a part keeps (the masks apply to each copy); lora_B (out_count, r) = global rows
/// [out_offset, out_offset + out_count) of P. Over all ranks the parts of Q must cover every column exactly once,
/// those of P every row exactly once, and exactly one rank must count λ's scores.
struct adapter_shard {
  std::size_t in = 0;          ///< the adapter's global in_features (columns of lora_A)
  std::size_t out = 0;         ///< the adapter's global out_features (rows of lora_B)
  std::size_t in_offset = 0;   ///< global column of the registered lora_A's first column
  std::size_t out_offset = 0;  ///< global row of the registered lora_B's first row
  bool counts_lambda = true;   ///< this rank's λ scores count (exactly one rank per adapter)
};

}  // namespace adalora
