#!/usr/bin/env python3
"""Hugging Face PEFT loads the AdaLoRA adapter that examples/libtorch_finetune trained and exported.

The example (C++, libtorch) writes into DIR: adapter/ (write_peft_adalora of the attached SVDLinear adapters),
base.safetensors (the frozen base weights, under the paths of a plain torch.nn model) and probe.safetensors (a batch
of inputs, the fine-tuned model's outputs, and the network's shape as metadata). Here the same encoder is built in
torch.nn, its base weights loaded, and PeftModel.from_pretrained(model, DIR/adapter) must:
  - rebuild every module at the rank the allocator kept (the config's rank_pattern), with ranknum = init_r (where
    the rank is not 0);
  - compute the example's outputs (max |diff| <= 2e-5, outputs of magnitude up to ~6), also after merging;
  - differ from the base network's outputs (else the check would prove nothing).

Usage: peft_load.py --dir DIR
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file

TOLERANCE = 2e-5
PROJECTIONS = ("q", "k", "v", "o", "up", "down")


def rms_norm(h):
    return h * torch.rsqrt(h.square().mean(-1, keepdim=True) + 1e-5)


class Block(torch.nn.Module):
    """examples/libtorch_finetune's block_forward, over torch.nn.Linear layers of the same names."""

    def __init__(self, d_model, d_ff, heads):
        super().__init__()
        self.heads = heads
        for name in ("q", "k", "v", "o"):
            setattr(self, name, torch.nn.Linear(d_model, d_model, bias=False))
        self.up = torch.nn.Linear(d_model, d_ff, bias=False)
        self.down = torch.nn.Linear(d_ff, d_model, bias=False)

    def forward(self, h):
        n, length, d = h.shape
        dh = d // self.heads

        def split(t):
            return t.view(n, length, self.heads, dh).transpose(1, 2)

        a = rms_norm(h)
        q, k, v = split(self.q(a)), split(self.k(a)), split(self.v(a))
        att = torch.softmax(q.matmul(k.transpose(-2, -1)) / math.sqrt(dh), -1)
        c = att.matmul(v).transpose(1, 2).reshape(n, length, d)
        h1 = h + self.o(c)
        return h1 + self.down(torch.nn.functional.gelu(self.up(rms_norm(h1)), approximate="tanh"))


class Encoder(torch.nn.Module):
    def __init__(self, blocks, d_model, d_ff, heads):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(d_model, d_ff, heads) for _ in range(blocks)])

    def forward(self, h):
        for block in self.blocks:
            h = block(h)
        return h


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="the example's --out folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import peft

    print(f"torch {torch.__version__}, peft {peft.__version__}")
    with safe_open(str(args.dir / "probe.safetensors"), framework="pt") as f:
        shape = {k: int(v) for k, v in f.metadata().items() if k in ("blocks", "d_model", "d_ff", "heads")}
    probe = load_file(str(args.dir / "probe.safetensors"))
    x, expected = probe["x"], probe["y"]
    base_weights = load_file(str(args.dir / "base.safetensors"))
    print(f"network {shape}, probe batch {tuple(x.shape)}")

    def base_model():
        model = Encoder(shape["blocks"], shape["d_model"], shape["d_ff"], shape["heads"])
        model.load_state_dict(base_weights, strict=True)
        return model.eval()

    failures = []
    with torch.no_grad():
        plain = base_model()(x)
    effect = (plain - expected).abs().max().item()
    print(f"the fine-tuned adapters change the outputs by up to {effect:.3g} (must be non-trivial)")
    if effect < 1e-2:
        failures.append("the adapters barely change the outputs; the check would prove nothing")

    config = json.loads((args.dir / "adapter" / "adapter_config.json").read_text())
    if config.get("peft_type") != "ADALORA":
        failures.append(f"peft_type is {config.get('peft_type')}, not ADALORA")
    init_r = config["init_r"]
    pattern = config["rank_pattern"] or {}
    expected_rank = {k[: -len(".lora_E")]: sum(v) for k, v in pattern.items()}
    model = PeftModel.from_pretrained(base_model(), str(args.dir / "adapter"))
    model.eval()
    if type(model.peft_config["default"]).__name__ != "AdaLoraConfig":
        failures.append(f"PEFT made a {type(model.peft_config['default']).__name__}, not an AdaLoraConfig")
    for b in range(shape["blocks"]):
        for p in PROJECTIONS:
            name = f"blocks.{b}.{p}"
            layer = model.base_model.model.get_submodule(name)
            got = layer.lora_A["default"].shape[0]
            want = expected_rank.get(name, init_r)
            ranknum = layer.ranknum["default"].item()
            print(f"  PEFT {name:14s} rank {got} (exported {want}), ranknum {ranknum:g}")
            if got != want:
                failures.append(f"{name}: PEFT rebuilt rank {got}, the export kept {want}")
            if want > 0 and ranknum != init_r:  # (PEFT sets ranknum 0 on a module it resizes to rank 0)
                failures.append(f"{name}: ranknum {ranknum}, expected init_r = {init_r} (the scaling must not change)")
    with torch.no_grad():
        y = model(x)
        diff = (y - expected).abs().max().item()
        merged = PeftModel.from_pretrained(base_model(), str(args.dir / "adapter")).merge_and_unload()
        diff_merged = (merged(x) - expected).abs().max().item()
    scale = expected.abs().max().item()
    print(f"max |PEFT - libtorch| = {diff:.3g} (outputs up to {scale:.3g}); merged into the base weights: "
          f"{diff_merged:.3g}; tolerance {TOLERANCE}")
    for what, d in (("PEFT", diff), ("PEFT merged", diff_merged)):
        if not d <= TOLERANCE:
            failures.append(f"{what}: max |diff| {d:.3g} > {TOLERANCE}")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("PEFT loads the libtorch-trained adapter and computes the same outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
