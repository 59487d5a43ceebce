#!/usr/bin/env python3
"""Time PEFT's AdaLoRA RankAllocator and this library's rank_allocator on the same adapter shapes and thread count.

Set up once (from the repository root):

    python3 -m venv /work/venv-bench            # or reuse any venv that already has torch and peft
    /work/venv-bench/bin/pip install torch peft numpy
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DADALORA_BUILD_BENCHMARKS=ON
    cmake --build build-bench --target bench_allocator -j

Run:

    /work/venv-bench/bin/python benchmarks/compare_peft.py --threads 2              # DeBERTa-v3-base set
    /work/venv-bench/bin/python benchmarks/compare_peft.py --threads 2 --sets deberta,llama

What is timed, for both: one allocator step per optimizer step, after the gradients exist.
  update  a warm-up step: importance update of every element (|θ·g|, both EMAs), no masking
          (PEFT: RankAllocator.update_and_allocate(model, t) with t <= tinit)
  mask    a budgeting step that masks: importance update + triplet scores + k-th smallest + λ masked in place
          (deltaT = 1, t in the middle of the cubic schedule, about 1/3 of the singular values pruned)
PEFT runs on a torch.nn.Module holding only the adapters' parameters, named as PEFT names them
(`<module>.lora_A.default`, `.lora_E.default`, `.lora_B.default`) so that RankAllocator's name matching works;
the base weights play no part in the allocator. The C++ side is `bench_allocator --benchmark_filter=^step/...`
(its `step/<kind>/<set>/<backend>/<state policy>` benchmarks), run in a subprocess with the same OMP_NUM_THREADS.
The column `fused-ref` is bench_allocator's hand-written single-pass kernel (`fused/<kind>/<set>/threads:N`): not
the library, but what a single in-place pass (without the promise that a refused step changes nothing) reaches.

Memory: the importance state each side holds between steps, in bytes per adapter parameter and in all: PEFT's
RankAllocator keeps three float32 tensors per parameter (ipt, exp_avg_ipt, exp_avg_unc: 12 B), measured from its
dictionaries after the timed steps; the library's state policies hold 8 B (in_place, the default), 16 B
(double_buffered) or 4 B (in_place_bf16), bench_allocator's `state_B` counter.
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads and OMP_NUM_THREADS")
    p.add_argument("--sets", default="deberta", help="comma-separated: deberta, llama")
    p.add_argument("--bench", default=os.path.join(REPO, "build-bench", "benchmarks", "bench_allocator"),
                   help="path of the bench_allocator binary")
    p.add_argument("--peft-steps", type=int, default=0,
                   help="timed PEFT steps per measurement (default: 30 for deberta, 8 for llama)")
    p.add_argument("--min-time", type=float, default=1.0, help="--benchmark_min_time of the C++ run (seconds)")
    p.add_argument("--backends", default="", help="comma-separated C++ backends to run (default: every one built)")
    p.add_argument("--json", default="", help="also write the results as JSON to this file")
    return p.parse_args()


ARGS = parse_args()
# before torch is imported, so that its OpenMP runtime starts with the same thread count as the C++ run
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402
from torch import nn  # noqa: E402
import peft  # noqa: E402
from peft import AdaLoraConfig  # noqa: E402
from peft.tuners.adalora import RankAllocator  # noqa: E402

INIT_R = 12
TARGET_R = 8


def deberta_shapes():
    s = []
    for l in range(12):
        p = f"deberta.encoder.layer.{l}."
        for m in ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                  "attention.output.dense"):
            s.append((p + m, 768, 768))
        s.append((p + "intermediate.dense", 768, 3072))
        s.append((p + "output.dense", 3072, 768))
    return s


def llama_shapes():
    s = []
    for l in range(32):
        p = f"model.layers.{l}."
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
            s.append((p + m, 4096, 4096))
        s.append((p + "mlp.gate_proj", 4096, 11008))
        s.append((p + "mlp.up_proj", 4096, 11008))
        s.append((p + "mlp.down_proj", 11008, 4096))
    return s


SHAPES = {"deberta": deberta_shapes, "llama": llama_shapes}


class AdapterHolder(nn.Module):
    """What an AdaLoRA SVDLinear holds for adapter 'default': lora_A (r, in), lora_E (r, 1), lora_B (out, r)."""

    def __init__(self, in_features, out_features, r, gen):
        super().__init__()
        u = lambda *shape, a: (torch.rand(*shape, generator=gen) * 2 - 1) * a  # noqa: E731
        self.lora_A = nn.ParameterDict({"default": nn.Parameter(u(r, in_features, a=0.035))})
        self.lora_E = nn.ParameterDict({"default": nn.Parameter(u(r, 1, a=0.1))})
        self.lora_B = nn.ParameterDict({"default": nn.Parameter(u(out_features, r, a=0.035))})
        for p in self.parameters():
            p.grad = u(*p.shape, a=1e-3)


def build_model(shapes):
    """A module tree whose parameter names are PEFT's: <module path>.lora_A.default etc."""
    root = nn.Module()
    gen = torch.Generator().manual_seed(0)
    for name, fin, fout in shapes:
        parts = name.split(".")
        m = root
        for part in parts[:-1]:
            if not hasattr(m, part):
                m.add_module(part, nn.Module())
            m = getattr(m, part)
        m.add_module(parts[-1], AdapterHolder(fin, fout, INIT_R, gen))
    return root


