"""Wall time of `llmlaunch render examples/tiny.yaml --nodes 4`, as a user runs it (a fresh process).

Prints one JSON line: the median and min of N runs, next to two floors measured the same way: the
bare interpreter start-up, and `llmlaunch validate` (start-up + loading and validating the job file,
no rendering), so what rendering itself costs stands out from a slow or busy machine.
Target (issue #3): under 0.2 s.   Usage: python bench/render_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
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
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    render = [sys.executable, "-m", "launcher.cli", "render", "examples/tiny.yaml", "--nodes", "4"]
    timed(render, 2)  # warm the page cache and __pycache__
    render_times = timed(render, args.runs)
    bare_times = timed([sys.executable, "-c", "pass"], args.runs)
    validate_times = timed([sys.executable, "-m", "launcher.cli", "validate", "examples/tiny.yaml"], args.runs)
    median = statistics.median(render_times)
    print(json.dumps({
        "bench": "render_latency",
        "command": "llmlaunch render examples/tiny.yaml --nodes 4",
        "runs": args.runs,
        "median_s": round(median, 4),
        "min_s": round(min(render_times), 4),
        "python_startup_median_s": round(statistics.median(bare_times), 4),
        "validate_median_s": round(statistics.median(validate_times), 4),
        "target_s": TARGET_S,
        "meets_target": median < TARGET_S,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
