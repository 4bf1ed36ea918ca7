#!/usr/bin/env bash
# The first-GPU-run check (bench/gpu_check.py): installs the carried wheels when the image lacks
# deepspeed / pydantic / datasets / hjson, then runs every check and writes one JSON.
#   bash bench/gpu_check.sh [--cpu-smoke] [--out gpu_check.json] [--budget-s 30]
# Wheels are looked for in $GPU_WHEELS, <checkout>/shared/gpu-wheels, <checkout>/../shared/gpu-wheels and
# <checkout>/.whl; they go to a --target directory put on PYTHONPATH (the image's packages stay untouched).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
missing="$("$PY" -c 'import importlib.util as u; print(" ".join(n for n in ("deepspeed", "pydantic", "datasets", "hjson") if u.find_spec(n) is None))')"
if [ -n "$missing" ]; then
  found=""
  for dir in "${GPU_WHEELS:-}" "$ROOT/shared/gpu-wheels" "$ROOT/../shared/gpu-wheels" "$ROOT/.whl"; do
    if [ -n "$dir" ] && compgen -G "$dir/*.whl" >/dev/null; then found="$dir"; break; fi
  done
  if [ -z "$found" ]; then
    echo "gpu_check: $missing missing and no wheels found (set GPU_WHEELS)" >&2
    exit 2
  fi
  SITE="${TMPDIR:-/tmp}/llmlaunch-gpu-site"
  echo "gpu_check: installing $missing (and their wheels) from $found into $SITE" >&2
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$found"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" "$ROOT/bench/gpu_check.py" "$@"
