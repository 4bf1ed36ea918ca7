"""Remote data named in data.train / data.eval, turned into local files that trainer.data.sources reads.

    builder, files = data_files(local_source(data.train, "data.train", cache_dir, split="train"), "data.train")

- a local path: returned as it is;
- s3://bucket/key-or-prefix: copied into <cache_dir>/remote/s3/... (only what changed: object_store.py);
- hf://datasets/org/name[@revision][/path-or-glob]: the repository's files in the normal Hugging Face
  cache (huggingface_hub.snapshot_download, so HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE / HF_TOKEN apply).
  Without a path, the split's files are found by their names as `datasets` finds them (data/train-*.parquet,
  train.jsonl, ...): data.train takes the train split, data.eval the validation split (else test).
  The chosen files are linked into <cache_dir>/remote/hf/<repo>/<commit>/<selection>/, a folder that
  holds exactly them.

`check_remote` is the torch- and huggingface_hub-free check that preflight runs in the CLI and in every pod.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
from pathlib import Path

from trainer.config.train_config import ConfigError
from trainer.data.sources import BUILDERS
from trainer.errors import first_line
from trainer.storage import hub_cache, object_store

DATA_SUFFIXES = tuple(BUILDERS)  # what trainer.data.sources reads; other objects are not copied
EVAL_SPLITS = ("validation", "test")  # data.eval without a path: the first of these the repository has
log = logging.getLogger(__name__)


def is_remote(path: str) -> bool:
    return path.startswith((object_store.S3_SCHEME, hub_cache.HF_SCHEME))


def local_source(path: str, key: str, cache_dir: Path, split: str = "train") -> str:
    """A local file or folder holding the data `path` names (downloaded into the caches when remote)."""
    try:
        if path.startswith(object_store.S3_SCHEME):
            return str(object_store.materialize(path, key, Path(cache_dir) / "remote", DATA_SUFFIXES))
        if path.startswith(hub_cache.HF_SCHEME):
            return str(hub_files(path, key, Path(cache_dir) / "remote", split))
    except ValueError as e:
        raise ConfigError([str(e)]) from e
    return path


def check_remote(path: str, key: str) -> list[str]:
    """Problems found without downloading: the bucket and objects exist; offline, the hub repository is cached."""
    if path.startswith(object_store.S3_SCHEME):
        return object_store.check(path, key, DATA_SUFFIXES)
    problem = _not_cached(path, hub_cache.parse_hub_data(path), key)
    return [problem] if problem else []


def _not_cached(url: str, hub: hub_cache.HubData, key: str) -> str | None:
    """The problem with hub data `url` (parsed: `hub`) when offline and not in the cache; None otherwise."""
    if hub_cache.offline() and hub_cache.cached_snapshot("dataset", hub.repo_id, hub.revision) is None:
        return f"{key}: " + hub_cache.not_cached_message(url, "dataset", hub.repo_id, hub.revision)
    return None


def hub_files(url: str, key: str, root: Path, split: str) -> Path:
    """The folder of links to the data files `url` selects in its cached snapshot (downloaded when online)."""
    hub = hub_cache.parse_hub_data(url)
    if problem := _not_cached(url, hub, key):
        raise ValueError(problem)
    snapshot = _snapshot(hub, key)
    names = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(snapshot).parts))
    chosen, selection = _select(names, hub, key, split, url)
    folder = root / "hf" / f"datasets--{hub.repo_id.replace('/', '--')}" / snapshot.name / selection
    if not folder.is_dir():  # built once per commit and selection, then renamed into place
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for name in chosen:
            link = tmp / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((snapshot / name).resolve())
        try:
            os.replace(tmp, folder)
        except OSError:  # another process placed the same folder first
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: %s at %s -> %d files (%s)", key, url, snapshot.name[:12], len(chosen), folder)
    return folder


def _snapshot(hub: hub_cache.HubData, key: str) -> Path:
    from huggingface_hub import snapshot_download

    # Without a pattern: every data file (the split is chosen afterwards, from the names) and nothing else.
    patterns = [hub.pattern, f"{hub.pattern}/**"] if hub.pattern else [f"*{suffix}" for suffix in DATA_SUFFIXES]
    try:
        # The cache and the offline switch as read now (huggingface_hub reads them once, at import).
        return Path(snapshot_download(hub.repo_id, repo_type="dataset", revision=hub.revision,
                                      cache_dir=hub_cache.cache_dir(), allow_patterns=patterns,
                                      local_files_only=hub_cache.offline()))
    except Exception as e:  # huggingface_hub raises one class per HTTP outcome; its first line says which
        raise ValueError(f"{key}: cannot fetch {hub.url} ({type(e).__name__}: {first_line(e)})") from e


def _select(names: list[str], hub: hub_cache.HubData, key: str, split: str, url: str) -> tuple[list[str], str]:
    """(the data files to read, a folder name for that selection)."""
    if hub.pattern:
        chosen = [n for n in names if _glob(n, hub.pattern) or n.startswith(hub.pattern + "/")]
        chosen = [n for n in chosen if n.endswith(DATA_SUFFIXES)]
        if not chosen:
            raise ValueError(f"{key}: {url}: no {'/'.join(DATA_SUFFIXES)} files match {hub.pattern!r} "
                             "in the repository")
        return chosen, "files-" + hashlib.sha256(hub.pattern.encode()).hexdigest()[:12]
    splits = split_files([n for n in names if n.endswith(DATA_SUFFIXES)])
    wanted = [split] if split == "train" else [s for s in EVAL_SPLITS if s in splits][:1]
    if not wanted or wanted[0] not in splits:
        have = ", ".join(sorted(splits)) or "none"
        raise ValueError(f"{key}: {url} has no {split if split == 'train' else ' or '.join(EVAL_SPLITS)} split "
                         f"(splits found by file name: {have}); name the files: {url}/<path-or-glob>")
    return splits[wanted[0]], f"split-{wanted[0]}"


def split_files(names: list[str]) -> dict[str, list[str]]:
    """{split: files} by the file and folder name patterns of `datasets` (data/train-00000-of-00002.parquet,
    train.jsonl, train/part-0.jsonl, ...). All files form the train split when none is named."""
    from datasets.data_files import DEFAULT_PATTERNS_SPLIT_IN_DIR_NAME, DEFAULT_PATTERNS_SPLIT_IN_FILENAME

    for table in (DEFAULT_PATTERNS_SPLIT_IN_FILENAME, DEFAULT_PATTERNS_SPLIT_IN_DIR_NAME):
        found = {}
        for split, patterns in table.items():
            files = [n for n in names if any(_glob(n, p) for p in patterns)]
            if files:
                found[str(split)] = sorted(files)
        if found:
            return found
    return {"train": sorted(names)} if names else {}


def _glob(name: str, pattern: str) -> bool:
    """Glob as fsspec (and so `datasets`) matches: '*' stays within a folder, '**' spans any folders."""
    return _match(name.split("/"), pattern.split("/"))


def _match(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])
