#!/usr/bin/env bash
# Builds adalora and runs the whole test suite: checks that no tracked file reaches outside the clone, installs what is
# missing (Debian packages; the cached Python environment of scripts/python-env.sh, for the tests against the real
# PEFT), then a Release build in build/ (warnings are errors); then, when nvcc is
# there, every program nvcc compiles in build-cuda/ (-arch=sm_90, built but not run: that needs a GPU, see
# scripts/gpu-check; skip it with ADALORA_SKIP_CUDA=1); then the Python package (python/): built with pip into
# build-python/site (this checkout's overlay on the cached environment of scripts/python-env.sh) and tested with
# pytest, and with nvcc its CUDA variant compiled in build-python-cuda/ (skip the stage with ADALORA_SKIP_PYTHON=1);
# then an AddressSanitizer + UBSan build in build-asan/ (skip it with ADALORA_SKIP_SANITIZE=1); then, with clang 14,
# the tests that use Thrust's OpenMP system under ThreadSanitizer in build-tsan/ (ADALORA_SKIP_TSAN=1 skips it) and
# every fuzz target for ADALORA_FUZZ_SECONDS (default 20) seconds in build-fuzz/ (scripts/fuzz.sh; ADALORA_SKIP_FUZZ=1
# skips it). Exits non-zero on any failure.
# ADALORA_BUILD_DIR / ADALORA_CUDA_BUILD_DIR / ADALORA_PYTHON_BUILD_DIR / ADALORA_PYTHON_CUDA_BUILD_DIR /
# ADALORA_ASAN_BUILD_DIR / ADALORA_TSAN_BUILD_DIR / ADALORA_FUZZ_BUILD_DIR choose other build folders (relative to the
# repository root); CUDACXX names the nvcc to use (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${ADALORA_BUILD_DIR:-build}"
cuda_dir="${ADALORA_CUDA_BUILD_DIR:-build-cuda}"
asan_dir="${ADALORA_ASAN_BUILD_DIR:-build-asan}"
python_dir="${ADALORA_PYTHON_BUILD_DIR:-build-python}"
python_cuda_dir="${ADALORA_PYTHON_CUDA_BUILD_DIR:-build-python-cuda}"

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

section "the repository is self-contained"
bash scripts/check-self-contained.sh

section "dependencies"
# with OpenMPI: the MPI communicator's tests run under mpiexec (2, 3 and 4 ranks); with ccache: see below; with
# libtorch: adalora::libtorch, its tests and examples/libtorch_finetune
bash scripts/install-deps.sh --mpi --ccache --libtorch

# Every compile of this script (g++, clang, nvcc, the Python package's CMake) goes through ccache, its cache kept in
# ~/.cache/adalora/ccache (ADALORA_CCACHE_DIR) across runs and clones: a second run rebuilds only what changed.
# Paths under the clone are hashed relative to it, so another clone of the same sources hits the same entries.
# ADALORA_NO_CCACHE=1 compiles without it.
if [[ "${ADALORA_NO_CCACHE:-0}" != "1" ]] && command -v ccache >/dev/null 2>&1; then
  export CCACHE_DIR="${ADALORA_CCACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/adalora/ccache}"
  export CCACHE_BASEDIR="${PWD}" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-8G}"
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CUDA_COMPILER_LAUNCHER=ccache
  mkdir -p "${CCACHE_DIR}"
  ccache --zero-stats >/dev/null
  echo "ccache: ${CCACHE_DIR}"
fi

# The Python environment with torch and PEFT (made once, then cached: scripts/python-env.sh): the tests against the
# real PEFT (the adapter round trip, the shipped traces' --check) run with it.
section "Python environment (torch, PEFT)"
python="$(bash scripts/python-env.sh)"
echo "python: ${python}"

section "configure ${build_dir}/ (Release, warnings as errors)"
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release -DADALORA_WARNINGS_AS_ERRORS=ON -DADALORA_SANITIZE=OFF \
  -DADALORA_PYTHON="${python}"

