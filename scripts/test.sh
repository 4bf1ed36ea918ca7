#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up .venv and the real test infrastructure
# (Prometheus, etcd + kube-apiserver, helm), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-test-deps.sh
export PATH=$PWD/.tools/bin:$PATH
exec .venv/bin/python -m pytest "$@"
