"""The drop-in for Hugging Face PEFT: adalora's C++ allocator in place of PEFT's AdaLoRA ``RankAllocator``.

One line in a PEFT training script::

    model = get_peft_model(base, AdaLoraConfig(...))
    adalora.peft.attach(model)            # the only change
    ...
    loss.backward(); optimizer.step()
    model.base_model.update_and_allocate(global_step)   # PEFT's own call, now running adalora's allocator
    optimizer.zero_grad()

``attach`` replaces the model's ``rankallocator`` with :class:`RankAllocator`, which has PEFT's constructor and the
methods PEFT's ``AdaLoraModel.update_and_allocate`` calls (``update_and_allocate``, ``reset_ipt``,
``mask_using_rank_pattern``), returns the same budgets and ``rank_pattern`` dicts (so PEFT writes ``rank_pattern``
into the adapter's config as it always does, and ``save_pretrained`` / ``from_pretrained`` keep working), and masks
λ (``lora_E``) in place exactly as PEFT does for float32 parameters.

Differences from PEFT's allocator, on purpose:

* bfloat16 parameters: PEFT keeps its importance EMAs in bfloat16 (``torch.zeros_like(p)``), adalora keeps them in
  float32 (the parameters and gradients are widened exactly). Masks then differ at some mask steps; the README's
  "From Python / PEFT" section gives the measured rate.
* Misuse is an error, not silence: a step that sees every gradient absent or zero (the allocator called after
  ``zero_grad()``) raises :class:`ZeroGradientError`; non-finite values raise ``NonFiniteError``; steps must increase.
* DeepSpeed ZeRO-3 (partitioned parameters) is not supported.
"""
from __future__ import annotations

from typing import Any

from . import _core
from ._core import RankAllocator as _CoreAllocator

__all__ = ["RankAllocator", "ZeroGradientError", "attach", "config_from_peft", "adalora_model"]


class ZeroGradientError(_core.UsageError):
    """Every gradient of the adapters was absent or zero at an allocator step that needs them: the allocator ran
    after the gradients were zeroed, where PEFT's allocator would silently train plain LoRA."""


_PHASES_WITH_GRADIENTS = ("warmup", "budgeting")


def config_from_peft(peft_config: Any) -> _core.Config:
    """adalora.Config from a PEFT ``AdaLoraConfig`` (same field names)."""
    total_step = getattr(peft_config, "total_step", None)
    if total_step is None:
        raise _core.ConfigError(
            "invalid adalora_config: total_step = None; set it to the number of optimizer steps of the run "
            "(a positive number)")
    return _core.Config(
        init_r=int(peft_config.init_r), target_r=int(peft_config.target_r), tinit=int(peft_config.tinit),
        tfinal=int(peft_config.tfinal), deltaT=int(peft_config.deltaT), beta1=float(peft_config.beta1),
        beta2=float(peft_config.beta2), orth_reg_weight=float(peft_config.orth_reg_weight),
        total_step=int(total_step), lora_alpha=float(peft_config.lora_alpha),
        lora_dropout=float(peft_config.lora_dropout))


