"""Tokenized documents -> fixed-length sequences -> micro batches, sharded per rank and resumable.

A split's rows come from a storage with one interface (gather rows, row and piece lengths): the token
shards and row layout of the cache (trainer/data/shard_rows.py, memory-mapped, a batch reads only its rows), or
in-memory arrays (trainer/data/row_layout.py ArrayRows, from pack_documents / pad_documents). A batch is:
  tokens   token ids (pad id on padding)
  targets  the token is a loss target (False on padding, prompts, and each document's first token)
  docs     document number inside the sequence, -1 on padding
Position ids and labels are derived per batch, which keeps the cache small. A packed batch carries the
document ids (`docs`, [B, T], KB) rather than a mask: for_attention builds the mask for the attention
kernel on the device, after the copy (a dense [B, 1, T, T] mask would be 32 MiB per batch at B 8, T 2048).

Packing on: whole documents are placed into rows of seq_len, best fit, so only documents longer than
seq_len are cut (into pieces trained as separate documents, positions restarting). Packing off: one document per
sequence, truncated to seq_len, right-padded; a batch is cut to its longest row (trainer/data/length_groups.py),
and training batches group rows of similar length when group_by_length is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from trainer.data.length_groups import attention_length, batch_width, group_by_length
from trainer.data.row_layout import ArrayRows, shape_documents
from trainer.data.shard_rows import ShardRows


def pack_documents(documents: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int) -> dict:
    """Place whole (ids, targets) documents into rows of seq_len, best fit (trainer/data/bin_packing.py); only a
    document longer than seq_len is cut, into seq_len pieces and a remainder that is placed like a document."""
    return shape_documents(documents, seq_len, pad_id, packing=True)


def pad_documents(documents: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int) -> dict:
    """One document per row, truncated to seq_len and right-padded."""
    return shape_documents(documents, seq_len, pad_id, packing=False)


def block_causal_mask(docs: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] bool, True = may attend: causal and within the same document (padding with padding).
    Built where `docs` is (the device)."""
    seq_len = docs.shape[1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=docs.device).tril()
    return ((docs[:, :, None] == docs[:, None, :]) & causal)[:, None]


