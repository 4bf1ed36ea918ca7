"""What llmlaunch reads back from a checkpoint volume: its own files never through pickle (loop position
and RNG states are JSON; an older loop-rank*.pt only through torch's weights_only loader), and a COMPLETE
manifest that names files outside its checkpoint makes the checkpoint damaged, without opening them.
(The resume that goes through these with real DeepSpeed: test_train_distributed, test_resilience.)"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist

from launcher.local.ports import free_port
from trainer.checkpoints import rank_state
from trainer.checkpoints.manifest import MARKER, checkpoint_files, describe, problems, shape_problems


class RunsCode:
    """Unpickling this calls os.mkdir(path): what a pickle planted on the volume could do to a trainer."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def planted_pickle(marker) -> bytes:
    f = io.BytesIO()
    torch.save({"loop": {"step": 4}, "rng": RunsCode(str(marker))}, f)
    return f.getvalue()


def draws() -> list:
    return [random.random(), random.gauss(0, 1), *np.random.rand(3).tolist(), np.random.standard_normal(),
            *torch.rand(3).tolist()]


def test_loop_file_is_json_and_restores_every_random_stream_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # cached Gaussians are part of the state
    loop = {"step": 4, "epoch": 1, "position": 7, "tokens": 12345, "best_eval": 2.0000000000000004,
            "best_step": 4, "bad_evals": 0, "stopped_early": False}
    path = rank_state.loop_file(tmp_path, 0)
    path.write_bytes(rank_state.encode(loop))
    expected = draws()
    json.loads(path.read_text())  # plain JSON, nothing else
    draws()
    saved = rank_state.read(path)
    rank_state.set_rng_state(saved["rng"])
    assert draws() == expected
    assert saved["loop"] == loop


def test_a_pickle_planted_as_a_loop_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    for name in ("loop-rank0.json", "loop-rank1.pt"):  # the current name, and the name older versions wrote
        (tmp_path / name).write_bytes(planted_pickle(marker))
    for rank in (0, 1):
        with pytest.raises(rank_state.BadLoopFile, match=f"loop-rank{rank}"):
            rank_state.read(rank_state.loop_file(tmp_path, rank))
    assert not marker.exists()


def test_a_loop_file_of_an_older_llmlaunch_still_resumes(tmp_path):
    """loop-rank{r}.pt as torch.save wrote it (numpy's state as an array) loads with weights_only."""
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save({"loop": {"step": 8, "epoch": 0, "position": 8}, "rng": state}, tmp_path / "loop-rank0.pt")
    expected = draws()
    saved = rank_state.read(rank_state.loop_file(tmp_path, 0))
    rank_state.set_rng_state(saved["rng"])
    assert draws() == expected and saved["loop"]["step"] == 8


@pytest.mark.parametrize("change", [
    {"loop": {"step": "4"}}, {"loop": {"step": -1}}, {"loop": {"stopped_early": 1}}, {"loop": {"bogus": 1}},
    {"rng": {"numpy": ["MT19937", [1, 2], 0, 0, 0.0]}}, {"rng": {"torch": "not base64!"}}, {"format": 2},
])
def test_a_loop_file_of_the_wrong_shape_is_named(tmp_path, change):
    path = rank_state.loop_file(tmp_path, 0)
    saved = json.loads(rank_state.encode({"step": 4}))
    for key, value in change.items():
        saved[key] = {**saved[key], **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(saved))
    with pytest.raises(rank_state.BadLoopFile, match="loop-rank0.json: not a loop state written by llmlaunch"):
        rank_state.read(path)


# ---- manifests that point out of their checkpoint ---------------------------------------------------


@pytest.fixture
def volume(tmp_path):
    """A checkpoint directory next to a file it must never vouch for (same size and hash in the manifest)."""
    ckpt = tmp_path / "checkpoints" / "step-000004"
    ckpt.mkdir(parents=True)
    (ckpt / "model.pt").write_bytes(b"weights")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not a checkpoint file")
    (ckpt / "inner").symlink_to(tmp_path)  # a link that leads out
    return ckpt, secret


def outside_names(ckpt, secret) -> list[str]:
    return ["../../secret", str(secret), "inner/secret", "./model.pt", "a//b", "model.pt\n"]


def test_manifest_entries_outside_the_checkpoint_are_problems_and_never_opened(volume):
    ckpt, secret = volume
    entry = [secret.stat().st_size, hashlib.sha256(secret.read_bytes()).hexdigest()]
    files = {**describe(ckpt, ["model.pt"]), **{name: entry for name in outside_names(ckpt, secret)}}
    found = problems(ckpt, files, sorted(files))
    assert len(found) == len(outside_names(ckpt, secret))
    assert all("is not a file inside the checkpoint" in p for p in found)
    assert checkpoint_files(ckpt) == ["model.pt"]  # the link is not listed either: rglob does not follow it


def test_marker_fields_of_the_wrong_type_are_problems():
    assert shape_problems({"step": 4, "world_size": 2, "micro_batch_size": 4, "files": {}}) == []
    assert shape_problems({"step": 4}) == []  # older markers: world size and micro batch assumed
    assert shape_problems({"step": "4", "world_size": 0, "files": {"a": [1, "x"]}}) == [
        f"{MARKER}: step is '4'", f"{MARKER}: world_size is 0", f"{MARKER}: the entry of 'a' is not [size, sha256]"]


def test_resume_skips_a_checkpoint_whose_manifest_points_outside(volume, capsys):
    """resume.find in a real (1-process gloo) group: the crafted checkpoint is marked DAMAGED, not loaded."""
    from trainer.checkpoints import resume

    ckpt, secret = volume
    entry = [secret.stat().st_size, hashlib.sha256(secret.read_bytes()).hexdigest()]
    files = {**describe(ckpt, ["model.pt"]), "../../secret": entry}
    (ckpt / MARKER).write_text(json.dumps({"step": 4, "world_size": 1, "micro_batch_size": 4, "files": files}))
    port = free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        assert resume.find(ckpt.parent, {}) is None
    finally:
        dist.destroy_process_group()
    assert (ckpt / "DAMAGED").is_file() and not (ckpt / MARKER).exists()
    assert "'../../secret' is not a file inside the checkpoint" in capsys.readouterr().err
