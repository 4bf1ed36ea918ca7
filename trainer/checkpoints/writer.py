"""Checkpoints that are either complete or invisible, pruning, final export (resume.py loads them).

Layout under <output_dir>/checkpoints/step-000050/:
  DeepSpeed's engine state (model, optimizer and ZeRO partitions, LR scheduler; written by every rank),
  loop-rank{r}.json (each rank's loop position and RNG states: rank_state.py), and COMPLETE, written by
  rank 0 only after every rank has finished, listing every file with its size and SHA-256 (manifest.py).
  A directory without COMPLETE (a crash mid-write) is never loaded; resume.py picks the newest one
  that still matches its manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from deepspeed.checkpoint.constants import (
    UNIVERSAL_CHECKPOINT_INFO,
    UNIVERSAL_CHECKPOINT_VERSION_KEY,
    UNIVERSAL_CHECKPOINT_VERSION_VALUE,
)

from trainer.checkpoints.manifest import MARKER, checkpoint_files, describe, share
from trainer.checkpoints.rank_state import encode as encode_loop_state
from trainer.checkpoints.rank_state import loop_file
from trainer.failpoints import failpoint
from trainer.storage.atomic_files import atomic_write

log = logging.getLogger("llmlaunch.trainer")

# Lets deepspeed.checkpoint.ds_to_universal convert the checkpoint when a resume has another world size.
UNIVERSAL_INFO = {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).is_file())


class SaveFailed(Exception):
    """A checkpoint could not be written on some rank; raised on every rank alike (collective)."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


def save(engine, root: Path, step: int, loop_state: dict[str, Any], *, keep_last: int, protect: int | None,
         micro_batch_size: int | None = None) -> float:
    """Write a checkpoint from every rank; returns the seconds it took. Collective: all ranks call it.
    Raises SaveFailed on every rank when a write failed on any (OSError), leaving no COMPLETE."""
    start = time.perf_counter()
    target = step_dir(root, step)
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0 and target.exists():  # a leftover from a crash at this very step
        shutil.rmtree(target)
    dist.barrier()
    error = None
    try:
        engine.save_checkpoint(str(root), tag=target.name, client_state=UNIVERSAL_INFO)
        atomic_write(loop_file(target, rank), encode_loop_state(loop_state))
        failpoint("checkpoint", step)
    except OSError as e:  # full or vanished volume, permissions: this rank's part is missing
        error = f"rank {rank}: {e}"
    errors = [None] * world
    dist.all_gather_object(errors, error)  # every rank has written its part, or says why not
    failed = [e for e in errors if e is not None]
    if failed:  # no COMPLETE: the partial directory is never loaded, and the next save prunes it
        raise SaveFailed(f"checkpoint step {step} not saved ({'; '.join(failed)})", time.perf_counter() - start)
    names = checkpoint_files(target)
    parts = [None] * world
    dist.all_gather_object(parts, describe(target, share(names, rank, world)))
    if rank == 0:
        files = {name: entry for part in parts for name, entry in part.items()}
        meta = {"step": step, "world_size": world, "micro_batch_size": micro_batch_size, "time": time.time(),
                "files": files}
        atomic_write(target / MARKER, json.dumps(meta, indent=1, sort_keys=True).encode())
        prune(root, keep_last, protect)
    dist.barrier()
    return time.perf_counter() - start


def prune(root: Path, keep_last: int, protect: int | None) -> None:
    """Keep the newest `keep_last` complete checkpoints and the protected (best) one; drop stale partial ones."""
    complete = complete_checkpoints(root)
    keep = set(complete[-keep_last:])
    if protect is not None:
        keep.add(step_dir(root, protect))
    newest = complete[-1] if complete else None
    for path in sorted(root.glob("step-*")):
        partial_and_old = not (path / MARKER).exists() and newest is not None and path.name < newest.name
        if (path in complete and path not in keep) or partial_and_old:
            shutil.rmtree(path, ignore_errors=True)


def export(engine, model: torch.nn.Module, tokenizer, out: Path, is_main: bool) -> None:
    """Save a transformers model directory (or a peft adapter) loadable without llmlaunch. Collective.

    Under ZeRO-3 the partitioned weights are gathered onto rank 0 first.
    """
    state_dict = None
    if engine.zero_optimization_partition_weights():
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if is_main:
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        module = engine.module
        module.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    dist.barrier()
