"""Length-aware batching (packing off) and padding-free chat packing: order, resume, padding, loss masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from test_packing import alone, documents, tiny_llama, token_losses
from trainer.config.train_config import TrainConfig
from trainer.data.length_groups import BUCKET_STEPS, PAD_MULTIPLE, batch_width, group_by_length, row_lengths
from trainer.data.row_layout import ArrayRows
from trainer.data.splits import build_data, load_tokenizer, tokenize_chat
from trainer.data.token_data import TokenData, for_attention, pack_documents, pad_documents

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "data" / "tiny"


def grouped_data(lengths, seq_len=64, grouped=True, workers=0):
    """Padded rows whose first two tokens identify the row (row number in base VOCAB)."""
    docs = documents(lengths, seed=1)
    for row, (ids, _) in enumerate(docs):
        ids[:2] = (3 + row // 90, 3 + row % 90)
    return TokenData(ArrayRows(pad_documents(docs, seq_len, pad_id=0)), packed=False, pad_id=0, shuffle=True,
                     num_workers=workers, group_by_length=grouped)


def row_of(batch) -> list[int]:
    return [(int(a) - 3) * 90 + int(b) - 3 for a, b in batch["input_ids"][:, :2].tolist()]


def plan(data, epoch, world, mbs, seed, start=0):
    return [[row_of(b) for b in data.iter_batches(epoch, start, rank=r, world_size=world, micro_batch_size=mbs,
                                                   seed=seed)] for r in range(world)]


LENGTHS = np.random.default_rng(3).integers(3, 64, 1000).tolist()


def test_grouped_plan_is_deterministic_per_seed_and_epoch_and_resumable():
    data = grouped_data(LENGTHS)
    first = plan(data, 0, 2, 4, seed=7)
    assert plan(grouped_data(LENGTHS), 0, 2, 4, seed=7) == first  # a fresh process plans the same
    assert plan(data, 1, 2, 4, seed=7) != first
    assert plan(data, 0, 2, 4, seed=8) != first
    for start in (1, 37, len(first[0]) - 1):
        assert plan(data, 0, 2, 4, seed=7, start=start) == [rank[start:] for rank in first]
    assert plan(data, 0, 2, 4, seed=7, start=len(first[0])) == [[], []]


def test_grouped_plan_covers_the_same_rows_as_the_unsorted_one_disjoint_per_rank():
    data, plain = grouped_data(LENGTHS), grouped_data(LENGTHS, grouped=False)
    seen = plan(data, 2, 3, 5, seed=1)
    flat = [r for rank in seen for batch in rank for r in batch]
    assert [len(rank) for rank in seen] == [data.batches_per_epoch(5, 3)] * 3 == [66] * 3
    assert len(flat) == len(set(flat)) == 66 * 15
    unsorted = {r for rank in plan(plain, 2, 3, 5, seed=1) for batch in rank for r in batch}
    assert set(flat) == unsorted  # grouping only reorders this epoch's rows, it drops none and adds none


def test_grouping_pads_far_less_and_puts_the_longest_batch_first():
    data, plain = grouped_data(LENGTHS), grouped_data(LENGTHS, grouped=False)
    lengths = np.array(LENGTHS)

    def padded_cells(d):
        return sum(b["input_ids"].numel() for rank in range(2)
                   for b in d.iter_batches(0, rank=rank, world_size=2, micro_batch_size=8, seed=5))

    real = sum(int(lengths[r].sum()) for rank in plan(data, 0, 2, 8, 5) for r in rank)
    fixed = 2 * data.batches_per_epoch(8, 2) * 8 * 64  # every row padded to seq_len, as before
    grouped, trimmed = padded_cells(data), padded_cells(plain)
    assert grouped < trimmed < fixed
    assert (grouped - real) / grouped < 0.15  # what is left is mostly the rounding up to PAD_MULTIPLE
    assert (trimmed - real) / trimmed > 0.2
    first_widths = [b["input_ids"].shape[1] for b in (next(data.iter_batches(0, rank=r, world_size=2,
                                                           micro_batch_size=8, seed=5)) for r in range(2))]
    planned = [r for rank in plan(data, 0, 2, 8, 5) for b in rank for r in b]
    assert max(first_widths) == batch_width(lengths[planned], 64)  # the epoch's longest row comes first
    # a micro batch within a sorted bucket spans a narrow range of lengths
    spans = [np.ptp(lengths[b]) for rank in plan(data, 0, 2, 8, 5) for b in rank]
    assert np.median(spans) <= 2


def test_group_by_length_keeps_every_row_once_and_sorts_within_buckets():
    lengths = np.arange(400) % 37
    order = np.random.default_rng(0).permutation(400)
    out = group_by_length(order, lengths, per_step=4, rng=np.random.default_rng(1))
    assert sorted(out.tolist()) == list(range(400))
    steps = out.reshape(-1, 4)
    assert all((np.diff(lengths[s]) <= 0).all() for s in steps)  # descending inside each global batch
    assert lengths[steps[0]].max() == 36
    with pytest.raises(ValueError, match="whole batches"):
        group_by_length(order[:10], lengths, per_step=4, rng=np.random.default_rng(1))
    assert BUCKET_STEPS * 4 < 400  # several buckets were exercised


def test_batch_width_and_row_lengths():
    assert batch_width(np.array([1, 3]), 64) == PAD_MULTIPLE
    assert batch_width(np.array([9, 16]), 64) == 16
    assert batch_width(np.array([17]), 64) == 24
    assert batch_width(np.array([63]), 64) == 64 and batch_width(np.array([61]), 62) == 62
    docs = np.full((5, 6), -1, np.int32)
    for row, n in enumerate([0, 6, 2, 5, 1]):
        docs[row, :n] = 0
    assert row_lengths(docs, chunk=2).tolist() == [0, 6, 2, 5, 1]


def test_trimmed_batches_keep_the_loss_and_the_masks():
    docs = documents([5, 12, 3, 9])
    data = TokenData(ArrayRows(pad_documents(docs, 32, pad_id=0)), packed=False, pad_id=0, shuffle=False)
    batch = data[np.arange(4)]
    assert batch["input_ids"].shape == (4, 16)  # longest 12 -> 16, not seq_len 32
    assert batch["position_ids"][0].tolist() == list(range(16))
    labels, mask = batch["labels"], batch["attention_mask"]
    for row, (ids, _) in enumerate(docs):
        n = len(ids)
        assert mask[row].tolist() == [1] * n + [0] * (16 - n)
        assert labels[row, 0] == -100 and (labels[row, n:] == -100).all()
        assert labels[row, 1:n].tolist() == ids[1:].tolist()
    model = tiny_llama()
    full = {k: torch.nn.functional.pad(v, (0, 16), value=0 if k != "labels" else -100) for k, v in batch.items()}
    full["position_ids"] = torch.arange(32).expand(4, 32)
    with torch.no_grad():
        trimmed_loss, full_loss = model(**batch).loss, model(**full).loss
    expected = torch.cat([token_losses(alone(model, ids), ids) for ids, _ in docs]).mean()
    assert trimmed_loss.item() == pytest.approx(full_loss.item(), abs=1e-6)
    assert trimmed_loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_workers_build_the_same_grouped_batches():
    data, workers = grouped_data(LENGTHS[:200]), grouped_data(LENGTHS[:200], workers=2)
    for a, b in zip(data.iter_batches(1, 3, rank=1, world_size=2, micro_batch_size=4, seed=3),
                    workers.iter_batches(1, 3, rank=1, world_size=2, micro_batch_size=4, seed=3), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_workers_are_not_forks_of_the_trainer():
    """A fork of the multi-threaded trainer can inherit a lock another thread held (a metrics scrape) and hang
    for good; workers come from a single-threaded forkserver instead, so their parent is not this process."""
    import os

    batches = grouped_data(LENGTHS[:200], workers=1).iter_batches(0, 0, rank=0, world_size=1, micro_batch_size=4,
                                                                  seed=3)
    first = next(batches)
    worker = batches._workers[0]
    parent = int(Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent != os.getpid() and first["input_ids"].shape[0] == 4


def test_build_data_groups_training_batches_only(tmp_path):
    cfg = TrainConfig.model_validate({
        "model": {"config": {"model_type": "llama", "vocab_size": 512},
                  "tokenizer": str(ROOT / "examples/data/tokenizer")},
        "data": {"train": str(TINY / "train.jsonl"), "eval": str(TINY / "eval.jsonl"), "seq_len": 128, "packing": False,
                 "group_by_length": True},
        "run": {"max_steps": 1},
    })
    tokenizer = load_tokenizer(cfg.model)
    train = build_data(cfg, tokenizer, split="train", packing=False, cache_dir=tmp_path)
    evals = build_data(cfg, tokenizer, split="eval", packing=False, cache_dir=tmp_path)
    assert train.group_by_length and not evals.group_by_length
    assert plan_rows(evals) == list(range(16))  # eval keeps file order
    off = cfg.model_copy(update={"data": cfg.data.model_copy(update={"group_by_length": False})})
    assert not build_data(off, tokenizer, split="train", packing=False, cache_dir=tmp_path).group_by_length
    # On the bundled corpus (documents of 6..113 tokens in rows of 128) grouping removes most padding.
    cells = sum(b["input_ids"].numel() for b in train.iter_batches(0, rank=0, world_size=1, micro_batch_size=8, seed=1))
    used = sum(int((b["attention_mask"]).sum()) for b in train.iter_batches(0, rank=0, world_size=1,
                                                                           micro_batch_size=8, seed=1))
    assert used / cells > 0.9 and used / (train.batches_per_epoch(8, 1) * 8 * 128) < 0.4


def plan_rows(data) -> list[int]:
    return [int(r) for rows in data.batch_rows(0, rank=0, world_size=1, micro_batch_size=8, seed=0)[:2] for r in rows]


def test_packed_chat_is_padding_free_and_learns_only_assistant_turns():
    """Conversations packed into full rows give each conversation's own assistant-only loss."""
    tokenizer = load_tokenizer(TrainConfig.model_validate({
        "model": {"config": {"model_type": "llama", "vocab_size": 512},
                  "tokenizer": str(ROOT / "examples/data/tokenizer")},
        "data": {"train": "x"}, "run": {"max_steps": 1}}).model)
    conversations = [
        [{"role": "user", "content": "Where is the ball?"}, {"role": "assistant", "content": "In the kitchen."}],
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 plus 3?"},
         {"role": "assistant", "content": "5."}, {"role": "user", "content": "And 4 plus 4?"},
         {"role": "assistant", "content": "8."}],
        [{"role": "user", "content": "Count to 3."}, {"role": "assistant", "content": "1, 2, 3."}],
    ]
    docs = tokenize_chat(tokenizer, conversations, "data.train")
    total = sum(len(ids) for ids, _ in docs)
    data = TokenData(ArrayRows(pack_documents(docs, total, pad_id=tokenizer.pad_token_id)), packed=True,
                     pad_id=tokenizer.pad_token_id, shuffle=False)
    batch = data[np.array([0])]
    assert batch["input_ids"].shape == (1, total) and (batch["docs"] >= 0).all()  # not one padding token
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = tiny_llama_vocab(len(tokenizer))
    with torch.no_grad():
        packed_loss = model(**for_attention(batch, "sdpa", torch.float32)).loss
    expected, offset = [], 0
    for ids, targets in docs:
        labels = batch["labels"][0, offset : offset + len(ids)]
        # targets: the assistant turns' tokens including their end-of-turn token, nothing from prompts
        assert (labels != -100).tolist() == [bool(t) for t in targets]
        assert targets.any() and not targets[0] and end_of_turn in ids[targets].tolist()
        losses = token_losses(alone(model, ids), ids)
        expected.append(losses[torch.as_tensor(targets[1:])])
        offset += len(ids)
    assert packed_loss.item() == pytest.approx(torch.cat(expected).mean().item(), abs=1e-5)


def tiny_llama_vocab(vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()
