"""The Hugging Face cache as plain files: where it is, what it holds, and hub names in job files.

Torch-free and free of huggingface_hub on purpose: the CLI (config validation, preflight, estimate) reads
the cache through these path rules only. Downloading is the trainer's (trainer/data/remote_sources.py).

The layout is huggingface_hub's documented one:
  <cache>/{models,datasets}--org--name/refs/<branch>          the commit a branch points at
  <cache>/{models,datasets}--org--name/snapshots/<commit>/...  the files of that commit (links into blobs/)
and <cache> is HF_HUB_CACHE (or the older HUGGINGFACE_HUB_CACHE), else HF_HOME/hub, else
$XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HF_SCHEME = "hf://"
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
COMMIT = re.compile(r"[0-9a-f]{40}")


def cache_dir() -> Path:
    """As huggingface_hub.constants computes it, but now (it reads the environment once, at import)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"),
                                                     "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def offline() -> bool:
    """HF_HUB_OFFLINE read as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HubData:
    """A data set named `hf://datasets/org/name[@revision][/path-or-glob]`."""

    repo_id: str
    revision: str | None
    pattern: str  # "" = the split's files, found by their names as `datasets` finds them

    @property
    def url(self) -> str:
        return f"{HF_SCHEME}datasets/{self.repo_id}" + (f"@{self.revision}" if self.revision else "") + (
            f"/{self.pattern}" if self.pattern else "")


def parse_hub_data(url: str) -> HubData:
    """The parts of an hf:// data URL; ValueError saying what shape is expected."""
    rest = url.removeprefix(HF_SCHEME)
    if not rest.startswith("datasets/"):
        raise ValueError(f"{url}: a hub data set is hf://datasets/org/name[@revision][/path-or-glob]")
    parts = rest.removeprefix("datasets/").split("/", 2)
    if len(parts) < 2:
        raise ValueError(f"{url}: a hub data set is hf://datasets/org/name[@revision][/path-or-glob]")
    name, _, revision = parts[1].partition("@")
    repo_id = f"{parts[0]}/{name}"
    if not REPO_ID.fullmatch(repo_id) or (_ and not revision):
        raise ValueError(f"{url}: {repo_id!r} is not a hub repository id (org/name)")
    pattern = parts[2].strip("/") if len(parts) == 3 else ""
    if any(p in ("..", ".") for p in pattern.split("/")):
        raise ValueError(f"{url}: the path inside the repository cannot contain '.' or '..'")
    return HubData(repo_id, revision or None, pattern)


def is_hub_model_id(name: str) -> bool:
    """`org/name` that is not a path on this machine (a path wins, as in transformers)."""
    return bool(REPO_ID.fullmatch(name)) and not Path(name).exists()


def repo_folder(repo_type: str, repo_id: str) -> Path:
    return cache_dir() / f"{repo_type}s--{repo_id.replace('/', '--')}"


def cached_snapshot(repo_type: str, repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of `revision` (a branch, tag or commit; default main) in the cache, or None."""
    folder = repo_folder(repo_type, repo_id)
    revision = revision or "main"
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    elif COMMIT.fullmatch(revision):
        commit = revision
    else:
        return None
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def model_dir(pretrained: str) -> Path:
    """Where a model's files are on this machine: the directory itself, or a hub id's cached snapshot of
    main (the directory as named when neither exists, for the caller's own message)."""
    if is_hub_model_id(pretrained):
        return cached_snapshot("model", pretrained) or Path(pretrained)
    return Path(pretrained)


def not_cached_message(what: str, repo_type: str, repo_id: str, revision: str | None) -> str:
    return (f"{what} is not in the Hugging Face cache {cache_dir()} (no {repo_type}s--"
            f"{repo_id.replace('/', '--')} at {revision or 'main'}) and HF_HUB_OFFLINE is set; download it there "
            f"first (hf download{' --repo-type dataset' if repo_type == 'dataset' else ''} {repo_id}) "
            "or unset HF_HUB_OFFLINE")
