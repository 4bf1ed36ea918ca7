"""Real training (DeepSpeed, torchrun, gloo, 2 processes) with the performance options on.

model.compile: torch.compile (inductor) on a 2-core CPU takes ~2-3 minutes to compile the first step,
so the compiled run is short and has no eval (switching to eval mode compiles again).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trainjobs import losses, metrics, tiny_job, train

pytestmark = pytest.mark.distributed


def job_without_eval(tmp: Path, **sections) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tiny_job(tmp, run={"max_steps": 6, "eval_every": 0, "save_every": 0, "log_every": 1}, **sections)
    spec = yaml.safe_load(path.read_text())
    spec["train"]["data"].pop("eval")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_compiled_model_trains_like_the_eager_one(tmp_path):
    inductor = tmp_path / "inductor"
    train(job_without_eval(tmp_path / "compiled", model={"compile": True}),
          env={"TORCHINDUCTOR_CACHE_DIR": str(inductor)}, timeout=900)
    train(job_without_eval(tmp_path / "eager"))
    compiled, eager = losses(tmp_path / "compiled" / "out"), losses(tmp_path / "eager" / "out")
    assert list(compiled) == list(eager) == [1, 2, 3, 4, 5, 6]
    for step, loss in eager.items():  # inductor fuses and reorders float sums: close, not equal
        assert compiled[step] == pytest.approx(loss, abs=2e-3), step
    assert compiled[6] < compiled[1]
    # inductor really generated code for this run (the kernels land in its cache directory)
    assert list(inductor.rglob("*.py")), "no inductor kernels were written: the model was not compiled"
    train_yaml = yaml.safe_load((tmp_path / "compiled" / "out" / "train.yaml").read_text())
    assert train_yaml["model"]["compile"] is True
    assert (tmp_path / "compiled" / "out" / "final" / "config.json").is_file()


def test_unpacked_training_runs_the_length_grouped_plan(tmp_path):
    """Packing off: every rank trains the grouped plan's batches, each cut to its longest row; the
    tokens the run reports are exactly the loss targets of those batches."""
    train(job_without_eval(tmp_path, data={"packing": False, "group_by_length": True}))
    out = tmp_path / "out"
    from trainer.config.train_config import TrainConfig
    from trainer.data.splits import build_data, load_tokenizer

    cfg = TrainConfig.from_yaml_file(out / "train.yaml")
    assert cfg.data.group_by_length and not cfg.data.packing
    data = build_data(cfg, load_tokenizer(cfg.model), split="train", packing=False, cache_dir=out / "cache")
    assert data.group_by_length
    expected, widths, total = [], set(), 0
    streams = [data.iter_batches(0, rank=r, world_size=2, micro_batch_size=4, seed=cfg.run.seed) for r in (0, 1)]
    for _ in range(6):
        for stream in streams:
            batch = next(stream)
            widths.add(batch["input_ids"].shape[1])
            total += int((batch["labels"][:, 1:] != -100).sum())
        expected.append(total)
    records = metrics(out)
    assert [r["tokens"] for r in records] == expected
    assert len(widths) > 1 and max(widths) <= 64  # batches are as wide as their longest row, not seq_len
    assert records[-1]["loss"] < records[0]["loss"]
    assert json.loads((out / "ds_config.json").read_text())["zero_optimization"]["stage"] == 2
