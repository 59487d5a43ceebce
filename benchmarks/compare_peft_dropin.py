#!/usr/bin/env python3
"""Time PEFT's AdaLoRA RankAllocator.update_and_allocate and adalora's drop-in (adalora.peft.RankAllocator) on the
same model in one run, and next to them the C++ benchmark of the same step (bench_allocator) when it is built.

Set up once (from the repository root; scripts/test.sh leaves the package in build-python/site):

    py=$(bash scripts/python-env.sh)                               # the cached venv: torch, peft, nanobind, ...
    $py -m pip install --no-build-isolation --no-deps --target build-python/site ./python
    # optional, for the C++ column: the benchmarks build (benchmarks/README.md)
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DADALORA_BUILD_BENCHMARKS=ON -DADALORA_BUILD_TESTS=OFF \
          -DADALORA_BUILD_TOOLS=OFF -DADALORA_BUILD_EXAMPLES=OFF
    cmake --build build-bench --target bench_allocator -j

Run:

    PYTHONPATH=build-python/site $py benchmarks/compare_peft_dropin.py                       # both sets, 1 and 2 threads
    PYTHONPATH=build-python/site $py benchmarks/compare_peft_dropin.py --sets deberta --threads 2

What is timed: one allocator step per optimizer step on a torch module that holds the adapters' parameters under
PEFT's names (<module>.lora_A.default, .lora_E.default, .lora_B.default; the base weights play no part), with the
gradients present.
  update  a warm-up step: importance update of every element, no masking (t <= tinit)
  mask    a budgeting step that masks (deltaT = 1, the middle of the cubic schedule, about 1/3 of the singular
          values pruned): importance update, triplet scores, threshold, λ masked, the rank_pattern dict returned
Before every timed step, each parameter gets a new gradient tensor (as after zero_grad(set_to_none=True)), so the
drop-in's time includes following the re-allocated gradients (one data_ptr() and stride() per tensor) and, on mask
steps, building PEFT's rank_pattern dict. Each thread count runs in its own process (torch's and adalora's OpenMP
pools both sized by OMP_NUM_THREADS and torch.set_num_threads). x = PEFT time / drop-in time; vs C++ = drop-in time
/ bench_allocator's thrust-omp step with the default (in-place) state policy, as the package's allocators keep their
state (the same step, same shapes, same threads, without Python).
"""
from __future__ import annotations

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
INIT_R = 12
TARGET_R = 8
BIG = 2**41


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--sets", default="deberta,llama", help="comma-separated: deberta, llama")
    p.add_argument("--steps", type=int, default=0,
                   help="timed steps per measurement (default: 40 for deberta, 20 for llama)")
    p.add_argument("--bench", default=os.path.join(REPO, "build-bench", "benchmarks", "bench_allocator"),
                   help="bench_allocator binary for the C++ column ('' to leave it out)")
    p.add_argument("--min-time", type=float, default=1.0, help="--benchmark_min_time of the C++ run (seconds)")
    p.add_argument("--json", default="", help="also write the results as JSON to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


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


# ---- one thread count, in this process ------------------------------------------------------------------------

def child(args):
    import torch
    from torch import nn
    import peft
    from peft import AdaLoraConfig
    from peft.tuners.adalora import RankAllocator as PeftRankAllocator

    import adalora
    import adalora.peft

    threads = int(args.threads)
    torch.set_num_threads(threads)
    adalora.set_num_threads(threads)

    class Holder(nn.Module):
        def __init__(self, fin, fout, gen):
            super().__init__()
            u = lambda *shape, a: (torch.rand(*shape, generator=gen) * 2 - 1) * a  # noqa: E731
            self.lora_A = nn.ParameterDict({"default": nn.Parameter(u(INIT_R, fin, a=0.035))})
            self.lora_E = nn.ParameterDict({"default": nn.Parameter(u(INIT_R, 1, a=0.1))})
            self.lora_B = nn.ParameterDict({"default": nn.Parameter(u(fout, INIT_R, a=0.035))})

    def build(shapes):
        root = nn.Module()
        gen = torch.Generator().manual_seed(0)
        for name, fin, fout in shapes:
            parts = name.split(".")
            m = root
            for part in parts[:-1]:
                if not hasattr(m, part):
                    m.add_module(part, nn.Module())
                m = getattr(m, part)
            m.add_module(parts[-1], Holder(fin, fout, gen))
        params = [p for n, p in root.named_parameters() if "lora_" in n]
        # two sets of gradients, swapped in before every step: new tensor objects each step, as after
        # zero_grad(set_to_none=True) and backward()
        pools = [[(torch.rand(p.shape, generator=gen) * 2 - 1) * 1e-3 for p in params] for _ in range(2)]
        return root, params, pools

    def config(kind):
        if kind == "update":
            return AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, tinit=BIG // 2, tfinal=0, deltaT=1, total_step=BIG,
                                 beta1=0.85, beta2=0.85, target_modules=["dense"]), 0
        return AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, tinit=0, tfinal=0, deltaT=1, total_step=BIG,
                             beta1=0.85, beta2=0.85, target_modules=["dense"]), BIG // 2

    def timed(make, shapes, kind, steps):
        model, params, pools = build(shapes)
        cfg, t0 = config(kind)
        alloc = make(model, cfg)

        def give(i):
            for p, g in zip(params, pools[i % 2]):
                p.grad = g

        give(0)
        budget, pattern = alloc.update_and_allocate(model, t0)  # allocates the importance state; not timed
        assert (pattern is not None) == (kind == "mask")
        times = []
        for i in range(1, steps + 1):
            give(i)
            start = time.perf_counter()
            budget, pattern = alloc.update_and_allocate(model, t0 + i)
            times.append(time.perf_counter() - start)
        kept = sum(sum(v) for v in pattern.values()) if pattern else None
        del alloc, model, params, pools
        gc.collect()
        return statistics.median(times), budget, kept

    makers = {
        "peft": lambda model, cfg: PeftRankAllocator(model, cfg, "default"),
        "dropin": lambda model, cfg: adalora.peft.RankAllocator(model, cfg, "default"),
    }
    out = {"threads": threads, "torch": torch.__version__, "peft": peft.__version__,
           "backend": adalora.default_cpu_backend, "adalora_threads": adalora.get_num_threads(), "rows": []}
    for s in args.sets.split(","):
        shapes = SHAPES[s]()
        steps = args.steps or (40 if s == "deberta" else 20)
        for kind in ("update", "mask"):
            row = {"set": s, "step": kind}
            for who, make in makers.items():
                sec, budget, kept = timed(make, shapes, kind, steps)
                row[who + "_ms"] = sec * 1e3
                row[who + "_budget"] = budget
                row[who + "_kept"] = kept
                print(f"  {threads} thr {s:8s} {kind:6s} {who:7s} {sec * 1e3:9.2f} ms/step (median of {steps}, "
                      f"budget {budget})", file=sys.stderr, flush=True)
            assert row["peft_budget"] == row["dropin_budget"] and row["peft_kept"] == row["dropin_kept"], row
            out["rows"].append(row)
    print(json.dumps(out))


