"""A Hugging Face ``Trainer`` callback that runs AdaLoRA's allocator at the right moment.

The Trainer calls ``optimizer.step()``, then the callbacks' ``on_optimizer_step``, then ``model.zero_grad()``, and
only then ``on_step_end``: an allocator called from ``on_step_end`` sees no gradients, and PEFT's allocator then
silently trains plain LoRA. This callback runs ``update_and_allocate`` at ``on_optimizer_step``, with the number of
optimizer steps completed before this one (``state.global_step``) as the step, after attaching adalora's allocator
(``adalora.peft.attach``) at ``on_train_begin``::

    trainer = Trainer(model=peft_model, args=args, train_dataset=ds, callbacks=[AdaLoraCallback()])

A step whose gradients are all absent or zero raises ``adalora.peft.ZeroGradientError``. An optimizer step that
the mixed-precision scaler skipped (non-finite gradients) is skipped by the allocator too.
"""
from __future__ import annotations

from transformers import TrainerCallback

from . import peft as _peft

__all__ = ["AdaLoraCallback"]


class AdaLoraCallback(TrainerCallback):
    """Calls ``model.base_model.update_and_allocate(state.global_step)`` at every optimizer step.

    ``attach``: replace PEFT's allocator with adalora's at ``on_train_begin`` (False keeps whichever allocator the
    model has, PEFT's included: the callback then only fixes the moment of the call). ``adapter_name``, ``backend``:
    passed to ``adalora.peft.attach``.
    """

    def __init__(self, adapter_name: str = "default", *, attach: bool = True, backend: str = "auto"):
        self.adapter_name = adapter_name
        self.attach = attach
        self.backend = backend
        self.allocator = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("AdaLoraCallback: the Trainer passed no model")
        tuner = _peft.adalora_model(model)
        if self.attach:
            current = tuner.rankallocator
            if isinstance(current, _peft.RankAllocator) and current._core.last_step is None:
                self.allocator = current
            elif not isinstance(current, _peft.RankAllocator):
                self.allocator = _peft.attach(model, self.adapter_name, backend=self.backend)
            else:
                self.allocator = current  # resumed training: keep the allocator (and its state)
        return control

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if getattr(optimizer, "step_was_skipped", False):
            return control  # the grad scaler found inf/NaN and skipped the update: nothing to learn from
        _peft.adalora_model(model).update_and_allocate(state.global_step)
        return control
