"""Packing, masks and the batch plan: packed documents must not see each other, ranks must not overlap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainer.data.row_layout import ArrayRows
from trainer.data.token_data import TokenData, for_attention, pack_documents, pad_documents

VOCAB = 100


def documents(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(3, VOCAB, n).astype(np.int32), np.ones(n, bool)) for n in lengths]


def tiny_llama(attn="sdpa"):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      attn_implementation=attn)
    return LlamaForCausalLM(cfg).eval()


def alone(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long)[None]).logits[0]


def token_losses(logits, ids):
    """Cross entropy of predicting ids[1:] from logits[:-1] (what HF's shifted loss averages)."""
    return torch.nn.functional.cross_entropy(logits[:-1], torch.as_tensor(ids[1:], dtype=torch.long),
                                             reduction="none")


def rows_of(data: TokenData, docs) -> list[list[tuple[int, int]]]:
    """Per packed row, (document index, start column) of each document, from the row's tokens."""
    ids = [d[0].tolist() for d in docs]
    all_tokens, _, all_docs = data.rows.gather(np.arange(len(data)), data.seq_len)
    out = []
    for row in range(len(data)):
        tokens, doc_ids = all_tokens[row].tolist(), all_docs[row]
        out.append([])
        for number in range(int(doc_ids.max()) + 1):
            start = int(np.argmax(doc_ids == number))
            length = int((doc_ids == number).sum())
            out[-1].append((ids.index(tokens[start : start + length]), start))
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager", pytest.param("flex_attention", marks=pytest.mark.slow)])
def test_packed_micro_batches_give_the_same_logits_and_loss_as_each_document_alone(attn):
    # 3 rows of 64: several documents each, padding at the end of some rows, a micro batch > 1.
    docs = documents([11, 17, 9, 20, 30, 25, 5, 40, 13], seed=1)
    data = TokenData(ArrayRows(pack_documents(docs, 64, pad_id=0)), packed=True, pad_id=0, shuffle=False)
    assert len(data) == 3
    batch = data[np.arange(3)]
    assert "attention_mask" not in batch and batch["docs"].shape == (3, 64)  # no host-built [B, 1, T, T] mask
    model = tiny_llama(attn)
    with torch.no_grad():
        out = model(**for_attention(batch, attn, torch.float32))
    expected = []
    for row, placed in enumerate(rows_of(data, docs)):
        for index, start in placed:
            ids = docs[index][0]
            ref = alone(model, ids)
            torch.testing.assert_close(out.logits[row, start : start + len(ids)], ref, atol=1e-5, rtol=1e-5)
            expected.append(token_losses(ref, ids))
    assert sum(len(p) for p in rows_of(data, docs)) == len(docs)
    # HF's loss over the packed batch = the mean over every document's own next-token losses.
    assert out.loss.item() == pytest.approx(torch.cat(expected).mean().item(), abs=1e-5)


def test_position_ids_alone_let_packed_documents_see_each_other():
    """Why the 4D mask exists: restarting position ids with no mask or a 2D mask leak across documents."""
    docs = documents([11, 17, 9])
    data = TokenData(ArrayRows(pack_documents(docs, 37, pad_id=0)), packed=True, pad_id=0, shuffle=False)
    batch = for_attention(data[np.array([0])], "sdpa", torch.float32)
    model = tiny_llama()
    second = slice(11, 28)
    ref = alone(model, docs[1][0])
    with torch.no_grad():
        no_mask = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, second]
        ones = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     attention_mask=torch.ones(1, 37, dtype=torch.long)).logits[0, second]
        masked = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, second]
    assert (no_mask - ref).abs().max() > 1e-2
    assert (ones - ref).abs().max() > 1e-2
    assert (masked - ref).abs().max() < 1e-5


def test_eager_attention_gets_an_additive_mask():
    docs = documents([11, 17, 9])
    packed = TokenData(ArrayRows(pack_documents(docs, 40, pad_id=0)), packed=True, pad_id=0, shuffle=False)
    batch = packed[np.array([0])]
    model = tiny_llama("eager")
    adapted = for_attention(batch, "eager", torch.float32)
    assert adapted["attention_mask"].dtype == torch.float32
    with torch.no_grad():
        logits = model(**adapted).logits[0]
        # a boolean mask added to eager scores does not separate documents
        wrong = model(**for_attention(batch, "sdpa", torch.float32)).logits[0]
    torch.testing.assert_close(logits[11:28], alone(model, docs[1][0]), atol=1e-5, rtol=1e-5)
    assert (wrong[11:28] - alone(model, docs[1][0])).abs().max() > 1e-2
    assert set(for_attention(batch, "flash_attention_2", torch.float32)) == {"input_ids", "labels", "position_ids"}
    unpacked = TokenData(ArrayRows(pad_documents(docs, 40, pad_id=0)), packed=False, pad_id=0, shuffle=False)
    padded = unpacked[np.arange(3)]
    assert for_attention(padded, "eager", torch.float32) is padded  # a 2D mask serves every kernel


