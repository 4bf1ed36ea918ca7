"""Data preparation by several processes: shards, the row layout, restarts, changes, errors and progress."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import trainer.data.splits as data_module
from test_data import make_cfg, write_jsonl
from trainer.data.prep_progress import PrepMetrics
from trainer.data.readers import plan_units
from trainer.data.sources import DataError
from trainer.data.splits import build_data, load_tokenizer, tokenize_texts
from trainer.data.token_data import pack_documents, pad_documents

WORDS = [
    "the", "red", "ball", "is", "in", "the", "kitchen", "and", "a", "small", "cat", "lived", "in", "the", "hall",
    "counting", "by", "two", "from", "ten"
]


def corpus(folder: Path, sizes=(60, 90, 30), start=0) -> Path:
    """Files of documents of 1..120 words (some longer than a 64-token row, one empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for index, size in enumerate(sizes, start):
        texts = [" ".join(rng.choice(WORDS, rng.integers(1, 120))) for _ in range(size)]
        texts[size // 2] = "" if index == 1 else texts[size // 2]
        write_jsonl(folder / f"part-{index}.jsonl", [{"text": t} for t in texts])
    return folder


def texts_of(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def cfg_of(folder: Path, **data):
    return make_cfg(folder, seq_len=64, chunk_mb=0.004, chunk_records=16, **data)  # units of ~4 KB


def arrays(data) -> tuple:
    """(tokens, targets, document numbers) of every row of a built TokenData, each [rows, seq_len]."""
    return data.rows.gather(np.arange(len(data)), data.seq_len)


def _prepare(folder, cache, rank, world, options, barrier, results):
    calls = []
    real = data_module.tokenize_texts
    data_module.tokenize_texts = lambda *a, **k: calls.append(1) or real(*a, **k)
    cfg = cfg_of(Path(folder), **options.pop("data", {}))
    tokenizer = load_tokenizer(cfg.model)
    barrier.wait()
    try:
        splits = {split: build_data(cfg, tokenizer, split=split, cache_dir=Path(cache), rank=rank, world_size=world,
                                    **options) for split in ("train", "eval")}
        results.put((rank, len(calls), {s: d and [a.tolist() for a in arrays(d)] for s, d in splits.items()}))
    except DataError as e:
        results.put((rank, len(calls), e.problems[0]))


def prepare_in(world: int, folder: Path, cache: Path, **options) -> list:
    """build_data of both splits in `world` processes (ranks 0..world-1) at once; their results by rank."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(world), ctx.Queue()
    procs = [ctx.Process(target=_prepare, args=(str(folder), str(cache), rank, world, dict(options), barrier, results))
             for rank in range(world)]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    return outcomes


def reference_documents(tokenizer, texts: list[str]) -> list[tuple]:
    """The documents of tokenize_texts, from the plain tokenizer call rather than its fast path."""
    ids = [i if i and i[-1] == tokenizer.eos_token_id else [*i, tokenizer.eos_token_id]
           for i in tokenizer([t for t in texts if t], add_special_tokens=True, verbose=False)["input_ids"]]
    return [(np.array(i, np.int32), np.ones(len(i), bool)) for i in ids]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(make_cfg("unused").model)


@pytest.mark.parametrize("packing", [True, False])
def test_two_processes_lay_out_the_same_rows_as_one_and_as_pack_documents(tmp_path, tokenizer, packing):
    folder = corpus(tmp_path / "data")
    options = {"packing": packing, "data": {"eval_fraction": 0.1}}
    two = prepare_in(2, folder, tmp_path / "c2", **options)
    one = prepare_in(1, folder, tmp_path / "c1", **options)
    assert min(two[0][1], two[1][1]) > 0  # both processes tokenized a share of the units
    assert two[0][2] == two[1][2] == one[0][2]  # identical rows, in identical order
    # Exactly today's rows: the documents tokenized in memory, held out by the rule of the old in-memory
    # split (the round(0.1 n) smallest sha256 of the records' JSON), shaped by pack / pad_documents.
    texts = [t for f in sorted(folder.iterdir()) for t in texts_of(f)]
    digest = [hashlib.sha256(json.dumps(t, sort_keys=True, ensure_ascii=False).encode()).hexdigest() for t in texts]
    held = set(sorted(range(len(texts)), key=lambda i: (digest[i], i))[: round(0.1 * len(texts))])
    shape = pack_documents if packing else pad_documents
    for split, keep in (("train", lambda i: i not in held), ("eval", lambda i: i in held)):
        documents = reference_documents(tokenizer, [t for i, t in enumerate(texts) if keep(i)])
        expected = shape(documents, 64, tokenizer.pad_token_id)
        assert [a.tolist() for a in expected.values()] == one[0][2][split], split


def test_restart_reads_no_data_byte_and_a_change_is_noticed(tmp_path, tokenizer, monkeypatch):
    folder = corpus(tmp_path / "data")
    cache = tmp_path / "cache"
    first = build_data(cfg_of(folder), tokenizer, split="train", packing=True, cache_dir=cache)
    shards = {p.name: p.stat().st_mtime_ns for p in (cache / "shards").iterdir()}
    texts = {f.name: texts_of(f) for f in folder.iterdir()}
    stats = {f: f.stat() for f in folder.iterdir()}
    for path, st in stats.items():  # same size and mtime, other bytes: reading any would change the rows
        path.write_bytes(b"\xff" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    calls = []
    monkeypatch.setattr(data_module, "tokenize_texts", lambda *a, **k: calls.append(1) or tokenize_texts(*a, **k))
    again = build_data(cfg_of(folder), tokenizer, split="train", packing=True, cache_dir=cache)
    assert not calls and all(np.array_equal(a, b) for a, b in zip(arrays(first), arrays(again), strict=True))

    corpus(folder, sizes=(50,), start=1)  # part-1 rewritten (incremental: only its units are tokenized)
    corpus(folder, sizes=(20,), start=7)  # part-7 added
    changed = build_data(cfg_of(folder), tokenizer, split="train", packing=True, cache_dir=cache)
    new = {p.name for p in (cache / "shards").iterdir()} - shards.keys()
    units = [len(plan_units("json", [folder / f"part-{i}.jsonl"], int(0.004 * 2**20))) for i in (1, 7)]
    assert len(new) == sum(units)
    assert all((cache / "shards" / name).stat().st_mtime_ns == t for name, t in shards.items())  # untouched
    texts.update({name: texts_of(folder / name) for name in ("part-1.jsonl", "part-7.jsonl")})
    current = [t for name in sorted(texts) for t in texts[name]]
    assert changed.num_tokens == sum(len(ids) for ids, _ in reference_documents(tokenizer, current)) != first.num_tokens


def test_a_data_error_in_one_process_reaches_every_process(tmp_path):
    folder = corpus(tmp_path / "data")
    bad_at = (folder / "part-2.jsonl").stat().st_size
    with (folder / "part-2.jsonl").open("a") as f:
        f.write('{"body": "no text"}\n')
    outcomes = prepare_in(2, folder, tmp_path / "cache", packing=True)
    units = plan_units("json", [folder / "part-2.jsonl"], int(0.004 * 2**20))
    (offset,) = [u.start for u in units if u.start <= bad_at < u.end]
    message = rf"^data.train: record \d+ from byte {offset} of .*part-2.jsonl has no field 'text' \(fields: body\)$"
    assert all(isinstance(o[2], str) for o in outcomes), outcomes
    for _, _, problem in outcomes:
        assert __import__("re").match(message, problem), problem


def test_a_stale_claim_is_taken_over_and_a_live_one_waited_for(tmp_path, tokenizer, monkeypatch):
    import trainer.data.shards as shards

    folder = corpus(tmp_path / "data", sizes=(10,))
    cache = tmp_path / "cache"
    build_data(cfg_of(folder), tokenizer, split="train", packing=True, cache_dir=tmp_path / "probe")
    (unit,) = [p.name for p in (tmp_path / "probe" / "shards").iterdir()]
    (cache / "shards").mkdir(parents=True)
    claim = cache / "shards" / f"{unit}.claim"
    claim.write_text("a builder that died\n")
    os.utime(claim, (0, 0))
    monkeypatch.setattr(shards, "CLAIM_STALE_S", 60.0)
    data = build_data(cfg_of(folder), tokenizer, split="train", packing=True, cache_dir=cache)
    assert len(data) > 0 and not claim.exists()
    with subprocess.Popen(["sleep", "60"]) as live:  # a live process's fresh claim is not taken over
        claim.write_text(f"{socket.gethostname()} {live.pid} {shards._started(live.pid)} other\n")
        assert not shards.claim(claim)
        live.kill()
    live.wait()  # now a restarted worker's predecessor
    held = shards.claim(claim)
    assert held and claim.read_text() == held.token
    assert held.token.split()[:3] == [socket.gethostname(), str(os.getpid()), shards._started(os.getpid())]


def test_progress_is_logged_and_served_while_preparing(tmp_path, tokenizer, caplog):
    folder = corpus(tmp_path / "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = PrepMetrics(enabled=True, port=port, job="j", namespace=None, node_rank=0)
    metrics.start()
    caplog.set_level("INFO")
    data = build_data(cfg_of(folder), tokenizer, split="train", packing=True, cache_dir=tmp_path / "c", metrics=metrics)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    metrics.close()
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
              if line.startswith("llmlaunch_data_prepare") and 'split="train"' in line}
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert values["llmlaunch_data_prepare_bytes"] == values["llmlaunch_data_prepare_bytes_total"] == size
    assert values["llmlaunch_data_prepare_records"] == 180
    assert values["llmlaunch_data_prepare_tokens"] == data.num_tokens
    assert values["llmlaunch_data_prepare_eta_seconds"] == 0 and values["llmlaunch_data_prepare_bytes_per_second"] > 0
    lines = [r.getMessage() for r in caplog.records if "preparing train data" in r.getMessage()]
    assert lines and "MB/s" in lines[-1] and "ETA 0 s" in lines[-1] and "180 records" in lines[-1]


def test_memory_of_preparation_does_not_follow_the_corpus(tmp_path, tokenizer):
    """Python-heap peak (tracemalloc sees numpy's buffers too) preparing 400 and 3200 documents in batches
    of 50: a process that held the corpus (records or tokens) would peak ~8x higher at 8x the data; what
    grows is the layout's few numbers per document. Peak RSS at 40 and 400 MB: bench/data_prep.py."""
    import tracemalloc

    peaks = []
    for n in (400, 3200):
        folder = corpus(tmp_path / f"data-{n}", sizes=(n,), start=3)
        cfg = make_cfg(folder, seq_len=64, chunk_mb=0.05, chunk_records=50)
        tracemalloc.start()
        build_data(cfg, tokenizer, split="train", packing=True, cache_dir=tmp_path / f"c-{n}", rank=0, world_size=1)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2.5 * peaks[0], peaks


def test_rows_keep_a_bounded_number_of_shards_mapped(tmp_path, tokenizer, monkeypatch):
    from trainer.data.shard_rows import ShardRows

    data = build_data(cfg_of(corpus(tmp_path / "data")), tokenizer, split="train", packing=True,
                      cache_dir=tmp_path / "cache")
    rows = data.rows
    expected = rows.gather(np.arange(len(rows)), 64)
    monkeypatch.setattr(ShardRows, "MAX_OPEN", 3)
    bounded = ShardRows(rows.directory)
    assert len(bounded.units) > 3 * 3  # enough shards that rows must evict and re-open maps
    gathered = []
    for row in np.random.default_rng(0).permutation(len(rows)):
        gathered.append((row, bounded.gather(np.array([row]), 64)))
        assert len(bounded._maps) <= 3
    for column, want in enumerate(expected):
        got = np.concatenate([parts[column] for _, parts in sorted(gathered, key=lambda g: g[0])])
        assert np.array_equal(got, want)


class _Progress:
    def done_units(self, done):
        pass

    def tick(self):
        pass


def test_a_read_failure_is_retried_and_a_data_error_recorded_whole(tmp_path):
    from trainer.data.readers import DataReadError, Unit, read_unit
    from trainer.data.shards import prepare_units

    root = tmp_path / "shards"
    gone = tmp_path / "gone.jsonl"  # removed (or its volume unreachable) after the units were planned

    def unreadable(uid, unit, heartbeat):
        list(read_unit("json", gone, unit, 10, "data.train", "text"))

    units = [("u0", Unit(0, 0, 10, 10))]
    with pytest.raises(DataReadError, match="gone.jsonl"):
        prepare_units(units, root, unreadable, rank=0, world_size=1, progress=_Progress(), poll_s=0)
    assert sorted(p.name for p in root.iterdir()) == []  # no .error: a restart tries the unit again

    gone.write_bytes(b'{"text": "\xff"}\n{broken\n')

    def bad_content(uid, unit, heartbeat):
        list(read_unit("json", gone, unit, 10, "data.train", "text"))

    with pytest.raises(DataError, match="invalid JSON") as raised:
        prepare_units(units, root, bad_content, rank=0, world_size=1, progress=_Progress(), poll_s=0)
    assert sorted(p.name for p in root.iterdir()) == ["u0.error"]  # no temporary file left behind
    assert (root / "u0.error").read_text() == raised.value.problems[0]
    with pytest.raises(DataError) as again:  # every later process raises the recorded error, building nothing
        prepare_units(units, root, unreadable, rank=0, world_size=1, progress=_Progress(), poll_s=0)
    assert again.value.problems == raised.value.problems
