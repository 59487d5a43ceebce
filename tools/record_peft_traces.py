#!/usr/bin/env python3
"""Records the reference traces of adalora from the installed Hugging Face PEFT and PyTorch (CPU), and checks them.

    python tools/record_peft_traces.py --out tests/data/traces            record every scenario
    python tools/record_peft_traces.py --out DIR --only alloc-basic       record some of them
    python tools/record_peft_traces.py --check tests/data/traces/X.safetensors [...]
    python tools/record_peft_traces.py --list                             the scenarios, one line each

Allocation traces (format adalora-trace/alloc/1) come from a real PEFT AdaLoRA model: a tree of torch Linear layers
(named as in the scenario) wrapped by `peft.get_peft_model` with an `AdaLoraConfig`, trained with AdamW on a seeded
regression task whose targets differ from the frozen weights by planted low-rank changes, with fresh noisy batches
every step. After each optimizer step the parameters and gradients are recorded, PEFT's own
`AdaLoraModel.update_and_allocate(t)` runs (and with it PEFT's `RankAllocator`), and its results are recorded: λ
after the call, the budget and the phase, and, where PEFT ranks the triplets, its scores and threshold (captured
from the arguments and results of PEFT's own calls, not recomputed). Layer traces (adalora-trace/layer/1) come from
PEFT's `SVDLinear` on a frozen Linear and PyTorch autograd; the orthogonal regulariser is PEFT's own, taken from
the loss `AdaLoraModel.forward` adds it to.

`--check FILE` reads the scenario stored in FILE's metadata, feeds the recorded parameters and gradients of every
step to a fresh PEFT model and compares PEFT's results with the recorded ones (λ, budget, phase, scores and
threshold bit for bit); it then records the scenario again from its seed and says whether the whole file comes out
bit-identical too (expected with the recording's CPU and torch build; on another, GEMMs may sum in another order).
Exit status 1 when PEFT's results on the recorded inputs differ. docs/traces.md says when to re-record and what a mismatch means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import peft
import torch
from peft import AdaLoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file

ALLOC_FORMAT = "adalora-trace/alloc/1"
LAYER_FORMAT = "adalora-trace/layer/1"


# ---- the scenarios ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocScenario:
    """One allocation trace: adapters (name, in, out), PEFT's AdaLoRA settings, the steps recorded and the seed."""

    name: str
    what: str
    modules: tuple[tuple[str, int, int], ...]
    init_r: int
    target_r: int
    tinit: int
    tfinal: int
    total_step: int
    deltaT: int
    beta1: float = 0.85
    beta2: float = 0.85
    steps: int = 0  # steps recorded, t = 0 .. steps - 1 (default total_step + 2: past the end)
    seed: int = 0
    lr: float = 0.02
    noise: float = 0.05
    lora_alpha: float = 8.0
    orth_reg_weight: float = 0.1
    plant_rank: int = 0  # rank of each module's planted change; 0: 1 + (module index mod init_r)
    shift_at: int = 0  # from this step on (if > 0) the task changes: new planted changes, ranks in reverse order
    min_regrowths: int = 0  # the recorder fails unless this many pruned singular values are kept at a later mask

    @property
    def recorded_steps(self) -> int:
        return self.steps or self.total_step + 2


@dataclass(frozen=True)
class LayerCase:
    d_in: int
    d_out: int
    r: int
    batch: int
    alpha: float


@dataclass(frozen=True)
class LayerScenario:
    """One layer trace: SVD adapter cases with their shapes and lora_alpha."""

    name: str
    what: str
    cases: tuple[LayerCase, ...]
    seed: int = 0


def _blocks(n_layers, shapes):
    """Module names layers.<i>.<kind> with the given (in, out) per module, in order."""
    kinds = ("fc", "q", "v")
    return tuple((f"layers.{i // 3}.{kinds[i % 3]}", d_in, d_out) for i, (d_in, d_out) in enumerate(shapes[: n_layers * 3]))


