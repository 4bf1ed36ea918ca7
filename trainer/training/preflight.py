"""Checks that need the filesystem or the topology, run before any process group starts.

Torch-free: `llmlaunch train` runs them in the CLI, and every pod runs them again in
`python -m trainer` before distributed init, so a bad config fails the same way everywhere.
"""

from __future__ import annotations

from pathlib import Path

from trainer.config.ds_config import resolve_precision
from trainer.config.train_config import ConfigError, TrainConfig
from trainer.data.remote_sources import check_remote, is_remote
from trainer.storage import hub_cache


def data_files(path: str, key: str) -> list[Path]:
    """The files behind a data path (a file, or a folder of one supported kind)."""
    from trainer.data.sources import data_files as find

    return find(path, key)[1]


def _has_records(file: Path, key: str) -> bool:
    """Whether a file holds a record, from its first non-blank bytes (a one-line .json array is not read whole)."""
    from trainer.data.readers import leading_bytes, reading

    with reading(file, key):
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(file).metadata.num_rows > 0
        start = leading_bytes(file, 2)
        if file.suffix == ".json" and start[:1] == b"[":
            return start[1:] not in (b"", b"]")
        return start != b""


def check_data(cfg: TrainConfig) -> None:
    problems = []
    for key, path in (("train.data.train", cfg.data.train), ("train.data.eval", cfg.data.eval)):
        if path is None:
            continue
        if is_remote(path):  # exists (s3) or is cached (hub, offline); read once the trainer has fetched it
            problems += check_remote(path, key)
            continue
        try:
            files = data_files(path, key)
        except ConfigError as e:
            problems += e.problems
            continue
        try:
            if not any(_has_records(f, key) for f in files):
                problems.append(f"{key}: dataset {path} is empty")
        except ConfigError as e:  # a file that cannot be read: one line naming it
            problems += e.problems
    if problems:
        raise ConfigError(problems)


def check_model(cfg: TrainConfig) -> None:
    for key, name in (("train.model.pretrained", cfg.model.pretrained), ("train.model.tokenizer", cfg.model.tokenizer)):
        if (name and hub_cache.offline() and hub_cache.is_hub_model_id(name)
                and not hub_cache.cached_snapshot("model", name)):
            raise ConfigError([f"{key}: " + hub_cache.not_cached_message(name, "model", name, None)])
    for key, path in (("train.model.tokenizer", cfg.model.tokenizer),):
        if path and (path.startswith(("/", ".")) or Path(path).exists()) and not Path(path).exists():
            raise ConfigError([f"{key}: {path} does not exist"])
    pretrained = cfg.model.pretrained
    if pretrained and Path(pretrained).is_absolute() and not (Path(pretrained) / "config.json").is_file():
        raise ConfigError([f"train.model.pretrained: {pretrained} is not a model directory (no config.json)"])


def check_mirror(cfg: TrainConfig) -> None:
    if cfg.run.checkpoint_mirror:
        from trainer.storage.object_store import check_bucket

        if problems := check_bucket(cfg.run.checkpoint_mirror, "train.run.checkpoint_mirror"):
            raise ConfigError(problems)


def run_preflight(cfg: TrainConfig, world_size: int, has_gpu: bool, gpu_has_bf16: bool = True) -> str:
    """All checks; returns the resolved precision. Raises ConfigError with every problem found."""
    problems = []
    for check in (check_data, check_model, check_mirror):
        try:
            check(cfg)
        except ConfigError as e:
            problems += e.problems
    try:
        cfg.check_world_size(world_size)
    except ValueError as e:
        problems.append(f"train.{e}")
    if cfg.model.attn_implementation == "flex_attention" and not has_gpu:
        problems.append("train.model.attn_implementation: flex_attention trains only on a GPU (torch has no "
                        "flex_attention backward on the CPU); use sdpa")
    precision = None
    try:
        precision = resolve_precision(cfg.precision, has_gpu, gpu_has_bf16)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    return precision