# ---- the C++ benchmark --------------------------------------------------------------------------------------------

def run_cpp(bench, sets, threads, min_time):
    if not bench or not os.access(bench, os.X_OK):
        return {}
    sets_re = "|".join(sets)
    # the state policy the Python package's allocators use: the library's default (in place)
    filt = f"^step/(update|mask)/({sets_re})/thrust-omp/in_place/"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        cmd = [bench, f"--benchmark_filter={filt}", f"--benchmark_min_time={min_time}", f"--benchmark_out={out}",
               "--benchmark_out_format=json"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        print("running:", " ".join(cmd), f"(OMP_NUM_THREADS={threads})", file=sys.stderr, flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            data = json.load(f)
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    res = {}
    for b in data["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        parts = b["run_name"].split("/")
        res[(parts[2], parts[1])] = b["real_time"] * unit[b["time_unit"]] * 1e3
    return res


def main():
    args = parse_args()
    if args.child:
        child(args)
        return
    sets = [s for s in args.sets.split(",") if s]
    for s in sets:
        if s not in SHAPES:
            sys.exit(f"unknown set {s!r}; choose from {', '.join(SHAPES)}")
    results = []
    for n in [int(x) for x in args.threads.split(",") if x]:
        env = dict(os.environ, OMP_NUM_THREADS=str(n))
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(n), "--sets", ",".join(sets),
               "--steps", str(args.steps)]
        print(f"{n} thread(s): PEFT and the drop-in", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        cpp = run_cpp(args.bench, sets, n, args.min_time)
        for row in res["rows"]:
            c = cpp.get((row["set"], row["step"]))
            row["cpp_ms"] = c
        results.append(res)

    first = results[0]
    print(f"\nAllocator step: PEFT's RankAllocator.update_and_allocate vs adalora.peft (drop-in, {first['backend']}) "
          f"vs bench_allocator (C++, thrust-omp); torch {first['torch']}, peft {first['peft']}")
    print("| set | step | threads | PEFT ms | drop-in ms | x | C++ ms | drop-in / C++ |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for res in results:
        for row in res["rows"]:
            c = row["cpp_ms"]
            cpp_txt = f"{c:.2f} | {row['dropin_ms'] / c:.2f}" if c else "- | -"
            print(f"| {row['set']} | {row['step']} | {res['threads']} | {row['peft_ms']:.2f} | {row['dropin_ms']:.2f} | "
                  f"{row['peft_ms'] / row['dropin_ms']:.1f} | {cpp_txt} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
