"""Streaming readers: a data file is cut into work units, and a unit is read in bounded batches of records.

A unit of a .jsonl / JSON-lines .json / .txt file is a byte range [start, end): it owns the records
(lines, or paragraphs of a .txt) that *start* inside it, and reads the last one to its end past `end`
(the usual split rule of Hadoop line readers), so any cut of a file gives every record exactly once, in
file order. A .json file holding one array is one unit, decoded object by object. A parquet unit is a
run of row groups, read with iter_batches. Only units are planned from file sizes and parquet footers;
no record is read until a unit is built.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trainer.data.sources import DataError


@dataclass(frozen=True)
class Unit:
    """Records of one file: bytes [start, end) (text kinds) or row groups [start, end) (parquet)."""

    file: int  # index in the sorted file list
    start: int
    end: int
    size: int  # bytes this unit covers (progress and MB/s)


class DataReadError(DataError):
    """A file could not be read (an OSError): a retry may succeed, so it is not recorded as the data's error."""


@contextmanager
def reading(path: Path, key: str) -> Iterator[None]:
    """Turn a failure to read `path` (OSError) or to decode it (ValueError: bad UTF-8, a corrupt parquet
    file) into one line naming the key and the file, instead of a traceback."""
    try:
        yield
    except DataError:
        raise
    except (OSError, ValueError) as e:
        reason = (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0]
        error = DataReadError if isinstance(e, OSError) else DataError
        raise error(f"{key}: cannot read {path}: {reason}") from e


def plan_units(builder: str, files: list[Path], unit_bytes: int, key: str = "data") -> list[Unit]:
    """The work units of `files`, in canonical (file, position) order."""
    units = []
    for index, path in enumerate(files):
        with reading(path, key):
            units += _file_units(builder, index, path, unit_bytes)
    return units


def _file_units(builder: str, index: int, path: Path, unit_bytes: int) -> list[Unit]:
    size = path.stat().st_size
    if builder == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        units, first, taken = [], 0, 0
        for group in range(meta.num_row_groups):
            taken += meta.row_group(group).total_byte_size
            if taken >= unit_bytes or group == meta.num_row_groups - 1:
                units.append(Unit(index, first, group + 1, taken))
                first, taken = group + 1, 0
        return units
    if path.suffix == ".json" and leading_bytes(path, 1) == b"[":
        return [Unit(index, 0, size, size)]
    return [Unit(index, s, min(s + unit_bytes, size), min(unit_bytes, size - s))
            for s in range(0, max(size, 1), unit_bytes)]


def leading_bytes(path: Path, count: int) -> bytes:
    """The first `count` non-whitespace bytes of a file (fewer at its end): b"[" starts a JSON array."""
    found = b""
    with path.open("rb") as f:
        while len(found) < count and (byte := f.read(1)):
            found += b"" if byte.isspace() else byte
    return found


def read_unit(builder: str, path: Path, unit: Unit, batch: int, key: str, field: str) -> Iterator[list]:
    """Lists of at most `batch` records (dicts; a .txt paragraph is {"text": ...}) of one unit."""
    with reading(path, key):
        yield from _read_unit(builder, path, unit, batch, key, field)


def _read_unit(builder: str, path: Path, unit: Unit, batch: int, key: str, field: str) -> Iterator[list]:
    if builder == "parquet":
        yield from _parquet(path, unit, batch, field)
        return
    if builder == "text":
        records = _paragraphs(path, unit)
    elif path.suffix == ".json" and unit.start == 0 and leading_bytes(path, 1) == b"[":
        records = _json_array(path, key)
    else:
        records = _json_lines(path, unit, key)
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _lines(path: Path, unit: Unit) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line, previous line was blank) of the lines starting at or after unit.start, to EOF."""
    with path.open("rb") as f:
        if unit.start == 0:
            previous_blank = True
        else:  # the line holding byte start-1 belongs to whoever owns its start
            f.seek(unit.start - 1)
            end = unit.start - 1 + len(f.readline())
            f.seek(max(0, end - 3))
            window = b"\n\n\n"[: max(0, 3 - end)] + f.read(end - max(0, end - 3))  # file start = after "\n"
            previous_blank = window[1:] == b"\n\n" or window == b"\n\r\n"  # that line is "\n" or "\r\n"
            f.seek(end)
        offset = f.tell()
        for line in f:
            yield offset, line, previous_blank
            previous_blank = line in (b"\n", b"\r\n")
            offset += len(line)


def _json_lines(path: Path, unit: Unit, key: str) -> Iterator[dict]:
    for offset, line, _ in _lines(path, unit):
        if offset >= unit.end:
            return
        if line.strip():
            yield _decode(line, path, offset, key)


def _paragraphs(path: Path, unit: Unit) -> Iterator[dict]:
    """Paragraphs (runs of lines between blank lines), stripped; those starting before unit.end."""
    lines: list[bytes] = []
    for offset, line, previous_blank in _lines(path, unit):
        blank = line in (b"\n", b"\r\n")
        if not lines and not blank and previous_blank and offset >= unit.end:
            return
        if blank and lines:
            yield from _paragraph(lines)
            lines = []
        elif not blank and (lines or previous_blank):
            lines.append(line)
    yield from _paragraph(lines)


def _paragraph(lines: list[bytes]) -> Iterator[dict]:
    text = b"".join(lines).decode("utf-8", errors="replace").strip()
    if text:
        yield {"text": text}


def _decode(line: bytes, path: Path, offset: int, key: str):
    try:
        return json.loads(line)
    except ValueError as e:
        raise DataError(f"{key}: cannot read {path}: invalid JSON at byte {offset} ({e})") from e


def _json_array(path: Path, key: str, block: int = 1 << 20) -> Iterator[dict]:
    """The objects of a top-level JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8") as f:
        buffer, position = f.read(block).lstrip()[1:], 0
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            if buffer[position : position + 1] == "]":
                return
            try:
                value, end = decoder.raw_decode(buffer, position)
            except ValueError as e:
                more = f.read(block)
                if not more:
                    raise DataError(f"{key}: cannot read {path}: invalid JSON array ({e})") from e
                buffer, position = buffer[position:] + more, 0
                continue
            yield value
            position = end


def _parquet(path: Path, unit: Unit, batch: int, field: str) -> Iterator[list]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    columns = [field] if field in parquet.schema_arrow.names else None  # else all: the error names them
    groups = list(range(unit.start, unit.end))
    for table in parquet.iter_batches(batch_size=batch, row_groups=groups, columns=columns):
        yield table.to_pylist()
