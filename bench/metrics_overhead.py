"""What the exporter costs the training loop, as JSON:

    python bench/metrics_overhead.py [--steps 20000]

on_step_us: mean microseconds per TrainMetrics.on_step on the serving rank (called every step);
scrape_ms: one GET /metrics of that registry (two fake GPUs via tests/fake_nvml); scrape_bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_nvml import two_gpus  # noqa: E402
from trainer.config.train_config import MetricsConfig  # noqa: E402
from trainer.observability.exporter import TrainMetrics  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    m = TrainMetrics(MetricsConfig(), job="bench", namespace="ml", node_rank=0, local_rank=0, rank=0, world_size=8,
                     local_world_size=8, flops_per_token=4.6e10, peak_flops=989.4e12, device="bench", nvml=two_gpus())
    m.start(addr="127.0.0.1", port=0)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        m.on_step(step=step, loss=2.0, lr=1e-4, grad_norm=1.0, tokens=4096 * 8, samples=8, step_seconds=0.5,
                  data_wait_seconds=0.01, loss_scale=None, skipped_steps=0)
        m.observe_step_duration(0.5)
    on_step_us = (time.perf_counter() - t0) / args.steps * 1e6
    m.on_rank_step_times([0.5] * 8, [2e9] * 8)
    scrapes, size = [], 0
    for _ in range(50):
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics") as resp:
            size = len(resp.read())
        scrapes.append((time.perf_counter() - t) * 1e3)
    m.close()
    print(json.dumps({"on_step_us": round(on_step_us, 2), "scrape_ms_median": round(statistics.median(scrapes), 2),
                      "scrape_bytes": size, "steps": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