class RankAllocator:
    """PEFT's ``RankAllocator(model, peft_config, adapter_name)`` on adalora's C++ allocator.

    Registers every ``lora_A`` / ``lora_E`` / ``lora_B`` of ``adapter_name`` in ``model`` (PEFT's parameter names:
    ``<module>.lora_A.<adapter_name>``), in the model's parameter order. At each step it follows the gradients that
    PyTorch re-allocates after ``zero_grad(set_to_none=True)`` (by pointer, without copies).

    ``backend``: see ``adalora.RankAllocator`` ('auto' picks CUDA for CUDA tensors when the package has it, else
    the fastest CPU backend). ``check_zero_gradients``: raise :class:`ZeroGradientError` when a step that needs
    gradients sees all of them absent or zero.
    """

    def __init__(self, model, peft_config, adapter_name, *, backend: str = "auto", check_zero_gradients: bool = True):
        self.peft_config = peft_config
        self.adapter_name = adapter_name
        self.beta1 = peft_config.beta1
        self.beta2 = peft_config.beta2
        self.backend = backend
        self.check_zero_gradients = check_zero_gradients
        self._register(model)

    # ---- registration ------------------------------------------------------------------------------------------

    def _register(self, model) -> None:
        params = dict(model.named_parameters())
        suffix_a = f"lora_A.{self.adapter_name}"
        self._modules: list[str] = []      # module paths, registration order (the model's parameter order)
        self._e_names: list[str] = []      # PEFT's rank_pattern keys: <module>.lora_E.<adapter>
        self._params: list = []            # lora_A, lora_E, lora_B of each adapter, flat
        name_set = set()
        self.init_bgt = 0
        for n, p in params.items():
            if suffix_a not in n:
                continue
            name_m = n.replace("lora_A", "%s")
            name_set.add(name_m)
            try:
                e, b = params[name_m % "lora_E"], params[name_m % "lora_B"]
            except KeyError:
                raise _core.ShapeError(f"adapter '{n}': no matching lora_E / lora_B parameter (PEFT's AdaLoRA "
                                       "names are <module>.lora_A.<adapter>, .lora_E.<adapter>, .lora_B.<adapter>)")
            self.init_bgt += p.size(0)
            self._modules.append(name_m.replace(f".%s.{self.adapter_name}", ""))
            self._e_names.append(name_m % "lora_E")
            self._params.extend((p, e, b))
        self.name_set = sorted(name_set)
        self.target_bgt = self.peft_config.target_r * len(self.name_set)
        self._core = _CoreAllocator(config_from_peft(self.peft_config), backend=self.backend)
        for i, module in enumerate(self._modules):
            a, e, b = self._params[3 * i: 3 * i + 3]
            self._core.add_adapter(module, a, e, b, a.grad, e.grad, b.grad)
        self._pattern: dict | None = None       # the latest rank_pattern handed to PEFT

    def set_total_step(self, total_step: int) -> None:
        """PEFT's ``set_total_step``: only before the first step (the schedule depends on it)."""
        if self._core.last_step is not None:
            raise _core.UsageError(
                f"set_total_step({total_step}): the allocator has already run step {self._core.last_step}; set "
                "total_step before training starts")
        self.peft_config.total_step = total_step
        old = self._core
        self._core = _CoreAllocator(config_from_peft(self.peft_config), backend=self.backend)
        for i, module in enumerate(old.adapter_names):
            a, e, b = self._params[3 * i: 3 * i + 3]
            self._core.add_adapter(module, a, e, b, a.grad, e.grad, b.grad)

    # ---- what PEFT's AdaLoraModel calls ------------------------------------------------------------------------

    def reset_ipt(self) -> None:
        """PEFT drops its importance at T − tfinal; adalora already released it in that step."""

    def update_and_allocate(self, model, global_step: int, force_mask: bool = False):
        """One allocator step: returns ``(budget, rank_pattern)``, ``rank_pattern`` being None unless this step
        selected a new pattern (PEFT's return values)."""
        core = self._core
        t = int(global_step)
        phase = core.phase_of(t)
        if force_mask and phase != "final_force":
            raise _core.UsageError(
                f"update_and_allocate(step {t}, force_mask=True): adalora forces the mask only at the step that fixes "
                f"the final pattern, total_step - tfinal = {core.config.final_step} (and at the first step past it)")
        if phase in _PHASES_WITH_GRADIENTS:
            core._follow_torch_gradients([p.grad for p in self._params])
            if self.check_zero_gradients and core.gradients_all_zero():
                raise ZeroGradientError(
                    f"step({t}): every gradient of the {core.adapter_count} adapters is absent or zero, so the "
                    "importance would learn nothing and AdaLoRA would train plain LoRA: the allocator ran after the "
                    "gradients were zeroed. Call model.base_model.update_and_allocate(step) after optimizer.step() "
                    "and before optimizer.zero_grad() (with the Hugging Face Trainer: adalora.trainer.AdaLoraCallback, "
                    "which runs at on_optimizer_step)")
        rep = core.step(t)
        pattern = None
        if rep.phase == "final_force" or (rep.phase == "budgeting" and rep.masked):
            pattern = self.rank_pattern()
            self._pattern = pattern
        return rep.budget, pattern

    def mask_using_rank_pattern(self, model, rank_pattern) -> None:
        """After T − tfinal: re-applies the frozen pattern to λ. When ``rank_pattern`` is not the one this
        allocator fixed (edited, or loaded from elsewhere), applies it as PEFT does."""
        core = self._core
        if core.pattern_frozen and (rank_pattern is self._pattern or self._same_pattern(rank_pattern)):
            self._pattern = rank_pattern
            core.step(core.last_step + 1)
            return
        self._mask_like_peft(model, rank_pattern)

    # ---- queries -----------------------------------------------------------------------------------------------

    def rank_pattern(self) -> dict:
        """The latest selection as PEFT's ``rank_pattern``: {'<module>.lora_E.<adapter>': [bool, ...]}."""
        core = self._core
        return {e: core.rank_pattern(m) for m, e in zip(self._modules, self._e_names)}

    @property
    def allocator(self) -> _CoreAllocator:
        """The underlying ``adalora.RankAllocator``."""
        return self._core

    def state_dict(self) -> dict:
        """The allocator's whole state with torch tensors (``torch.save`` / ``torch.load(weights_only=True)``
        friendly); ``load_state_dict`` resumes bit for bit."""
        import torch

        sd = self._core.state_dict()
        for k in ("importance", "keep", "scores"):
            sd[k] = torch.from_numpy(sd[k])
        return sd

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        for k in ("importance", "keep", "scores"):
            v = state.get(k)
            if v is not None and hasattr(v, "detach"):
                state[k] = v.detach().cpu().numpy()
        self._core.load_state_dict(state)
        self._pattern = None

    # ---- helpers -----------------------------------------------------------------------------------------------

    def _same_pattern(self, rank_pattern) -> bool:
        if not isinstance(rank_pattern, dict) or len(rank_pattern) != len(self._e_names):
            return False
        core = self._core
        suffix = f".{self.adapter_name}"
        for m, e in zip(self._modules, self._e_names):
            v = rank_pattern.get(e)
            if v is None:
                v = rank_pattern.get(e[: -len(suffix)] if e.endswith(suffix) else e)
            if v is None:
                return False
            if hasattr(v, "tolist"):
                v = v.view(-1).tolist() if hasattr(v, "view") else v.tolist()
            if [bool(x) for x in v] != core.rank_pattern(m):
                return False
        return True

    def _mask_like_peft(self, model, rank_pattern) -> None:
        # PEFT's RankAllocator.mask_using_rank_pattern, for patterns this allocator did not fix.
        import torch

        truncated = self.adapter_name not in next(iter(rank_pattern.keys()))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if f"lora_E.{self.adapter_name}" in n:
                    key = n if not truncated else n.replace(f".{self.adapter_name}", "")
                    mask = torch.Tensor(rank_pattern[key]).unsqueeze(-1).to(p.device)
                    p.masked_fill_(~mask.bool(), 0.0)