# The shapes of the first traces this project was checked against (12 and 6 adapters, dims 6 to 20), kept so that
# re-recorded traces cover at least what those did.
_BASIC_SHAPES = [(12, 13), (16, 20), (7, 14), (12, 6), (12, 20), (14, 15), (17, 11), (18, 19), (13, 16), (20, 6),
                 (14, 19), (8, 7)]
_EDGE_SHAPES = [(9, 11), (9, 18), (11, 13), (20, 12), (16, 9), (14, 8)]
# Many adapters of mixed shapes: vectors (in or out 1), a 1 x 1, square, wide and tall matrices.
_MIXED_SHAPES = [(1, 5), (5, 1), (1, 1), (3, 3), (16, 2), (2, 16), (7, 9), (9, 7), (12, 12), (4, 10), (10, 4),
                 (6, 1), (1, 6), (8, 8), (5, 13), (13, 5), (2, 2), (11, 3)]

ALLOC_SCENARIOS = (
    AllocScenario("alloc-basic", "12 adapters (4 layers x fc, q, v; dims 6-20), init_r 6 -> target_r 2, cubic "
                  "schedule with deltaT 3, 55 steps (past total_step)",
                  _blocks(4, _BASIC_SHAPES), init_r=6, target_r=2, tinit=5, tfinal=10, total_step=50, deltaT=3,
                  steps=55, seed=1),
    AllocScenario("alloc-edge", "6 adapters, tinit 0 and tfinal 0 (the forced mask at total_step), deltaT 1, "
                  "beta1 0.5, beta2 0.9", _blocks(2, _EDGE_SHAPES), init_r=4, target_r=1, tinit=0, tfinal=0,
                  total_step=30, deltaT=1, beta1=0.5, beta2=0.9, steps=32, seed=2),
    AllocScenario("alloc-target0", "target_r 0: every singular value pruned by the end (threshold = largest score)",
                  (("enc.a", 6, 5), ("enc.b", 4, 7), ("head", 5, 3)), init_r=3, target_r=0, tinit=2, tfinal=3,
                  total_step=16, deltaT=2, steps=19, seed=3),
    AllocScenario("alloc-deltat", "deltaT 4 does not divide total_step - tfinal = 21: the last budgeting mask "
                  "step (20) is not the forced one (21)", (("blk.0.up", 6, 8), ("blk.0.down", 8, 6),
                                                          ("blk.1.up", 5, 9)),
                  init_r=4, target_r=1, tinit=2, tfinal=4, total_step=25, deltaT=4, steps=27, seed=4),
    AllocScenario("alloc-betas", "non-default beta1 0.95, beta2 0.6 (slow sensitivity, fast uncertainty)",
                  (("attn.k", 7, 6), ("attn.o", 6, 7), ("mlp", 5, 5)), init_r=4, target_r=2, tinit=1, tfinal=3,
                  total_step=20, deltaT=2, beta1=0.95, beta2=0.6, steps=22, seed=5),
    AllocScenario("alloc-mixed", "18 adapters of mixed shapes (1 x 1, vectors, wide, tall), init_r 3 -> 1",
                  tuple((f"m.{i:02d}", d_in, d_out) for i, (d_in, d_out) in enumerate(_MIXED_SHAPES)),
                  init_r=3, target_r=1, tinit=1, tfinal=2, total_step=10, deltaT=1, steps=11, seed=6),
    AllocScenario("alloc-long", "a long budgeting phase (100 steps, mask every 2nd) on noisy gradients, the task "
                  "changing at step 40: pruned singular values regrow and are kept at later mask steps",
                  (("x.p", 5, 4), ("x.q", 4, 5), ("y", 5, 5)), init_r=5, target_r=2, tinit=4, tfinal=8,
                  total_step=100, deltaT=2, steps=102, seed=9, noise=0.5, shift_at=40, min_regrowths=4),
)

