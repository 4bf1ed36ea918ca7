"""A split's rows over the token shards: a layout of pieces computed from lengths, rows gathered lazily.

The layout folder (cache_dir/<split>-<id>/) holds, per piece in row order:
  piece_unit.npy  int32  which shard (an index into units.json)
  piece_start.npy int64  where the piece starts in that shard's tokens.bin
  piece_len.npy   int32  its tokens
and row_ptr.npy (int64, rows + 1: row k is pieces row_ptr[k]:row_ptr[k+1]), units.json (the shard
folders, canonical order) and meta.json, written last (the folder appears by one rename). It is built
from each shard's lengths.npy and hashes.npy only: a few bytes per document, never the tokens. A batch
reads just its rows' pieces from the memory-mapped shards (trainer/data/row_layout.py assembles them).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from trainer.data.row_layout import assemble_rows, place_pieces, split_pieces
from trainer.data.sources import DataError

ARRAYS = ("piece_unit", "piece_start", "piece_len", "row_ptr")


def hold_out(hashes: np.ndarray, fraction: float) -> np.ndarray:
    """True for the records held out for eval: the round(fraction * n) smallest content hashes (at least
    one, never all; ties by record order). Depends on the data only, not the seed, file order or workers."""
    n = len(hashes)
    held = np.zeros(n, bool)
    if n:
        held[np.argsort(hashes, kind="stable")[: min(n - 1, max(1, round(fraction * n)))]] = True
    return held


def write_layout(shards: list[Path], target: Path, *, split: str, eval_fraction: float | None, seq_len: int,
                 packing: bool, pad_id: int, chat: bool, key: str) -> None:
    """Place the documents of `shards` (canonical order) for one split into `target`, atomically."""
    lengths = [np.load(s / "lengths.npy") for s in shards]
    unit = np.repeat(np.arange(len(shards), dtype=np.int32), [len(x) for x in lengths])
    start = np.concatenate([np.cumsum(x) - x for x in lengths] or [np.zeros(0, np.int64)])
    lengths = np.concatenate(lengths or [np.zeros(0, np.int64)])
    keep = lengths > 0  # an empty text has no tokens to train
    if eval_fraction is not None:
        held = hold_out(np.concatenate([np.load(s / "hashes.npy") for s in shards]), eval_fraction)
        keep &= held if split == "eval" else ~held
    if not keep.any():
        raise DataError(f"{key}: the data holds no documents" + (" for this split" if eval_fraction else ""))
    unit, start, lengths = unit[keep], start[keep], lengths[keep]
    document, offset, piece_len = split_pieces(lengths, seq_len, packing)
    order, row_ptr = place_pieces(piece_len, seq_len, packing)
    arrays = {"piece_unit": unit[document][order], "piece_start": (start[document] + offset)[order],
              "piece_len": piece_len[order].astype(np.int32), "row_ptr": row_ptr}
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "units.json").write_text(json.dumps([os.path.relpath(s, target.parent) for s in shards]))
        meta = {"packed": packing, "pad_id": pad_id, "chat": chat, "seq_len": seq_len, "rows": len(row_ptr) - 1,
                "documents": len(lengths), "tokens": int(lengths.sum()), "split": split}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError:  # built meanwhile by a node whose claim we could not see: identical
            if not (target / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ShardRows:
    """The rows of a layout folder, for TokenData; pickles as its path (loader workers re-open it)."""

    # Shards kept mapped at once, least recently used closed first: each costs a file descriptor and a
    # mapping, and a large corpus has more shards than the fd limit or vm.max_map_count allow.
    MAX_OPEN = 64

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self.pad_id, self.chat = self.meta["pad_id"], self.meta["chat"]
        self._open()

    def _open(self) -> None:
        for name in ARRAYS:
            setattr(self, name, np.load(self.directory / f"{name}.npy", mmap_mode="r"))
        self.units = [self.directory.parent / u for u in json.loads((self.directory / "units.json").read_text())]
        self._maps: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def __getstate__(self):
        return {"directory": self.directory, "meta": self.meta, "pad_id": self.pad_id, "chat": self.chat}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return self.meta["rows"]

    @property
    def seq_len(self) -> int:
        return self.meta["seq_len"]

    def _shard(self, unit: int) -> tuple[np.ndarray, np.ndarray | None]:
        if unit in self._maps:
            self._maps.move_to_end(unit)
            return self._maps[unit]
        while len(self._maps) >= self.MAX_OPEN:
            self._maps.popitem(last=False)  # unmapped once no gathered piece still views it
        path = self.units[unit]
        tokens = _memmap(path / "tokens.bin", np.int32)
        self._maps[unit] = tokens, _memmap(path / "targets.bin", np.uint8) if self.chat else None
        return self._maps[unit]

    def _piece(self, p: int):
        tokens, targets = self._shard(int(self.piece_unit[p]))
        start = int(self.piece_start[p])
        cut = slice(start, start + int(self.piece_len[p]))
        return tokens[cut], None if targets is None else targets[cut].astype(bool)

    def gather(self, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pieces = [[self._piece(p) for p in range(self.row_ptr[r], self.row_ptr[r + 1])] for r in np.atleast_1d(rows)]
        return assemble_rows(pieces, width, self.pad_id)

    def row_lengths(self, rows: np.ndarray | None = None) -> np.ndarray:
        if rows is None:
            return np.add.reduceat(np.asarray(self.piece_len, np.int64), np.asarray(self.row_ptr[:-1]))
        bounds = [(int(self.row_ptr[r]), int(self.row_ptr[r + 1])) for r in np.atleast_1d(rows)]
        return np.array([int(self.piece_len[a:b].sum()) for a, b in bounds], np.int64)

    def piece_lengths(self) -> np.ndarray:
        return np.asarray(self.piece_len, np.int64)

    @property
    def num_targets(self) -> int:
        """Loss targets of every row: each piece's tokens but its first (read from the shards for chat)."""
        if not self.chat:
            return int((self.piece_lengths() - 1).sum())
        total = 0
        for p in range(len(self.piece_len)):
            _, targets = self._piece(p)
            total += int(targets[1:].sum())
        return total


def _memmap(path: Path, dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # np.memmap refuses an empty file
        return np.zeros(0, dtype)
    return np.memmap(path, dtype, mode="r")
