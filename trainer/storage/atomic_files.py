"""File writes that a killed process never leaves half done (standard library only: no torch, so the light
modules, object_store.py and tracking.py, can use it)."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to a temporary file beside `path`, then rename it over `path`: a reader
    sees the old file or the new one, never part of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
