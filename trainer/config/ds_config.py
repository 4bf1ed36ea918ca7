"""DeepSpeed config assembly: preset + user overrides + what the job file already says.

Torch-free, so the launcher can put the same resolved file into a job's ConfigMap.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from llmlaunch_data import data_path
from trainer.config.train_config import ConfigError, TrainConfig

Precision = str  # "bf16" | "fp16" | "fp32"


def load_preset(name: str) -> dict[str, Any]:
    path = data_path("ds_configs") / f"{name}.json"
    if not path.is_file():
        raise ConfigError([f"train.deepspeed.preset: no preset file {path}"])
    return json.loads(path.read_text())


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def machine_has_gpu() -> bool:
    """Torch-free GPU presence check (the launcher must not import torch)."""
    if os.environ.get("LLMLAUNCH_FORCE_CPU") == "1":
        return False
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def native_bf16(capability: tuple[int, int] | None) -> bool:
    """bf16 on tensor cores: compute capability 8.0 (Ampere) and later. torch.cuda.is_bf16_supported()
    also says yes on older GPUs (V100, T4) that only emulate it, many times slower than fp16."""
    return capability is not None and tuple(capability) >= (8, 0)


def hide_gpus_when_forced(environ: dict | None = None) -> bool:
    """LLMLAUNCH_FORCE_CPU=1 hides GPUs from torch and DeepSpeed too (before either is imported), so a
    forced-CPU run on a GPU host trains on the CPU as the launcher planned. Returns whether it applied."""
    environ = os.environ if environ is None else environ
    if environ.get("LLMLAUNCH_FORCE_CPU") != "1":
        return False
    environ["CUDA_VISIBLE_DEVICES"] = ""
    environ["DS_ACCELERATOR"] = "cpu"
    return True


def resolve_precision(requested: str, has_gpu: bool, gpu_has_bf16: bool = True) -> Precision:
    """auto: bf16 on GPUs that have it natively (native_bf16), fp16 on older GPUs, fp32 on CPUs.

    fp32 on CPU because bf16 without native support (AVX2 machines) measured ~30x slower here.
    """
    if requested == "fp16" and not has_gpu:
        raise ConfigError(["train.precision: fp16 needs a GPU (DeepSpeed refuses fp16 on CPU); use fp32 or auto"])
    if requested != "auto":
        return requested
    if not has_gpu:
        return "fp32"
    return "bf16" if gpu_has_bf16 else "fp16"


def build_ds_config(cfg: TrainConfig, world_size: int, precision: Precision | None) -> dict[str, Any]:
    """The resolved DeepSpeed config. `precision` None leaves the precision sections to the pod."""
    ds = deep_merge(load_preset(cfg.deepspeed.preset), cfg.deepspeed.overrides)
    run, optim = cfg.run, cfg.optim
    ds["train_micro_batch_size_per_gpu"] = run.micro_batch_size
    ds["gradient_accumulation_steps"] = run.grad_accum
    ds["train_batch_size"] = cfg.global_batch(world_size)
    ds["gradient_clipping"] = optim.grad_clip
    if precision is not None:
        ds["bf16"] = deep_merge({"enabled": precision == "bf16"}, ds.get("bf16", {}))
        ds["fp16"] = deep_merge(
            {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
             "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
            ds.get("fp16", {}),
        )
        if precision != "fp16":
            ds["fp16"] = {"enabled": False}
        ds["bf16"]["enabled"] = precision == "bf16"
    return ds


def zero_stage(ds: dict[str, Any]) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))
