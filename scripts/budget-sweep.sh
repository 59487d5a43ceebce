#!/usr/bin/env bash
# Builds and runs the budget sweep (examples/budget_study/budget_sweep.cpp) under nice, and writes the committed tables
# and plots: docs/budget_sweep/ (summary.md, CSV files, SVG pictures). 52 minutes under nice 19 on a heavily
# shared 2-core machine (6266 s of runs, about 300 s of CPU time); a few minutes on idle cores.
#   bash scripts/budget-sweep.sh                 the committed sweep (5 seeds, 200 runs)
#   bash scripts/budget-sweep.sh --seeds 2 ...   any budget_sweep option (--help lists them) goes to the program
# ADALORA_SWEEP_OUT=DIR writes elsewhere (e.g. to compare with the committed files).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${ADALORA_SWEEP_OUT:-docs/budget_sweep}"
jobs=$(nproc 2>/dev/null || echo 2)

printf '==== %s ====\n' "dependencies"
bash scripts/install-deps.sh

printf '\n==== %s ====\n' "configure build/ (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release

printf '\n==== %s ====\n' "build budget_sweep"
nice -n 10 cmake --build build -j "${jobs}" --target budget_sweep

printf '\n==== %s ====\n' "run build/examples/budget_sweep --out ${out} $*"
start=$(date +%s)
nice -n 19 ./build/examples/budget_sweep --out "${out}" "$@"
echo "budget-sweep: $(($(date +%s) - start)) s"
