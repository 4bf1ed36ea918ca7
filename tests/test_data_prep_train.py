"""Training on data that 2 local nodes (torchrun agents, 1 process each) prepared together from a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from test_data_prep import corpus
from trainjobs import losses, tiny_job, train

pytestmark = pytest.mark.distributed
NODES = ("--nodes", "2")


def job(tmp: Path, folder: Path, cache: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    data = {"train": str(folder), "eval": None, "eval_fraction": 0.05, "chunk_mb": 0.01, "cache_dir": str(cache)}
    return tiny_job(tmp, data=data)


def test_two_nodes_prepare_once_and_train_the_same_losses_again_and_across_a_resume(tmp_path):
    from trainer.data.splits import build_data, load_tokenizer
    from trainer.data.token_data import TokenData

    folder = corpus(tmp_path / "data", sizes=(300, 200, 250))
    first = train(job(tmp_path / "a", folder, tmp_path / "cache-a"), *NODES, nproc=1)
    assert "preparing train data" in first.stderr
    again = train(job(tmp_path / "b", folder, tmp_path / "cache-b"), *NODES, nproc=1)  # prepared anew
    reference = losses(tmp_path / "a" / "out")
    assert sorted(reference) == list(range(1, 9)) and losses(tmp_path / "b" / "out") == reference, again.stderr[-3000:]

    # The rows two nodes laid out are the rows one process lays out.
    (entry,) = [p for p in (tmp_path / "cache-a").glob("train-*") if (p / "meta.json").is_file()]
    import yaml

    from trainer.config.train_config import TrainConfig

    cfg = TrainConfig.model_validate(yaml.safe_load(job(tmp_path / "c", folder, tmp_path / "one").read_text())["train"])
    alone = build_data(cfg, load_tokenizer(cfg.model), split="train", packing=True, cache_dir=tmp_path / "one",
                       rank=0, world_size=1)
    together = TokenData.load(entry, shuffle=True)
    assert len(alone) == len(together)
    every_row = np.arange(len(alone))
    for name, a, b in zip(("tokens", "targets", "docs"), alone.rows.gather(every_row, alone.seq_len),
                          together.rows.gather(every_row, together.seq_len), strict=True):
        assert np.array_equal(a, b), name
    assert [r.tolist() for r in alone.batch_rows(0, rank=0, world_size=2, micro_batch_size=4, seed=1)] == \
        [r.tolist() for r in together.batch_rows(0, rank=0, world_size=2, micro_batch_size=4, seed=1)]

    # Resume from step 4 of the first run: its cache is found (no preparation) and steps 5-8 repeat.
    out = tmp_path / "c" / "out"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "out" / "checkpoints" / "step-000004", out / "checkpoints" / "step-000004")
    resumed = train(job(tmp_path / "c", folder, tmp_path / "cache-a"), *NODES, nproc=1)
    assert "train data from cache" in resumed.stderr and "preparing" not in resumed.stderr
    after = losses(out)
    assert sorted(after) == [5, 6, 7, 8]
    for step, loss in after.items():
        assert loss == pytest.approx(reference[step], abs=1e-6), step
