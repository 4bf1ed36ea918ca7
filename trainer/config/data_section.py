"""The job's `train.data` section: where the tokens come from and how they are shaped (docs/data.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from trainer.config.section import PathText, Section


class DataConfig(Section):
    """Where the tokens come from and how they are shaped into sequences."""

    train: PathText = Field(..., description="Training data: a .jsonl/.json, .txt or .parquet file (or a directory of "
                            "them), s3://bucket/key-or-prefix, or hf://datasets/org/name[@revision][/path-or-glob] "
                            "(the train split's files when no path is given; docs/data.md).")
    eval: PathText | None = Field(None, description="Held-out data in the same format (a hub data set without a path: "
                                  "its validation split, else test); enables eval.")
    eval_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="When `eval` is empty: hold out this fraction of `train` for eval."
    )
    format: Literal["text", "chat"] = Field(
        "text", description="text: train on `text_field`; chat: render `messages` with the chat template."
    )
    text_field: str = Field("text", description="Field holding the document text (jsonl/parquet).")
    messages_field: str = Field("messages", description="Field holding chat turns (format: chat).")
    seq_len: int = Field(512, ge=8, description="Tokens per training sequence.")
    packing: bool = Field(
        True, description="Pack several documents per sequence (attention kept within each document)."
    )
    group_by_length: bool = Field(
        False, description="Packing off: put sequences of similar length in the same training batch (sorted "
        "buckets, deterministic per seed and epoch): less padding, but batches are less random (see docs/data.md). "
        "Every padded batch is cut to its longest sequence either way.",
    )
    cache_dir: PathText | None = Field(
        None, description="Where tokenized data is cached; defaults to <output_dir>/cache."
    )
    num_workers: int = Field(1, ge=0, description="DataLoader worker processes per rank.")
    chunk_mb: float = Field(
        16.0, gt=0, description="Size of a data preparation work unit: data files are cut into units of this "
        "many MB, which all processes of all nodes tokenize in parallel (docs/data.md).",
    )
    chunk_records: int = Field(
        1000, ge=1, description="Records read and tokenized at once while preparing data; with the record "
        "size it bounds a process's memory, whatever the size of the data.",
    )

    @field_validator("train", "eval")
    @classmethod
    def _known_source(cls, value: str | None) -> str | None:
        if value is not None and "://" in value:
            from trainer.config.remote_urls import check_data_url

            check_data_url(value)
        return value
