#!/usr/bin/env bash
# The quick-start demo: set up .venv if needed (the trainer and report extras only, not the test stack), then train examples/tiny.yaml with 2 processes on this
# machine (DeepSpeed ZeRO-2, CPU or local GPUs). Re-running resumes from the run's checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/llmlaunch train examples/tiny.yaml --nproc-per-node 2 "$@"