_BASIC_CASES = ((16, 5, 2, 4, 25.0), (14, 17, 4, 8, 14.0), (39, 19, 1, 6, 11.0), (32, 39, 1, 13, 26.0),
                (30, 36, 4, 4, 30.0), (24, 34, 5, 4, 23.0), (24, 30, 3, 2, 5.0), (33, 5, 4, 7, 30.0),
                (15, 20, 4, 11, 9.0), (28, 23, 5, 7, 16.0), (21, 17, 4, 1, 31.0), (36, 20, 6, 9, 28.0))
LAYER_SCENARIOS = (
    LayerScenario("layer-basic", "12 SVD adapters (dims 5-39, r 1-6, batch 1-13): forward, gradients, orthogonal "
                  "regulariser", tuple(LayerCase(*c) for c in _BASIC_CASES), seed=11),
    LayerScenario("layer-edge", "1 x 1 and vector-shaped adapters, rank 1, batch 1, and lora_alpha 0 (PEFT then "
                  "scales by init_r)", (LayerCase(1, 1, 1, 1, 4.0), LayerCase(1, 7, 2, 3, 2.0),
                                         LayerCase(9, 1, 3, 2, 0.0), LayerCase(6, 6, 6, 5, 0.0)), seed=12),
)

SCENARIOS = {s.name: s for s in ALLOC_SCENARIOS + LAYER_SCENARIOS}


# ---- models -----------------------------------------------------------------------------------------------------


def _tree(modules):
    """A torch module tree with a Linear at each dotted name (frozen weights from the current RNG)."""
    root = torch.nn.Module()
    for name, d_in, d_out in modules:
        parent = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, torch.nn.Linear(d_in, d_out, bias=False))
    return root


class _Regression(torch.nn.Module):
    """Each adapted Linear maps its own batch; the loss is the sum of their mean squared errors."""

    def __init__(self, modules):
        super().__init__()
        self.net = _tree(modules)
        self.names = [n for n, _, _ in modules]

    def forward(self, xs, ys):
        loss = sum(torch.nn.functional.mse_loss(self.net.get_submodule(n)(xs[n]), ys[n]) for n in self.names)
        return types.SimpleNamespace(loss=loss)  # PEFT adds the orthogonal regulariser to outputs.loss


def _adalora_model(s: AllocScenario):
    torch.manual_seed(s.seed)
    base = _Regression(s.modules)
    cfg = AdaLoraConfig(init_r=s.init_r, target_r=s.target_r, tinit=s.tinit, tfinal=s.tfinal, deltaT=s.deltaT,
                        beta1=s.beta1, beta2=s.beta2, total_step=s.total_step, lora_alpha=s.lora_alpha,
                        lora_dropout=0.0, orth_reg_weight=s.orth_reg_weight,
                        target_modules=[n for n, _, _ in s.modules])
    with _quiet():
        model = get_peft_model(base, cfg)
    return model


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _adapters(model):
    """{module name: {"lora_A": param, "lora_E": param, "lora_B": param}} for the default adapter."""
    out = {}
    for n, p in model.named_parameters():
        for kind in ("lora_A", "lora_E", "lora_B"):
            tag = f".{kind}.default"
            if n.endswith(tag):
                module = n[: -len(tag)].removeprefix("base_model.model.net.")
                out.setdefault(module, {})[kind] = p
    return out


def _concat_order(model):
    """The modules in the order PEFT's RankAllocator.mask_to_budget concatenates their scores: the order in which a
    lora_A or lora_B of each module first appears among the model's named parameters."""
    order = []
    for n, _ in model.named_parameters():
        for kind in ("lora_A", "lora_B"):
            tag = f".{kind}.default"
            if n.endswith(tag):
                module = n[: -len(tag)].removeprefix("base_model.model.net.")
                if module not in order:
                    order.append(module)
    return order


# ---- one step of PEFT's allocator, with its results captured -------------------------------------------------------


def _phase(s: AllocScenario, t: int) -> str:
    end = s.total_step - s.tfinal
    return "update" if t < end else ("final_force" if t == end else "final_pattern")


