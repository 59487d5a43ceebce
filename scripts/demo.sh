#!/usr/bin/env bash
# Builds and runs the demos (Release build in build/): the quickstart, then the equal-budget study.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The demos to build and run, in order: the quickstart (fine-tuning with AdaLoRA, under a minute), then the
# equal-budget study (AdaLoRA vs LoRA, about two minutes; writes tables and SVG plots to budget_study_out/).
DEMO_TARGETS=(quickstart budget_study)

jobs=$(nproc 2>/dev/null || echo 2)

printf '==== %s ====\n' "dependencies"
bash scripts/install-deps.sh

printf '\n==== %s ====\n' "configure build/ (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release

printf '\n==== %s ====\n' "build ${DEMO_TARGETS[*]}"
cmake --build build -j "${jobs}" --target "${DEMO_TARGETS[@]}"

for demo in "${DEMO_TARGETS[@]}"; do
  printf '\n==== %s ====\n' "run build/examples/${demo}"
  "./build/examples/${demo}"
done
