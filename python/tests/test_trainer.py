"""adalora.trainer.AdaLoraCallback in a Hugging Face Trainer: the allocator runs at on_optimizer_step, with the
gradients, exactly as PEFT's own allocator would there; an allocator placed after zero_grad is an error."""
from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

import adalora
import adalora.peft
from adalora.trainer import AdaLoraCallback
import tiny_model as tm

STEPS = 40


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(11)
        self.ids = torch.randint(0, 96, (n, 16), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=4,
                             learning_rate=2e-2, lr_scheduler_type="constant", warmup_steps=0, seed=7, use_cpu=True,
                             report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
                             dataloader_num_workers=0, max_grad_norm=1.0)


def trained(tmp_path, callback):
    model = tm.peft_model(total_step=STEPS, tinit=4, tfinal=10)
    trainer = Trainer(model=model, args=args(tmp_path), train_dataset=Tokens(4 * STEPS), callbacks=[callback])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    lam = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_E" in n}
    return model, losses, lam


def test_callback_matches_peft_allocator(tmp_path):
    m_peft, l_peft, lam_peft = trained(tmp_path / "a", AdaLoraCallback(attach=False))  # PEFT's allocator, right place
    assert not isinstance(m_peft.base_model.rankallocator, adalora.peft.RankAllocator)
    cb = AdaLoraCallback()
    m_ours, l_ours, lam_ours = trained(tmp_path / "b", cb)
    assert isinstance(m_ours.base_model.rankallocator, adalora.peft.RankAllocator)
    assert cb.allocator is m_ours.base_model.rankallocator
    assert cb.allocator.allocator.last_step == STEPS - 1 and cb.allocator.allocator.pattern_frozen
    assert len(l_ours) == STEPS and l_peft == l_ours
    for k in lam_peft:
        assert torch.equal(lam_peft[k], lam_ours[k]), k
    rp = m_ours.peft_config["default"].rank_pattern
    assert rp == m_peft.peft_config["default"].rank_pattern
    assert sum(sum(v) for v in rp.values()) == 3 * 14


class LateAllocator(TrainerCallback):
    """The classic mistake: the allocator at on_step_end, after the Trainer's zero_grad."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        adalora.peft.adalora_model(model).update_and_allocate(state.global_step - 1)


def test_allocator_after_zero_grad_fails_loudly(tmp_path):
    model = tm.peft_model(total_step=STEPS, tinit=4, tfinal=10)
    adalora.peft.attach(model)
    trainer = Trainer(model=model, args=args(tmp_path), train_dataset=Tokens(4 * STEPS), callbacks=[LateAllocator()])
    with pytest.raises(adalora.peft.ZeroGradientError, match="the allocator ran after the gradients were zeroed"):
        trainer.train()
