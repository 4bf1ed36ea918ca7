"""Each rank's own part of a checkpoint, loop-rank{r}.json: the loop position (LoopState) and the RNG
states, as JSON, so loading it never unpickles anything (DeepSpeed's own files still do: see
docs/resilience.md on who must be trusted to write the checkpoint volume).

RNG states become JSON exactly: Python's Mersenne Twister state as integers, numpy's as its key words,
torch's (and CUDA's) byte tensors as base64. Floats (best_eval, numpy's cached Gaussian) go through
repr, which round-trips every double, so a resume replays the very same random numbers.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.checkpoints.loop_state import LoopState

FORMAT = 1
LEGACY_SUFFIX = ".pt"  # loop-rank{r}.pt, written with torch.save by llmlaunch before FORMAT 1


# LoopState's fields and the JSON types each may hold (bool is not an int here; counts are >= 0).
LOOP_TYPES = {f.name: (int,) for f in dataclasses.fields(LoopState)}
LOOP_TYPES.update(best_eval=(float, type(None)), best_step=(int, type(None)), stopped_early=(bool,))


class BadLoopFile(ValueError):
    """A loop file that llmlaunch did not write (wrong shape or types): the resume stops, naming it."""


def loop_file(directory: Path, rank: int) -> Path:
    return directory / f"loop-rank{rank}.json"


def rng_state() -> dict[str, Any]:
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(words), gauss],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": _b64(torch.get_rng_state())}
    if torch.cuda.is_available():
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_tensor(state["cuda"]))


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=torch.uint8).clone()


def encode(loop_state: dict[str, Any]) -> bytes:
    return json.dumps({"format": FORMAT, "loop": loop_state, "rng": rng_state()}, sort_keys=True).encode()


def read(path: Path) -> dict[str, Any]:
    """{"loop": ..., "rng": ...} of a loop file, checked field by field; BadLoopFile otherwise.
    A directory from an older llmlaunch has loop-rank{r}.pt instead (read without pickle's code execution)."""
    legacy = path.with_suffix(LEGACY_SUFFIX)
    if not path.is_file() and legacy.is_file():
        return _read_legacy(legacy)
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BadLoopFile(f"{path}: not readable as JSON ({e})") from e
    try:
        _check(saved)
    except (KeyError, TypeError, ValueError) as e:
        raise BadLoopFile(f"{path}: not a loop state written by llmlaunch ({e})") from e
    return saved


def _check(saved: Any) -> None:
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"format must be {FORMAT}")
    loop, rng = saved["loop"], saved["rng"]
    if not isinstance(loop, dict) or not set(loop) <= set(LOOP_TYPES):
        raise ValueError(f"loop keys must be among {sorted(LOOP_TYPES)}")
    for key, value in loop.items():
        if type(value) not in LOOP_TYPES[key] or (type(value) is int and value < 0):
            raise TypeError(f"loop.{key} is {value!r}")
    version, words, gauss = rng["python"]
    if not isinstance(version, int) or len(words) != 625 or not all(isinstance(w, int) for w in words) \
            or not isinstance(gauss, (float, type(None))):
        raise ValueError("rng.python is not a Mersenne Twister state")
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    if kind != "MT19937" or len(keys) != 624 or not all(isinstance(k, int) and 0 <= k < 2**32 for k in keys) \
            or not isinstance(pos, int) or not isinstance(has_gauss, int) or not isinstance(cached, (float, int)):
        raise ValueError("rng.numpy is not an MT19937 state")
    for key in ("torch", "cuda"):
        if key in rng and not isinstance(rng[key], str):
            raise TypeError(f"rng.{key} must be base64 text")
    if set(rng) - {"python", "numpy", "torch", "cuda"}:
        raise ValueError(f"unknown rng keys {sorted(set(rng) - {'python', 'numpy', 'torch', 'cuda'})}")
    _tensor(rng["torch"])  # base64 that decodes


def _read_legacy(path: Path) -> dict[str, Any]:
    """torch.load(weights_only=True): tensors and plain containers only, plus numpy's array
    reconstruction for numpy's RNG key words; never arbitrary classes or calls."""
    from numpy._core.multiarray import _reconstruct

    allowed = [np.ndarray, np.dtype, _reconstruct, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            saved = torch.load(path, weights_only=True)
        rng = saved["rng"]
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]
        rng["python"] = list(rng["python"])
        rng["torch"] = _b64(rng["torch"])
        if "cuda" in rng:
            rng["cuda"] = _b64(rng["cuda"])
        saved = {"format": FORMAT, "loop": dict(saved["loop"]), "rng": rng}
        _check(saved)
    except Exception as e:  # the unpickler's refusals are plain Exceptions (UnpicklingError, RuntimeError)
        # torch's own message starts with how to load the file unsafely; keep only what it refused
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        reason = next((line for line in lines if "GLOBAL" in line or "global" in line), lines[0])
        raise BadLoopFile(f"{path}: not a loop state written by llmlaunch ({reason[:200]})") from e
    return saved
