"""Find the files of a data set: local JSONL/JSON, text or parquet files, or a folder of them.

data_files is the one place where a `data.train` / `data.eval` value becomes a reader kind and a list
of local files; trainer/data/readers.py streams their records. A .txt file holds one document per
paragraph: documents are separated by a blank line, so a document may span several lines.
"""

from __future__ import annotations

from pathlib import Path

from trainer.errors import (
    ConfigError,  # not trainer.config.train_config: object_store.py takes BUILDERS, and stays light
)

# file suffix -> reader kind
BUILDERS = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet"}


class DataError(ConfigError):
    """Bad data input; the message names the config key and the value."""

    def __init__(self, message: str):
        super().__init__([message])


def data_files(path: str, key: str) -> tuple[str, list[Path]]:
    """The builder and the sorted files behind `path` (a file, or a folder searched recursively)."""
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in BUILDERS)
        if not files:
            raise DataError(f"{key}: no {'/'.join(BUILDERS)} files in folder {path}")
    else:
        raise DataError(f"{key}: no such file or folder {path}")
    builders = {BUILDERS.get(f.suffix) for f in files}
    if None in builders:
        raise DataError(f"{key}: unsupported file type {files[0].suffix or '(none)'} in {path}; "
                        f"use {', '.join(BUILDERS)}")
    if len(builders) > 1:
        raise DataError(f"{key}: folder {path} mixes file types ({', '.join(sorted(builders))}); use one kind")
    return builders.pop(), files


def manifest(files: list[Path]) -> list[list]:
    """[absolute path, size, mtime_ns] per file: the cache's cheap fingerprint of the data (stat only, no
    byte read), so a restart finds its shards and a changed, added or removed file is noticed."""
    return [[str(f.resolve()), (st := f.stat()).st_size, st.st_mtime_ns] for f in files]
