"""Prometheus exporter of a training run: loss, throughput, MFU, heartbeats, checkpoints and GPUs.

Local rank 0 of every node serves /metrics (train.metrics.port) from its own registry; every
other process keeps a TrainMetrics whose methods return at once, so the loop calls them on all
ranks without branching. Node of global rank 0 exports the run's global values (loss, lr, tokens,
step time, MFU, loss scale, checkpoints); every node exports its heartbeat, current step, its
ranks' step times (stragglers) and its GPUs (trainer.observability.gpu_metrics).

Labels on every series: job, namespace (only when known), node_rank. Scrape with
honor_labels: true so these win over the scrape job's own `job` / `namespace` target labels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from types import ModuleType
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from trainer.config.train_config import MetricsConfig
from trainer.observability.gpu_metrics import GpuCollector, load_nvml

log = logging.getLogger(__name__)

STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
CHECKPOINT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
THROUGHPUT_WINDOW = 10  # steps averaged for tokens/s and MFU: one slow step should not swing them

# Exported by the node of global rank 0 (the run's global values).
TRAINING_METRICS = (
    "llmlaunch_train_loss",
    "llmlaunch_eval_loss",
    "llmlaunch_learning_rate",
    "llmlaunch_grad_norm",
    "llmlaunch_tokens_total",
    "llmlaunch_samples_total",
    "llmlaunch_step_duration_seconds",
    "llmlaunch_tokens_per_second",
    "llmlaunch_mfu_ratio",
    "llmlaunch_loss_scale",
    "llmlaunch_skipped_steps_total",
    "llmlaunch_data_wait_seconds_total",
    "llmlaunch_checkpoint_duration_seconds",
    "llmlaunch_checkpoints_total",
    "llmlaunch_last_checkpoint_timestamp_seconds",
)
# Exported by every node.
NODE_METRICS = (
    "llmlaunch_run_info",
    "llmlaunch_train_step",
    "llmlaunch_last_step_timestamp_seconds",
    "llmlaunch_trainer_start_timestamp_seconds",
    "llmlaunch_rank_step_seconds",
)


class TrainMetrics:
    """The exporter the training loop drives; on_step costs tens of microseconds (bench/metrics_overhead.py)."""

    def __init__(
        self,
        cfg: MetricsConfig,
        *,
        job: str,
        namespace: str | None,
        node_rank: int,
        local_rank: int,
        rank: int,
        world_size: int,
        flops_per_token: float,
        peak_flops: float | None,
        device: str,
        local_world_size: int | None = None,
        nvml: ModuleType | None | Literal["auto"] = "auto",
    ) -> None:
        self.serving = cfg.enabled and local_rank == 0
        self.global_values = self.serving and rank == 0
        self.port: int | None = None  # bound port once start() served
        self._cfg = cfg
        self._rank = rank
        self._local_world_size = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        self._world_size = world_size
        self._flops_per_token = flops_per_token
        # train.metrics.peak_tflops overrides the device table; without either, MFU stays absent.
        self._peak_flops = cfg.peak_tflops * 1e12 if cfg.peak_tflops else peak_flops
        self._nvml_arg = nvml
        self._nvml: ModuleType | None = None
        self._server = None
        self._window: deque[tuple[int, float]] = deque(maxlen=THROUGHPUT_WINDOW)
        self._children: dict[Gauge, Gauge] = {}  # labelled gauges, created on first set: absent until then
        if not self.serving:
            return

        self.labels = {"job": job, **({"namespace": namespace} if namespace else {}), "node_rank": str(node_rank)}
        names = list(self.labels)
        self.registry = CollectorRegistry()
        r = self.registry

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, [*names, *extra], registry=r)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*names, *extra], registry=r)

        self._info = gauge("llmlaunch_run_info", "The run's device and world size (value 1).", ("device", "world_size"))
        self._info.labels(**self.labels, device=device, world_size=str(world_size)).set(1)
        self._step = gauge("llmlaunch_train_step", "Current optimizer step.")
        self._heartbeat = gauge("llmlaunch_last_step_timestamp_seconds", "Unix time the last step finished.")
        start = gauge("llmlaunch_trainer_start_timestamp_seconds", "Unix time this trainer process started.")
        start.labels(**self.labels).set(time.time())
        self._rank_step = gauge("llmlaunch_rank_step_seconds", "Last logged step time of each rank on this node.",
                                ("rank",))
        self.gpus = GpuCollector(self.labels, nvml=None, rank=rank)
        r.register(self.gpus)
        if not self.global_values:
            return

        self._loss = gauge("llmlaunch_train_loss", "Training loss of the last step.")
        self._eval_loss = gauge("llmlaunch_eval_loss", "Loss of the last evaluation.")
        self._lr = gauge("llmlaunch_learning_rate", "Learning rate of the last step.")
        self._grad_norm = gauge("llmlaunch_grad_norm", "Global gradient norm before clipping, last step.")
        self._tokens_per_s = gauge("llmlaunch_tokens_per_second",
                                   f"Tokens/s over the last {THROUGHPUT_WINDOW} steps.")
        self._mfu = gauge("llmlaunch_mfu_ratio",
                          f"Model FLOPs utilization (0-1) over the last {THROUGHPUT_WINDOW} steps.")
        self._loss_scale = gauge("llmlaunch_loss_scale", "fp16 dynamic loss scale (absent in bf16/fp32).")
        self._last_ckpt = gauge("llmlaunch_last_checkpoint_timestamp_seconds",
                                "Unix time of the last successful checkpoint.")
        self._tokens = counter("llmlaunch_tokens_total", "Tokens trained on (all ranks).").labels(**self.labels)
        self._samples = counter("llmlaunch_samples_total", "Sequences trained on (all ranks).").labels(**self.labels)
        self._skipped = counter("llmlaunch_skipped_steps_total",
                                "Steps skipped for fp16 overflow.").labels(**self.labels)
        self._data_wait = counter("llmlaunch_data_wait_seconds_total",
                                  "Time rank 0 waited for batches.").labels(**self.labels)
        self._checkpoints = counter("llmlaunch_checkpoints_total", "Checkpoint saves by result.", ("result",))
        for result in ("ok", "failed"):
            self._checkpoints.labels(**self.labels, result=result)
        self._step_time = Histogram(
            "llmlaunch_step_duration_seconds", "Wall time of an optimizer step.", names, registry=r,
            buckets=STEP_BUCKETS,
        ).labels(**self.labels)
        self._ckpt_time = Histogram(
            "llmlaunch_checkpoint_duration_seconds", "Wall time of a checkpoint save.", names, registry=r,
            buckets=CHECKPOINT_BUCKETS,
        ).labels(**self.labels)

    def start(self, *, addr: str = "0.0.0.0", port: int | None = None) -> None:
        """Serve /metrics (local rank 0, when enabled). `port` overrides cfg.port; 0 picks a free one.

        A port already in use is logged, not raised: losing metrics must not stop a training run.
        """
        if not self.serving or self._server is not None:
            return
        self.gpus.nvml = self._nvml = load_nvml() if self._nvml_arg == "auto" else self._nvml_arg
        try:
            self._server, _ = start_http_server(self._cfg.port if port is None else port, addr, registry=self.registry)
        except OSError as e:
            log.error("metrics: cannot serve on %s:%s (%s); this node exports no metrics",
                      addr, port or self._cfg.port, e)
            return
        self.port = self._server.server_port
        log.info("metrics: serving http://%s:%d/metrics", addr, self.port)

    def on_step(
        self,
        *,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float | None,
        tokens: int,
        samples: int,
        step_seconds: float,
        data_wait_seconds: float,
        loss_scale: float | None = None,
        skipped_steps: int = 0,
    ) -> None:
        """Once per logged interval (every step when log_every is 1). tokens / samples: global counts since
        the last call; step_seconds: mean step time over them; skipped_steps: fp16 overflow steps among
        them (a count, never a running total). Step durations go to observe_step_duration, every step."""
        if not self.serving:
            return
        self._set(self._step, step)
        self._set(self._heartbeat, time.time())
        if not self.global_values:
            return
        self._set(self._loss, loss)
        self._set(self._lr, lr)
        if grad_norm is not None:
            self._set(self._grad_norm, grad_norm)
        if loss_scale is not None:
            self._set(self._loss_scale, loss_scale)
        if skipped_steps > 0:
            self._skipped.inc(skipped_steps)
        self._tokens.inc(tokens)
        self._samples.inc(samples)
        self._data_wait.inc(max(data_wait_seconds, 0.0))
        self._window.append((tokens, step_seconds))
        seconds = sum(s for _, s in self._window)
        if seconds > 0:
            tokens_per_s = sum(t for t, _ in self._window) / seconds
            self._set(self._tokens_per_s, tokens_per_s)
            if self._peak_flops:
                mfu = tokens_per_s * self._flops_per_token / (self._peak_flops * self._world_size)
                self._set(self._mfu, mfu)

    def observe_step_duration(self, seconds: float) -> None:
        """Every optimizer step: its host wall time (no device sync), into the step-duration histogram."""
        if self.global_values:
            self._step_time.observe(seconds)

    def _set(self, gauge: Gauge, value: float) -> None:
        child = self._children.get(gauge)
        if child is None:  # labels() costs more than the set itself: look it up once
            child = self._children[gauge] = gauge.labels(**self.labels)
        child.set(value)

    def on_rank_step_times(
        self, seconds_by_rank: list[float], max_memory_allocated_by_rank: list[float] | None = None
    ) -> None:
        """Every log step, with an all_gather of each rank's step time (and CUDA allocator peak).

        Each node exports its own ranks: ranks on a node are contiguous under torchrun.
        """
        if not self.serving:
            return
        first = self._rank  # local rank 0 is the node's first rank
        ours = range(first, min(first + self._local_world_size, len(seconds_by_rank)))
        for rank in ours:
            self._rank_step.labels(**self.labels, rank=str(rank)).set(seconds_by_rank[rank])
        if max_memory_allocated_by_rank is not None:
            self.gpus.set_allocator_peaks({rank: max_memory_allocated_by_rank[rank] for rank in ours})

    def set_node_gpus(self, uuid_by_rank: dict[int, str]) -> None:
        """The GPU UUID of each of this node's ranks (gpu_metrics.gather_node_gpus): the GPUs exported."""
        if self.serving:
            self.gpus.set_node_gpus(uuid_by_rank)

    def on_eval(self, *, step: int, eval_loss: float) -> None:
        if self.global_values:
            self._set(self._eval_loss, eval_loss)

    def on_checkpoint(self, *, seconds: float, ok: bool) -> None:
        if not self.global_values:
            return
        self._ckpt_time.observe(seconds)
        self._checkpoints.labels(**self.labels, result="ok" if ok else "failed").inc()
        if ok:
            self._set(self._last_ckpt, time.time())

    def close(self) -> None:
        """Stop serving (the last scrape after this marks the series stale) and release NVML."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._nvml is not None and self._nvml_arg == "auto":
            # already shut down, or the driver went away: nothing to release
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None