section "build ${build_dir}/ (-j${jobs})"
cmake --build "${build_dir}" -j "${jobs}"

section "test ${build_dir}/"
ctest --test-dir "${build_dir}" --output-on-failure -j "${jobs}"

# The CUDA backend's programs, compiled by nvcc for sm_90 (Hopper), so that a change that breaks the CUDA build fails
# here even on a machine without a GPU. Only the targets nvcc compiles: adalora_cuda_programs (the CUDA tests, the
# adalora-trace with its CUDA replay, adalora-validate-cuda) and adalora_cuda_benchmarks (hence Google Benchmark).
nvcc="${CUDACXX:-}"
if [[ -z "${nvcc}" ]]; then
  nvcc="$(command -v nvcc 2>/dev/null || true)"
fi
if [[ -z "${nvcc}" && -x /usr/local/cuda/bin/nvcc ]]; then
  nvcc=/usr/local/cuda/bin/nvcc
fi
if [[ "${ADALORA_SKIP_CUDA:-0}" == "1" ]]; then
  section "CUDA build skipped (ADALORA_SKIP_CUDA=1)"
elif [[ -z "${nvcc}" ]]; then
  section "CUDA build skipped: no nvcc (not on PATH, not /usr/local/cuda/bin/nvcc; set CUDACXX to use one)"
else
  section "configure ${cuda_dir}/ (CUDA with ${nvcc}, sm_90, Release, warnings as errors, with the benchmarks)"
  bash scripts/install-deps.sh --bench
  cmake -S . -B "${cuda_dir}" -DCMAKE_BUILD_TYPE=Release -DADALORA_WARNINGS_AS_ERRORS=ON -DADALORA_SANITIZE=OFF \
    -DADALORA_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER="${nvcc}" -DCMAKE_CUDA_ARCHITECTURES=90 -DADALORA_BUILD_BENCHMARKS=ON

  section "build ${cuda_dir}/: every program nvcc compiles (adalora_cuda_programs, adalora_cuda_benchmarks, -j${jobs})"
  cuda_start=$SECONDS
  cmake --build "${cuda_dir}" --target adalora_cuda_programs adalora_cuda_benchmarks -j "${jobs}"
  echo "CUDA build: $((SECONDS - cuda_start))s"

  section "CUDA tests in ${cuda_dir}/: listed, not run (they need a GPU: bash scripts/gpu-check)"
  ctest --test-dir "${cuda_dir}" -L cuda -N
fi

# The Python package: pip builds python/ (scikit-build-core + nanobind, one translation unit) into this checkout's
# overlay build-python/site, without touching the shared cached environment (scripts/python-env.sh: torch, PEFT,
# transformers, made once per machine and content of python/requirements-dev.txt); pytest runs python/tests with
# skips turned into failures. With nvcc, the package's CUDA variant is compiled and imported too (it needs a GPU to
# run a step).
if [[ "${ADALORA_SKIP_PYTHON:-0}" == "1" ]]; then
  section "Python stage skipped (ADALORA_SKIP_PYTHON=1)"
