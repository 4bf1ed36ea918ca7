"""Wall time of `llmlaunch render examples/tiny.yaml --nodes 4`, as a user runs it (a fresh process).

Prints one JSON line: the median and min of N runs, next to what is measured the same way in the same
run: the bare interpreter start-up, `llmlaunch validate` (start-up + loading and validating the job file,
no rendering), and `helm template` of the chart with the same job's values (helm/llmlaunch/ci/
tiny-4nodes-values.yaml), so the ratio to helm stands out from a slow or busy machine.
Target (issues #3, #17): render and validate at most 0.2 s.   Usage: python bench/render_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.2


def timed(cmd: list[str], runs: int) -> list[float]:
    # As installed: byte-compiled modules (pip writes .pyc at install), whatever this shell says.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    render = [sys.executable, "-m", "launcher", "render", "examples/tiny.yaml", "--nodes", "4"]
    helm = shutil.which("helm") or str(ROOT / ".tools" / "bin" / "helm")
    helm_template = [helm, "template", "tiny", "helm/llmlaunch", "-f", "helm/llmlaunch/ci/tiny-4nodes-values.yaml"]
    timed(render, 2)  # warm the page cache and __pycache__
    timed(helm_template, 2)
    # Interleaved rounds, so a burst of load from elsewhere hits every command alike.
    render_times, bare_times, validate_times, helm_times = [], [], [], []
    for _ in range(args.runs):
        render_times += timed(render, 1)
        bare_times += timed([sys.executable, "-c", "pass"], 1)
        validate_times += timed([sys.executable, "-m", "launcher", "validate", "examples/tiny.yaml"], 1)
        helm_times += timed(helm_template, 1)
    median = statistics.median(render_times)
    validate = statistics.median(validate_times)
    helm_median = statistics.median(helm_times)
    print(json.dumps({
        "bench": "render_latency",
        "command": "llmlaunch render examples/tiny.yaml --nodes 4",
        "runs": args.runs,
        "median_s": round(median, 4),
        "min_s": round(min(render_times), 4),
        "python_startup_median_s": round(statistics.median(bare_times), 4),
        "validate_median_s": round(validate, 4),
        "helm_template_median_s": round(helm_median, 4),
        "render_to_helm_ratio": round(median / helm_median, 2),
        "target_s": TARGET_S,
        "meets_target": max(median, validate) <= TARGET_S,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
