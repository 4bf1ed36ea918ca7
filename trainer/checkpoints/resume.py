"""Resume: the newest checkpoint that is complete and intact, converted when the world size changed.

    found = resume.find(ckpt_root, ds_config)        # collective, before deepspeed.initialize
    engine = make_engine(...)                          # ds_config may now ask for a universal load
    loop_state = resume.load(engine, found, micro_batch_size)

A checkpoint that fails its manifest (truncated or missing shard, altered bytes) is skipped with a
warning and its COMPLETE marker renamed to DAMAGED, so it is never tried again. A checkpoint written
by another number of ranks is converted once to DeepSpeed's universal format (<ckpt>/universal/),
which ZeRO can repartition for the new world; the data position is carried over in samples consumed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainer.checkpoints import rank_state
from trainer.checkpoints.manifest import DAMAGED, MARKER, problems, read_marker, shape_problems, share
from trainer.checkpoints.writer import complete_checkpoints

UNIVERSAL = "universal"


@dataclass(frozen=True)
class Found:
    path: Path
    meta: dict[str, Any]
    universal: bool  # written by another world size: load the universal conversion


def say(message: str) -> None:
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"[llmlaunch] {message}", file=sys.stderr, flush=True)


def verify(path: Path, meta: dict[str, Any] | None) -> list[str]:
    """Problems with a checkpoint against its manifest, checked by all ranks in parallel. Collective."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if meta is None:
        mine = [f"its {MARKER} marker cannot be read"] if rank == 0 else []
    elif shape := shape_problems(meta):
        mine = shape if rank == 0 else []
    else:
        files = meta.get("files") or {}  # markers written before manifests: trusted as before
        mine = problems(path, files, share(sorted(files), rank, world))
        if not mine:  # intact; then every loop file must be llmlaunch's own (read as data, never unpickled)
            mine = bad_loop_files(path, rank, world)
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, mine)
    return [problem for part in parts for problem in part]


def bad_loop_files(path: Path, rank: int, world: int) -> list[str]:
    """This rank's share of the checkpoint's loop files that are not loop states llmlaunch wrote."""
    names = sorted({p.with_suffix(".json").name for p in path.glob("loop-rank*") if p.suffix in (".json", ".pt")})
    found = []
    for name in share(names, rank, world):
        try:
            rank_state.read(path / name)
        except rank_state.BadLoopFile as e:
            found.append(str(e).replace(f"{path}/", ""))
    return found


def find(root: Path, ds_config: dict[str, Any]) -> Found | None:
    """The checkpoint to resume from, or None. Collective; call it before deepspeed.initialize, since
    a checkpoint from another world size needs `checkpoint.load_universal` in ds_config."""
    skipped = []
    for path in reversed(complete_checkpoints(root)):
        meta = read_marker(path)
        found = verify(path, meta)
        if found:
            skipped.append(path.name)
            more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
            say(f"warning: checkpoint {path} is damaged: {'; '.join(found[:3])}{more}; marked {DAMAGED}, "
                f"falling back to the previous one")
            if dist.get_rank() == 0:
                os.replace(path / MARKER, path / DAMAGED)
            dist.barrier()
            continue
        world = dist.get_world_size()
        then = int(meta.get("world_size", world))
        if then != world:
            say(f"checkpoint {path.name} was written by {then} processes, resuming with {world}: "
                f"converting it to a DeepSpeed universal checkpoint")
            if dist.get_rank() == 0:
                to_universal(path)
            dist.barrier()
            ds_config.setdefault("checkpoint", {})["load_universal"] = True
        return Found(path, meta, universal=then != world)
    if skipped:
        say(f"warning: no intact checkpoint left ({', '.join(skipped)} damaged): starting from step 0")
    return None


def to_universal(path: Path) -> Path:
    """<ckpt>/universal, converted once by deepspeed.checkpoint.ds_to_universal (rank 0 only)."""
    out = path / UNIVERSAL
    if out.is_dir():  # renamed into place only once complete
        return out
    from deepspeed.checkpoint.ds_to_universal import main as convert

    tmp = path / f".{UNIVERSAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # One worker each: process pools forked from a trainer that holds communication threads can deadlock.
    args = argparse.Namespace(input_folder=str(path), output_folder=str(tmp), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            convert(args)
    except BaseException:
        print(chatter.getvalue(), file=sys.stderr)
        raise
    os.replace(tmp, out)
    return out


def load(engine, found: Found, micro_batch_size: int) -> dict[str, Any]:
    """Restore engine state, this rank's RNG and the loop state (data position rescaled). Collective."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if found.universal:
        load_path, _ = engine.load_checkpoint(str(found.path), tag=UNIVERSAL)
    else:
        load_path, _ = engine.load_checkpoint(str(found.path.parent), tag=found.path.name)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {found.path}")
    own = rank_state.loop_file(found.path, rank)
    mine = own.is_file() or own.with_suffix(rank_state.LEGACY_SUFFIX).is_file()
    saved = rank_state.read(own if mine else rank_state.loop_file(found.path, 0))  # JSON: no pickle
    if mine:
        rank_state.set_rng_state(saved["rng"])
    else:  # a rank the old world did not have: a fresh stream of its own
        torch.manual_seed(zlib.crc32(f"{found.path.name}/{rank}".encode()))
    loop = dict(saved["loop"])
    if found.universal:
        loop["position"] = rescale_position(loop["position"], found.meta, world, micro_batch_size)
    return loop


def rescale_position(position: int, meta: dict[str, Any], world: int, micro_batch_size: int) -> int:
    """Micro batches per rank consumed this epoch, for the new world: the same samples of the epoch's
    order (step k of all ranks covers rows k*W*B..(k+1)*W*B), rounded down to a whole batch."""
    samples = position * int(meta["world_size"]) * int(meta.get("micro_batch_size") or micro_batch_size)
    per_batch = world * micro_batch_size
    new, rest = divmod(samples, per_batch)
    say(f"data position: {samples} samples of this epoch consumed -> {new} micro batches per rank"
        + (f" ({rest} samples will be seen again: {samples} is not a multiple of {per_batch})" if rest else ""))
    return new


def rendezvous_reason(env: dict[str, str], world: int, found: Found | None) -> str:
    """Why this process group exists, from what torchrun tells its workers (GROUP_WORLD_SIZE: nodes in this
    rendezvous round, TORCHELASTIC_RESTART_COUNT: failures this node's agent restarted) and the checkpoint's
    world size. An elastic job's agents re-rendezvous when a node leaves (the failure restarts the rest) or
    joins (a membership change, not counted as a restart), so each start says which it was. The count is
    per agent: when a node leaves, an agent whose workers are still stopping when another agent already
    waits in the next round restarts them as a membership change, so its count need not move."""
    nodes, per_node = env.get("GROUP_WORLD_SIZE", "1"), env.get("LOCAL_WORLD_SIZE", "1")
    restart, limit = int(env.get("TORCHELASTIC_RESTART_COUNT", "0")), env.get("TORCHELASTIC_MAX_RESTARTS", "0")
    then = None if found is None else int(found.meta.get("world_size", world))
    if then is None:
        why = "first rendezvous of this run (no checkpoint)"
    elif world != then:
        change = "a node left" if world < then else "a node joined"
        why = f"{change}: {found.path.name} was written by {then} processes"
    else:
        why = f"the same world as {found.path.name}: the group was restarted"
    if restart:
        why += f" ({restart} of {limit} restarts after a failure used on this node)"
    return f"rendezvous: {nodes} node(s) x {per_node} = world size {world}; {why}"