else
  py_start=$SECONDS
  py="${python}"  # the cached environment made above

  section "Python: build the package (pip install ./python into ${python_dir}/site)"
  py_build_start=$SECONDS
  mkdir -p "${python_dir}"
  CMAKE_BUILD_PARALLEL_LEVEL="${jobs}" "${py}" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
    --no-deps --no-index --upgrade --target "${python_dir}/site" -C build-dir="${PWD}/${python_dir}/build" ./python
  py_build_s=$((SECONDS - py_build_start))

  # The CUDA variant compiles (nvcc, one core's worth) while pytest runs (torch on one thread): its log is printed
  # after the tests.
  py_cuda=0
  if [[ "${ADALORA_SKIP_CUDA:-0}" != "1" && -n "${nvcc}" ]]; then
    py_cuda=1
    mkdir -p "${python_cuda_dir}"
    py_cuda_log="${python_cuda_dir}/build.log"
    py_cuda_start=$SECONDS
    (
      cmake -S python -B "${python_cuda_dir}" -DCMAKE_BUILD_TYPE=Release -DADALORA_PYTHON_CUDA=ON \
        -DCMAKE_CUDA_COMPILER="${nvcc}" -DCMAKE_CUDA_ARCHITECTURES=90 -DPython_EXECUTABLE="${py}" &&
        cmake --build "${python_cuda_dir}" -j "${jobs}"
    ) >"${py_cuda_log}" 2>&1 &
    py_cuda_pid=$!
  fi

  section "Python: pytest python/tests"
  py_test_start=$SECONDS
  PYTHONPATH="${PWD}/${python_dir}/site" ADALORA_NO_SKIP=1 "${py}" -m pytest python/tests -q -p no:cacheprovider \
    -W ignore::FutureWarning -W ignore::DeprecationWarning || { [[ ${py_cuda} -eq 1 ]] && kill "${py_cuda_pid}"; exit 1; }
  py_test_s=$((SECONDS - py_test_start))

  py_cuda_s=0
  if [[ ${py_cuda} -eq 1 ]]; then
    section "Python: the package's CUDA variant in ${python_cuda_dir}/ (nvcc, sm_90; compiled and imported, not run)"
    if ! wait "${py_cuda_pid}"; then
      cat "${py_cuda_log}"
      echo "Python: the CUDA variant did not build (log above: ${py_cuda_log})" >&2
      exit 1
    fi
    grep -E "adalora_python|Built target" "${py_cuda_log}" || true
    rm -rf "${python_cuda_dir}/site" && mkdir -p "${python_cuda_dir}/site/adalora"
    cp python/src/adalora/*.py "${python_cuda_dir}"/_core*.so "${python_cuda_dir}/site/adalora/"
    PYTHONPATH="${PWD}/${python_cuda_dir}/site" "${py}" -c 'import adalora; assert adalora.has_cuda and "cuda" in adalora.backends, adalora.backends; print("CUDA variant: backends", adalora.backends)'
    py_cuda_s=$((SECONDS - py_cuda_start))
  fi
  echo "Python stage: $((SECONDS - py_start))s (package build ${py_build_s}s, pytest ${py_test_s}s, CUDA variant ${py_cuda_s}s from the start of pytest, alongside it)"
fi

if [[ "${ADALORA_SKIP_SANITIZE:-0}" == "1" ]]; then
  section "sanitizer build skipped (ADALORA_SKIP_SANITIZE=1)"
else
  section "configure ${asan_dir}/ (-O1, -fsanitize=address,undefined)"
  # -O1 -g1: sanitizers need no heavy optimisation, and this halves the build on a 2-core machine. Left out of this
  # build, as the Release build above has them: the examples and the header self-containment check (compiled, never
  # run by a test), the adalora-trace command line (its replays are the library's validate/ API, which test_validate
  # runs here on every trace, corrupted ones included), and the test bodies' instantiation for Thrust's CPP system
  # (the OMP one is tested here).
  # The MPI programs too (OpenMPI's own allocations would trip the leak checker): the distributed allocator's logic
  # runs here on thread_communicator (test_distributed), the MPI wrapper in the Release build.
  cmake -S . -B "${asan_dir}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DADALORA_SANITIZE=ON -DADALORA_BUILD_EXAMPLES=OFF -DADALORA_BUILD_HEADER_CHECK=OFF -DADALORA_TEST_THRUST_CPP=OFF \
    -DADALORA_BUILD_TOOLS=OFF -DADALORA_WITH_MPI=OFF

  section "build ${asan_dir}/ (-j${jobs})"
  cmake --build "${asan_dir}" -j "${jobs}"

  section "test ${asan_dir}/ (without the packaging and python labels)"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  ctest --test-dir "${asan_dir}" --output-on-failure -j "${jobs}" -LE 'packaging|python'
fi

# ThreadSanitizer on the tests in which threads meet: every generic test body on Thrust's OpenMP system alone
# (ADALORA_TEST_THRUST_OMP_ONLY), with clang's OpenMP runtime and its ThreadSanitizer tool (libarcher), which tells
# ThreadSanitizer about OpenMP's own synchronization. The 100,000-adapter registration guard ([registration], an Eigen
# test) is left out: ThreadSanitizer's slowdown says nothing about threads there.
tsan_dir="${ADALORA_TSAN_BUILD_DIR:-build-tsan}"
if [[ "${ADALORA_SKIP_TSAN:-0}" == "1" ]]; then
  section "ThreadSanitizer build skipped (ADALORA_SKIP_TSAN=1)"
else
  tsan_start=$SECONDS
  section "configure ${tsan_dir}/ (clang 14, -fsanitize=thread, tests on Thrust's OpenMP system)"
  bash scripts/install-deps.sh --clang
  clang="$(command -v clang++-14 || command -v clang++)"
  mkdir -p "${tsan_dir}"
  if ! cmake -S . -B "${tsan_dir}" -DCMAKE_CXX_COMPILER="${clang}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DADALORA_TSAN=ON -DADALORA_TEST_THRUST_OMP_ONLY=ON \
      -DADALORA_WARNINGS_AS_ERRORS=ON -DADALORA_BUILD_EXAMPLES=OFF -DADALORA_BUILD_TOOLS=OFF \
      -DADALORA_BUILD_HEADER_CHECK=OFF -DADALORA_WITH_MPI=OFF >"${tsan_dir}/configure.log" 2>&1; then
    if grep -q "ADALORA_TEST_THRUST_OMP_ONLY needs the Thrust backend" "${tsan_dir}/configure.log"; then
      section "ThreadSanitizer build skipped: no Thrust backend here (CCCL or OpenMP not found)"
    else
      cat "${tsan_dir}/configure.log"
      exit 1
    fi
  else
    tsan_tests=(test_backends test_allocation test_adapters)
    section "build ${tsan_dir}/: ${tsan_tests[*]} (-j${jobs})"
    cmake --build "${tsan_dir}" --target "${tsan_tests[@]}" -j "${jobs}"
    tsan_built=$SECONDS
    section "test ${tsan_dir}/ under ThreadSanitizer"
    # clang's OpenMP runtime is not instrumented: libarcher (beside it) reports its synchronization to ThreadSanitizer
    archer="$(dirname "$(readlink -f "${clang}")")/../lib/libarcher.so"
    for t in "${tsan_tests[@]}"; do
      echo "--- ${t}"
      OMP_TOOL_LIBRARIES="${archer}" OMP_WAIT_POLICY=passive \
        TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ignore_noninstrumented_modules=1" \
        "${tsan_dir}/tests/${t}" "~[registration]"
    done
    echo "ThreadSanitizer stage: $((SECONDS - tsan_start))s (clang, configure and build $((tsan_built - tsan_start))s, tests $((SECONDS - tsan_built))s)"
  fi
fi

if [[ "${ADALORA_SKIP_FUZZ:-0}" == "1" ]]; then
  section "fuzzing skipped (ADALORA_SKIP_FUZZ=1)"
else
  fuzz_start=$SECONDS
  section "fuzz every reader of outside input: ${ADALORA_FUZZ_SECONDS:-20}s per target (scripts/fuzz.sh)"
  bash scripts/fuzz.sh "${ADALORA_FUZZ_SECONDS:-20}"
  echo "fuzz stage: $((SECONDS - fuzz_start))s"
fi

if [[ -n "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]]; then
  section "ccache"
  ccache --show-stats | grep -E "Hits|Misses|Cache size" || true
fi

section "all tests passed in $((SECONDS - start))s"
