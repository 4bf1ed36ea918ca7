"""The URL shapes a job file may use for data and the checkpoint mirror (checked by TrainConfig, so the CLI
refuses a bad one in one line before anything runs). No network and no heavy imports here."""

from __future__ import annotations

from trainer.storage.hub_cache import HF_SCHEME, parse_hub_data
from trainer.storage.object_store import S3_SCHEME, split_url

DATA_SHAPES = "a local path, s3://bucket/key-or-prefix or hf://datasets/org/name[@revision][/path-or-glob]"


def check_data_url(value: str) -> None:
    if value.startswith(S3_SCHEME):
        split_url(value)
    elif value.startswith(HF_SCHEME):
        parse_hub_data(value)
    else:
        raise ValueError(f"{value}: unsupported URL scheme {value.split('://', 1)[0]}://; use {DATA_SHAPES}")


def check_mirror_url(value: str) -> None:
    if not value.startswith(S3_SCHEME):
        raise ValueError(f"{value}: a checkpoint mirror is s3://bucket[/prefix]")
    split_url(value)
