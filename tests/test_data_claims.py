"""Claims on work units and on the layout: takeover races, reused PIDs, lost claims and heartbeats."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import trainer.data.shards as shards
from trainer.data.prep import build_once
from trainer.data.readers import Unit


def stale_claim(path: Path, host: str = "gone-host") -> str:
    """A claim of another node's builder, not refreshed for ages."""
    token = f"{host} 4242 1234 dead\n"
    path.write_text(token)
    os.utime(path, (0, 0))
    return token


def _first_taker(path: str, judged, taken, results) -> None:
    judged.wait(30)
    held = shards.claim(Path(path))
    results.put(("first", held and held.token))
    taken.set()


def _late_taker(path: str, judged, taken, results) -> None:
    real = shards._abandoned

    def judge_then_wait(*args):  # judges the stale claim, then acts only after the other took it over
        verdict = real(*args)
        judged.set()
        taken.wait(30)
        return verdict

    shards._abandoned = judge_then_wait
    held = shards.claim(Path(path))
    results.put(("late", held and held.token))


def test_of_two_processes_taking_over_one_stale_claim_exactly_one_holds_it(tmp_path):
    path = tmp_path / "u.claim"
    stale_claim(path)
    ctx = multiprocessing.get_context("fork")
    judged, taken, results = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=f, args=(str(path), judged, taken, results)) for f in (_late_taker, _first_taker)]
    for proc in procs:
        proc.start()
    outcome = dict(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    assert outcome["first"] and not outcome["late"], outcome  # the late one saw the claim was no longer stale
    assert path.read_text() == outcome["first"]
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary claim left behind


def test_a_claim_of_a_reused_pid_is_taken_over_at_once(tmp_path):
    path, host = tmp_path / "u.claim", socket.gethostname()
    own = f"{host} {os.getpid()} {shards._started(os.getpid())} predecessor\n"
    path.write_text(own)  # fresh, and its PID is ours: a recreated pod's predecessor in an old namespace
    held = shards.claim(path)
    assert held and path.read_text() == held.token != own
    with subprocess.Popen(["sleep", "60"]) as other:
        path.write_text(f"{host} {other.pid} {shards._started(other.pid)} live\n")
        assert not shards.claim(path)  # that very process, alive: waited for
        path.write_text(f"{host} {other.pid} 1 reused\n")  # the PID alive again, started at another time
        assert shards.claim(path)
        other.kill()


def test_a_builder_whose_claim_was_taken_over_stops_and_leaves_the_new_claim(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    held = shards.claim(root / "u0.claim")
    builds = []

    def taken_over(uid, unit, heartbeat):
        stale_claim(held.path, "other-host")
        os.utime(held.path)  # fresh: its new holder is alive
        heartbeat()
        builds.append(uid)  # not reached: the heartbeat stopped the build

    shards._build_claimed("u0", Unit(0, 0, 1, 1), root, held, taken_over)  # no error
    assert not builds and held.path.read_text().startswith("other-host ")  # theirs, not unlinked
    held.path.unlink()
    assert not held.refresh() and not held.held()  # a heartbeat on a removed claim does not raise
    held.release()


def test_a_unit_taken_over_mid_build_is_built_by_its_new_holder(tmp_path):
    root, calls = tmp_path / "shards", []

    def build(uid, unit, heartbeat):
        calls.append(uid)
        if len(calls) == 1:  # another token of our own PID: dead to the next look, which builds again
            (root / f"{uid}.claim").write_text(f"{socket.gethostname()} {os.getpid()} 1 other\n")
        heartbeat()
        (root / uid).mkdir()
        (root / uid / "shard.json").write_text("{}")

    class Progress:
        def done_units(self, done):
            pass

        def tick(self):
            pass

    shards.prepare_units([("u0", Unit(0, 0, 1, 1))], root, build, rank=0, world_size=1, progress=Progress(), poll_s=0)
    assert calls == ["u0", "u0"] and sorted(p.name for p in root.iterdir()) == ["u0"]


def test_a_second_builder_renaming_onto_a_done_shard_is_no_error(tmp_path):
    source = tmp_path / "a.jsonl"
    source.write_text('{"text": "a b"}\n{"text": "c"}\n')
    unit = Unit(0, 0, source.stat().st_size, source.stat().st_size)

    def tokenize(values, first):
        return [(np.arange(len(v)), np.ones(len(v))) for v in values]

    target = tmp_path / "u0"
    for _ in range(2):  # two builders of one unit (one took a stale claim over): identical results
        shards.build_shard("json", source, unit, "text", "data.train", 10, tokenize, False, target, lambda r, t: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "u0"]
    assert np.fromfile(target / "tokens.bin", np.int32).tolist() == [0, 1, 2, 0]


def test_the_layout_claim_is_kept_fresh_while_a_slow_layout_builds(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "CLAIM_STALE_S", 0.6)
    entry, claimed = tmp_path / "train", tmp_path / "train.claim"
    ages = []

    def slow_layout():
        for _ in range(15):  # 1.5 s: 2.5 times the stale age
            time.sleep(0.1)
            ages.append(time.time() - claimed.stat().st_mtime)
        entry.mkdir()
        (entry / "meta.json").write_text("{}")

    build_once(entry, claimed, tmp_path / "train.error", slow_layout, poll_s=0)
    assert max(ages) < 0.6, ages  # never stale: no other node takes the layout over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_a_layout_error_is_recorded_and_raised_by_the_next_process(tmp_path):
    from trainer.data.sources import DataError

    entry, error = tmp_path / "train", tmp_path / "train.error"

    def bad():
        raise DataError("data.train: no documents")

    with pytest.raises(DataError):
        build_once(entry, tmp_path / "train.claim", error, bad, poll_s=0)
    with pytest.raises(DataError, match="no documents"):
        build_once(entry, tmp_path / "train.claim", error, lambda: None, poll_s=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.error"]