def test_packed_rows_keep_documents_whole_restart_positions_and_mask_first_tokens():
    docs = documents([5, 3, 12, 2, 6])
    arrays = pack_documents(docs, 8, pad_id=0)  # 28 tokens; best fit: [5+3], [12 cut: 8], [4 + pad], [2+6]
    data = TokenData(ArrayRows(arrays), packed=True, pad_id=0, shuffle=False)
    assert len(data) == 4
    batch = data[np.arange(4)]
    ids = [d[0].tolist() for d in docs]
    assert batch["input_ids"].tolist() == [ids[0] + ids[1], ids[2][:8], ids[2][8:] + [0] * 4, ids[3] + ids[4]]
    # only the document longer than a row is cut; its rest is a new document (positions from 0)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], list(range(8)), [0, 1, 2, 3, 0, 1, 2, 3],
                                              [0, 1, 0, 1, 2, 3, 4, 5]]
    labels = batch["labels"]
    # a piece's first token follows another piece (or nothing) in its row: no loss there
    assert [labels[0, 0], labels[0, 5], labels[2, 0], labels[3, 2]] == [-100] * 4
    assert (labels[2, 4:] == -100).all()  # padding
    assert labels[0, 6].item() == ids[1][1] and labels[2, 1].item() == ids[2][9]
    assert int((labels != -100).sum()) == 28 - 6  # every real token but the 6 pieces' first ones
    mask = for_attention(batch, "sdpa", torch.float32)["attention_mask"]
    assert mask.shape == (4, 1, 8, 8) and mask.dtype == torch.bool
    assert not mask[0, 0, 5, :5].any() and mask[0, 0, 7, 5:8].all()
    assert not mask[0, 0, 3, 4]  # causal


def test_best_fit_fills_rows_and_places_every_piece_once():
    from trainer.data.bin_packing import best_fit_rows

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 65, 500)
    rows = best_fit_rows(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(500))
    assert all(lengths[row].sum() <= 64 for row in rows)
    # pairs that fill a row exactly, shuffled: best fit decreasing finds the perfect packing
    half = rng.integers(1, 64, 250)
    pairs = rng.permutation(np.concatenate([half, 64 - half]))
    assert [pairs[row].sum() for row in best_fit_rows(pairs, 64)] == [64] * 250
    # short documents, as in the bundled corpus: rows are over 99% full
    short = rng.integers(6, 114, 3800)
    assert short.sum() / (len(best_fit_rows(short, 128)) * 128) > 0.99
    assert [row[0] for row in rows] == sorted(row[0] for row in rows) and all(row == sorted(row) for row in rows)
    with pytest.raises(ValueError, match="within 1..64"):
        best_fit_rows(np.array([3, 65]), 64)


def test_padded_rows_one_document_each_truncated():
    docs = documents([5, 12, 3])
    data = TokenData(ArrayRows(pad_documents(docs, 8, pad_id=0)), packed=False, pad_id=0, shuffle=False)
    batch = data[np.arange(3)]
    assert batch["attention_mask"].tolist()[0] == [1] * 5 + [0] * 3
    assert batch["attention_mask"][1].sum() == 8  # truncated to seq_len
    assert batch["input_ids"][1].tolist() == docs[1][0][:8].tolist()
    assert (batch["labels"][0, 5:] == -100).all() and batch["labels"][0, 0] == -100
    assert batch["labels"][0, 1:5].tolist() == docs[0][0][1:].tolist()
    model = tiny_llama()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(logits[0, :5], alone(model, docs[0][0]), atol=1e-5, rtol=1e-5)


def plan_data(rows=103, shuffle=True, workers=0):
    docs = documents([4] * rows)
    return TokenData(ArrayRows(pad_documents(docs, 4, pad_id=0)), packed=False, pad_id=0, shuffle=shuffle,
                     num_workers=workers)


def rows_seen(data, epoch, world, mbs, seed, start=0):
    """Row numbers each rank sees, recovered from the batches' first token (unique per row here)."""
    tokens = data.rows.gather(np.arange(len(data)), data.seq_len)[0]
    first_token = {int(tokens[r, 0]) * 1000 + int(tokens[r, 1]): r for r in range(len(data))}
    seen = []
    for rank in range(world):
        batches = data.iter_batches(epoch, start, rank=rank, world_size=world, micro_batch_size=mbs, seed=seed)
        seen.append([[first_token[int(a) * 1000 + int(b)] for a, b in batch["input_ids"][:, :2].tolist()]
                     for batch in batches])
    return seen


def test_ranks_get_disjoint_equal_shards_covering_the_epoch():
    data = plan_data()
    assert data.batches_per_epoch(4, 3) == 103 // 12
    seen = rows_seen(data, epoch=0, world=3, mbs=4, seed=7)
    assert [len(s) for s in seen] == [8, 8, 8]
    flat = [r for rank in seen for batch in rank for r in batch]
    assert len(flat) == len(set(flat)) == 96
    order = data.epoch_order(0, 7)
    assert sorted(flat) == sorted(order[:96].tolist())
    # step k of all ranks = the k-th block of the epoch order
    assert seen[0][1] + seen[1][1] + seen[2][1] == order[12:24].tolist()


def test_order_is_seeded_reshuffled_per_epoch_and_resumable():
    data = plan_data()
    epoch0 = rows_seen(data, 0, 2, 4, seed=7)
    assert rows_seen(data, 0, 2, 4, seed=7) == epoch0
    assert rows_seen(data, 1, 2, 4, seed=7) != epoch0
    assert rows_seen(data, 0, 2, 4, seed=8) != epoch0
    resumed = rows_seen(data, 0, 2, 4, seed=7, start=5)
    assert resumed == [rank[5:] for rank in epoch0]


def test_eval_order_is_not_shuffled_and_workers_give_the_same_batches():
    data = plan_data(shuffle=False)
    assert rows_seen(data, 3, 1, 5, seed=1)[0][0] == [0, 1, 2, 3, 4]
    workers = plan_data(workers=2)
    plain = plan_data()
    for a, b in zip(workers.iter_batches(2, 1, rank=1, world_size=2, micro_batch_size=4, seed=3),
                    plain.iter_batches(2, 1, rank=1, world_size=2, micro_batch_size=4, seed=3), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
