"""Distributed set-up and the DeepSpeed engine: optimizer, LR schedule, deepspeed.initialize."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainer.config.ds_config import build_ds_config
from trainer.config.train_config import ScheduleConfig, TrainConfig
from trainer.training.model import param_groups


@dataclass(frozen=True)
class Topology:
    rank: int
    local_rank: int
    world_size: int
    node_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: float = 1800) -> Topology:
    """Join the process group torchrun set up (env://); gloo on CPU, nccl on GPUs."""
    import deepspeed

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    if device.type == "cpu":
        skip_shm_comm_build()
    deepspeed.init_distributed(
        dist_backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s)
    )
    node_rank = int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0)))
    return Topology(dist.get_rank(), local_rank, dist.get_world_size(), node_rank, device)


def skip_shm_comm_build() -> None:
    """On CPUs DeepSpeed JIT-builds its shared-memory all-reduce at every start, holding a file lock in
    ~/.cache/torch_extensions; a rank killed meanwhile (a lost node, a restart) leaves the lock behind
    and every later start waits on it forever. Only inference and tensor parallelism use the op."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def load_ds_config(cfg: TrainConfig, config_path: Path, world_size: int, precision: str) -> dict[str, Any]:
    """ds_config.json beside train.yaml (the ConfigMap's, or a local run's) wins; precision is filled in here."""
    beside = config_path.parent / "ds_config.json"
    if beside.is_file():
        ds = json.loads(beside.read_text())
        fresh = build_ds_config(cfg, world_size, precision)
        ds.setdefault("bf16", fresh["bf16"])
        ds.setdefault("fp16", fresh["fp16"])
        ds["train_batch_size"] = fresh["train_batch_size"]  # the world size is only known now
        return ds
    return build_ds_config(cfg, world_size, precision)


def lr_lambda(schedule: ScheduleConfig, total_steps: int):
    """Multiplier of optim.lr at a step: linear warm-up, then cosine / linear decay to min_lr_ratio, or constant."""
    warmup, floor = schedule.warmup_steps, schedule.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule.kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if schedule.kind == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, ds_config: dict[str, Any]) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.optim.weight_decay)
    kwargs = dict(lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    if ds_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") == "cpu":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    return torch.optim.AdamW(groups, fused=torch.cuda.is_available(), **kwargs)


def make_engine(model: torch.nn.Module, cfg: TrainConfig, ds_config: dict[str, Any], total_steps: int):
    import deepspeed

    optimizer = make_optimizer(model, cfg, ds_config)
    factor = lr_lambda(cfg.schedule, total_steps)
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor),
        config=ds_config,
    )
    if cfg.model.compile:
        # DeepSpeed compiles the module it wraps (inductor), keeping its ZeRO hooks outside the graph.
        engine.compile()
    return engine
