#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up .venv and the real test infrastructure
# (Prometheus, etcd + kube-apiserver, a Kubernetes node, helm), then ruff and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh trainer,report,tracking,test
bash scripts/install-test-deps.sh
export PATH=$PWD/.tools/bin:$PATH
# The whole suite (no test selected by path, marker or keyword): build the `pods` tests' images in the
# background meanwhile (several minutes on a fresh machine, mostly downloads); the tests wait for them.
builder=""
if [ -z "$(printf '%s\n' "$@" | grep -v '^-q$\|^-v$\|^-x$')" ]; then
  mkdir -p .tools
  .venv/bin/python tests/images.py >.tools/images-build.log 2>&1 & builder=$!
fi
# The linter first (pyproject.toml [tool.ruff]): seconds, and a finding fails the run before the slow part.
.venv/bin/ruff check .
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ -n "$builder" ]; then
  kill "$builder" 2>/dev/null || true
  wait "$builder" 2>/dev/null || true
fi
exit $status