def _peft_step(model, s: AllocScenario, t: int, order):
    """Runs PEFT's update_and_allocate(t) and returns (step record, {module: score tensor} or None).

    The scores and threshold are PEFT's own: the per-module sums that RankAllocator._combine_ipt returns and the
    value torch.kthvalue returns inside mask_to_budget, captured on their way out."""
    allocator = model.base_model.rankallocator
    pieces, kth = [], {}
    combine = allocator._combine_ipt
    real_kthvalue = torch.kthvalue

    def capture_combine(ipt_E, ipt_AB):
        result = combine(ipt_E, ipt_AB)
        pieces.append(result.detach().clone())
        return result

    def capture_kthvalue(values, k, *args, **kwargs):
        result = real_kthvalue(values, k, *args, **kwargs)
        kth["values"], kth["threshold"] = values.detach().clone(), result[0].item()
        return result

    phase = _phase(s, t)
    budget, mask_ind = allocator.budget_schedule(t) if phase != "final_pattern" else (allocator.target_bgt, True)
    allocator._combine_ipt = capture_combine
    torch.kthvalue = capture_kthvalue
    try:
        model.base_model.update_and_allocate(t)
    finally:
        torch.kthvalue = real_kthvalue
        del allocator._combine_ipt
    masked = bool(mask_ind) or phase == "final_force"
    scores = None
    if kth:
        if len(pieces) != len(order) or not torch.equal(torch.cat([p.view(-1) for p in pieces]), kth["values"]):
            raise RuntimeError(f"step {t}: PEFT's scores did not arrive as expected (peft {peft.__version__} may "
                               "have changed RankAllocator.mask_to_budget; see docs/traces.md)")
        scores = dict(zip(order, pieces))
    elif masked and phase != "final_pattern":
        raise RuntimeError(f"step {t}: PEFT masked without ranking the triplets")
    record = {"t": t, "budget": int(budget), "masked": masked,
              "threshold": kth.get("threshold") if kth else None, "phase": phase}
    return record, scores


# ---- allocation traces ----------------------------------------------------------------------------------------------


def _batches(s: AllocScenario, model, generator):
    """Draws a fresh batch per module: x ~ N(0, 1), y = x (W + ΔW)ᵀ + noise, ΔW of the scenario's planted rank (with
    shift_at, new changes from that step on, the module ranks in reverse order)."""
    weights = {name: model.base_model.model.net.get_submodule(name).base_layer.weight.detach().clone()
               for name, _, _ in s.modules}

    def plant(ranks):
        out = {}
        for (name, d_in, d_out), rank in zip(s.modules, ranks):
            rank = min(rank, d_in, d_out)
            u = torch.randn(d_out, rank, generator=generator)
            v = torch.randn(rank, d_in, generator=generator)
            out[name] = (u @ v) / max(1.0, rank**0.5)
        return out

    ranks = [s.plant_rank or 1 + i % s.init_r for i in range(len(s.modules))]
    plants = plant(ranks)
    shifted = plant(ranks[::-1]) if s.shift_at > 0 else None

    def draw(t):
        xs, ys = {}, {}
        for name, d_in, _ in s.modules:
            change = shifted[name] if shifted is not None and t >= s.shift_at else plants[name]
            x = torch.randn(8, d_in, generator=generator)
            y = x @ (weights[name] + change).T
            ys[name] = y + s.noise * torch.randn(y.shape, generator=generator)
            xs[name] = x
        return xs, ys

    return draw


def _train_inputs(s: AllocScenario):
    """Runs the scenario's training and yields (model, t, inputs) after each optimizer step, before the allocator."""
    model = _adalora_model(s)
    generator = torch.Generator().manual_seed(s.seed + 1000)
    draw = _batches(s, model, generator)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    adapters = _adapters(model)
    for t in range(s.recorded_steps):
        optimizer.zero_grad(set_to_none=True)
        xs, ys = draw(t)
        # AdaLoraModel.forward (not PeftModel's, which skips it for a model without a task type) adds PEFT's
        # orthogonal regulariser to the loss
        model.base_model(xs, ys).loss.backward()
        optimizer.step()
        inputs = {}
        for module, ps in adapters.items():
            for kind in ("lora_A", "lora_E", "lora_B"):
                inputs[f"{t}/{module}/{kind}"] = ps[kind].detach().clone()
                inputs[f"{t}/{module}/grad/{kind}"] = ps[kind].grad.detach().clone()
        yield model, t, inputs


