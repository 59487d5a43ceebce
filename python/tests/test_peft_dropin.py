"""adalora.peft.attach against PEFT's own RankAllocator on a tiny transformers model (LLaMA architecture, random
weights, no downloads) wrapped by PEFT's AdaLoRA: the same training run twice from the same seed, once with PEFT's
allocator and once with the drop-in, identical at every one of its 120 steps (losses, λ, masks, rank_pattern,
budgets); the saved adapters load back in PEFT; a resumed run is bit-exact; bfloat16; misuse is an error."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from peft.tuners.adalora import RankAllocator as PeftRankAllocator
from safetensors.torch import load_file

import adalora
import adalora.peft
import tiny_model as tm

STEPS = 120  # total_step 120: warm-up 0..10, budgeting 11..89, final pattern fixed at 90, kept to 119


@pytest.fixture(scope="module")
def runs():
    data = tm.batches(STEPS)
    m_peft = tm.peft_model()
    r_peft = tm.train(m_peft, STEPS, data=data)
    m_ours = tm.peft_model()
    alloc = adalora.peft.attach(m_ours)
    budgets = []
    r_ours = tm.train(m_ours, STEPS, data=data, after_update=lambda t: budgets.append(alloc.allocator.budget))
    return dict(peft=(m_peft, r_peft), ours=(m_ours, r_ours, alloc, budgets), data=data)


def test_attach_replaces_the_allocator(runs):
    m, _, alloc, _ = runs["ours"]
    assert m.base_model.rankallocator is alloc
    assert alloc.allocator.adapter_count == 2 * len(tm.TARGETS)
    assert alloc.init_bgt == 6 * 14 and alloc.target_bgt == 3 * 14
    assert alloc.allocator.backend == adalora.default_cpu_backend
    assert alloc.allocator.adapter_names[0] == "model.layers.0.self_attn.q_proj"


def test_identical_to_peft_at_every_step(runs):
    _, r_peft = runs["peft"]
    _, r_ours, _, budgets = runs["ours"]
    assert len(r_peft) == len(r_ours) == STEPS
    mask_steps = 0
    for t, (a, b) in enumerate(zip(r_peft, r_ours)):
        assert a.loss == b.loss, (t, a.loss, b.loss)
        assert a.lambdas.keys() == b.lambdas.keys()
        for k in a.lambdas:
            assert torch.equal(a.lambdas[k].view(torch.int32), b.lambdas[k].view(torch.int32)), (t, k)
            assert torch.equal(a.lambdas[k] == 0, b.lambdas[k] == 0), (t, k)  # the masks
        assert a.rank_pattern == b.rank_pattern, t
        if a.rank_pattern is not None:
            assert list(a.rank_pattern) == list(b.rank_pattern), t  # same keys, same order
        if t > 0 and a.rank_pattern is not r_peft[t - 1].rank_pattern and a.rank_pattern != r_peft[t - 1].rank_pattern:
            mask_steps += 1
    # PEFT's budget schedule (a pure function of t) against the drop-in's budgets
    sched = PeftRankAllocator.__new__(PeftRankAllocator)
    sched.peft_config, sched.init_bgt, sched.target_bgt = tm.adalora_config(), 6 * 14, 3 * 14
    for t, b in enumerate(budgets):
        assert b == sched.budget_schedule(t)[0], t
    assert mask_steps > 10  # the patterns changed many times: the run really allocated
    final = r_ours[-1].rank_pattern
    kept = sum(sum(v) for v in final.values())
    assert kept == 3 * 14 and any(sum(v) != 3 for v in final.values())  # the budget moved between modules


def test_rank_pattern_written_at_final_step(runs):
    m_peft, r_peft = runs["peft"]
    m_ours, r_ours, alloc, _ = runs["ours"]
    cfg_ours = m_ours.peft_config["default"]
    cfg_peft = m_peft.peft_config["default"]
    assert cfg_ours.rank_pattern == cfg_peft.rank_pattern == r_ours[90].rank_pattern
    assert list(cfg_ours.rank_pattern) == [n for n, _ in m_ours.base_model.model.named_parameters() if "lora_E" in n]
    assert all(isinstance(v, list) and all(type(x) is bool for x in v) for v in cfg_ours.rank_pattern.values())
    assert alloc.allocator.pattern_frozen and not alloc.allocator.importance_live


# PEFT's own warnings, the same with PEFT's allocator: its saved rank_pattern keys (truncated to '<module>.lora_E')
# "match no module" yet load; modules pruned to rank 0 save as (0, in) tensors, which it takes for unsharded shards
@pytest.mark.filterwarnings("ignore:The following rank_pattern keys did not match")
@pytest.mark.filterwarnings("ignore:.*LoRA tensor\\(s\\) have invalid shape")
def test_saved_adapters_load_back_in_peft(runs, tmp_path):
    m_peft, _ = runs["peft"]
    m_ours, _, _, _ = runs["ours"]
    m_peft.save_pretrained(tmp_path / "peft")
    m_ours.save_pretrained(tmp_path / "ours")
    w_peft = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    w_ours = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    assert w_peft.keys() == w_ours.keys()
    for k in w_peft:
        assert torch.equal(w_peft[k], w_ours[k]), k
    c_peft = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    c_ours = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert c_peft == c_ours and c_ours["rank_pattern"]
    # the saved adapters are resized to the kept ranks
    r = {k: v.shape for k, v in w_ours.items() if "lora_E" in k}
    assert sorted({s[0] for s in r.values()}) != [6]
    loaded = PeftModel.from_pretrained(tm.tiny_llama(), tmp_path / "ours")
    loaded.eval()
    m_ours.eval()
    ids = runs["data"][0]
    with torch.no_grad():
        want = m_ours(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    m_ours.train()


def test_resume_is_bit_exact(runs, tmp_path):
    """Training stopped at step 50 (model, optimizer, RNG and allocator state saved) and resumed in a new process's
    worth of objects ends exactly where the uninterrupted run ends."""
    _, r_full, _, _ = runs["ours"]
    data = runs["data"]
    split = 50

    def loop(model, opt, t0, t1, out):
        tuner = model.base_model
        for t in range(t0, t1):
            loss = model(input_ids=data[t], labels=data[t]).loss
            loss.backward()
            opt.step()
            tuner.update_and_allocate(t)
            out.append((float(loss.detach()),
                        {n: p.detach().clone() for n, p in model.named_parameters() if "lora_E" in n},
                        copy.deepcopy(tuner.peft_config["default"].rank_pattern)))
            opt.zero_grad(set_to_none=True)

    torch.manual_seed(7)
    m1 = tm.peft_model()
    a1 = adalora.peft.attach(m1)
    opt1 = torch.optim.AdamW([p for p in m1.parameters() if p.requires_grad], lr=2e-2)
    got = []
    torch.manual_seed(7)
    loop(m1, opt1, 0, split, got)
    torch.save({"model": m1.state_dict(), "opt": opt1.state_dict(), "rng": torch.get_rng_state(),
                "alloc": a1.state_dict(), "pattern": m1.peft_config["default"].rank_pattern}, tmp_path / "ckpt.pt")
    del m1, opt1, a1
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    m2 = tm.peft_model(seed=99)  # other initial weights: everything must come from the checkpoint
    m2.load_state_dict(ck["model"])
    m2.peft_config["default"].rank_pattern = ck["pattern"]
    a2 = adalora.peft.attach(m2)
    a2.load_state_dict(ck["alloc"])
    opt2 = torch.optim.AdamW([p for p in m2.parameters() if p.requires_grad], lr=2e-2)
    opt2.load_state_dict(ck["opt"])
    torch.set_rng_state(ck["rng"])
    loop(m2, opt2, split, STEPS, got)
    assert len(got) == STEPS
    for t, (g, w) in enumerate(zip(got, r_full)):
        assert g[0] == w.loss, t
        for k in g[1]:
            assert torch.equal(g[1][k], w.lambdas[k]), (t, k)
        assert g[2] == w.rank_pattern, t


def test_persistent_gradients_also_work():
    """zero_grad(set_to_none=False) keeps the gradient tensors: same results as PEFT."""
    data = tm.batches(40)
    r_peft = tm.train(tm.peft_model(total_step=40, tinit=4, tfinal=10), 40, data=data, set_to_none=False)
    m = tm.peft_model(total_step=40, tinit=4, tfinal=10)
    adalora.peft.attach(m)
    r_ours = tm.train(m, 40, data=data, set_to_none=False)
    for t, (a, b) in enumerate(zip(r_peft, r_ours)):
        assert a.loss == b.loss and a.rank_pattern == b.rank_pattern, t
        assert all(torch.equal(a.lambdas[k], b.lambdas[k]) for k in a.lambdas), t


@pytest.mark.parametrize("set_to_none", [True, False])
def test_allocator_after_zero_grad_is_an_error(set_to_none):
    m = tm.peft_model(total_step=40, tinit=4, tfinal=10)
    adalora.peft.attach(m)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    ids = tm.batches(1)[0]
    m(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=set_to_none)
    with pytest.raises(adalora.peft.ZeroGradientError, match=r"step\(0\): every gradient of the 14 adapters is "
                                                             r"absent or zero"):
        m.base_model.update_and_allocate(0)
    assert isinstance(adalora.peft.ZeroGradientError("x"), adalora.UsageError)
    assert m.base_model.rankallocator.allocator.last_step is None  # nothing ran


def test_non_finite_gradients_are_refused():
    m = tm.peft_model(total_step=40, tinit=4, tfinal=10)
    adalora.peft.attach(m)
    ids = tm.batches(1)[0]
    m(input_ids=ids, labels=ids).loss.backward()
    p = dict(m.named_parameters())["base_model.model.model.layers.1.mlp.up_proj.lora_B.default"]
    p.grad[0, 0] = float("nan")
    with pytest.raises(adalora.NonFiniteError, match="adapter 'model.layers.1.mlp.up_proj': the gradient of lora_B "
                                                     "has 1 of"):
        m.base_model.update_and_allocate(0)


def test_attach_misuse():
    with pytest.raises(TypeError, match="is not a PEFT AdaLoRA model"):
        adalora.peft.attach(torch.nn.Linear(2, 2))
    m = tm.peft_model(total_step=40, tinit=4, tfinal=10)
    with pytest.raises(adalora.UsageError, match="the trainable adapter is 'default', not 'other'"):
        adalora.peft.attach(m, "other")
    ids = tm.batches(1)[0]
    m(input_ids=ids, labels=ids).loss.backward()
    m.base_model.update_and_allocate(0)  # PEFT's allocator runs first
    with pytest.raises(adalora.UsageError, match="PEFT's allocator has already run"):
        adalora.peft.attach(m)
    m2 = tm.peft_model(total_step=40, tinit=4, tfinal=10)
    a = adalora.peft.attach(m2)
    assert adalora.peft.attach(m2) is not a  # before any step: attaching again is allowed
    m2(input_ids=ids, labels=ids).loss.backward()
    m2.base_model.update_and_allocate(0)
    with pytest.raises(adalora.UsageError, match="already attached and has run"):
        adalora.peft.attach(m2)
    with pytest.raises(adalora.UsageError, match="force_mask=True"):
        m2.base_model.rankallocator.update_and_allocate(m2.base_model.model, 1, force_mask=True)
    with pytest.raises(adalora.UsageError, match=r"step\(0\): the allocator already ran step 0"):
        m2.base_model.update_and_allocate(0)


def test_set_total_step_before_training():
    m = tm.peft_model(total_step=40, tinit=4, tfinal=10)
    a = adalora.peft.attach(m)
    a.set_total_step(60)
    assert a.allocator.config.total_step == 60 and m.peft_config["default"].total_step == 60
    assert a.allocator.adapter_count == 14


def test_foreign_rank_pattern_is_applied_like_peft(runs):
    m = tm.peft_model(total_step=40, tinit=4, tfinal=10)
    a = adalora.peft.attach(m)
    pattern = {n: [i % 2 == 0 for i in range(6)] for n, _ in m.base_model.model.named_parameters()
               if "lora_E" in n}
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_E" in n:
                p.fill_(1.0)
    a.mask_using_rank_pattern(m.base_model.model, pattern)
    for n, p in m.base_model.model.named_parameters():
        if "lora_E" in n:
            assert p.view(-1).tolist() == [1.0, 0.0] * 3


def test_bfloat16_masks_against_peft(capsys):
    """PEFT keeps bf16 importance for bf16 parameters, adalora fp32: on PEFT's own bf16 trajectory, how often do the
    two pick different masks? (Reported; the drop-in trains a bf16 model to the end.)"""
    steps = STEPS
    data = tm.batches(steps)
    m = tm.peft_model(dtype=torch.bfloat16)
    params = dict(m.base_model.model.named_parameters())
    shadow_alloc = adalora.RankAllocator(adalora.peft.config_from_peft(m.peft_config["default"]))
    shadow = {}
    for n, p in params.items():
        if ".lora_A.default" in n:
            mod = n[: -len(".lora_A.default")]
            ts = [params[f"{mod}.{k}.default"] for k in ("lora_A", "lora_E", "lora_B")]
            copies = [t.detach().clone() for t in ts] + [torch.zeros_like(t) for t in ts]
            shadow[mod] = (ts, copies)
            shadow_alloc.add_adapter(mod, *copies)
    assert shadow_alloc.dtype == "bfloat16"
    cfg = m.peft_config["default"]
    compared = differing = values = values_differing = 0

    def before(t):
        for ts, copies in shadow.values():
            for k in range(3):
                copies[k].copy_(ts[k].detach())
                copies[3 + k].copy_(ts[k].grad)
        shadow_alloc.step(t)

    def after(t):
        nonlocal compared, differing, values, values_differing
        rep_phase = shadow_alloc.phase_of(t)
        if t == cfg.total_step - cfg.tfinal or (rep_phase == "budgeting" and t % cfg.deltaT == 0):
            compared += 1
            diff = 0
            for mod in shadow:
                theirs = cfg.rank_pattern[f"{mod}.lora_E.default"]
                ours = shadow_alloc.rank_pattern(mod)
                values += len(ours)
                diff += sum(x != y for x, y in zip(theirs, ours))
            values_differing += diff
            differing += diff > 0

    tm.train(m, steps, data=data, before_update=before, after_update=after, record=False)
    with capsys.disabled():
        print(f"\nbf16: adalora's fp32-state masks differ from PEFT's bf16-state masks at {differing} of {compared} "
              f"mask steps ({values_differing} of {values} singular-value decisions, "
              f"{100.0 * values_differing / max(values, 1):.2f} %)")
    assert compared >= 40
    # the drop-in trains the bf16 model to the end
    m2 = tm.peft_model(dtype=torch.bfloat16)
    a2 = adalora.peft.attach(m2)
    rec = tm.train(m2, steps, data=data)
    assert a2.allocator.dtype == "bfloat16" and a2.allocator.pattern_frozen
    assert sum(sum(v) for v in rec[-1].rank_pattern.values()) == 3 * 14
