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
was a process of this host (its PID gone, or alive again with another start time: a recreated pod), after
CLAIM_STALE_S without a refresh otherwise. A claim holds its builder's unique token: a takeover replaces
only the stale claim it judged, a builder releases only its own, and one whose claim was taken over stops
(were both to finish, their shards are identical and the second rename is dropped). A data error (bad content)
is written to <unit id>.error, which every waiting process raises in turn; a file that could not be read
(an OSError) is not, so the unit is tried again.
Nodes that do not share the cache folder see no claims of the others, so each builds every unit itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.readers import DataReadError, Unit, read_unit
from trainer.data.sources import DataError

log = logging.getLogger(__name__)
CLAIM_STALE_S = 300.0
CLAIM_SETTLE_S = 0.05
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


class ClaimLost(Exception):
    """Our claim was taken over (judged stale) or removed: its new holder builds the same unit."""


@dataclass(frozen=True)
class Claim:
    """A claim file we hold, known by the unique token we wrote into it."""

    path: Path
    token: str

    def held(self) -> bool:
        return _read(self.path) == self.token

    def refresh(self) -> bool:
        """Heartbeat: keep our claim fresh; False (and no refresh) once it is gone or someone else's."""
        if not self.held():
            return False
        try:
            os.utime(self.path)
        except FileNotFoundError:
            return False
        return True

    def release(self) -> None:
        if self.held():  # never unlink a claim that another process took over
            self.path.unlink(missing_ok=True)


def claim(path: Path) -> Claim | None:
    """Create the claim file exclusively; take it over when its builder is gone: a process of this host
    that no longer runs (a restarted worker finds its predecessor's claim), or a claim not refreshed for
    CLAIM_STALE_S (a builder on another node)."""
    token = _token()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return _take_over(path, token)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return Claim(path, token)


def _take_over(path: Path, token: str) -> Claim | None:
    """Replace the stale claim we looked at, and only it: another process may have taken it over since."""
    seen = _look(path)
    if seen is None or not _abandoned(*seen):
        return None
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token)
        if _look(path) != seen:
            return None
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    time.sleep(CLAIM_SETTLE_S)  # of takers that both passed the look, the last replace wins: let it land
    return Claim(path, token) if _read(path) == token else None


def _token() -> str:
    """host pid start-time nonce: the start time tells a reused PID (a recreated pod's) from its predecessor."""
    return f"{socket.gethostname()} {os.getpid()} {_started(os.getpid())} {uuid.uuid4().hex}\n"


def _started(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); None when no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[19]  # after the command name, which may hold spaces


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _look(path: Path) -> tuple[str, int] | None:
    """The claim's token and mtime: a refresh between our judgement and our takeover changes the mtime."""
    try:
        return path.read_text(), path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _abandoned(token: str, mtime_ns: int) -> bool:
    if time.time() - mtime_ns / 1e9 > CLAIM_STALE_S:
        return True
    fields = token.split()
    if len(fields) != 4 or fields[0] != socket.gethostname() or not fields[1].isdigit():
        return False  # being written, or another host's: only its age tells
    pid = int(fields[1])
    if pid == os.getpid():  # not a claim of ours (we hold none we would look at): a predecessor's
        return True
    try:
        return _started(pid) != fields[2]
    except PermissionError:  # /proc hidden from us: the PID is alive
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
            raise_recorded(root / f"{uid}.error")
        if not missing:
            return
        for uid, unit in missing:
            held = claim(root / f"{uid}.claim")
            if held:
                _build_claimed(uid, unit, root, held, build)
                break
        else:
            progress.tick()
            time.sleep(poll_s)


def _build_claimed(uid: str, unit: Unit, root: Path, held: Claim, build) -> None:
    def heartbeat() -> None:  # a live builder keeps its claim fresh, and stops once it lost it
        if not held.refresh():
            raise ClaimLost(held.path)

    build_claimed(held, root / f"{uid}.error", lambda: is_done(root / uid), lambda: build(uid, unit, heartbeat))


def build_claimed(held: Claim, error: Path, done: Callable[[], bool], build: Callable[[], None]) -> None:
    """Build under our claim: a data error is left for the others; the claim is released if still ours."""
    try:
        if not done():  # built between our look and our claim
            build()
    except DataError as e:
        record_error(error, e)
        raise
    except ClaimLost:  # judged stale by another process, which builds the same result
        log.warning("%s was taken over by another process; leaving the build to it", held.path)
    finally:
        held.release()


@contextmanager
def kept_fresh(held: Claim):
    """Refresh the claim from a thread while a build that has no natural heartbeat runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(CLAIM_STALE_S / 4) and held.refresh():
            pass

    thread = threading.Thread(target=beat, name=f"heartbeat {held.path.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def raise_recorded(error: Path) -> None:
    if error.is_file():
        raise DataError(error.read_text())


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