def peft_state_bytes(alloc):
    """Bytes of the tensors RankAllocator keeps between steps (ipt, exp_avg_ipt, exp_avg_unc)."""
    total = 0
    for held in (alloc.ipt, alloc.exp_avg_ipt, alloc.exp_avg_unc):
        total += sum(t.numel() * t.element_size() for t in held.values())
    return total


def time_peft(shapes, kind, steps):
    """Median seconds per RankAllocator.update_and_allocate call, the budget, and the state's bytes."""
    model = build_model(shapes)
    big = 2**41
    if kind == "update":
        cfg = AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, tinit=big // 2, tfinal=0, deltaT=1, total_step=big,
                            beta1=0.85, beta2=0.85, target_modules=["dense"])
        t0 = 0
    else:
        cfg = AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, tinit=0, tfinal=0, deltaT=1, total_step=big,
                            beta1=0.85, beta2=0.85, target_modules=["dense"])
        t0 = big // 2
    alloc = RankAllocator(model, cfg, "default")
    assert alloc.init_bgt == INIT_R * len(shapes), alloc.init_bgt
    budget, pattern = alloc.update_and_allocate(model, t0)  # first call allocates the importance dictionaries
    assert (pattern is not None) == (kind == "mask")
    times = []
    for i in range(1, steps + 1):
        start = time.perf_counter()
        budget, pattern = alloc.update_and_allocate(model, t0 + i)
        times.append(time.perf_counter() - start)
    state = peft_state_bytes(alloc)
    del alloc, model
    gc.collect()
    return statistics.median(times), budget, state


