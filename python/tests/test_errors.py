"""Every bad input the C++ allocator rejects raises the matching Python exception, with the C++ message unchanged,
and leaves the allocator as it was; inputs only Python can get wrong (dtype, device, read-only arrays) raise
TypeError."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import adalora
from alloc_helpers import Adapters, run, same_runs, small_config


def test_exception_hierarchy():
    for cls in (adalora.ConfigError, adalora.ShapeError, adalora.MissingGradientError, adalora.NonFiniteError,
                adalora.UsageError, adalora.FormatError):
        assert issubclass(cls, adalora.Error) and cls.__module__ == "adalora"
    assert issubclass(adalora.Error, RuntimeError)
    assert issubclass(adalora.ConfigError, ValueError) and issubclass(adalora.ShapeError, ValueError)


CONFIG_CASES = [
    (dict(total_step=0), "invalid adalora_config: total_step = 0; set it to the number of optimizer steps of the run "
                         "(a positive number)"),
    (dict(total_step=-5), "invalid adalora_config: total_step = -5; set it to the number of optimizer steps of the "
                          "run (a positive number)"),
    (dict(init_r=-1, target_r=0), "invalid adalora_config: init_r = -1; a rank cannot be negative"),
    (dict(init_r=4, target_r=5), "invalid adalora_config: target_r = 5 with init_r = 4; need 0 <= target_r <= init_r"),
    (dict(target_r=-1), "invalid adalora_config: target_r = -1 with init_r = 12; need 0 <= target_r <= init_r"),
    (dict(tinit=-1), "invalid adalora_config: tinit = -1; it cannot be negative"),
    (dict(tfinal=-2), "invalid adalora_config: tfinal = -2; it cannot be negative"),
    (dict(tinit=6, tfinal=4), "invalid adalora_config: tinit = 6 is not below total_step - tfinal = 10 - 4 = 6; the "
                              "budget needs steps to fall: lower tinit or tfinal, or raise total_step"),
    (dict(deltaT=0), "invalid adalora_config: deltaT = 0; mask at least every step (deltaT >= 1)"),
    (dict(beta1=1.0), "invalid adalora_config: beta1 = 1.000000; need 0 < beta1 < 1"),
    (dict(beta1=0.0), "invalid adalora_config: beta1 = 0.000000; need 0 < beta1 < 1"),
    (dict(beta2=1.5), "invalid adalora_config: beta2 = 1.500000; need 0 < beta2 < 1"),
    (dict(beta2=math.nan), "invalid adalora_config: beta2 = nan; need 0 < beta2 < 1"),
    (dict(orth_reg_weight=-0.1), "invalid adalora_config: orth_reg_weight = -0.100000; need a finite value >= 0"),
    (dict(orth_reg_weight=math.inf), "invalid adalora_config: orth_reg_weight = inf; need a finite value >= 0"),
    (dict(lora_alpha=math.inf), "invalid adalora_config: lora_alpha is not finite"),
    (dict(lora_dropout=1.0), "invalid adalora_config: lora_dropout = 1.000000; need 0 <= lora_dropout < 1"),
]


@pytest.mark.parametrize("kw,message", CONFIG_CASES)
def test_invalid_config(kw, message):
    args = dict(total_step=10)
    args.update(kw)
    cfg = adalora.Config(**args)  # a Config is plain data; the allocator validates it
    with pytest.raises(adalora.ConfigError) as e:
        adalora.RankAllocator(cfg)
    assert str(e.value) == message
    with pytest.raises(adalora.ConfigError):
        cfg.validate()


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend 'tpu' is not one of this build's"):
        adalora.RankAllocator(small_config(), backend="tpu")


def f32(*shape):
    return np.ones(shape, np.float32)


def adapter(r=4, fin=5, fout=6):
    return [f32(r, fin), f32(r, 1), f32(fout, r), f32(r, fin), f32(r, 1), f32(fout, r)]


SHAPE_CASES = [
    ([f32(4, 5), f32(3, 1), f32(6, 4)], "adapter 'm': ranks disagree: lora_A is (4, 5), lora_E is (3), lora_B is "
                                        "(6, 4); expected lora_A (r, in), lora_E (r), lora_B (out, r)"),
    ([f32(4, 5), f32(4, 1), f32(6, 3)], "adapter 'm': ranks disagree: lora_A is (4, 5), lora_E is (4), lora_B is "
                                        "(6, 3); expected lora_A (r, in), lora_E (r), lora_B (out, r)"),
    ([f32(4, 0), f32(4, 1), f32(6, 4)], "adapter 'm': in_features and out_features must be positive, got lora_A "
                                        "(4, 0) and lora_B (6, 4)"),
    ([f32(4, 5), f32(4, 1), f32(6, 4), f32(4, 6), None, None], "adapter 'm': grad_A is (4, 6) but its parameter is "
                                                                "(4, 5)"),
    ([f32(4, 5), f32(4, 1), f32(6, 4), None, f32(3, 1), None], "adapter 'm': grad_E is (3) but its parameter is (4)"),
    ([f32(4, 5), f32(4, 1), f32(6, 4), None, None, f32(4, 6)], "adapter 'm': grad_B is (4, 6) but its parameter is "
                                                                "(6, 4)"),
    ([f32(20), f32(4, 1), f32(6, 4)], "adapter 'm': lora_A has shape (20,); expected a matrix (2 dimensions)"),
    ([f32(4, 5), f32(4, 2), f32(6, 4)], "adapter 'm': lora_E has shape (4, 2); expected (r,) or (r, 1)"),
    ([f32(4, 5, 1), f32(4, 1), f32(6, 4)], "adapter 'm': lora_A has shape (4, 5, 1); expected a matrix (lora_A, "
                                           "lora_B) or a vector (lora_E: (r,) or (r, 1))"),
]


@pytest.mark.parametrize("tensors,message", SHAPE_CASES)
def test_shape_errors(tensors, message):
    alloc = adalora.RankAllocator(small_config())
    with pytest.raises(adalora.ShapeError) as e:
        alloc.add_adapter("m", *tensors)
    assert str(e.value) == message
    assert alloc.adapter_count == 0  # nothing registered


def test_rebind_must_keep_shapes():
    alloc = adalora.RankAllocator(small_config())
    alloc.add_adapter("m", *adapter())
    with pytest.raises(adalora.ShapeError) as e:
        alloc.rebind("m", *adapter(fin=7))
    assert str(e.value) == ("rebind('m'): shapes changed from lora_A (4, 5), lora_B (6, 4) to (4, 7), (6, 4); an "
                            "adapter keeps its shape for the whole run")


def test_registration_usage_errors():
    alloc = adalora.RankAllocator(small_config(target_r=1))
    alloc.add_adapter("m", *adapter())
    with pytest.raises(adalora.UsageError) as e:
        alloc.add_adapter("m", *adapter())
    assert str(e.value) == "add_adapter: an adapter named 'm' is already registered"
    with pytest.raises(adalora.UsageError) as e:
        alloc.add_adapter("", *adapter())
    assert str(e.value) == "add_adapter: the adapter name is empty"
    alloc.step(0)
    with pytest.raises(adalora.UsageError) as e:
        alloc.add_adapter("n", *adapter())
    assert str(e.value) == ("add_adapter('n'): the allocator has already run step 0; register every adapter before "
                            "the first step")
    with pytest.raises(adalora.UsageError) as e:
        alloc.rank_pattern("nope")
    assert str(e.value) == "no adapter named 'nope' is registered"
    for call in (lambda: alloc.triplet_scores("nope"), lambda: alloc.rebind("nope", *adapter()),
                 lambda: alloc.rebind_gradients("nope", None, None, None)):
        with pytest.raises(adalora.UsageError, match="no adapter named 'nope' is registered"):
            call()


def test_python_type_errors():
    alloc = adalora.RankAllocator(small_config())
    with pytest.raises(TypeError, match=r"adapter 'm': lora_A has dtype float64; the allocator takes float32 or "
                                        r"bfloat16 tensors"):
        alloc.add_adapter("m", np.ones((4, 5)), f32(4, 1), f32(6, 4))
    with pytest.raises(TypeError, match=r"adapter 'm': grad_B has dtype float16"):
        alloc.add_adapter("m", f32(4, 5), f32(4, 1), f32(6, 4), None, None, np.ones((6, 4), np.float16))
    with pytest.raises(TypeError, match=r"adapter 'm': lora_B is not an array .* got list"):
        alloc.add_adapter("m", f32(4, 5), f32(4, 1), [[1.0] * 4] * 6)
    with pytest.raises(TypeError, match=r"lora_A, lora_E and lora_B are required"):
        alloc.add_adapter("m", None, f32(4, 1), f32(6, 4))
    ro = f32(4, 1)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match=r"adapter 'm': lora_E is read-only; the allocator masks the singular values "
                                        r"in place"):
        alloc.add_adapter("m", f32(4, 5), ro, f32(6, 4))
    ro_grad = f32(4, 5)
    ro_grad.flags.writeable = False  # gradients and lora_A / lora_B are only read: read-only is fine
    alloc.add_adapter("m", ro_grad, f32(4, 1), f32(6, 4), ro_grad, None, None)
    import torch
    with pytest.raises(TypeError, match=r"adapter 'n': lora_A is bfloat16 but the allocator's tensors are float32"):
        alloc.add_adapter("n", torch.ones(4, 5, dtype=torch.bfloat16), f32(4, 1), f32(6, 4))
    assert alloc.adapter_count == 1


def test_step_usage_errors():
    alloc = adalora.RankAllocator(small_config())
    with pytest.raises(adalora.UsageError) as e:
        alloc.step(0)
    assert str(e.value) == "step(0): no adapters are registered; call add_adapter() first"
    ad = Adapters()
    ad.register(alloc)
    with pytest.raises(adalora.UsageError) as e:
        alloc.step(-1)
    assert str(e.value) == "step(-1): steps count optimizer steps from 0"
    alloc.step(5)
    for t in (5, 4):
        with pytest.raises(adalora.UsageError) as e:
            alloc.step(t)
        assert str(e.value) == (f"step({t}): the allocator already ran step 5; steps must increase: call step(t) once "
                                "per optimizer step, after optimizer.step() and before zeroing the gradients")
    assert alloc.last_step == 5


def test_target_budget_above_initial():
    alloc = adalora.RankAllocator(small_config(init_r=6, target_r=5))
    alloc.add_adapter("m", *adapter(r=4))
    with pytest.raises(adalora.ConfigError) as e:
        alloc.step(0)
    assert str(e.value) == ("step(0): target_r × adapters = 5 exceeds the sum of the adapters' ranks = 4")


def test_forced_mask_needs_importance():
    alloc = adalora.RankAllocator(small_config())  # total_step 30, tfinal 5: T - tfinal = 25
    Adapters().register(alloc)
    with pytest.raises(adalora.UsageError) as e:
        alloc.step(25)
    assert str(e.value) == ("step(25): the forced mask at step total_step - tfinal = 25 needs importance from earlier "
                            "steps, but no step before it ran; call step(t) on every optimizer step from the start of "
                            "training")


def test_missing_gradient():
    alloc = adalora.RankAllocator(small_config())
    ad = Adapters()
    for n, d in zip(ad.names, ad.t):
        alloc.add_adapter(n, d["A"], d["E"], d["B"], d["gA"], None if n == ad.names[2] else d["gE"], d["gB"])
    with pytest.raises(adalora.MissingGradientError) as e:
        alloc.step(0)
    assert str(e.value) == ("step(0): adapter 'layers.2.proj' has no gradient for lora_E (null view); the importance "
                            "metric 'sensitivity_uncertainty' needs every gradient: run backward() before step(), and "
                            "register the gradient tensors with rebind() once they exist")
    assert alloc.last_step is None


@pytest.mark.parametrize("key,what", [("gB", "the gradient of lora_B"), ("A", "lora_A"), ("E", "lora_E")])
def test_non_finite_leaves_everything_unchanged(key, what):
    ad, ref = Adapters(), Adapters()
    alloc = ad.register(adalora.RankAllocator(small_config()))
    expected = run(ref.register(adalora.RankAllocator(small_config())), ref, range(30))
    got = run(alloc, ad, range(8))
    ad.fill(8)
    ad.t[1][key].flat[3] = np.nan
    ad.t[1][key].flat[4] = np.inf
    before = ad.lambdas()
    with pytest.raises(adalora.NonFiniteError) as e:
        alloc.step(8)
    n = ad.t[1][key].size
    assert str(e.value) == (f"step(8): adapter 'layers.1.proj': {what} has 2 of {n} elements NaN or infinite; skip "
                            "this optimizer step (e.g. a loss-scaler overflow) without calling step(), or fix the "
                            "source of the non-finite values")
    assert alloc.last_step == 7
    for x, y in zip(before, ad.lambdas()):
        assert np.array_equal(x, y, equal_nan=True)
    got += run(alloc, ad, range(8, 30))  # the same step again, with finite values: as if nothing had happened
    same_runs(expected, got)


def test_restore_mismatches():
    ad = Adapters()
    a = ad.register(adalora.RankAllocator(small_config()))
    run(a, ad, range(3))
    state = a.state_dict()
    other_cfg = Adapters().register(adalora.RankAllocator(small_config(target_r=2)))
    with pytest.raises(adalora.UsageError) as e:
        other_cfg.load_state_dict(state)
    assert str(e.value) == ("restore_state: the checkpoint does not match this allocator: the configs differ "
                            "(target_r: 3 vs 2)")
    fewer = adalora.RankAllocator(small_config())
    ad2 = Adapters(shapes=[(6, 12, 8)])
    ad2.register(fewer)
    with pytest.raises(adalora.UsageError, match=re.escape("restore_state: the checkpoint does not match this "
                                                           "allocator: 4 adapters vs 1 registered")):
        fewer.load_state_dict(state)
    renamed = adalora.RankAllocator(small_config())
    ad3 = Adapters()
    ad3.names = ["x" + n for n in ad3.names]
    ad3.register(renamed)
    with pytest.raises(adalora.UsageError, match=re.escape("adapter 0 is 'layers.0.proj' (r 6, in 12, out 8) in the "
                                                           "checkpoint but 'xlayers.0.proj' (r 6, in 12, out 8) here")):
        renamed.load_state_dict(state)
    wrong = dict(state, importance=state["importance"][:-1])
    fresh = Adapters().register(adalora.RankAllocator(small_config()))
    with pytest.raises(adalora.UsageError, match="the importance holds [0-9]+ values, not a whole number of planes"):
        fresh.load_state_dict(wrong)
    assert fresh.last_step is None


def test_malformed_states_and_files(tmp_path):
    ad = Adapters()
    a = ad.register(adalora.RankAllocator(small_config()))
    run(a, ad, range(6))
    state = a.state_dict()
    fresh = Adapters().register(adalora.RankAllocator(small_config()))
    for key in ("config", "importance", "keep", "last_step"):
        broken = {k: v for k, v in state.items() if k != key}
        with pytest.raises(adalora.FormatError, match=f"the state has no '{key}'"):
            fresh.load_state_dict(broken)
    with pytest.raises(adalora.FormatError, match="'keep' holds a value other than 0 or 1"):
        fresh.load_state_dict(dict(state, keep=state["keep"] * 2))
    with pytest.raises(adalora.FormatError, match="not an allocator state"):
        fresh.load_state_dict(dict(state, format="something/else"))
    with pytest.raises(adalora.FormatError, match="wrong type"):
        fresh.load_state_dict(dict(state, budget="many"))
    with pytest.raises(adalora.ConfigError):
        fresh.load_state_dict(dict(state, config=dict(state["config"], total_step=0)))
    assert fresh.last_step is None
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00")
    with pytest.raises(adalora.FormatError):
        fresh.load(bad)
    a.save(tmp_path / "ok.safetensors")
    data = bytearray((tmp_path / "ok.safetensors").read_bytes())
    (tmp_path / "cut.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(adalora.FormatError):
        fresh.load(tmp_path / "cut.safetensors")
    with pytest.raises(adalora.Error):
        fresh.load(tmp_path / "missing.safetensors")
    assert fresh.last_step is None
