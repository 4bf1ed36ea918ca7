"""What a run tells people: the progress bar and log lines on rank 0, metrics.jsonl, and Prometheus.

Every rank calls step(); values are reduced across ranks only on log steps, so the hot loop does not
synchronise the host with the device more often than the user asked for (run.log_every).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.checkpoints.loop_state import LoopState
from trainer.config.train_config import TrainConfig
from trainer.observability.gpu_metrics import gather_node_gpus, gpu_uuid
from trainer.observability.metrics_log import MetricsLog
from trainer.observability.mfu import flops_per_token, peak_flops
from trainer.observability.trackers import Trackers
from trainer.training.engine import Topology

log = logging.getLogger("llmlaunch.trainer")


def progress_bar(topo: Topology, total: int, initial: int):
    """tqdm on rank 0 when attached to a terminal; pods and CI get plain log lines instead."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0,
                disable=not (topo.is_main and sys.stderr.isatty()))


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a half-written line (killed mid-write) sorts last."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def model_flops_per_token(model, cfg: TrainConfig, attention_len: float) -> float:
    """FLOPs per token for MFU: the data's attention length; a peft model's base weights are frozen, and
    only LoRA's trainable weights are matmuls run per token (a prefix is not)."""
    from trainer.training.model import count_parameters

    config = getattr(model, "config", None) or model.base_model.config
    if cfg.method.kind == "full":
        return flops_per_token(config, attention_len)
    adapter = count_parameters(model)[0] if cfg.method.kind == "lora" else 0
    return flops_per_token(config, attention_len, frozen_base=True, adapter_params=adapter)


def tokens_per_second(tokens: torch.Tensor, since: float, clock=time.perf_counter) -> tuple[int, float]:
    """(tokens, tokens/s) of a log window that began at `since`. The count is read first: .item() waits
    until the device has finished the window's steps, so the clock then covers their work, not only the
    host's queueing of it (which, on a GPU, ends well before the device does)."""
    count = int(tokens.item())
    elapsed = clock() - since
    return count, count / elapsed if elapsed > 0 else 0.0


