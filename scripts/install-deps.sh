#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages adalora needs to build and test, only those missing (quick when all are there).
#   bash scripts/install-deps.sh           compiler, CMake, Eigen, Catch2 v2, nlohmann_json, xtensor
#   bash scripts/install-deps.sh --bench   the same plus Google Benchmark
#   bash scripts/install-deps.sh --mpi     the same plus OpenMPI (the MPI communicator, its tests and example)
#   bash scripts/install-deps.sh --ccache  the same plus ccache (scripts/test.sh's compiler cache)
#   bash scripts/install-deps.sh --libtorch  the same plus Debian's CPU libtorch (adalora::libtorch, its tests and
#                                          example; 164 packages, 125 MB to download, 512 MB installed, about a minute)
#   bash scripts/install-deps.sh --clang   the same plus clang 14, its sanitizer and libFuzzer runtimes, and its
#                                          OpenMP runtime (the fuzz and ThreadSanitizer stages of scripts/test.sh)
# The options combine (scripts/test.sh: --mpi --ccache --libtorch, then --clang). ADALORA_SKIP_DEPS=1 skips it (e.g.
# when the dependencies come from elsewhere).
set -euo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/.."

# The packages, one variable per group; add a backend's package to its own group (e.g. libxtensor-dev) here.
ADALORA_DEPS=(build-essential cmake libeigen3-dev catch2 nlohmann-json3-dev libxtensor-dev)
ADALORA_BENCH_DEPS=(libbenchmark-dev)
ADALORA_MPI_DEPS=(libopenmpi-dev openmpi-bin)
ADALORA_CCACHE_DEPS=(ccache)
# the libtorch integration (adalora::libtorch, examples/libtorch_finetune): Debian's CPU-only libtorch 1.13
ADALORA_LIBTORCH_DEPS=(libtorch-dev)
ADALORA_CLANG_DEPS=(clang-14 libclang-rt-14-dev libomp-14-dev)

packages=("${ADALORA_DEPS[@]}")
for arg in "$@"; do
  case "$arg" in
    --bench) packages+=("${ADALORA_BENCH_DEPS[@]}") ;;
    --mpi) packages+=("${ADALORA_MPI_DEPS[@]}") ;;
    --ccache) packages+=("${ADALORA_CCACHE_DEPS[@]}") ;;
    --libtorch) packages+=("${ADALORA_LIBTORCH_DEPS[@]}") ;;
    --clang) packages+=("${ADALORA_CLANG_DEPS[@]}") ;;
    -h | --help)
      sed -n '2,12p' "$self" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install-deps.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

if [[ "${ADALORA_SKIP_DEPS:-0}" == "1" ]]; then
  echo "install-deps: skipped (ADALORA_SKIP_DEPS=1)"
  exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: no dpkg-query here (not Debian/Ubuntu); install these yourself: ${packages[*]}" >&2
  exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all present (${packages[*]})"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-deps: not root and no sudo; as root, run: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
