"""Shared settings of the package's tests.

- torch on one thread: the tests compare bits, not speed, and a 2-core machine shared with a build runs torch's
  OpenMP pool much faster with one thread than with two busy-waiting ones.
- ADALORA_NO_SKIP=1 (scripts/test.sh sets it): a skipped test fails, so CI never passes with tests left out.
- The PEFT reference traces: tests/data/traces in the repository, or ADALORA_TRACES_DIR.
"""
from __future__ import annotations

import os
import pathlib

import pytest
import torch

torch.set_num_threads(1)

REPO = pathlib.Path(__file__).resolve().parents[2]


def traces_dir() -> pathlib.Path:
    env = os.environ.get("ADALORA_TRACES_DIR")
    candidates = [pathlib.Path(env)] if env else [REPO / "tests" / "data" / "traces"]
    for c in candidates:
        if any(c.glob("alloc-*.safetensors")):
            return c
    raise FileNotFoundError(f"no PEFT allocation traces (alloc-*.safetensors) in {', '.join(map(str, candidates))}; "
                            "set ADALORA_TRACES_DIR")


def pytest_report_header(config):
    import peft
    import transformers

    import adalora

    return (f"torch {torch.__version__}, peft {peft.__version__}, transformers {transformers.__version__}; adalora "
            f"{adalora.__file__} (backends {', '.join(adalora.backends)}, {adalora.get_num_threads()} threads)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("ADALORA_NO_SKIP") == "1" and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but ADALORA_NO_SKIP=1 forbids skips: {rep.longrepr}"
