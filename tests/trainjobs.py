"""Small job files and a runner for tests that train for real (DeepSpeed, torchrun, gloo, 2 processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data"

# Small enough for a 2-core CI machine: a few seconds of training per run after start-up.
TINY_MODEL = {
    "model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 128, "tie_word_embeddings": False,
}


def tiny_job(tmp: Path, name: str = "t", **sections) -> Path:
    """Write a job file under tmp; keyword arguments replace train sections (model=..., run=...)."""
    train = {
        "model": {"config": TINY_MODEL, "tokenizer": str(DATA / "tokenizer")},
        "data": {"train": str(DATA / "tiny" / "train.jsonl"), "eval": str(DATA / "tiny" / "eval.jsonl"), "seq_len": 64},
        "optim": {"lr": 3e-3, "weight_decay": 0.01},
        "schedule": {"kind": "cosine", "warmup_steps": 2},
        "run": {"output_dir": str(tmp / "out"), "max_steps": 8, "micro_batch_size": 4, "eval_every": 4,
                "eval_batches": 2, "save_every": 4, "log_every": 1},
        "deepspeed": {"preset": "zero2"},
        "precision": "auto",
        "metrics": {"enabled": False},
    }
    for key, value in sections.items():
        train[key] = {**train.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "train": train}, sort_keys=False))
    return path


def save_tiny_pretrained(out: Path) -> Path:
    """A 'pretrained' HF model directory to fine-tune: TINY_MODEL with seeded random weights, plus the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    arch = dict(TINY_MODEL)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch)).save_pretrained(out)
    AutoTokenizer.from_pretrained(DATA / "tokenizer").save_pretrained(out)
    return out


def llmlaunch_env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), LLMLAUNCH_FORCE_CPU="1", **extra)


def llmlaunch(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = llmlaunch_env(**(env or {}))
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def train(job: Path, *args: str, nproc: int = 2, **kw) -> subprocess.CompletedProcess:
    result = llmlaunch("train", str(job), "--nproc-per-node", str(nproc), *args, **kw)
    if result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(out) if "loss" in r}