class RunLog:
    def __init__(self, out: Path, topo: Topology, cfg: TrainConfig, ds_config: dict, model, total_steps: int,
                 attention_len: float | None = None) -> None:
        self.out, self.topo, self.cfg, self.total_steps = out, topo, cfg, total_steps
        self.log = MetricsLog(out, enabled=topo.is_main)
        self.trackers = Trackers(out, [])  # none until start_tracking
        self.path = self.log.path
        self.world = topo.world_size
        self.pending: dict | None = None
        self._loss = torch.zeros((), device=topo.device)
        self._tokens = torch.zeros((), dtype=torch.long)
        self._steps = 0
        self._since = time.perf_counter()
        self._data_wait = 0.0
        self._step_time = 0.0
        self.fp16 = bool(ds_config.get("fp16", {}).get("enabled"))
        self._skipped_seen = 0  # engine.skipped_steps (a running total) at the last log step
        if topo.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "ds_config.json").write_text(json.dumps(ds_config, indent=2, sort_keys=True) + "\n")
        dtype = "bf16" if ds_config.get("bf16", {}).get("enabled") else "fp16" if self.fp16 else "fp32"
        self.flops_per_token = model_flops_per_token(model, cfg, attention_len or cfg.data.seq_len)
        device_name = torch.cuda.get_device_name(topo.device) if topo.device.type == "cuda" else "cpu"
        peak = cfg.metrics.peak_tflops * 1e12 if cfg.metrics.peak_tflops else peak_flops(device_name, dtype)
        self.peak_total = peak * self.world if peak else None
        from trainer.observability.exporter import TrainMetrics

        self.metrics = TrainMetrics(
            cfg.metrics, job=os.environ.get("LLMLAUNCH_JOB", out.name), namespace=os.environ.get("LLMLAUNCH_NAMESPACE"),
            node_rank=topo.node_rank, local_rank=topo.local_rank, rank=topo.rank, world_size=self.world,
            flops_per_token=self.flops_per_token, peak_flops=peak, device=device_name,
        )
        # Local multi-node runs put several "nodes" on one host: one port each, loopback only.
        local = os.environ.get("LLMLAUNCH_LOCAL_RUN") == "1"
        port = cfg.metrics.port + (topo.node_rank if local else 0)
        self.metrics.start(addr="127.0.0.1" if local else "0.0.0.0", port=port)
        # Every rank takes part (a collective); the node's serving rank exports only these GPUs.
        self.metrics.set_node_gpus(gather_node_gpus(gpu_uuid(topo.device), topo.node_rank))

    def info(self, message: str) -> None:
        if self.topo.is_main:
            print(f"[llmlaunch] {message}", file=sys.stderr, flush=True)

    def resumed(self, path: Path, step: int, skipped_steps: int = 0) -> None:
        """Forget logged steps after the checkpoint: they will be trained (and logged) again.
        skipped_steps: the engine's restored running total, so only new overflows are counted."""
        self.info(f"resuming from {path} (step {step})")
        self._skipped_seen = skipped_steps
        if self.topo.is_main and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if _step_of(line) <= step]
            self.path.write_text("".join(line + "\n" for line in keep))

    def _is_log_step(self, step: int) -> bool:
        run = self.cfg.run
        return step % run.log_every == 0 or step == 1 or (run.eval_every and step % run.eval_every == 0)

    def step(self, state: LoopState, loss: torch.Tensor, tokens: torch.Tensor, seconds: float, data_wait: float,
             engine, bar) -> None:
        self._loss += loss
        self._tokens += tokens
        self._steps += 1
        self._data_wait += data_wait
        self._step_time += seconds
        self.metrics.observe_step_duration(seconds)  # host time: no device sync on non-log steps
        bar.update(1)
        if not self._is_log_step(state.step) and state.step < self.total_steps:
            return
        packed = torch.stack([self._loss.double() / self._steps, self._tokens.to(self._loss.device).double()])
        dist.all_reduce(packed)
        times = [torch.zeros(1, dtype=torch.float64, device=self.topo.device) for _ in range(self.world)]
        mine = torch.tensor([self._step_time / self._steps], dtype=torch.float64, device=self.topo.device)
        dist.all_gather(times, mine)
        tokens_value, tokens_per_s = tokens_per_second(packed[1], self._since)
        elapsed = time.perf_counter() - self._since
        loss_value = packed[0].item() / self.world
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else None
        lr = engine.get_lr()[0]
        state.tokens += tokens_value
        record = {
            "step": state.step, "epoch": state.epoch, "loss": round(loss_value, 6), "lr": lr,
            "grad_norm": grad_norm, "tokens": state.tokens, "tokens_per_s": round(tokens_per_s, 1),
            "step_seconds": round(self._step_time / self._steps, 4), "data_wait_s": round(self._data_wait, 4),
        }
        if self.peak_total:
            record["mfu"] = round(tokens_per_s * self.flops_per_token / self.peak_total, 5)
        loss_scale, skipped = None, 0
        if self.fp16:
            loss_scale = getattr(engine.optimizer, "cur_scale", None) or getattr(engine.optimizer, "loss_scale", None)
            record["loss_scale"], record["skipped_steps"] = loss_scale, engine.skipped_steps
            # DeepSpeed keeps a running total; the counter wants the overflows since the last log step.
            skipped, self._skipped_seen = max(engine.skipped_steps - self._skipped_seen, 0), engine.skipped_steps
        self.metrics.on_step(step=state.step, loss=loss_value, lr=lr, grad_norm=grad_norm, tokens=tokens_value,
                             samples=self.cfg.global_batch(self.world) * self._steps,
                             step_seconds=self._step_time / self._steps, data_wait_seconds=self._data_wait,
                             loss_scale=loss_scale, skipped_steps=skipped)
        self.metrics.on_rank_step_times([t.item() for t in times], self._peak_memory())
        self.pending = record
        if self.topo.is_main:
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            if bar.disable:
                eta = (self.total_steps - state.step) * (elapsed / self._steps)
                self.info(f"step {state.step}/{self.total_steps} loss {loss_value:.4f} lr {lr:.2e} "
                          f"{tokens_per_s:,.0f} tok/s eta {eta:,.0f}s")
        self._loss.zero_()
        self._tokens.zero_()
        self._steps, self._data_wait, self._step_time, self._since = 0, 0.0, 0.0, time.perf_counter()

    def _peak_memory(self) -> list[float] | None:
        if self.topo.device.type != "cuda":
            return None
        peaks = [torch.zeros(1, dtype=torch.float64, device=self.topo.device) for _ in range(self.world)]
        mine = torch.tensor([float(torch.cuda.max_memory_allocated(self.topo.device))], dtype=torch.float64,
                            device=self.topo.device)
        dist.all_gather(peaks, mine)
        return [p.item() for p in peaks]

    def eval(self, state: LoopState, eval_loss: float, improved: bool) -> None:
        ppl = math.exp(min(eval_loss, 50.0))
        self.pending = dict(self.pending or {"step": state.step}, eval_loss=round(eval_loss, 6), eval_ppl=round(ppl, 4))
        self.metrics.on_eval(step=state.step, eval_loss=eval_loss)
        self.info(f"eval at step {state.step}: loss {eval_loss:.4f} ppl {ppl:.2f}{' (best)' if improved else ''}"
                  + (" - early stopping" if state.stopped_early else ""))

    def start_tracking(self, step: int, ds_config: dict) -> None:
        """The experiment trackers (rank 0), once the resumed step is known: a resumed run continues their runs."""
        self.trackers = Trackers.start(self.cfg, self.out, ds_config, step=step, is_main=self.topo.is_main)

    def flush(self) -> None:
        if self.pending is not None:
            self.trackers.log(self.log.write(**self.pending))  # the trackers get metrics.jsonl's very record
        self.pending = None

    def checkpoint(self, state: LoopState, seconds: float) -> None:
        self.metrics.on_checkpoint(seconds=seconds, ok=True)
        self.info(f"checkpoint step {state.step} written in {seconds:.1f}s")

    def checkpoint_failed(self, state: LoopState, seconds: float, reason: str, in_a_row: int, limit: int) -> None:
        self.metrics.on_checkpoint(seconds=seconds, ok=False)
        then = ("the run fails" if in_a_row >= limit
                else "training goes on (a restart now resumes from the last complete one)")
        self.info(f"checkpoint step {state.step} FAILED ({in_a_row} in a row, at most {limit}): {reason}; {then}")

    def finished(self, state: LoopState) -> None:
        self.flush()
        best = "" if state.best_eval is None else f", best eval loss {state.best_eval:.4f} at step {state.best_step}"
        self.info(f"done at step {state.step}{best}; model in {self.out / 'final'}")
        self.metrics.close()
        self.log.close()
        self.trackers.finish("FINISHED")  # after the export: MLflow may upload final/
