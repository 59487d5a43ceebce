"""adalora: AdaLoRA's rank allocator in C++ (see the repository's README, "From Python / PEFT")."""
from ._core import (  # noqa: F401
    Config,
    ConfigError,
    Error,
    FormatError,
    MissingGradientError,
    NonFiniteError,
    RankAllocator,
    ShapeError,
    StepReport,
    UsageError,
    backends,
    checkpoint_format,
    default_cpu_backend,
    get_num_threads,
    has_cuda,
    has_thrust,
    set_num_threads,
)

__version__ = "0.1.0"