def _as_trace_shape(kind, tensor):
    return tensor.reshape(-1, 1) if kind == "lora_E" else tensor


def record_alloc(s: AllocScenario):
    tensors, steps = {}, []
    order = None
    for model, t, inputs in _train_inputs(s):
        order = order or _concat_order(model)
        tensors.update({k: _as_trace_shape(k.rsplit("/", 1)[-1], v) for k, v in inputs.items()})
        record, scores = _peft_step(model, s, t, order)
        steps.append(record)
        for module, ps in _adapters(model).items():
            tensors[f"{t}/{module}/out/lora_E"] = ps["lora_E"].detach().clone().reshape(-1, 1)
            if scores is not None:
                tensors[f"{t}/{module}/score"] = scores[module].reshape(-1)
    regrowths = _regrowths(steps, tensors, order)
    if len(regrowths) < s.min_regrowths:
        raise RuntimeError(f"{s.name}: {len(regrowths)} pruned singular values were kept at a later mask step, fewer "
                           f"than {s.min_regrowths} (change its seed)")
    metadata = {
        "format": ALLOC_FORMAT,
        "config": json.dumps({"init_r": s.init_r, "target_r": s.target_r, "tinit": s.tinit, "tfinal": s.tfinal,
                              "total_step": s.total_step, "deltaT": s.deltaT, "beta1": s.beta1, "beta2": s.beta2}),
        "adapters": json.dumps(order),
        "steps": json.dumps(steps),
    }
    return {k: v.contiguous() for k, v in tensors.items()}, metadata


def _regrowths(steps, tensors, order):
    """(t, module, index) of singular values pruned at one mask step and kept at a later one."""
    pruned, found = set(), []
    for st in steps:
        if st["threshold"] is None:
            continue
        t = st["t"]
        for module in order:
            for i, v in enumerate(tensors[f"{t}/{module}/score"].tolist()):
                if v <= st["threshold"]:
                    pruned.add((module, i))
                elif (module, i) in pruned:
                    found.append((t, module, i))
                    pruned.discard((module, i))
    return found


def check_alloc(s: AllocScenario, path: Path):
    """Feeds the file's recorded inputs to a fresh PEFT model; returns the mismatches of PEFT's results."""
    model = _adalora_model(s)
    adapters = _adapters(model)
    order = _concat_order(model)
    problems = []
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        if json.loads(meta["adapters"]) != order:
            problems.append(f"adapters: recorded {meta['adapters']}, PEFT now concatenates {json.dumps(order)}")
        recorded_steps = json.loads(meta["steps"])
        for st in recorded_steps:
            t = st["t"]
            with torch.no_grad():
                for module, ps in adapters.items():
                    for kind in ("lora_A", "lora_E", "lora_B"):
                        ps[kind].copy_(f.get_tensor(f"{t}/{module}/{kind}").reshape(ps[kind].shape))
                        ps[kind].grad = f.get_tensor(f"{t}/{module}/grad/{kind}").reshape(ps[kind].shape).clone()
            record, scores = _peft_step(model, s, t, order)
            if record != st:
                problems.append(f"step {t}: recorded {json.dumps(st)}, PEFT now gives {json.dumps(record)}")
            for module, ps in adapters.items():
                want = f.get_tensor(f"{t}/{module}/out/lora_E").reshape(-1)
                got = ps["lora_E"].detach().reshape(-1)
                if not torch.equal(want.view(torch.int32), got.view(torch.int32)):
                    problems.append(f"step {t}, {module}: lora_E after the call differs: recorded "
                                    f"{want.tolist()}, PEFT now {got.tolist()}")
                key = f"{t}/{module}/score"
                has = key in f.keys()
                if has != (scores is not None):
                    problems.append(f"step {t}, {module}: scores {'recorded' if has else 'absent'} but PEFT "
                                    f"{'ranked' if scores is not None else 'did not rank'}")
                elif has and not torch.equal(f.get_tensor(key).view(torch.int32),
                                             scores[module].reshape(-1).contiguous().view(torch.int32)):
                    problems.append(f"step {t}, {module}: scores differ: recorded {f.get_tensor(key).tolist()}, "
                                    f"PEFT now {scores[module].reshape(-1).tolist()}")
            if len(problems) > 20:
                break
    return problems