def run_cpp(sets):
    """Runs bench_allocator's step benchmarks (and the copy bandwidth probe); {name: seconds per step}."""
    if not os.access(ARGS.bench, os.X_OK):
        sys.exit(f"compare_peft.py: no bench_allocator at {ARGS.bench}; build it (see the top of this file) or pass "
                 "--bench")
    sets_re = "|".join(sets)
    backends_re = "|".join(b for b in ARGS.backends.split(",") if b) or "[^/]+"
    filt = (f"^(step/(update|mask)/({sets_re})/({backends_re})/|fused/(update|mask)/({sets_re})/threads:{ARGS.threads}/|"
            f"bandwidth/copy/threads:{ARGS.threads}/)")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        cmd = [ARGS.bench, f"--benchmark_filter={filt}", f"--benchmark_min_time={ARGS.min_time}",
               f"--benchmark_out={out}", "--benchmark_out_format=json"]
        env = dict(os.environ, OMP_NUM_THREADS=str(ARGS.threads))
        print("running:", " ".join(cmd), f"(OMP_NUM_THREADS={ARGS.threads})", flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            data = json.load(f)
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    res = {}
    for b in data["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        name = b["run_name"].split("/min_time")[0].split("/real_time")[0]
        res[name] = {"seconds": b["real_time"] * unit[b["time_unit"]], "bytes": b.get("bytes"),
                     "threads": b.get("threads"), "state_B": b.get("state_B")}
    return res


def parameters(shapes):
    """Adapter parameters of a set: r · (in + 1 + out) per adapter."""
    return sum(INIT_R * (fin + 1 + fout) for _, fin, fout in shapes)


def main():
    sets = [s for s in ARGS.sets.split(",") if s]
    for s in sets:
        if s not in SHAPES:
            sys.exit(f"unknown set {s!r}; choose from {', '.join(SHAPES)}")
    torch.set_num_threads(ARGS.threads)
    print(f"torch {torch.__version__}, peft {peft.__version__}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS {os.environ['OMP_NUM_THREADS']}", flush=True)

    peft_res, peft_state = {}, {}
    for s in sets:
        shapes = SHAPES[s]()
        steps = ARGS.peft_steps or (30 if s == "deberta" else 8)
        for kind in ("update", "mask"):
            sec, budget, state = time_peft(shapes, kind, steps)
            peft_res[(s, kind)] = sec
            peft_state[s] = state
            print(f"PEFT {kind:6s} {s:8s} {sec * 1e3:9.2f} ms/step  (median of {steps}; budget {budget}; state "
                  f"{state / 1e6:.1f} MB)", flush=True)

    cpp = run_cpp(sets)
    backends = []
    for name in cpp:
        parts = name.split("/")
        if parts[0] == "step":
            b = "/".join(parts[3:])  # backend/state policy
            if b not in backends:
                backends.append(b)
    # the hand-written single-pass kernel of bench_allocator (fused/...): what the proposed fusion would reach; not
    # the library
    for name in list(cpp):
        parts = name.split("/")
        if parts[0] == "fused":
            cpp[f"step/{parts[1]}/{parts[2]}/fused-ref"] = cpp[name]
            if "fused-ref" not in backends:
                backends.append("fused-ref")

    rows = []
    header = f"{'set':8s} {'step':6s} {'PEFT ms':>9s}"
    for b in backends:
        header += f" {b + ' ms':>30s} {'x':>6s}"
    print(f"\nAllocator step, PEFT RankAllocator vs adalora::rank_allocator ({ARGS.threads} threads; x = PEFT time / "
          "C++ time; fused-ref = bench_allocator's hand-written single-pass kernel, not the library)")
    print(header)
    for s in sets:
        for kind in ("update", "mask"):
            p = peft_res[(s, kind)]
            line = f"{s:8s} {kind:6s} {p * 1e3:9.2f}"
            row = {"set": s, "step": kind, "peft_ms": p * 1e3}
            for b in backends:
                c = cpp.get(f"step/{kind}/{s}/{b}")
                if c is None:
                    line += f" {'-':>30s} {'-':>6s}"
                    continue
                line += f" {c['seconds'] * 1e3:30.2f} {p / c['seconds']:6.1f}"
                row[b + "_ms"] = c["seconds"] * 1e3
                row[b + "_speedup"] = p / c["seconds"]
            print(line)
            rows.append(row)
    for name, c in cpp.items():
        if name.startswith("bandwidth/"):
            print(f"{name}: {c['bytes'] / 1e9:.2f} GB/s")

    # the importance state each side holds between steps
    memory = []
    print("\nImportance state held between steps (bytes per adapter parameter, and in all)")
    print(f"{'set':8s} {'parameters':>12s} {'holder':32s} {'B/param':>8s} {'MB':>9s}")
    for s in sets:
        n = parameters(SHAPES[s]())
        entries = [("PEFT RankAllocator", peft_state[s] / n)]
        policies = []
        for name, c in cpp.items():
            parts = name.split("/")
            if parts[0] == "step" and parts[2] == s and len(parts) > 4 and c.get("state_B"):
                if parts[4] not in [p for p, _ in policies]:
                    policies.append((parts[4], c["state_B"]))
        entries += [(f"adalora {p}", b) for p, b in policies]
        for holder, per in entries:
            print(f"{s:8s} {n:12d} {holder:32s} {per:8.1f} {per * n / 1e6:9.1f}")
            memory.append({"set": s, "parameters": n, "holder": holder, "bytes_per_parameter": per,
                           "megabytes": per * n / 1e6})
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"threads": ARGS.threads, "torch": torch.__version__, "peft": peft.__version__, "rows": rows,
                       "memory": memory, "cpp": cpp}, f, indent=1)


if __name__ == "__main__":
    main()
