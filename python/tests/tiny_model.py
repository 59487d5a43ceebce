"""A tiny transformers model (LLaMA architecture, random weights from a fixed seed, nothing downloaded) wrapped by
PEFT's AdaLoRA, and a training loop that records what the allocator did at every step."""
from __future__ import annotations

import copy
import dataclasses

import torch
from peft import AdaLoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(seed: int = 0, dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).to(dtype)


def adalora_config(total_step: int = 120, **kw) -> AdaLoraConfig:
    args = dict(target_modules=TARGETS, init_r=6, target_r=3, tinit=10, tfinal=30, deltaT=2, beta1=0.85, beta2=0.85,
                total_step=total_step, lora_alpha=12, lora_dropout=0.1, orth_reg_weight=0.5)
    args.update(kw)
    return AdaLoraConfig(**args)


def peft_model(seed: int = 0, dtype=torch.float32, **cfg):
    base = tiny_llama(seed, dtype)
    torch.manual_seed(seed + 1)
    # PEFT makes float32 adapters on a bf16 model unless told not to (autocast_adapter_dtype)
    return get_peft_model(base, adalora_config(**cfg), autocast_adapter_dtype=dtype == torch.float32)


@dataclasses.dataclass
class StepRecord:
    loss: float
    lambdas: dict          # lora_E name -> tensor after update_and_allocate
    rank_pattern: dict | None


def batches(steps: int, seed: int = 1234, vocab: int = 96, batch: int = 4, seq: int = 16):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq), generator=g) for _ in range(steps)]


def train(model, steps: int, *, seed: int = 7, lr: float = 2e-2, record: bool = True, set_to_none: bool = True,
          before_update=None, after_update=None, data=None):
    """The PEFT AdaLoRA loop of PEFT's docs: backward, optimizer step, update_and_allocate(t), zero_grad."""
    torch.manual_seed(seed)
    data = data if data is not None else batches(steps)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    tuner = model.base_model
    out = []
    model.train()
    for t in range(steps):
        ids = data[t]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        if before_update is not None:
            before_update(t)
        tuner.update_and_allocate(t)
        if after_update is not None:
            after_update(t)
        if record:
            lam = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_E" in n}
            rp = tuner.peft_config["default"].rank_pattern
            out.append(StepRecord(float(loss.detach()), lam, copy.deepcopy(rp)))
        opt.zero_grad(set_to_none=set_to_none)
    return out
