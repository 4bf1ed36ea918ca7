"""Length-aware batching for padded (unpacked) data: similar lengths share a batch, so little is padding.

A shuffled epoch order is cut into buckets of BUCKET_STEPS global batches; each bucket is sorted by
length and cut into global batches (world_size x micro_batch_size rows, rank r takes the r-th slice);
the batches of the whole epoch are then shuffled, so a run does not see short batches first and long
ones last, and the batch with the longest row is moved to the front so an out-of-memory shows at step 1,
not hours in. Everything is a pure function of (seed, epoch, lengths, batch shape): resuming at micro
batch `start` of an epoch replays the same plan (the same contract as the unsorted order).

Each batch is then padded only to its longest row, rounded up to PAD_MULTIPLE (tensor-core friendly
shapes, and few distinct shapes for torch.compile), never to seq_len.
"""

from __future__ import annotations

import numpy as np

BUCKET_STEPS = 50  # global batches per sorted bucket (as HF's group_by_length "megabatch")
PAD_MULTIPLE = 8


def row_lengths(docs, chunk: int = 65536) -> np.ndarray:
    """Non-padding tokens of each row (padding is docs == -1), read in chunks of a memory-mapped array."""
    out = np.empty(docs.shape[0], np.int64)
    for start in range(0, docs.shape[0], chunk):
        out[start : start + chunk] = (np.asarray(docs[start : start + chunk]) >= 0).sum(axis=1)
    return out


def document_lengths(docs, chunk: int = 4096) -> np.ndarray:
    """Length of every document piece in every row (docs: [N, T] document ids, -1 = padding), in chunks."""
    out = []
    for start in range(0, docs.shape[0], chunk):
        part = np.asarray(docs[start : start + chunk]).astype(np.int64)
        rows, width = part.shape
        keys = (np.arange(rows)[:, None] * width + part)[part >= 0]  # (row, document) -> one number
        counts = np.bincount(keys, minlength=rows * width)
        out.append(counts[counts > 0])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def attention_length(document_lengths) -> float:
    """sum L_i^2 / sum L_i: the mean length a token attends over when each document attends only to itself
    (the T of MFU's 12 L H Q T attention FLOPs, trainer/observability/mfu.py)."""
    lengths = np.asarray(document_lengths, dtype=np.float64)
    total = lengths.sum()
    return float((lengths**2).sum() / total) if total > 0 else 0.0


def group_by_length(order: np.ndarray, lengths: np.ndarray, per_step: int, rng: np.random.Generator) -> np.ndarray:
    """`order` (a multiple of per_step rows) rearranged so each consecutive per_step rows have similar lengths."""
    if len(order) % per_step:
        raise ValueError(f"{len(order)} rows do not make whole batches of {per_step}")
    if len(order) == 0:
        return order
    bucket = per_step * BUCKET_STEPS
    steps = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]  # stable: ties keep the shuffled order
        steps.append(chunk.reshape(-1, per_step))
    batches = np.concatenate(steps)
    batches = batches[rng.permutation(len(batches))]
    longest = int(np.argmax(lengths[batches].max(axis=1)))
    batches[[0, longest]] = batches[[longest, 0]]
    return batches.reshape(-1)


def batch_width(lengths: np.ndarray, seq_len: int) -> int:
    """Columns a padded batch needs: its longest row rounded up to PAD_MULTIPLE, at most seq_len."""
    longest = int(lengths.max()) if len(lengths) else 0
    return min(seq_len, max(PAD_MULTIPLE, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE))
