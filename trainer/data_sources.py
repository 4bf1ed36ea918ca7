"""Find and read the raw records of a data set: local JSONL/JSON, text or parquet files, or a folder of them.

Reading goes through HF `datasets` (its packaged json / text / parquet builders; no hub access).
A .txt file holds one document per paragraph: documents are separated by a blank line, so a document
may span several lines. Every record comes back as a plain dict.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# file suffix -> datasets builder
BUILDERS = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet"}


from trainer.config import ConfigError


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


def files_digest(files: list[Path]) -> str:
    """Hash of the files' names and contents: the cache key changes when any byte of the data does."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_records(builder: str, files: list[Path], key: str, hf_cache: Path) -> list[dict]:
    """All records of the files, in file order, as dicts."""
    import datasets

    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar per rank per file is noise in a training log
    try:
        ds = datasets.load_dataset(
            builder, data_files=[str(f) for f in files], split="train", cache_dir=str(hf_cache), **kwargs
        )
    except Exception as e:  # datasets raises many types for malformed files; keep the cause, name the key
        raise DataError(f"{key}: cannot read {files[0] if len(files) == 1 else files[0].parent}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    records = ds.to_list()
    if builder == "text":  # blank lines inside a paragraph break leave edges; empty paragraphs go
        records = [{"text": r["text"].strip()} for r in records if r["text"].strip()]
    return records


def field_values(records: list[dict], field: str, key: str, source: str) -> list:
    """The values of one field; a record without it is an error naming the field and the record number."""
    values = []
    for i, record in enumerate(records):
        if field not in record or record[field] is None:
            raise DataError(f"{key}: record {i} of {source} has no field {field!r} "
                            f"(fields: {', '.join(sorted(k for k, v in record.items() if v is not None)) or 'none'})")
        values.append(record[field])
    return values


def split_eval(values: list, fraction: float) -> tuple[list, list]:
    """Deterministic (train, eval) split of `values` holding out `fraction` of them.

    Records are ranked by a hash of their content, so the split depends on the data only (not on the
    seed, the file order or the machine) and identical records always fall on the same side.
    """
    if not values:
        return [], []
    ranked = sorted(range(len(values)), key=lambda i: (_content_hash(values[i]), i))
    n_eval = min(len(values) - 1, max(1, round(fraction * len(values))))
    held = set(ranked[:n_eval])
    train = [v for i, v in enumerate(values) if i not in held]
    evaluation = [v for i, v in enumerate(values) if i in held]
    return train, evaluation


def _content_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
