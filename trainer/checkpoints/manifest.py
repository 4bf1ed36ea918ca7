"""What a complete checkpoint holds, and the check that it still holds it before it is loaded.

The COMPLETE marker lists every file of the checkpoint with its size and SHA-256. Hashing is shared
out between the ranks (file i goes to rank i % world size), so each file is read once, in parallel,
while it is still in the page cache; verification before a resume is shared out the same way.
A truncated, missing or altered shard is then found before DeepSpeed tries to load it. An entry
that names a file outside the checkpoint directory ('..', an absolute path, a link leading out) is
never opened: the checkpoint counts as damaged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
DAMAGED = "DAMAGED"  # a COMPLETE marker renamed once its checkpoint failed verification
NOT_LISTED = {MARKER, DAMAGED, "universal"}  # written after the manifest (universal: a resume's conversion)


def sha256(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_files(directory: Path) -> list[str]:
    """Relative paths of the files that make up a checkpoint, sorted (the same list on every rank)."""
    names = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if path.is_file() and rel.parts[0] not in NOT_LISTED and not any(p.startswith(".") for p in rel.parts):
            names.append(rel.as_posix())
    return sorted(names)


def share(names: list[str], rank: int, world_size: int) -> list[str]:
    return names[rank::world_size]


def describe(directory: Path, names: list[str]) -> dict[str, list]:
    """{name: [size, sha256]} for the given files."""
    return {name: [(directory / name).stat().st_size, sha256(directory / name)] for name in names}


def outside(directory: Path, name: str) -> bool:
    """Whether a manifest entry names something other than a file below `directory`: an absolute path,
    '..', an empty or odd part, or a symbolic link that leads out. Such an entry is never opened."""
    if not isinstance(name, str) or not name or "\\" in name or any(ord(c) < 0x20 for c in name):
        return True
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return True
    root = directory.resolve()
    return not (directory / name).resolve().is_relative_to(root)


def shape_problems(meta: dict[str, Any]) -> list[str]:
    """What is wrong with a COMPLETE marker's own fields (a marker llmlaunch did not write)."""
    found = []
    for key in ("step", "world_size", "micro_batch_size"):
        value = meta.get(key)
        optional = key != "step"  # older markers lack them: the current world and micro batch are assumed
        if not (value is None and optional) and (type(value) is not int or value < (0 if key == "step" else 1)):
            found.append(f"{MARKER}: {key} is {value!r}")
    files = meta.get("files", {})
    if not isinstance(files, dict):
        return found + [f"{MARKER}: files is not a mapping"]
    for name, entry in files.items():
        if not (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int and entry[0] >= 0
                and isinstance(entry[1], str) and len(entry[1]) == 64):
            found.append(f"{MARKER}: the entry of {name!r} is not [size, sha256]")
    return found


def problems(directory: Path, files: dict[str, list], names: list[str]) -> list[str]:
    """What differs from the manifest for the given files (sizes first: cheap, and enough for truncation)."""
    found = []
    for name in names:
        size, digest = files[name]
        path = directory / name
        if outside(directory, name):
            found.append(f"{name!r} is not a file inside the checkpoint (the manifest may only name its own files)")
        elif not path.is_file():
            found.append(f"{name} is missing")
        elif (actual := path.stat().st_size) != size:
            found.append(f"{name} has {actual} bytes, expected {size}")
        elif sha256(path) != digest:
            found.append(f"{name} does not match its SHA-256")
    return found


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The COMPLETE marker's content; None when it cannot be read (then the checkpoint counts as damaged)."""
    try:
        meta = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None