def adalora_model(model):
    """PEFT's ``AdaLoraModel`` inside ``model`` (a ``PeftModel`` or the ``AdaLoraModel`` itself)."""
    from peft.tuners.adalora import AdaLoraModel

    tuner = model
    for _ in range(4):
        if isinstance(tuner, AdaLoraModel):
            return tuner
        # PeftModel forwards unknown attributes to its base model; follow the registered submodule only
        tuner = getattr(tuner, "_modules", {}).get("base_model")
        if tuner is None:
            break
    raise TypeError(f"adalora.peft: {type(model).__name__} is not a PEFT AdaLoRA model (get_peft_model(model, "
                    "AdaLoraConfig(...)) with a trainable adapter)")


def attach(peft_model, adapter_name: str = "default", *, backend: str = "auto",
           check_zero_gradients: bool = True) -> RankAllocator:
    """Replaces the AdaLoRA model's ``rankallocator`` with adalora's, before training starts; returns it.

    PEFT's own ``model.base_model.update_and_allocate(global_step)`` then runs adalora's allocator."""
    tuner = adalora_model(peft_model)
    trainable = getattr(tuner, "trainable_adapter_name", None)
    if trainable is None or not hasattr(tuner, "rankallocator"):
        raise _core.UsageError("attach: the AdaLoRA model has no trainable adapter (inference_mode=True?)")
    if trainable != adapter_name:
        raise _core.UsageError(f"attach: the trainable adapter is '{trainable}', not '{adapter_name}'")
    old = tuner.rankallocator
    if isinstance(old, RankAllocator):
        if old._core.last_step is not None:
            raise _core.UsageError("attach: adalora's allocator is already attached and has run; attach once, "
                                   "before training")
    elif getattr(old, "ipt", None):
        raise _core.UsageError("attach: PEFT's allocator has already run (its importance is not empty); attach "
                               "before the first update_and_allocate")
    alloc = RankAllocator(tuner.model, tuner.peft_config[adapter_name], adapter_name, backend=backend,
                          check_zero_gradients=check_zero_gradients)
    tuner.rankallocator = alloc
    return alloc
