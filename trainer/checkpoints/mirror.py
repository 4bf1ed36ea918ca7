"""run.checkpoint_mirror: complete checkpoints copied to object storage, and a start resumed from there.

    mirror = Mirror("s3://bucket/run")
    mirror.push(ckpt_root, step_dir)   # rank 0, after the checkpoint is COMPLETE and local pruning ran
    mirror.pull_newest(ckpt_root)      # rank 0, when the output directory holds no complete checkpoint

The mirror keeps writer.py's layout: <url>/step-000050/<files>, with COMPLETE uploaded last, so a
mirrored checkpoint without COMPLETE (an upload cut short) is never pulled. After each push the mirror
holds the local directory's checkpoints up to the pushed step (pruning applies to both: keep_last and the
best); newer mirrored ones stay, so a run started afresh (resume: false, or a pulled checkpoint that failed its
check) does not wipe them at its first save. A step pushed again is first removed from the mirror, COMPLETE too.
A pulled checkpoint lands under a temporary name and is renamed into place after COMPLETE arrived, and
resume.find then checks it against its manifest (sizes and SHA-256) like any local one.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from trainer.checkpoints.manifest import MARKER, checkpoint_files
from trainer.storage import object_store

log = logging.getLogger("llmlaunch.trainer")
STEP_PREFIX = "step-"


class MirrorError(Exception):
    """A mirror operation failed; the message is one line."""


class Mirror:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        bucket, prefix = object_store.split_url(self.url)
        self.base = f"{bucket}/{prefix}".rstrip("/")
        self.fs = object_store.filesystem()

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # botocore / s3fs: many types, one line
            raise MirrorError(f"{what}: {object_store.describe_error(self.url, e)}") from e

    def steps(self) -> list[str]:
        """Names of the mirrored step folders, complete or not, oldest first."""
        try:
            entries = self.fs.ls(self.base, detail=False)
        except FileNotFoundError:
            return []
        except Exception as e:
            raise MirrorError(f"listing the mirror: {object_store.describe_error(self.url, e)}") from e
        return sorted(e.rsplit("/", 1)[-1] for e in entries if e.rsplit("/", 1)[-1].startswith(STEP_PREFIX))

    def complete_steps(self) -> list[str]:
        """Names of the mirrored checkpoints that have COMPLETE, oldest first."""
        return [n for n in self.steps()
                if self._call("reading the mirror", self.fs.exists, f"{self.base}/{n}/{MARKER}")]

    def push(self, root: Path, step_dir: Path) -> float:
        """Upload one complete checkpoint (COMPLETE last), then drop mirrored ones the local root no longer
        has. Returns the seconds it took."""
        start = time.perf_counter()
        remote = f"{self.base}/{step_dir.name}"
        if step_dir.name in self.steps():  # an older upload of this step: its COMPLETE must not vouch for new files
            self._call(f"replacing {step_dir.name}", self.fs.rm, remote, True)
        for name in checkpoint_files(step_dir):
            self._call(f"uploading {step_dir.name}/{name}", self.fs.put_file, str(step_dir / name), f"{remote}/{name}")
        self._call(f"uploading {step_dir.name}/{MARKER}", self.fs.put_file,
                   str(step_dir / MARKER), f"{remote}/{MARKER}")
        self._prune_older(root, step_dir.name)
        return time.perf_counter() - start

    def _prune_older(self, root: Path, pushed: str) -> None:
        """Drop mirrored steps older than `pushed` that the local root no longer has (local pruning chose them,
        or an upload was cut short). Newer ones stay: a run started afresh must not wipe a better mirror."""
        local = {p.name for p in root.glob(f"{STEP_PREFIX}*") if (p / MARKER).is_file()}
        for name in self.steps():
            if name < pushed and name not in local:
                self._call(f"pruning {name}", self.fs.rm, f"{self.base}/{name}", True)

    def pull_newest(self, root: Path) -> Path | None:
        """Download the newest complete mirrored checkpoint into root; its local path, or None if there is none."""
        steps = self.complete_steps()
        if not steps:
            return None
        name = steps[-1]
        target = root / name
        tmp = root / f".{name}.mirror"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        remote = f"{self.base}/{name}"
        files = self._call("listing the mirror", self.fs.find, remote + "/")
        for path in files:  # any order: nothing is visible before the folder is renamed into place below
            rel = path[len(remote) + 1:]
            if object_store.odd_object_name(rel):
                raise MirrorError(f"{self.url}/{name}: odd object name {rel!r}")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            self._call(f"downloading {name}/{rel}", self.fs.get_file, path, str(tmp / rel))
        shutil.rmtree(target, ignore_errors=True)  # an incomplete local leftover of the same step
        os.replace(tmp, target)
        return target


def restore(mirror: Mirror | None, root: Path, rank: int) -> None:
    """Rank 0 pulls the mirror's newest complete checkpoint when root has none. Collective: every rank
    learns the outcome, so a mirror that cannot be read stops them all with its message (starting from
    scratch instead would overwrite the mirror's checkpoints with worse ones)."""
    import torch.distributed as dist

    from trainer.checkpoints.resume import say
    from trainer.checkpoints.writer import complete_checkpoints

    if mirror is None:
        return
    outcome: list = [None]
    if rank == 0 and not complete_checkpoints(root):
        try:
            pulled = mirror.pull_newest(root)
            outcome = [("ok", f"no local checkpoint; pulled {pulled.name} from the mirror {mirror.url}" if pulled
                        else f"no checkpoint here or in the mirror {mirror.url}: starting from step 0")]
        except (MirrorError, OSError) as e:  # every rank must hear of it, or the others wait in the broadcast
            outcome = [("error", f"train.run.checkpoint_mirror: {e}")]
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        kind, message = outcome[0]
        if kind == "error":
            raise RuntimeError(message)
        say(message)


def push_after_save(mirror: Mirror | None, root: Path, step_dir: Path, is_main: bool) -> None:
    """Rank 0 mirrors a checkpoint that is complete; a failed upload is a warning (the local one stands)."""
    if mirror is None or not is_main or not (step_dir / MARKER).is_file():
        return
    try:
        seconds = mirror.push(root, step_dir)
    except MirrorError as e:
        log.warning("warning: checkpoint %s not mirrored: %s", step_dir.name, e)
        return
    log.info("checkpoint %s mirrored to %s in %.1f s", step_dir.name, mirror.url, seconds)
