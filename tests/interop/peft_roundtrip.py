#!/usr/bin/env python3
"""Round trip of adalora's PEFT export and import against real Hugging Face PEFT (torch CPU).

1. `peft_interop write WORK` (C++) writes a tiny model's base weights, inputs, the C++ outputs, and three adapter
   folders: WORK/adalora (AdaLoRA), WORK/lora and WORK/lora_uniform (plain LoRA, s·λ folded into lora_A).
2. Here: the same torch.nn model loads the base weights; PeftModel.from_pretrained loads each folder; its outputs
   must equal the C++ ones (max |diff| <= 1e-5), the modules must have the exported ranks, and merging the AdaLoRA
   adapter into the base weights must give the same outputs too.
3. PEFT saves the loaded AdaLoRA model again (save_pretrained); `peft_interop check` (C++) imports that save and
   checks its tensors, ranks and outputs against the C++ ones and PEFT's.
4. PEFT trains an AdaLoRA adapter of the same model for a few steps (its RankAllocator prunes to target_r) and saves
   it; `peft_interop compare` (C++) imports it and checks its outputs against PEFT's.

Usage: peft_roundtrip.py --interop PATH/TO/peft_interop --work DIR
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from peft import AdaLoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

TOLERANCE = 1e-5


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(12, 24)
        self.down = torch.nn.Linear(24, 12)

    def forward(self, x):
        return x + self.down(torch.tanh(self.up(x)))


class Tiny(torch.nn.Module):
    """Module paths layers.0.up, layers.0.down, layers.1.up, layers.1.down, head: those of peft_interop.cpp."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Block(), Block()])
        self.head = torch.nn.Linear(12, 5)

    def forward(self, x):
        for block in self.layers:
            x = block(x)
        return self.head(x)


def base_model(work):
    model = Tiny()
    model.load_state_dict(load_file(str(work / "base.safetensors")), strict=True)
    return model.eval()


def run(cmd):
    print("$", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"FAIL: {cmd[0]} exited with {result.returncode}")
    return result.stdout


