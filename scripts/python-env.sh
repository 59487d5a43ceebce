#!/usr/bin/env bash
# Makes (once) and prints the path of the project's Python test environment: a virtual environment with the pinned
# packages of python/requirements-dev.txt (torch, PEFT, transformers, nanobind, scikit-build-core, pytest), cached
# under ${ADALORA_CACHE_DIR:-~/.cache/adalora}/venv-<hash of that file> and reused by every later call and checkout.
#   bash scripts/python-env.sh          prints the environment's python (creating the environment if needed)
#   bash scripts/python-env.sh --path   prints the environment's folder
# The first call downloads torch from PyPI (about 3 GB; about 2 minutes on a fast link); later calls take a second.
# ADALORA_PYTHON_BASE names the interpreter that makes the environment (default: python3, which must be >= 3.10).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

requirements=python/requirements-dev.txt
cache="${ADALORA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/adalora}"
key=$(sha256sum "${requirements}" | cut -c1-16)
venv="${cache}/venv-${key}"
base="${ADALORA_PYTHON_BASE:-python3}"

want_path=0
for arg in "$@"; do
  case "$arg" in
    --path) want_path=1 ;;
    -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "python-env.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

mkdir -p "${cache}"
# One maker at a time (two CI jobs, or a test and a demo, may ask at once); the marker file is written last, so an
# interrupted installation is started again rather than used.
exec 9>"${cache}/venv-${key}.lock"
flock 9
if [[ ! -f "${venv}/.adalora-complete" ]]; then
  if ! "${base}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "python-env.sh: '${base}' is missing or older than Python 3.10 (set ADALORA_PYTHON_BASE)" >&2
    exit 1
  fi
  if ! "${base}" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "python-env.sh: '${base}' cannot make virtual environments (on Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  echo "python-env.sh: making ${venv} from ${requirements} (first time only: downloads torch, several GB)" >&2
  t0=$SECONDS
  rm -rf "${venv}"
  "${base}" -m venv "${venv}"
  "${venv}/bin/python" -m pip install -q --disable-pip-version-check -r "${requirements}" >&2
  touch "${venv}/.adalora-complete"
  echo "python-env.sh: made in $((SECONDS - t0)) s" >&2
fi
if [[ ${want_path} -eq 1 ]]; then
  echo "${venv}"
else
  echo "${venv}/bin/python"
fi
