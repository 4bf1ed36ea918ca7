"""Preparing a split: all processes of all nodes tokenize the work units into shards, then one lays out rows.

    prepare(source, entry, tokenize=..., split="train", seq_len=2048, packing=True, ..., rank=r, world_size=w)

1. The data files are cut into work units (trainer/data/readers.py) of data.chunk_mb MB; a unit's id
   hashes the corpus settings (tokenizer, format, field, chunk size) and its file's manifest entry.
2. Every process builds the units dealt to it, then any unclaimed one, then waits for the rest,
   polling their done markers on the volume (trainer/data/shards.py). No collective is involved, so no
   collective timeout bounds the preparation, however large the corpus.
3. One process (whoever claims it) computes the split's row layout from the shards' lengths
   (trainer/data/shard_rows.py); the others wait for its marker. Every process then memory-maps it.

Memory per process is bounded by data.chunk_records records and their tokens, plus a few bytes per
document in step 3: it does not grow with the size of the data files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.data.prep_progress import PrepMetrics, PrepProgress
from trainer.data.readers import Unit, plan_units
from trainer.data.shard_rows import write_layout
from trainer.data.shards import (
    Tokenize,
    build_claimed,
    build_shard,
    claim,
    kept_fresh,
    prepare_units,
    raise_recorded,
)

log = logging.getLogger(__name__)
SHARDS = "shards"


@dataclass(frozen=True)
class DataSource:
    key: str  # data.train or data.eval, for errors
    builder: str  # json, text or parquet
    files: list[Path]
    manifest: list  # [absolute resolved path, size, mtime_ns] per file (trainer/data/sources.py)
    field: str
    chat: bool
    corpus: str  # digest of everything but the files that changes the token ids
    chunk_mb: float = 16.0


def unit_ids(source: DataSource, units: list[Unit]) -> list[str]:
    def uid(unit: Unit) -> str:
        identity = [source.corpus, source.manifest[unit.file], unit.start, unit.end]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]

    return [uid(u) for u in units]


def prepare(source: DataSource, entry: Path, *, tokenize: Tokenize, split: str, seq_len: int, packing: bool,
            pad_id: int, eval_fraction: float | None, chunk_records: int, rank: int, world_size: int,
            metrics: PrepMetrics | None = None, poll_s: float = 0.5) -> None:
    """Make entry/ (the split's layout) exist, building the shards it needs together with the other processes."""
    cache = entry.parent
    root = cache / SHARDS
    units = plan_units(source.builder, source.files, max(1, int(source.chunk_mb * 2**20)), source.key)
    ids = unit_ids(source, units)
    progress = PrepProgress(source.key, split, list(zip(ids, units, strict=True)), root, metrics)

    def build(uid: str, unit: Unit, heartbeat: Callable[[], None]) -> None:
        def on_batch(records: int, tokens: int) -> None:
            heartbeat()
            progress.built(records, tokens)

        build_shard(source.builder, source.files[unit.file], unit, source.field, source.key, chunk_records,
                    tokenize, source.chat, root / uid, on_batch)

    started = time.monotonic()
    prepare_units(list(zip(ids, units, strict=True)), root, build, rank=rank, world_size=world_size, progress=progress,
                  poll_s=poll_s)
    progress.report(force=True)

    def layout() -> None:
        write_layout([root / uid for uid in ids], entry, split=split, eval_fraction=eval_fraction,
                     seq_len=seq_len, packing=packing, pad_id=pad_id, chat=source.chat, key=source.key)

    build_once(entry, cache / f"{entry.name}.claim", cache / f"{entry.name}.error", layout, poll_s)
    log.info("%s data prepared in %.1f s: %d units, %d records, %d tokens (cached in %s)", split,
             time.monotonic() - started, len(units), *[progress.figures()[f"llmlaunch_data_prepare_{n}"]
                                                      for n in ("records", "tokens")], entry)


def build_once(entry: Path, claimed: Path, error: Path, build: Callable[[], None], poll_s: float) -> None:
    """Build entry/ (marker: meta.json) in one process, claimed like a unit; the others wait for it or its error."""
    def done() -> bool:
        return (entry / "meta.json").is_file()

    while not done():
        raise_recorded(error)
        held = claim(claimed)
        if not held:
            time.sleep(poll_s)
            continue
        with kept_fresh(held):  # the layout of a large corpus takes longer than CLAIM_STALE_S
            build_claimed(held, error, done, build)