def reported_diffs(output):
    """The 'max |diff| = X' figures a peft_interop run printed."""
    return [float(m) for m in re.findall(r"max \|diff\| = ([0-9.eE+-]+)", output)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interop", required=True, type=Path, help="the peft_interop program")
    parser.add_argument("--work", required=True, type=Path, help="a scratch folder (emptied first)")
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.set_num_threads(1)
    import peft

    print(f"torch {torch.__version__}, peft {peft.__version__}")
    run([args.interop, "write", work])

    io = load_file(str(work / "io.safetensors"))
    x, expected = io["x"], io["y"]
    results = []
    failures = []

    def compare(what, y):
        diff = (y - expected).abs().max().item()
        results.append((what, diff))
        if not diff <= TOLERANCE:
            failures.append(f"{what}: max |diff| {diff:.3g} > {TOLERANCE}")

    with torch.no_grad():
        plain = base_model(work)(x)
    effect = (plain - expected).abs().max().item()
    print(f"the adapters change the outputs by up to {effect:.3g} (must be non-trivial)")
    if effect < 1e-2:
        failures.append("the adapters barely change the outputs; the test would prove nothing")

    # ---- AdaLoRA: load, compare, check ranks, merge, save again ----
    config = json.loads((work / "adalora" / "adapter_config.json").read_text())
    init_r = config["init_r"]
    expected_rank = {k[: -len(".lora_E")]: sum(v) for k, v in config["rank_pattern"].items()}
    model = PeftModel.from_pretrained(base_model(work), str(work / "adalora"))
    model.eval()
    if type(model.peft_config["default"]).__name__ != "AdaLoraConfig":
        failures.append(f"PEFT made a {type(model.peft_config['default']).__name__}, not an AdaLoraConfig")
    for name, rank in expected_rank.items():
        layer = model.base_model.model.get_submodule(name)
        got = layer.lora_A["default"].shape[0]
        ranknum = layer.ranknum["default"].item()
        print(f"  PEFT {name:14s} rank {got} (expected {rank}), ranknum {ranknum:g}")
        if got != rank or layer.lora_E["default"].shape != (rank, 1) or layer.lora_B["default"].shape[1] != rank:
            failures.append(f"{name}: PEFT rebuilt rank {got}, expected {rank}")
        if rank > 0 and ranknum != init_r:
            failures.append(f"{name}: ranknum {ranknum}, expected init_r = {init_r} (the scaling must not change)")
    with torch.no_grad():
        y = model(x)
    compare("PEFT AdaLoRA (from_pretrained of the export)", y)
    save_file({"y": y.contiguous()}, str(work / "peft_adalora_outputs.safetensors"))
    model.save_pretrained(str(work / "peft_saved"))
    with torch.no_grad():
        merged = PeftModel.from_pretrained(base_model(work), str(work / "adalora")).merge_and_unload()
        compare("PEFT AdaLoRA merged into the base weights", merged(x))

    # ---- plain LoRA: PEFT's LoRA reads the folded export ----
    for folder in ("lora", "lora_uniform"):
        lora_config = json.loads((work / folder / "adapter_config.json").read_text())
        model = PeftModel.from_pretrained(base_model(work), str(work / folder))
        model.eval()
        if type(model.peft_config["default"]).__name__ != "LoraConfig":
            failures.append(f"{folder}: PEFT made a {type(model.peft_config['default']).__name__}, not a LoraConfig")
        for name in lora_config["target_modules"]:
            layer = model.base_model.model.get_submodule(name)
            scaling = layer.scaling["default"]
            if scaling != 1.0:
                failures.append(f"{folder}/{name}: PEFT's LoRA scaling is {scaling}, expected 1")
        for name, rank in expected_rank.items():
            wrapped = hasattr(model.base_model.model.get_submodule(name), "lora_A")
            if wrapped != (rank > 0):
                failures.append(f"{folder}/{name}: wrapped by PEFT = {wrapped}, rank {rank}")
        with torch.no_grad():
            compare(f"PEFT LoRA ({folder}, s*lambda folded into lora_A)", model(x))

    # ---- PEFT's own save, imported by the C++ side ----
    saved = load_file(str(work / "peft_saved" / "adapter_model.safetensors"))
    print("PEFT's save_pretrained wrote:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(saved.items())[:3]), "...")
    out = run([args.interop, "check", work, work / "peft_saved", work / "peft_adalora_outputs.safetensors"])
    cpp_vs_cpp, cpp_vs_peft = reported_diffs(out)
    results.append(("C++ import of PEFT's save_pretrained vs C++ outputs", cpp_vs_cpp))
    results.append(("C++ import of PEFT's save_pretrained vs PEFT's outputs", cpp_vs_peft))

    # ---- an adapter PEFT trained itself (its RankAllocator chose the ranks), imported by the C++ side ----
    torch.manual_seed(0)
    targets = sorted(expected_rank)
    trained = get_peft_model(
        base_model(work),
        AdaLoraConfig(init_r=init_r, target_r=2, tinit=2, tfinal=3, deltaT=1, total_step=12, lora_alpha=12,
                      target_modules=targets),
    )
    optimizer = torch.optim.AdamW(trained.parameters(), lr=0.05)
    goal = torch.randn(expected.shape)
    for step in range(12):
        loss = (trained(x) - goal).pow(2).mean()
        loss.backward()
        optimizer.step()
        trained.base_model.update_and_allocate(step)
        optimizer.zero_grad()
    trained.eval()
    with torch.no_grad():
        y = trained(x)
    trained_effect = (y - plain).abs().max().item()
    print(f"the trained adapters change the outputs by up to {trained_effect:.3g}")
    if trained_effect < 1e-2:
        failures.append("the adapters PEFT trained barely change the outputs; the comparison would prove nothing")
    save_file({"y": y.contiguous()}, str(work / "peft_trained_outputs.safetensors"))
    trained.save_pretrained(str(work / "peft_trained"))
    kept = {k: sum(v) for k, v in trained.peft_config["default"].rank_pattern.items()}
    print("PEFT trained an AdaLoRA adapter; its rank pattern keeps", kept)
    if sum(kept.values()) != 2 * len(targets):
        failures.append(f"PEFT's budget should end at target_r x modules = {2 * len(targets)}, kept {kept}")
    out = run([args.interop, "compare", work, work / "peft_trained", work / "peft_trained_outputs.safetensors"])
    results.append(("C++ import of an adapter PEFT trained vs PEFT's outputs", reported_diffs(out)[-1]))

    print("\nmax |difference| of the outputs (batch 8 x 5), tolerance", TOLERANCE)
    for what, diff in results:
        print(f"  {diff:10.3g}  {what}")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("all PEFT round-trip checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
