"""Read back what W&B wrote in offline mode: the records of <dir>/wandb/offline-run-*/run-<id>.wandb.

A .wandb file is W&B's transaction log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
LevelDB-log framing (32 KiB blocks; each chunk: CRC-32 of type+data, length, type FULL/FIRST/MIDDLE/LAST)
around serialized `wandb_internal_pb2.Record` protobufs, wandb's own message type. wandb 0.31 keeps its
reader in the Go core only, so the framing (a dozen lines) is read here and the records by wandb's protobuf.
"""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path):
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path}: not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if (crc, length, kind) == (0, 0, 0):
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"{path}: bad checksum at {pos}"
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def records(path: Path, wait_s: float = 30.0) -> list:
    """The run's records once its exit record is written: wandb's service process writes the file on its own
    schedule, and run.finish() can return before it has (measured: the header alone, the rest ~1 s later)."""
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + wait_s
    while True:
        out = []
        try:
            for raw in raw_records(path):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(raw)
                out.append(record)
        except AssertionError:  # a chunk being written (its checksum fails until it is whole)
            if time.monotonic() > deadline:
                raise
        if any(r.WhichOneof("record_type") == "exit" for r in out) or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def offline_runs(directory: Path) -> list[Path]:
    """The .wandb files of every offline run under directory/wandb, oldest first (one per process start)."""
    return sorted((directory / "wandb").glob("offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)


def history(path: Path) -> list[dict]:
    """The rows wandb.log wrote, in order, values decoded from their JSON."""
    import json

    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_info(path: Path):
    """The run record (id, project, config) of a .wandb file."""
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