def rerecord_matches(s: AllocScenario, path: Path):
    """Whether recording the scenario again (training and PEFT) reproduces the file; returns (equal, worst relative
    difference of a tensor, whether the steps' metadata is equal)."""
    tensors, metadata = record_alloc(s)
    worst = 0.0
    with safe_open(str(path), "pt") as f:
        same_steps = json.loads(f.metadata()["steps"]) == json.loads(metadata["steps"])
        if set(f.keys()) != set(tensors):
            return False, float("inf"), same_steps
        for key, value in tensors.items():
            want = f.get_tensor(key)
            if not torch.equal(want, value):
                scale = max(want.abs().max().item(), 1e-30)
                worst = max(worst, (want - value).abs().max().item() / scale)
    return worst == 0.0 and same_steps, worst, same_steps


# ---- layer traces ------------------------------------------------------------------------------------------------------


def _layer_case(case: LayerCase, generator):
    """PEFT's SVDLinear on a frozen Linear with random λ, P, Q: y, the gradients of <y, dy>, and PEFT's regulariser."""
    base = torch.nn.Module()
    base.lin = torch.nn.Linear(case.d_in, case.d_out, bias=False)
    cfg = AdaLoraConfig(init_r=case.r, target_r=case.r, lora_alpha=case.alpha, lora_dropout=0.0, total_step=10,
                        orth_reg_weight=1.0, target_modules=["lin"])
    with _quiet():
        model = get_peft_model(base, cfg)
    layer = model.base_model.model.lin
    W = torch.randn(case.d_out, case.d_in, generator=generator)
    A = torch.randn(case.r, case.d_in, generator=generator) * 0.5
    E = torch.randn(case.r, 1, generator=generator)
    B = torch.randn(case.d_out, case.r, generator=generator) * 0.5
    x = torch.randn(case.batch, case.d_in, generator=generator)
    dy = torch.randn(case.batch, case.d_out, generator=generator)
    with torch.no_grad():
        layer.base_layer.weight.copy_(W)
        layer.lora_A["default"].copy_(A)
        layer.lora_E["default"].copy_(E)
        layer.lora_B["default"].copy_(B)
    xg = x.clone().requires_grad_(True)
    y = layer(xg)
    (y * dy).sum().backward()
    out = {"W": W, "A": A, "E": E, "B": B, "x": x, "dy": dy, "y": y.detach(),
           "grad/A": layer.lora_A["default"].grad.clone(), "grad/E": layer.lora_E["default"].grad.clone(),
           "grad/B": layer.lora_B["default"].grad.clone(), "grad/x": xg.grad.clone()}
    # The regulariser as AdaLoraModel.forward adds it to the loss (orth_reg_weight 1): outputs.loss = 0 + R.
    model.zero_grad(set_to_none=True)
    zero = torch.zeros((), requires_grad=True)
    model.base_model.model.forward = lambda *a, **k: types.SimpleNamespace(loss=zero * 1.0)
    R = model.base_model().loss
    R.backward()
    out["orth/R"] = R.detach().reshape(1)
    out["orth/grad/A"] = layer.lora_A["default"].grad.clone()
    out["orth/grad/B"] = layer.lora_B["default"].grad.clone()
    return out


