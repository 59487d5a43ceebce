"""adalora.RankAllocator, the low-level API: registration of numpy and torch arrays without copies, the step
report and queries, state_dict / load_state_dict and checkpoint files resuming bit for bit, bfloat16."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import adalora
from alloc_helpers import SHAPES, Adapters, bits, run, same_runs, small_config

CPU_BACKENDS = [b for b in adalora.backends if b != "cuda"]


def test_module_facts():
    assert "eigen" in adalora.backends
    assert adalora.default_cpu_backend in adalora.backends
    assert adalora.get_num_threads() >= 1
    assert adalora.checkpoint_format == "adalora-checkpoint/allocator/1"
    c = adalora.Config(total_step=10)
    assert (c.init_r, c.target_r, c.tinit, c.tfinal, c.deltaT, c.beta1, c.beta2) == (12, 8, 0, 0, 1, 0.85, 0.85)
    assert c.final_step == 10
    assert c.to_dict()["total_step"] == 10
    assert "total_step=10" in repr(c)


def test_queries_before_and_after_steps():
    ad = Adapters()
    alloc = ad.register(adalora.RankAllocator(small_config(), backend="eigen"))
    b0 = sum(r for r, _, _ in SHAPES)
    assert alloc.adapter_count == len(alloc) == 4 and alloc.adapter_names == ad.names
    assert alloc.initial_budget == b0 and alloc.budget == b0 and alloc.target_budget == 3 * 4
    assert alloc.threshold is None and alloc.last_step is None and not alloc.pattern_frozen
    assert alloc.ranks() == [6, 6, 6, 6] and alloc.rank_pattern(ad.names[0]) == [True] * 6
    assert alloc.triplet_scores(ad.names[0]) == []
    assert alloc.dtype == "float32" and alloc.backend == "eigen"
    phases = [alloc.phase_of(t) for t in (0, 3, 4, 25, 26)]
    assert phases == ["warmup", "warmup", "budgeting", "final_force", "final_force"]
    res = run(alloc, ad, range(30))
    reports = [r for r, _, _ in res]
    assert reports[0] == (0, "warmup", b0, False, True, None)
    assert reports[4][1:4] == ("budgeting", reports[4][2], True)
    assert reports[25][1] == "final_force" and reports[26][1] == "final_pattern"
    assert alloc.pattern_frozen and not alloc.importance_live and alloc.last_step == 29
    assert sum(alloc.ranks()) == 12 and alloc.budget == 12
    # λ masked in place: the kept pattern is what rank_pattern reports
    for n, d in zip(ad.names, ad.t):
        pattern = alloc.rank_pattern(n)
        assert [bool(v != 0) for v in d["E"].ravel()] == pattern or not all(d["E"].ravel() != 0)
        assert all(d["E"].ravel()[i] == 0 for i, keep in enumerate(pattern) if not keep)
    assert "adapters=4" in repr(alloc)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_agree_bit_for_bit(backend):
    a1, a2 = Adapters(), Adapters()
    r1 = run(a1.register(adalora.RankAllocator(small_config(), backend="eigen")), a1, range(30))
    r2 = run(a2.register(adalora.RankAllocator(small_config(), backend=backend)), a2, range(30))
    same_runs(r1, r2)


def test_torch_tensors_without_copies():
    torch.manual_seed(0)
    cfg = small_config()
    params = []
    alloc = adalora.RankAllocator(cfg)
    for i, (r, fin, fout) in enumerate(SHAPES):
        A = torch.nn.Parameter(torch.randn(r, fin) * 0.3)
        E = torch.nn.Parameter(torch.randn(r, 1) * 0.3)
        B = torch.nn.Parameter(torch.randn(fout, r) * 0.3)
        for p in (A, E, B):
            p.grad = torch.randn_like(p) * 1e-2
        alloc.add_adapter(f"m{i}", A, E, B, A.grad, E.grad, B.grad)
        params.append((A, E, B))
    for t in range(30):
        alloc.step(t)
    for i, (_, E, _) in enumerate(params):
        pattern = alloc.rank_pattern(f"m{i}")
        e = E.detach().view(-1)
        assert all(e[k] == 0 for k, keep in enumerate(pattern) if not keep)  # masked in the Parameter's own memory
    assert sum(alloc.ranks()) == 12 and sum(int((E.detach() == 0).sum()) for _, E, _ in params) >= 12


def test_strided_views():
    # lora_A given transposed (a column-major view of an (in, r) array), lora_B as a slice: same results
    a1, a2 = Adapters(), Adapters()
    r1 = run(a1.register(adalora.RankAllocator(small_config())), a1, range(12))
    alloc = adalora.RankAllocator(small_config())
    storage = []
    for n, d in zip(a2.names, a2.t):
        At = np.asfortranarray(d["A"])       # same values, column-major
        gAt = np.asfortranarray(d["gA"])
        Bwide = np.zeros((d["B"].shape[0], d["B"].shape[1] * 2), np.float32)
        storage.append((At, gAt, Bwide))
        alloc.add_adapter(n, At, d["E"], Bwide[:, ::2], gAt, d["gE"], d["gB"])
    out = []
    for t in range(12):
        a2.fill(t)
        for d, (At, gAt, Bwide) in zip(a2.t, storage):
            At[...] = d["A"]
            gAt[...] = d["gA"]
            Bwide[:, ::2] = d["B"]
        r = alloc.step(t)
        out.append(((r.step, r.phase, r.budget, r.masked, r.importance_updated, r.threshold), a2.lambdas(),
                    [alloc.triplet_scores(n) for n in a2.names]))
    same_runs(r1, out)


def test_one_dimensional_lora_E():
    a1, a2 = Adapters(), Adapters()
    r1 = run(a1.register(adalora.RankAllocator(small_config())), a1, range(10))
    alloc = adalora.RankAllocator(small_config())
    for n, d in zip(a2.names, a2.t):
        alloc.add_adapter(n, d["A"], d["E"][:, 0], d["B"], d["gA"], d["gE"][:, 0], d["gB"])
    same_runs(r1, run(alloc, a2, range(10)))


def test_gradients_registered_later():
    ad = Adapters()
    alloc = adalora.RankAllocator(small_config())
    for n, d in zip(ad.names, ad.t):
        alloc.add_adapter(n, d["A"], d["E"], d["B"])
    with pytest.raises(adalora.MissingGradientError):
        alloc.step(0)
    for n, d in zip(ad.names, ad.t):
        alloc.rebind_gradients(n, d["gA"], d["gE"], d["gB"])
    ref = Adapters()
    same_runs(run(ref.register(adalora.RankAllocator(small_config())), ref, range(10)), run(alloc, ad, range(10)))


def test_gradients_all_zero():
    ad = Adapters()
    alloc = ad.register(adalora.RankAllocator(small_config()))
    assert not alloc.gradients_all_zero()
    for d in ad.t:
        d["gA"][...] = 0
        d["gE"][...] = 0
        d["gB"][...] = 0
    assert alloc.gradients_all_zero()
    ad.t[3]["gB"][1, 2] = 1e-30
    assert not alloc.gradients_all_zero()


@pytest.mark.parametrize("split", [2, 4, 5, 24, 25, 26, 28])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_state_dict_resume_is_bit_exact(split, backend):
    a1 = Adapters()
    whole = a1.register(adalora.RankAllocator(small_config(), backend=backend))
    full = run(whole, a1, range(30))
    a2 = Adapters()
    first = adalora.RankAllocator(small_config(), backend=backend)
    head = run(a2.register(first), a2, range(split))
    state = first.state_dict()
    assert state["last_step"] == split - 1
    a3 = Adapters()
    second = a3.register(adalora.RankAllocator(small_config(), backend=backend))
    second.load_state_dict(state)
    tail = run(second, a3, range(split, 30))
    same_runs(full, head + tail)
    assert second.budget == full[-1][0][2]
    s_whole, s_second = whole.state_dict(), second.state_dict()
    for k in s_whole:
        if isinstance(s_whole[k], np.ndarray):
            assert np.array_equal(s_whole[k].view(np.uint8), s_second[k].view(np.uint8)), k
        else:
            assert s_whole[k] == s_second[k], k


def test_state_dict_through_torch_save(tmp_path):
    a1 = Adapters()
    full = run(a1.register(adalora.RankAllocator(small_config())), a1, range(30))
    a2 = Adapters()
    first = a2.register(adalora.RankAllocator(small_config()))
    head = run(first, a2, range(10))
    sd = first.state_dict()
    sd = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in sd.items()}
    torch.save(sd, tmp_path / "alloc.pt")
    back = torch.load(tmp_path / "alloc.pt", weights_only=True)
    a3 = Adapters()
    second = a3.register(adalora.RankAllocator(small_config()))
    second.load_state_dict(back)
    same_runs(full, head + run(second, a3, range(10, 30)))


def test_checkpoint_files(tmp_path):
    a1 = Adapters()
    full = run(a1.register(adalora.RankAllocator(small_config())), a1, range(30))
    a2 = Adapters()
    first = a2.register(adalora.RankAllocator(small_config()))
    head = run(first, a2, range(15))
    first.save(tmp_path / "alloc.safetensors")
    a3 = Adapters()
    second = a3.register(adalora.RankAllocator(small_config()))
    second.load(str(tmp_path / "alloc.safetensors"))
    same_runs(full, head + run(second, a3, range(15, 30)))
    # the file is the C++ checkpoint format: safetensors with the allocator's metadata
    from safetensors import safe_open
    md = safe_open(str(tmp_path / "alloc.safetensors"), "np").metadata()
    assert md["format"] == adalora.checkpoint_format


def widen(b: torch.Tensor) -> torch.Tensor:
    return b.float()


def test_bfloat16_matches_float32_of_the_same_values():
    """bf16 tensors are widened exactly and the state is float32: the same run as float32 tensors holding the
    widened values, bit for bit."""
    torch.manual_seed(3)
    cfg = small_config()
    bf, f32 = [], []
    a_bf = adalora.RankAllocator(cfg)
    a_f = adalora.RankAllocator(cfg)
    for i, (r, fin, fout) in enumerate(SHAPES):
        shapes = [(r, fin), (r, 1), (fout, r)] * 2
        tb = [torch.zeros(s, dtype=torch.bfloat16) for s in shapes]
        tf = [torch.zeros(s) for s in shapes]
        a_bf.add_adapter(f"m{i}", *tb)
        a_f.add_adapter(f"m{i}", *tf)
        bf.append(tb)
        f32.append(tf)
    assert a_bf.dtype == "bfloat16" and a_f.dtype == "float32"
    g = torch.Generator().manual_seed(5)
    for t in range(30):
        for tb, tf in zip(bf, f32):
            for k, (x, y) in enumerate(zip(tb, tf)):
                v = (torch.randn(x.shape, generator=g) * (1e-2 if k >= 3 else 0.3)).to(torch.bfloat16)
                x.copy_(v)
                y.copy_(widen(v))
        ra, rb = a_bf.step(t), a_f.step(t)
        assert (ra.phase, ra.budget, ra.masked, ra.threshold) == (rb.phase, rb.budget, rb.masked, rb.threshold)
        for i, (tb, tf) in enumerate(zip(bf, f32)):
            assert torch.equal(widen(tb[1]), tf[1]), (t, i)
            assert a_bf.triplet_scores(f"m{i}") == a_f.triplet_scores(f"m{i}")
    assert a_bf.ranks() == a_f.ranks()
