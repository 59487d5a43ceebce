#!/usr/bin/env bash
# Builds adalora and runs the whole test suite: a Release build in build/ (warnings are errors), then an
# AddressSanitizer + UBSan build in build-asan/ (skip it with ADALORA_SKIP_SANITIZE=1). Exits non-zero on any failure.
# ADALORA_BUILD_DIR / ADALORA_ASAN_BUILD_DIR choose other build folders (relative to the repository root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${ADALORA_BUILD_DIR:-build}"
asan_dir="${ADALORA_ASAN_BUILD_DIR:-build-asan}"

jobs=$(nproc 2>/dev/null || echo 2)
start=$SECONDS

section() {
  printf '\n==== %s ==== [%ds]\n' "$*" "$((SECONDS - start))"
}
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    printf '\n==== FAILED (exit %d) after %ds ====\n' "$rc" "$((SECONDS - start))" >&2
  fi
}
trap on_exit EXIT

section "dependencies"
bash scripts/install-deps.sh

section "configure ${build_dir}/ (Release, warnings as errors)"
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release -DADALORA_WARNINGS_AS_ERRORS=ON -DADALORA_SANITIZE=OFF

section "build ${build_dir}/ (-j${jobs})"
cmake --build "${build_dir}" -j "${jobs}"

section "test ${build_dir}/"
ctest --test-dir "${build_dir}" --output-on-failure -j "${jobs}"

if [[ "${ADALORA_SKIP_SANITIZE:-0}" == "1" ]]; then
  section "sanitizer build skipped (ADALORA_SKIP_SANITIZE=1)"
else
  section "configure ${asan_dir}/ (-O1, -fsanitize=address,undefined)"
  # -O1 -g1: sanitizers need no heavy optimisation, and this halves the build on a 2-core machine
  cmake -S . -B "${asan_dir}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DADALORA_SANITIZE=ON

  section "build ${asan_dir}/ (-j${jobs})"
  cmake --build "${asan_dir}" -j "${jobs}"

  section "test ${asan_dir}/ (without the packaging label)"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  ctest --test-dir "${asan_dir}" --output-on-failure -j "${jobs}" -LE packaging
fi

section "all tests passed in $((SECONDS - start))s"
