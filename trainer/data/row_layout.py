"""How documents become rows, on arrays of lengths only: pieces, placement, and the assembly of a row.

One code path for both storages: pack_documents / pad_documents (documents in memory) and the shard
layout (trainer/data/shard_rows.py, documents memory-mapped from the cache) both cut documents with
split_pieces, place the pieces with place_pieces and fill rows with assemble_rows, so packed rows from
shards are exactly the rows pack_documents gives for the same documents.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from trainer.data.bin_packing import best_fit_placement
from trainer.data.length_groups import document_lengths, row_lengths

Piece = tuple[np.ndarray, np.ndarray | None]  # (ids, targets); targets None = every token a target


def split_pieces(lengths: np.ndarray, seq_len: int, packing: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, offset, length) of each piece. Packing: a document longer than seq_len is cut into
    seq_len pieces and a remainder; padded: one piece per document, truncated to seq_len."""
    lengths = np.asarray(lengths, np.int64)
    if not packing:
        return np.arange(len(lengths)), np.zeros(len(lengths), np.int64), np.minimum(lengths, seq_len)
    counts = -(-lengths // seq_len)
    document = np.repeat(np.arange(len(lengths)), counts)
    first_piece = np.repeat(np.cumsum(counts) - counts, counts)
    offset = (np.arange(len(document)) - first_piece) * seq_len
    return document, offset, np.minimum(seq_len, lengths[document] - offset)


def place_pieces(piece_lengths: np.ndarray, seq_len: int, packing: bool) -> tuple[np.ndarray, np.ndarray]:
    """(order, row_ptr): row k holds pieces order[row_ptr[k]:row_ptr[k+1]]. Packing: best fit
    (trainer/data/bin_packing.py); padded: one piece per row, in document order."""
    if packing:
        return best_fit_placement(piece_lengths, seq_len)
    return np.arange(len(piece_lengths)), np.arange(len(piece_lengths) + 1)


def assemble_rows(rows: list[list[Piece]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[len(rows), width] tokens (pad_id on padding), targets, docs (piece number in its row, -1 = padding)."""
    tokens = np.full((len(rows), width), pad_id, np.int32)
    targets = np.zeros((len(rows), width), bool)
    docs = np.full((len(rows), width), -1, np.int32)
    for row, pieces in enumerate(rows):
        offset = 0
        for number, (ids, piece_targets) in enumerate(pieces):
            ids = ids[: width - offset]
            if not len(ids):
                break
            end = offset + len(ids)
            tokens[row, offset:end] = ids
            targets[row, offset:end] = True if piece_targets is None else piece_targets[: len(ids)]
            # A piece's first token would be predicted from the previous piece's end: never a target.
            targets[row, offset] = False
            docs[row, offset:end] = number
            offset = end
    return tokens, targets, docs


def shape_documents(documents: list[Piece], seq_len: int, pad_id: int, packing: bool) -> dict:
    """The rows of in-memory documents as {tokens, targets, docs} arrays [N, seq_len]."""
    document, offset, length = split_pieces([len(ids) for ids, _ in documents], seq_len, packing)
    order, row_ptr = place_pieces(length, seq_len, packing)

    def piece(p: int) -> Piece:
        ids, targets = documents[document[p]]
        cut = slice(offset[p], offset[p] + length[p])
        return ids[cut], None if targets is None else targets[cut]

    rows = [[piece(p) for p in order[a:b]] for a, b in pairwise(row_ptr)]
    tokens, targets, docs = assemble_rows(rows, seq_len, pad_id)
    return {"tokens": tokens, "targets": targets, "docs": docs}


class ArrayRows:
    """Rows held as [N, seq_len] arrays (in memory): the storage of pack_documents / pad_documents."""

    def __init__(self, arrays: dict):
        self.tokens, self.targets, self.docs = arrays["tokens"], arrays["targets"], arrays["docs"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    def gather(self, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.tokens[rows, :width], self.targets[rows, :width], self.docs[rows, :width]

    def row_lengths(self, rows: np.ndarray | None = None) -> np.ndarray:
        return row_lengths(self.docs if rows is None else self.docs[rows])

    def piece_lengths(self) -> np.ndarray:
        return document_lengths(self.docs)

    @property
    def num_targets(self) -> int:
        return int(np.asarray(self.targets).sum())
