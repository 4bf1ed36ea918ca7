"""Token shards: every process of every node tokenizes work units into memory-mapped files on the volume.

A shard (cache_dir/shards/<unit id>/) holds one unit's documents, in record order:
  tokens.bin   int32, all documents' ids back to back (read with np.memmap)
  targets.bin  uint8, 1 = loss target (chat only; text documents are all targets)
  lengths.npy  int64, tokens per record (0: an empty text, which trains nothing)
  hashes.npy   uint64, the first 8 bytes of sha256 of each record's value (the eval hold-out ranks them)
  shard.json   written last: records, tokens, bytes; the folder appears by one rename, so it is the done marker
The unit id hashes the file's absolute resolved path, size and mtime, the unit's range and everything that
changes the ids (tokenizer, format, field), so an unchanged file's shards survive any change elsewhere.

Coordination is through files only, never a collective: a process claims a unit by creating
<unit id>.claim exclusively (O_EXCL), builds it, and renames the result into place; it starts with the
units dealt to its global rank (index % world_size), then takes any unit nobody has claimed, then waits,
polling the markers, until every unit is done. A claim whose builder died is taken over: at once when it
was a process of this host, after CLAIM_STALE_S without a refresh otherwise. A data error (bad content)
is written to <unit id>.error, which every waiting process raises in turn; a file that could not be read
(an OSError) is not, so the unit is tried again.
Nodes that do not share the cache folder see no claims of the others, so each builds every unit itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainer.data_readers import DataReadError, Unit, read_unit
from trainer.data_sources import DataError

CLAIM_STALE_S = 300.0
Document = tuple[np.ndarray, np.ndarray]
# values of a batch, the file's number of its first record -> one document per value (empty ones allowed)
Tokenize = Callable[[list, int], list[Document]]


def content_hash(value) -> int:
    """Depends on the record's value only; None fields (a reader's filler for absent keys) do not count."""
    if isinstance(value, list):
        value = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in value]
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def field_values(records: list, field: str, key: str, source: Path, first: int, origin: str = "") -> list:
    """The values of one field; a record without it is an error naming the field and the record: its
    number counted from the start of its unit (`origin`, e.g. " from byte 4096"; empty at the file's start)."""
    values = []
    for i, record in enumerate(records, first):
        if not isinstance(record, dict) or record.get(field) is None:
            names = sorted(k for k, v in record.items() if v is not None) if isinstance(record, dict) else []
            raise DataError(f"{key}: record {i}{origin} of {source} has no field {field!r} "
                            f"(fields: {', '.join(names) or 'none'})")
        values.append(record[field])
    return values


def build_shard(builder: str, path: Path, unit: Unit, field: str, key: str, batch: int, tokenize: Tokenize,
                chat: bool, target: Path, on_batch: Callable[[int, int], None]) -> None:
    """Tokenize one unit into `target` (atomically); on_batch(records, tokens) after each batch."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        lengths, hashes, first, tokens = [], [], 0, 0
        origin = "" if unit.start == 0 else f" from {'row group' if builder == 'parquet' else 'byte'} {unit.start}"
        with open(tmp / "tokens.bin", "wb") as ids_out, open(tmp / "targets.bin", "wb") as targets_out:
            for records in read_unit(builder, path, unit, batch, key, field):
                values = field_values(records, field, key, path, first, origin)
                documents = tokenize(values, first)
                for ids, targets in documents:
                    ids_out.write(np.asarray(ids, np.int32).tobytes())
                    if chat:
                        targets_out.write(np.asarray(targets, np.uint8).tobytes())
                lengths += [len(ids) for ids, _ in documents]
                hashes += [content_hash(v) for v in values]
                batch_tokens = sum(len(ids) for ids, _ in documents)
                first, tokens = first + len(records), tokens + batch_tokens
                on_batch(len(records), batch_tokens)
        np.save(tmp / "lengths.npy", np.array(lengths, np.int64))
        np.save(tmp / "hashes.npy", np.array(hashes, np.uint64))
        (tmp / "shard.json").write_text(json.dumps({"records": first, "tokens": tokens, "bytes": unit.size}))
        try:
            os.rename(tmp, target)
        except OSError:  # someone (a node that could not see our claim) was first: theirs is as good
            if not (target / "shard.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_done(shard: Path) -> bool:
    return (shard / "shard.json").is_file()


def claim(path: Path) -> bool:
    """Create the claim file exclusively; take it over when its builder is gone: a process of this host
    that no longer runs (a restarted worker finds its predecessor's claim), or a claim not refreshed for
    CLAIM_STALE_S (a builder on another node)."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if _abandoned(path):  # rename first: of several processes taking it over, one wins the create
                    os.rename(path, path.with_name(f"{path.name}.stale-{os.getpid()}"))
                    os.unlink(path.with_name(f"{path.name}.stale-{os.getpid()}"))
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return True
    return False


def _abandoned(path: Path) -> bool:
    if time.time() - path.stat().st_mtime > CLAIM_STALE_S:
        return True
    host, _, pid = path.read_text().strip().partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # being written, or another host's: only its age tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def prepare_units(units: list[tuple[str, Unit]], root: Path, build: Callable[[str, Unit, Callable], None], *,
                  rank: int, world_size: int, progress, poll_s: float = 0.5) -> None:
    """Return once every unit's shard is done under root, having built those this process claimed."""
    root.mkdir(parents=True, exist_ok=True)
    mine = units[rank::world_size]
    order = mine + [u for i, u in enumerate(units) if i % world_size != rank]
    done: set[str] = set()  # a done shard stays done: only the missing ones are looked at again
    while True:
        missing = [(uid, unit) for uid, unit in order if uid not in done and not is_done(root / uid)]
        done = {uid for uid, _ in units} - {uid for uid, _ in missing}
        progress.done_units(done)
        for uid, _ in missing:
            error = root / f"{uid}.error"
            if error.is_file():
                raise DataError(error.read_text())
        if not missing:
            return
        for uid, unit in missing:
            claimed = root / f"{uid}.claim"
            if claim(claimed):
                _build_claimed(uid, unit, root, claimed, build)
                break
        else:
            progress.tick()
            time.sleep(poll_s)


def _build_claimed(uid: str, unit: Unit, root: Path, claimed: Path, build) -> None:
    def heartbeat() -> None:  # a live builder keeps its claim fresh
        os.utime(claimed)

    try:
        if not is_done(root / uid):  # built between our look and our claim
            build(uid, unit, heartbeat)
    except DataError as e:
        record_error(root / f"{uid}.error", e)
        raise
    finally:
        claimed.unlink(missing_ok=True)


def record_error(error: Path, e: DataError) -> None:
    """Leave a data error for the waiting processes to raise. It appears whole by one rename (a reader never
    sees a half-written file); an I/O failure is not left, so that another process or a restart retries."""
    if isinstance(e, DataReadError):
        return
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{error.name}-", dir=error.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(e.problems[0])
        os.replace(tmp, error)
    finally:
        Path(tmp).unlink(missing_ok=True)
