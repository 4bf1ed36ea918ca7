"""Where llmlaunch's data folders are, in a checkout and in an installed wheel: the one resource locator.

The folders live at the top of the repository, where users look for them (k8s/ templates, ds_configs/
presets, examples/, monitoring/ dashboards and alerts, the helm/ chart); the wheel carries them inside
this package (pyproject.toml maps each folder to `llmlaunch_data.<folder>`). Torch-free and import-free,
so the trainer and the CLI both use it.
"""

from __future__ import annotations

from pathlib import Path

FOLDERS = ("k8s", "ds_configs", "examples", "monitoring", "helm")
_HERE = Path(__file__).resolve().parent


def data_path(folder: str) -> Path:
    """The directory of one data folder: inside the installed package, else the checkout's top level."""
    if folder not in FOLDERS:
        raise ValueError(f"no data folder {folder!r}; llmlaunch ships {', '.join(FOLDERS)}")
    inside = _HERE / folder
    return inside if inside.is_dir() else _HERE.parent / folder
