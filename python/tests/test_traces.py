"""The low-level API against PEFT's recorded RankAllocator traces (the files adalora-trace replays in C++), on every
CPU backend of the build: Λ after each step bit for bit, budgets, mask flags and phases exactly, thresholds and
triplet scores to float32 rounding (docs/traces.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

import adalora
from conftest import traces_dir

CPU_BACKENDS = [b for b in adalora.backends if b != "cuda"]
TRACES = sorted(traces_dir().glob("alloc-*.safetensors"))


def test_traces_found():
    assert len(TRACES) >= 2, TRACES


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.stem)
def test_replay(trace, backend):
    f = safe_open(str(trace), "np")
    md = f.metadata()
    assert md["format"] == "adalora-trace/alloc/1"
    cfg = json.loads(md["config"])
    steps = json.loads(md["steps"])
    names = json.loads(md["adapters"])
    config = adalora.Config(init_r=cfg["init_r"], target_r=cfg["target_r"], tinit=cfg["tinit"], tfinal=cfg["tfinal"],
                            deltaT=cfg["deltaT"], beta1=cfg["beta1"], beta2=cfg["beta2"], total_step=cfg["total_step"])
    alloc = adalora.RankAllocator(config, backend=backend)
    bufs = {}
    keys = ("lora_A", "lora_E", "lora_B", "grad/lora_A", "grad/lora_E", "grad/lora_B")
    for n in names:
        bufs[n] = {k: np.zeros_like(f.get_tensor(f"0/{n}/{k}")) for k in keys}
        b = bufs[n]
        alloc.add_adapter(n, b["lora_A"], b["lora_E"], b["lora_B"], b["grad/lora_A"], b["grad/lora_E"],
                          b["grad/lora_B"])
    assert alloc.backend == backend
    stored = set(f.keys())
    for s in steps:
        t = s["t"]
        for n in names:
            for k in keys:
                key = f"{t}/{n}/{k}"
                if key in stored:
                    np.copyto(bufs[n][k], f.get_tensor(key))
        rep = alloc.step(t)
        assert rep.budget == s["budget"], (t, rep)
        assert rep.masked == s["masked"], (t, rep)
        assert rep.trace_phase == s["phase"], (t, rep)
        assert alloc.budget == s["budget"]
        for n in names:
            want = f.get_tensor(f"{t}/{n}/out/lora_E")
            got = bufs[n]["lora_E"]
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (t, n, got.ravel(), want.ravel())
        if s["threshold"] is not None:
            # each adapter's triplet scores, and the threshold, to float32 rounding (FORMAT.md): relative 1e-5 with
            # an absolute floor of 1e-7 × the step's largest score
            want = {n: f.get_tensor(f"{t}/{n}/score").ravel() for n in names}
            floor = 1e-7 * max(float(np.abs(w).max()) for w in want.values())
            for n in names:
                got = np.asarray(alloc.triplet_scores(n), np.float64)
                w = want[n].astype(np.float64)
                assert got.shape == w.shape, (t, n)
                assert np.all(np.abs(got - w) <= 1e-5 * np.maximum(np.abs(got), np.abs(w)) + floor), (t, n, got, w)
            assert rep.threshold is not None
            assert abs(rep.threshold - s["threshold"]) <= 1e-5 * abs(s["threshold"]) + floor, (t, rep)
        else:
            assert rep.threshold is None, (t, rep)
    assert alloc.pattern_frozen == (steps[-1]["phase"] != "update")
