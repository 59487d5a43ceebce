#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ (clang, ASan + UBSan) in build-fuzz/ and runs each for a bounded time.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   default: 20 s each, every target
# Each target starts from its seeds (tests/fuzz/corpus/<target>/) and regressions (tests/fuzz/regressions/<target>/),
# which it only reads; the inputs it adds go to build-fuzz/corpus/<target>/ (kept between runs). A crash, a leak, an
# undefined behaviour, an input slower than 20 s or a process over 2 GB leaves its input in build-fuzz/crashes/ and
# fails the run; copy it to tests/fuzz/regressions/<target>/ once fixed (fuzz_replay then runs it in every build).
# Prints, per target: executions, coverage (edges), features, corpus size and the crashes found.
# ADALORA_FUZZ_BUILD_DIR (default build-fuzz), ADALORA_FUZZ_JOBS (targets run at once, default: the cores),
# CXX_FUZZ (default: clang++-14, else clang++). Installs clang-14 and its runtimes when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-20}"
shift || true
all_targets=(safetensors checkpoint alloc_trace layer_trace peft_config peft_folder)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then targets=("${all_targets[@]}"); fi
dir="${ADALORA_FUZZ_BUILD_DIR:-build-fuzz}"
jobs="${ADALORA_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}"

bash scripts/install-deps.sh --clang
cxx="${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++ || true)}"
if [[ -z "${cxx}" ]]; then
  echo "fuzz.sh: no clang++ (libFuzzer needs clang)" >&2
  exit 1
fi

build_start=$SECONDS
# -O1 -g1: what the sanitizers need, at half the build time of -O2
cmake -S . -B "${dir}" -DCMAKE_CXX_COMPILER="${cxx}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DADALORA_BUILD_FUZZERS=ON -DADALORA_BUILD_TESTS=OFF \
  -DADALORA_BUILD_TOOLS=OFF -DADALORA_BUILD_EXAMPLES=OFF -DADALORA_WARNINGS_AS_ERRORS=ON -DADALORA_WITH_THRUST=OFF \
  -DADALORA_WITH_MPI=OFF >/dev/null
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_${t}"); done
cmake --build "${dir}" --target "${build_targets[@]}" -j "${jobs}"
echo "fuzz.sh: ${#targets[@]} fuzzers built in $((SECONDS - build_start))s; running each for ${seconds}s, ${jobs} at a time"

mkdir -p "${dir}/crashes" "${dir}/logs"
# this run's findings only: a crash of an earlier run is in its log, and in tests/fuzz/regressions/ once fixed
for t in "${targets[@]}"; do rm -f "${dir}/crashes/${t}-"*; done
run_one() {
  local t=$1
  mkdir -p "${dir}/corpus/${t}"
  # the seeds, and the regressions where a target has some (git keeps no empty folder, and libFuzzer stops at a
  # missing one)
  local inputs=("${dir}/corpus/${t}")
  for d in "tests/fuzz/corpus/${t}" "tests/fuzz/regressions/${t}"; do
    if [[ -d "${d}" ]]; then inputs+=("${d}"); fi
  done
  # -timeout: one input slower than that is a hang; -rss_limit_mb / -malloc_limit_mb: a reader that allocates far
  # more than its input is a bug (every size is checked against the file)
  "${dir}/tests/fuzz/fuzz_${t}" "${inputs[@]}" \
    -max_total_time="${seconds}" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=262144 \
    -print_final_stats=1 -artifact_prefix="${dir}/crashes/${t}-" >"${dir}/logs/${t}.log" 2>&1
}
export -f run_one
export dir seconds
status=0
printf '%s\n' "${targets[@]}" | xargs -P "${jobs}" -I{} bash -c 'run_one {}' || status=1

printf '\n%-12s %12s %8s %8s %8s %8s\n' target executions cov ft corpus crashes
for t in "${targets[@]}"; do
  log="${dir}/logs/${t}.log"
  if [[ ! -f "${log}" ]] || ! grep -q 'stat::number_of_executed_units' "${log}"; then
    # libFuzzer did not run to its time limit (a bad argument, a crash before the first input): its log says why
    status=1
    printf '%-12s did not run to its end; its log (%s):\n' "${t}" "${log}" >&2
    tail -5 "${log}" >&2 || true
    continue
  fi
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "${log}" | grep -o '[0-9]*$' || echo "?")
  last=$(grep -E '^#[0-9]+' "${log}" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' <<<"${last}" | grep -o '[0-9]*' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' <<<"${last}" | grep -o '[0-9]*' || echo "?")
  corp=$(grep -o 'corp: [0-9]*' <<<"${last}" | grep -o '[0-9]*' || echo "?")
  crashes=$(find "${dir}/crashes" -name "${t}-*" | wc -l)
  printf '%-12s %12s %8s %8s %8s %8s\n' "${t}" "${execs}" "${cov}" "${ft}" "${corp}" "${crashes}"
  if [[ ${crashes} -ne 0 ]] || grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "${log}"; then
    status=1
    echo "  ${t}: see ${log} and ${dir}/crashes/${t}-*" >&2
    grep -m 5 -E 'ERROR|runtime error|SUMMARY' "${log}" >&2 || true
  fi
done
exit "${status}"
