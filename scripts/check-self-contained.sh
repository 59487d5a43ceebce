#!/usr/bin/env bash
# Fails when a tracked file refers to a folder beside the clone (the parent's "shared" folder of the developers'
# machines): a user's clone has nothing beside it, so the build, tests, scripts and docs must not reach outside.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pattern='\.\./'
pattern+='shared'  # split so that this file does not match itself
if [[ -d .git || -f .git ]]; then
  hits=$(git grep -n -E "${pattern}" -- . || true)
else
  hits=$(grep -rn -E "${pattern}" --exclude-dir='build*' . || true)
fi
if [[ -n "${hits}" ]]; then
  echo "check-self-contained: these lines refer to a folder outside the repository:" >&2
  echo "${hits}" >&2
  exit 1
fi
echo "check-self-contained: no tracked file refers outside the repository"