def document_block_mask(docs: torch.Tensor):
    """flex_attention's BlockMask for packed rows: causal within each document. Tiles of 128 x 128 that
    lie above the diagonal or between two documents are skipped, not computed and masked."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, seq_len = docs.shape

    def same_document_causal(b, h, q, kv):
        return (docs[b, q] == docs[b, kv]) & (q >= kv)

    return create_block_mask(same_document_causal, batch, None, seq_len, seq_len, device=docs.device)


def restarting_positions(docs: torch.Tensor) -> torch.Tensor:
    """Position ids counting from 0 at the start of every document of a packed row."""
    seq_len = docs.shape[1]
    index = torch.arange(seq_len).expand_as(docs)
    new_doc = torch.ones_like(docs, dtype=torch.bool)
    new_doc[:, 1:] = docs[:, 1:] != docs[:, :-1]
    starts = torch.where(new_doc, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - starts


class TokenData(torch.utils.data.Dataset):
    """The sequences of one split and the plan that turns them into micro batches.

    Indexing by a micro batch's row numbers gives its batch dict, so a DataLoader can collate in workers.
    """

    def __init__(self, rows: ArrayRows | ShardRows, *, packed: bool, pad_id: int, shuffle: bool,
                 num_workers: int = 0, group_by_length: bool = False):
        self.rows = rows
        self.packed, self.pad_id, self.shuffle, self.num_workers = packed, pad_id, shuffle, num_workers
        self.group_by_length = group_by_length and not packed and shuffle  # eval keeps file order
        self._lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def seq_len(self) -> int:
        return self.rows.seq_len

    @property
    def num_tokens(self) -> int:
        """Tokens that are not padding."""
        return int(self.lengths.sum())

    @property
    def num_targets(self) -> int:
        return self.rows.num_targets

    @property
    def lengths(self) -> np.ndarray:
        """Non-padding tokens per row (computed once, on first use)."""
        if self._lengths is None:
            self._lengths = self.rows.row_lengths()
        return self._lengths

    @property
    def attention_length(self) -> float:
        """sum L^2 / sum L over the documents (pieces) of the split: the T of MFU (observability/mfu.py)."""
        return attention_length(self.rows.piece_lengths())

    # ---- the plan -------------------------------------------------------------------------------------

    def batches_per_epoch(self, micro_batch_size: int, world_size: int) -> int:
        """Micro batches per rank per epoch, the same on every rank (the remainder is dropped)."""
        return len(self) // (micro_batch_size * world_size)

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        """Row order of an epoch: a fresh permutation per (seed, epoch) for training, file order for eval."""
        if not self.shuffle:
            return np.arange(len(self))
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def batch_rows(self, epoch: int, *, rank: int, world_size: int, micro_batch_size: int,
                   seed: int) -> list[np.ndarray]:
        """Rows of each of this rank's micro batches, in order. Step k of all ranks together covers
        rows k*W*B .. (k+1)*W*B of the epoch order, rank r the r-th slice of it."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        count = self.batches_per_epoch(micro_batch_size, world_size)
        order = self.epoch_order(epoch, seed)
        per_step = micro_batch_size * world_size
        if self.group_by_length:
            rng = np.random.default_rng([seed, epoch, 1])  # independent of the row permutation's stream
            order = group_by_length(order[: count * per_step], self.lengths, per_step, rng)
        return [order[k * per_step + rank * micro_batch_size:][:micro_batch_size] for k in range(count)]

    def iter_batches(self, epoch: int, start: int = 0, *, rank: int, world_size: int, micro_batch_size: int,
                     seed: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's micro batches of `epoch`, skipping the first `start` (resume) without building them."""
        rows = self.batch_rows(epoch, rank=rank, world_size=world_size, micro_batch_size=micro_batch_size,
                               seed=seed)[start:]
        if self.num_workers == 0 or not rows:
            return (self[r] for r in rows)
        loader = torch.utils.data.DataLoader(
            _Sequence(self, rows), batch_size=None, shuffle=False, num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(), worker_init_fn=_own_process_group,
            multiprocessing_context=_loader_context(),
        )
        return iter(loader)

    # ---- batches --------------------------------------------------------------------------------------

    def __getitem__(self, rows) -> dict[str, torch.Tensor]:
        rows = np.atleast_1d(rows)
        # Padded rows carry their padding at the end: keep only the columns this batch needs.
        width = self.seq_len if self.packed else batch_width(self._row_lengths(rows), self.seq_len)
        tokens, targets, docs = (torch.from_numpy(np.asarray(a)) for a in self.rows.gather(rows, width))
        tokens, docs = tokens.long(), docs.long()
        labels = torch.where(targets, tokens, torch.full_like(tokens, -100))
        if self.packed:  # for_attention turns docs into the kernel's mask, on the device
            return {"input_ids": tokens, "labels": labels, "position_ids": restarting_positions(docs), "docs": docs}
        return {"input_ids": tokens, "labels": labels,
                "position_ids": torch.arange(width).expand_as(tokens).clone(),
                "attention_mask": (docs >= 0).long()}

    def _row_lengths(self, rows: np.ndarray) -> np.ndarray:
        if self._lengths is not None:
            return self._lengths[rows]
        return self.rows.row_lengths(rows)

    @classmethod
    def load(cls, directory: Path, *, shuffle: bool, num_workers: int = 0, group_by_length: bool = False) -> TokenData:
        """The rows of a layout folder (trainer/data/shard_rows.py), memory-mapped."""
        rows = ShardRows(directory)
        return cls(rows, packed=rows.meta["packed"], pad_id=rows.pad_id, shuffle=shuffle, num_workers=num_workers,
                   group_by_length=group_by_length)

    def __getstate__(self):
        return dict(self.__dict__, _lengths=None)  # workers only build batches: no need for every length


def _loader_context():
    """Loader workers come from a forkserver, never by forking the trainer: the trainer has threads (the
    metrics server answering a scrape, the watchdog, tqdm), and a fork taken while one of them holds a lock
    leaves the worker blocked on it for good (seen: an eval loader's worker hung at a Prometheus scrape, its
    rank waited for data, the other rank in all_reduce). The forkserver is single-threaded, with this
    module (torch, numpy) imported once."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _own_process_group(worker_id: int) -> None:
    """torchrun signals the trainer's whole process group on SIGTERM; a loader worker killed by it
    would break the emergency checkpoint. In a group of its own it still ends with the trainer (the
    loader stops it at exit, and it watches its parent)."""
    import os

    os.setpgid(0, 0)


class _Sequence(torch.utils.data.Dataset):
    """A list of micro batches for a DataLoader with batch_size=None (item i = batch dict i)."""

    def __init__(self, data: TokenData, rows: list[np.ndarray]):
        self.data, self.rows = data, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.data[self.rows[i]]


def for_attention(batch: dict[str, torch.Tensor], attn_implementation: str, dtype: torch.dtype) -> dict:
    """The model's inputs for its attention kernel (measured with transformers 5.24 Llama): a packed batch's
    document ids become a mask here, on the device the batch was moved to.

    sdpa: the 4D boolean mask (True = attend); a dense mask keeps SDPA off its flash kernel, so it is the
    fallback. flex_attention: a BlockMask that skips other documents' and upper-triangle tiles. eager adds
    the mask to the scores: an additive float mask. flash_attention_2: no mask; its varlen path splits
    documents where the position ids restart at 0 (in a one-row batch: TrainConfig refuses more).
    A padded batch (no docs) keeps its 2D mask for every kernel.
    """
    docs = batch.get("docs")
    if docs is None:
        return batch
    inputs = {name: value for name, value in batch.items() if name != "docs"}
    if attn_implementation == "flash_attention_2":
        return inputs
    if attn_implementation == "flex_attention":
        return {**inputs, "attention_mask": document_block_mask(docs)}
    mask = block_causal_mask(docs)
    if attn_implementation == "sdpa":
        return {**inputs, "attention_mask": mask}
    if attn_implementation == "eager":
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return {**inputs, "attention_mask": additive.masked_fill_(~mask, torch.finfo(dtype).min)}
    raise ValueError(f"model.attn_implementation {attn_implementation!r} has no packed-mask adapter")
