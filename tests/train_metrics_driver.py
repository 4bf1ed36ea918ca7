"""Drives TrainMetrics through a simulated run, the way the training loop does, for e2e tests.

    python -m tests.train_metrics_driver --node-rank 0 --steps 300

Prints `PORT <n>` once /metrics is served (port 0: the OS picks a free one), trains when a line
arrives on stdin (so the test can first get Prometheus scraping), prints `DONE` after the last step,
then keeps serving until stdin closes, so Prometheus can scrape the final values. The loop
is real (real time, real exporter, real HTTP server); the model is not: loss, lr and step times
follow simple curves. GPUs come from the fake NVML (tests/fake_nvml.py): there is no GPU here.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from tests.fake_nvml import two_gpus
from trainer.config.train_config import MetricsConfig
from trainer.observability.exporter import TrainMetrics
from trainer.observability.mfu import flops_per_token, peak_flops

TINY = {"model_type": "llama", "vocab_size": 512, "hidden_size": 128, "intermediate_size": 352,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4}
SEQ_LEN, MICRO_BATCH, NPROC = 128, 8, 2
OVERFLOW_STEPS = {5, 6}  # fp16 overflows early in training: two skipped steps, loss scale halves twice


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--node-rank", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--step-seconds", type=float, default=0.02)
    ap.add_argument("--job", default="e2e")
    ap.add_argument("--namespace", default="ml-team", help='"" for a run that does not know its namespace')
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    world = args.nodes * NPROC
    rank = args.node_rank * NPROC
    metrics = TrainMetrics(
        MetricsConfig(), job=args.job, namespace=args.namespace or None, node_rank=args.node_rank, local_rank=0,
        rank=rank, world_size=world, local_world_size=NPROC, flops_per_token=flops_per_token(TINY, SEQ_LEN),
        peak_flops=peak_flops("NVIDIA H100 80GB HBM3", "bf16"), device="NVIDIA H100 80GB HBM3", nvml=two_gpus(),
    )
    metrics.start(addr="127.0.0.1", port=args.port)
    metrics.set_node_gpus({rank + i: gpu.uuid for i, gpu in enumerate(two_gpus().gpus)})  # one GPU per rank
    print(f"PORT {metrics.port}", flush=True)
    sys.stdin.readline()  # "go"

    tokens_per_step = SEQ_LEN * MICRO_BATCH * world
    loss_scale = 65536.0
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        time.sleep(args.step_seconds * 0.1)  # "waiting for data"
        data_wait = time.perf_counter() - t0
        time.sleep(args.step_seconds * 0.9)  # "forward, backward, optimizer"
        overflow = step in OVERFLOW_STEPS
        loss_scale = loss_scale / 2 if overflow else loss_scale
        seconds = time.perf_counter() - t0
        metrics.observe_step_duration(seconds)
        metrics.on_step(
            step=step, loss=2.0 + 4.0 * math.exp(-step / 60), lr=3e-3 * min(1.0, step / 20),
            grad_norm=1.0 / math.sqrt(step), tokens=tokens_per_step, samples=MICRO_BATCH * world, step_seconds=seconds,
            data_wait_seconds=data_wait, loss_scale=loss_scale, skipped_steps=int(overflow),
        )
        if step % 10 == 0:
            # last rank of every node is 10% slower: a straggler the dashboard should show
            times = [args.step_seconds * (1.1 if r % NPROC == NPROC - 1 else 1.0) for r in range(world)]
            metrics.on_rank_step_times(times, [float(2**30 * (r + 1)) for r in range(world)])
        if step % 100 == 0:
            metrics.on_eval(step=step, eval_loss=2.1 + 4.0 * math.exp(-step / 60))
            t_save = time.perf_counter()
            time.sleep(0.05)  # "saving"
            metrics.on_checkpoint(seconds=time.perf_counter() - t_save, ok=True)
    print("DONE", flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
