#!/usr/bin/env bash
# Create .venv with llmlaunch and the extras asked for (pyproject.toml [project.optional-dependencies]).
# Usage: bash scripts/setup.sh [EXTRAS]   EXTRAS: comma-separated, default trainer,report (what the demo needs);
# scripts/test.sh asks for the test stack on top. Idempotent: a re-run with an unchanged pyproject.toml and
# extras already installed does nothing; asking for more extras adds them to the same .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-trainer,report}
stamp=.venv/.llmlaunch-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
# The stamp lists the extras installed; anything asked for beyond them means another install.
if [ -f "$stamp" ]; then
  installed=$(cat "$stamp")
  missing=$(tr ',' '\n' <<<"$extras" | grep -vxF -f "$stamp" || true)
  [ -z "$missing" ] && exit 0
  extras=$(printf '%s\n' "$installed" "$missing" | paste -sd, -)
fi
started=$SECONDS

echo "==> setting up .venv with llmlaunch[$extras] (torch CPU build, DeepSpeed: a few minutes the first time)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip wheel setuptools
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build. Set LLMLAUNCH_TORCH to change it.
"${pip[@]}" "${LLMLAUNCH_TORCH:-torch==2.13.0}"
# DeepSpeed compiles its setup against the installed torch, so it must not get an isolated build env.
.venv/bin/python -c "import deepspeed" >/dev/null 2>&1 || "${pip[@]}" --no-build-isolation "deepspeed>=0.15"
"${pip[@]}" -e ".[$extras]"

# DeepSpeed JIT-compiles its CPU shared-memory comm op on first use (~100 s); do it once here,
# cached in ~/.cache/torch_extensions, instead of inside the first training run.
.venv/bin/python - <<'PY' >/dev/null 2>&1 || true
from deepspeed.comm.torch import build_shm_op
build_shm_op()
PY
rm -f .venv/.llmlaunch-setup-*
tr ',' '\n' <<<"$extras" >"$stamp"
echo "==> .venv ready in $((SECONDS - started)) s ($(du -sh .venv | cut -f1)): $(.venv/bin/llmlaunch --version)"
