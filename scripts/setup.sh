#!/usr/bin/env bash
# Create .venv with llmlaunch, its trainer stack and the experiment tracker clients. Idempotent: a re-run with an unchanged
# pyproject.toml does nothing. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.llmlaunch-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi

echo "==> creating .venv (torch CPU build, DeepSpeed, transformers, peft; a few minutes the first time)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip wheel setuptools
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build. Set LLMLAUNCH_TORCH to change it.
"${pip[@]}" "${LLMLAUNCH_TORCH:-torch==2.13.0}"
# DeepSpeed compiles its setup against the installed torch, so it must not get an isolated build env.
.venv/bin/python -c "import deepspeed" >/dev/null 2>&1 || "${pip[@]}" --no-build-isolation "deepspeed>=0.15"
"${pip[@]}" -e ".[trainer,report,tracking,test]"

# DeepSpeed JIT-compiles its CPU shared-memory comm op on first use (~100 s); do it once here,
# cached in ~/.cache/torch_extensions, instead of inside the first training run.
.venv/bin/python - <<'PY' >/dev/null 2>&1 || true
from deepspeed.comm.torch import build_shm_op
build_shm_op()
PY
rm -f .venv/.llmlaunch-setup-*
touch "$stamp"
echo "==> .venv ready: $(.venv/bin/llmlaunch --version)"