def record_layer(s: LayerScenario):
    generator = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)
    tensors, cases = {}, []
    for c, case in enumerate(s.cases):
        for key, value in _layer_case(case, generator).items():
            tensors[f"{c}/{key}"] = value.contiguous()
        cases.append({"case": c, "d_in": case.d_in, "d_out": case.d_out, "r": case.r, "batch": case.batch,
                      "alpha": case.alpha})
    return tensors, {"format": LAYER_FORMAT, "cases": json.dumps(cases)}


def check_layer(s: LayerScenario, path: Path):
    tensors, _ = record_layer(s)
    problems = []
    with safe_open(str(path), "pt") as f:
        for key, value in tensors.items():
            want = f.get_tensor(key)
            if not torch.equal(want, value):
                scale = max(want.abs().max().item(), 1e-30)
                problems.append(f"{key}: max relative difference {(want - value).abs().max().item() / scale:.3g}")
    return problems


# ---- files ----------------------------------------------------------------------------------------------------------------


def _provenance(s):
    return {
        "source": f"huggingface/peft {peft.__version__}, torch {torch.__version__} (CPU), "
                  "recorded by tools/record_peft_traces.py",
        "peft_version": peft.__version__,
        "torch_version": torch.__version__,
        "scenario": json.dumps({"kind": "alloc" if isinstance(s, AllocScenario) else "layer", **asdict(s)}),
    }


def record(s, out_dir: Path) -> Path:
    torch.use_deterministic_algorithms(True)
    tensors, metadata = record_alloc(s) if isinstance(s, AllocScenario) else record_layer(s)
    path = out_dir / f"{s.name}.safetensors"
    save_file(tensors, str(path), metadata={**metadata, **_provenance(s)})
    path.chmod(0o644)
    return path


def _stored_scenario(path: Path):
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "scenario" not in meta:
        raise SystemExit(f"{path}: no 'scenario' in its metadata (not written by this recorder)")
    stored = json.loads(meta["scenario"])
    kind = stored.pop("kind")
    if kind == "alloc":
        stored["modules"] = tuple(tuple(m) for m in stored["modules"])
        return AllocScenario(**stored), meta
    stored["cases"] = tuple(LayerCase(**c) for c in stored["cases"])
    return LayerScenario(**stored), meta


def check(path: Path) -> bool:
    torch.use_deterministic_algorithms(True)
    s, meta = _stored_scenario(path)
    versions = f"recorded with peft {meta.get('peft_version')}, torch {meta.get('torch_version')}; " \
               f"now peft {peft.__version__}, torch {torch.__version__}"
    if isinstance(s, AllocScenario):
        problems = check_alloc(s, path)
        same, worst, same_steps = rerecord_matches(s, path)
        again = "bit-identical" if same else f"differs (max relative {worst:.3g}, steps " \
                f"{'equal' if same_steps else 'differ'}; expected only on another CPU or torch build)"
        detail = f"PEFT's results on the recorded inputs: {'identical' if not problems else 'DIFFER'}; " \
                 f"recorded again from the seed: {again}"
    else:
        problems = check_layer(s, path)
        detail = f"PEFT's layer outputs and gradients: {'identical' if not problems else 'DIFFER'}"
    print(f"{'ok  ' if not problems else 'FAIL'} {path.name}: {detail} ({versions})")
    for p in problems[:20]:
        print(f"     {p}")
    return not problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="record into this folder")
    parser.add_argument("--only", action="append", default=[], help="record only this scenario (repeatable)")
    parser.add_argument("--check", nargs="+", type=Path, metavar="FILE", help="re-run PEFT on each file and compare")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:15s} {s.what}")
        return 0
    if args.check:
        results = [check(p) for p in args.check]
        return 0 if all(results) else 1
    if not args.out:
        parser.error("give --out DIR, --check FILE... or --list")
    unknown = [n for n in args.only if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; --list shows them")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or SCENARIOS:
        path = record(SCENARIOS[name], args.out)
        print(f"recorded {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
