"""Small allocator fixtures: adapters of numpy arrays whose values at step t come from (seed, t)."""
from __future__ import annotations

import numpy as np

import adalora

SHAPES = [(6, 12, 8), (6, 7, 20), (6, 16, 16), (6, 9, 5)]  # (r, in, out)
KEYS = ("A", "E", "B", "gA", "gE", "gB")


def small_config(**kw) -> adalora.Config:
    args = dict(init_r=6, target_r=3, tinit=3, tfinal=5, deltaT=2, total_step=30)
    args.update(kw)
    return adalora.Config(**args)


class Adapters:
    """Each adapter's six float32 arrays: lora_A (r, in), lora_E (r, 1), lora_B (out, r) and their gradients."""

    def __init__(self, shapes=SHAPES, seed=0):
        self.seed = seed
        self.names = [f"layers.{i}.proj" for i in range(len(shapes))]
        self.t = [{"A": np.zeros((r, i), np.float32), "E": np.zeros((r, 1), np.float32),
                   "B": np.zeros((o, r), np.float32), "gA": np.zeros((r, i), np.float32),
                   "gE": np.zeros((r, 1), np.float32), "gB": np.zeros((o, r), np.float32)} for r, i, o in shapes]
        self.fill(0)

    def fill(self, step):
        rng = np.random.default_rng((self.seed, step))
        for d in self.t:
            for k in KEYS:
                scale = 1e-2 if k.startswith("g") else 0.3
                d[k][...] = rng.standard_normal(d[k].shape).astype(np.float32) * scale

    def register(self, alloc):
        for n, d in zip(self.names, self.t):
            alloc.add_adapter(n, d["A"], d["E"], d["B"], d["gA"], d["gE"], d["gB"])
        return alloc

    def lambdas(self):
        return [d["E"].copy() for d in self.t]


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def run(alloc, adapters, steps):
    """For each t in steps: new values, step(t); returns [(report fields, λ after, scores)]."""
    out = []
    for t in steps:
        adapters.fill(t)
        r = alloc.step(t)
        out.append(((r.step, r.phase, r.budget, r.masked, r.importance_updated, r.threshold), adapters.lambdas(),
                    [alloc.triplet_scores(n) for n in adapters.names]))
    return out


def same_runs(a, b):
    assert len(a) == len(b)
    for (ra, la, sa), (rb, lb, sb) in zip(a, b):
        assert ra == rb
        for x, y in zip(la, lb):
            assert np.array_equal(bits(x), bits(y)), (ra, x.ravel(), y.ravel())
        assert sa == sb, ra
