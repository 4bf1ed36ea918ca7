"""The data pipeline end to end: files -> records -> tokens -> cached TokenData, and the bundled tiny data."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

import trainer.data.splits as data_module
from trainer.config.train_config import TrainConfig
from trainer.data.splits import DataError, build_data, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "examples" / "data" / "tokenizer"
TINY = ROOT / "examples" / "data" / "tiny"
TEXTS = ["The red ball is in the kitchen.", "17 plus 25 is 42.\nIt is a sum.", "Counting by 1 from 3: 3, 4, 5.",
         "Once upon a time, a small cat lived in the hall. The end.", "The lamp is green."]


def make_cfg(train, **data) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"config": {"model_type": "llama", "vocab_size": 512}, "tokenizer": str(TOKENIZER)},
        "data": {"train": str(train), "seq_len": 32, **data},
        "run": {"max_steps": 1},
    })


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(make_cfg("unused").model)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def all_tokens(data) -> np.ndarray:
    """The token ids of every row of a built TokenData, [rows, seq_len]."""
    return data.rows.gather(np.arange(len(data)), data.seq_len)[0]


def documents_of(data) -> list[list[int]]:
    """Token ids of each document in a built TokenData (packed or padded)."""
    docs = []
    tokens, _, numbers_of = data.rows.gather(np.arange(len(data)), data.seq_len)
    for row in range(len(data)):
        ids, numbers = np.asarray(tokens[row]), np.asarray(numbers_of[row])
        for number in np.unique(numbers[numbers >= 0]):
            docs.append(ids[numbers == number].tolist())
    return docs


def test_tokenizer_dir_loads_with_plain_autotokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    assert len(tok) == 512
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|bos|>", "<|endoftext|>", "<|pad|>")
    for text in TEXTS + ["unseen wörds ✓ 1234"]:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok(TEXTS[0])["input_ids"]) < len(TEXTS[0]) / 2  # merges learnt, not bytes
    chat = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Where is the ball?"}]
    rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhere is the ball?"
                        "<|im_end|>\n<|im_start|>assistant\n")
    assert tok.convert_tokens_to_ids("<|im_end|>") in tok(rendered)["input_ids"]


def test_load_tokenizer_from_tokenizer_json_file_and_bad_paths(tmp_path):
    tok = load_tokenizer(make_cfg("x", ).model.model_copy(update={"tokenizer": str(TOKENIZER / "tokenizer.json")}))
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token is not None
    assert tok(TEXTS[1])["input_ids"] == load_tokenizer(make_cfg("x").model)(TEXTS[1])["input_ids"]
    with pytest.raises(DataError, match=r"^model.tokenizer: cannot load a tokenizer from .*missing"):
        load_tokenizer(make_cfg("x").model.model_copy(update={"tokenizer": str(tmp_path / "missing")}))


def test_text_documents_end_with_eos_and_same_tokens_from_every_file_kind(tmp_path, tokenizer):
    jsonl = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in TEXTS])
    (tmp_path / "b.json").write_text(json.dumps([{"text": t} for t in TEXTS]))
    (tmp_path / "c.txt").write_text("\n\n".join(TEXTS) + "\n\n\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "d.parquet")
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", [{"text": t} for t in TEXTS[:2]])
    write_jsonl(folder / "part-1.jsonl", [{"text": t} for t in TEXTS[2:]])

    expected = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in TEXTS]
    for source in (jsonl, tmp_path / "b.json", tmp_path / "c.txt", tmp_path / "d.parquet", folder):
        for packing in (True, False):
            cfg = make_cfg(source, seq_len=256)  # every document whole in one row
            built = build_data(cfg, tokenizer, split="train", packing=packing, cache_dir=tmp_path / "c")
            assert documents_of(built) == expected, (source, packing)
    assert "\n" in tokenizer.decode(expected[1])  # a .txt paragraph keeps its inner line break


def test_eval_fraction_split_is_disjoint_deterministic_and_covers_train(tmp_path, tokenizer):
    texts = [f"The object number {i} is {i % 7} steps away." for i in range(200)]
    source = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts])
    cfg = make_cfg(source, eval_fraction=0.1)
    train = build_data(cfg, tokenizer, split="train", packing=False, cache_dir=tmp_path / "c1")
    held = build_data(cfg, tokenizer, split="eval", packing=False, cache_dir=tmp_path / "c1")
    decoded = lambda d: {tokenizer.decode(ids[:-1]) for ids in documents_of(d)}  # noqa: E731
    train_texts, eval_texts = decoded(train), decoded(held)
    assert len(eval_texts) == 20 and len(train_texts) == 180
    assert train_texts.isdisjoint(eval_texts) and train_texts | eval_texts == set(texts)
    again = build_data(cfg, tokenizer, split="eval", packing=False, cache_dir=tmp_path / "c2")  # rebuilt
    assert decoded(again) == eval_texts
    # the split follows content, not file order
    write_jsonl(tmp_path / "r.jsonl", [{"text": t} for t in reversed(texts)])
    shuffled = build_data(make_cfg(tmp_path / "r.jsonl", eval_fraction=0.1), tokenizer, split="eval",
                          packing=False, cache_dir=tmp_path / "c1")
    assert decoded(shuffled) == eval_texts
    assert build_data(make_cfg(source), tokenizer, split="eval", packing=True, cache_dir=tmp_path / "c1") is None


def test_chat_labels_cover_exactly_the_assistant_turns(tmp_path, tokenizer):
    records = [json.loads(line) for line in (TINY / "chat.jsonl").read_text().splitlines()[:40]]
    assert any(len(r["messages"]) > 3 for r in records) and any(r["messages"][0]["role"] == "system" for r in records)
    cfg = make_cfg(write_jsonl(tmp_path / "chat.jsonl", records), format="chat", seq_len=256)
    data = build_data(cfg, tokenizer, split="train", packing=False, cache_dir=tmp_path / "c")
    assert len(data) == len(records)
    tokens, targets_of, _ = data.rows.gather(np.arange(len(data)), data.seq_len)
    for row, record in enumerate(records):
        ids, targets = np.asarray(tokens[row]), np.asarray(targets_of[row])
        # group consecutive labelled tokens into turns
        turns, current = [], []
        for token, target in zip(ids.tolist(), targets.tolist(), strict=True):
            if target:
                current.append(token)
            elif current:
                turns.append(tokenizer.decode(current))
                current = []
        assistant = [m["content"] + "<|im_end|>" for m in record["messages"] if m["role"] == "assistant"]
        assert turns == assistant
    packed = build_data(cfg, tokenizer, split="train", packing=True, cache_dir=tmp_path / "c")
    assert packed.num_targets == data.num_targets  # packing moves no label on or off a chat turn


def test_cache_is_reused_and_invalidated_by_data_and_seq_len(tmp_path, tokenizer, monkeypatch):
    """Shards hold tokens only: a new seq_len or packing lays out new rows from them without tokenizing
    (the old cache tokenized again); a changed data file is tokenized again."""
    calls = []
    real = data_module.tokenize_texts
    monkeypatch.setattr(data_module, "tokenize_texts", lambda *a, **k: calls.append(1) or real(*a, **k))
    source = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in TEXTS])
    cache = tmp_path / "cache"
    first = build_data(make_cfg(source, seq_len=256), tokenizer, split="train", packing=True, cache_dir=cache)
    second = build_data(make_cfg(source, seq_len=256), tokenizer, split="train", packing=True, cache_dir=cache)
    assert len(calls) == 1 and np.array_equal(all_tokens(first), all_tokens(second))
    short = build_data(make_cfg(source, seq_len=128), tokenizer, split="train", packing=True, cache_dir=cache)
    padded = build_data(make_cfg(source, seq_len=256), tokenizer, split="train", packing=False, cache_dir=cache)
    assert len(calls) == 1 and short.seq_len == 128 and not padded.packed and len(padded) == len(TEXTS)
    write_jsonl(source, [{"text": t} for t in TEXTS + ["One more document."]])
    changed = build_data(make_cfg(source, seq_len=256), tokenizer, split="train", packing=True, cache_dir=cache)
    assert len(calls) == 2 and len(documents_of(changed)) == len(TEXTS) + 1
    assert sorted(p.name.split("-")[0] for p in cache.iterdir() if p.is_dir()) == ["shards"] + ["train"] * 4


def _build_in_process(source, cache, barrier, results):
    calls = []
    real = data_module.tokenize_texts
    data_module.tokenize_texts = lambda *a, **k: calls.append(1) or real(*a, **k)
    tok = load_tokenizer(make_cfg(source).model)
    barrier.wait()  # all start building at once
    data = build_data(make_cfg(source), tok, split="train", packing=True, cache_dir=Path(cache))
    results.put((len(calls), np.asarray(all_tokens(data)).tolist()))


def test_concurrent_builders_share_one_cache_entry(tmp_path):
    source = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in TEXTS * 50])
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(str(source), str(tmp_path / "cache"), barrier, results))
             for _ in range(3)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert sum(calls for calls, _ in outcomes) == 1  # one tokenized, the others waited and read the cache
    assert outcomes[0][1] == outcomes[1][1] == outcomes[2][1]
    entries = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert entries == ["shards", "train"], entries  # no leftover temp build folders or claims either
    assert len(list((tmp_path / "cache" / "shards").iterdir())) == 1  # one work unit, one shard


def test_bad_inputs_name_the_key(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"body": "b"}])
    with pytest.raises(DataError, match=r"^data.train: record 1 of .* has no field 'text' \(fields: body\)"):
        build_data(make_cfg(source), tokenizer, split="train", packing=True, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match=r"^data.train: no such file or folder .*nope.jsonl"):
        build_data(make_cfg(tmp_path / "nope.jsonl"), tokenizer, split="train", packing=True, cache_dir=tmp_path)
    (tmp_path / "x.csv").write_text("text\na\n")
    with pytest.raises(DataError, match=r"^data.train: unsupported file type .csv"):
        build_data(make_cfg(tmp_path / "x.csv"), tokenizer, split="train", packing=True, cache_dir=tmp_path)
    (tmp_path / "d.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"^data.train: data.format chat needs records"):
        build_data(make_cfg(tmp_path / "d.txt", format="chat"), tokenizer, split="train", packing=True,
                   cache_dir=tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{not json\n')
    with pytest.raises(DataError, match=r"^data.train: cannot read .*broken.jsonl"):
        build_data(make_cfg(tmp_path / "broken.jsonl"), tokenizer, split="train", packing=True, cache_dir=tmp_path)


def test_bundled_tiny_data_is_disjoint_and_small():
    def lines(name):
        return (TINY / name).read_text().splitlines()

    train, evaluation = lines("train.jsonl"), lines("eval.jsonl")
    assert set(train).isdisjoint(evaluation) and len(set(train)) == len(train)
    assert 400_000 < (TINY / "train.jsonl").stat().st_size < 1_000_000
    lengths = [len(json.loads(line)["text"]) for line in train]
    assert min(lengths) < 60 and max(lengths) > 400  # variable document lengths
    assert set(lines("chat.jsonl")).isdisjoint(lines("chat_eval.jsonl"))
    assert 1000 <= len(lines("chat.jsonl")) <= 2000


def test_generator_rewrites_the_committed_bytes(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for committed in [*TINY.iterdir(), *TOKENIZER.iterdir()]:
        assert (tmp_path / committed.parent.name / committed.name).read_bytes() == committed.read_bytes(), committed
