"""What each experiment tracker costs the training loop per log step; prints one JSON line.

    PYTHONPATH=. python bench/tracking_overhead.py [--steps 200] [--mlflow-uri http://127.0.0.1:5000]

Drives trainer.observability.trackers.Trackers the way RunLog.flush does (one metrics.jsonl record per log step, 9
scalars, 10 on eval steps), one backend at a time, and reports the wall time of the log call (median and p95,
milliseconds), plus start and finish. TensorBoard and W&B (offline) run here; MLflow only with --mlflow-uri (a running
server, e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from trainer.config.train_config import TrainConfig
from trainer.observability.trackers import Trackers

TINY = {"model_type": "llama", "vocab_size": 512, "hidden_size": 64}


def record(step: int) -> dict:
    return {"step": step, "time": time.time(), "epoch": 0, "loss": 5.0 / step, "lr": 3e-4, "grad_norm": 1.25,
            "tokens": 4096 * step, "tokens_per_s": 15000.0 + step, "step_seconds": 0.25, "data_wait_s": 0.001,
            "mfu": 0.41, "eval_loss": 4.0 if step % 50 == 0 else None}


def measure(name: str, tracking: dict, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cfg = TrainConfig.model_validate({
            "model": {"config": TINY, "tokenizer": "tok"}, "data": {"train": "x.jsonl"},
            "run": {"output_dir": str(out), "max_steps": steps}, "tracking": tracking})
        t0 = time.perf_counter()
        trackers = Trackers.start(cfg, out, {"zero_optimization": {"stage": 2}}, step=0, is_main=True)
        start = time.perf_counter() - t0
        assert [t.name for t in trackers.trackers] == [name], "the tracker did not start"
        times = []
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            trackers.log(record(step))
            times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        trackers.finish()
        finish = time.perf_counter() - t0
    times.sort()
    return {"start_s": round(start, 2), "log_ms_median": round(statistics.median(times), 2),
            "log_ms_p95": round(times[int(len(times) * 0.95) - 1], 2), "finish_s": round(finish, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--mlflow-uri")
    args = ap.parse_args()
    result = {"steps": args.steps,
              "tensorboard": measure("tensorboard", {"tensorboard": True}, args.steps),
              "wandb_offline": measure("wandb", {"wandb": {"project": "bench", "mode": "offline"}}, args.steps)}
    if args.mlflow_uri:
        result["mlflow"] = measure("mlflow", {"mlflow": {"tracking_uri": args.mlflow_uri, "experiment": "bench"}},
                                   args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
