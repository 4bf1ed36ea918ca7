"""Training progress from the master pod's /metrics (pure functions: text in, figures out).

The trainer exports Prometheus' text format (trainer/observability/exporter.py); `llmlaunch status` reads it through the
apiserver's pod proxy. A small parser here keeps the CLI free of prometheus_client (a trainer dependency).
The ETA is the remaining steps times the mean optimizer-step time of the running trainer process
(llmlaunch_step_duration_seconds): evaluations and checkpoints between steps are not in it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}

Sample = tuple[str, dict[str, str], float]


class MetricsTextError(ValueError):
    """A line of the exposition that is not Prometheus text format."""


def parse_samples(text: str) -> Iterator[Sample]:
    """(name, labels, value) for every sample line; comments (# HELP, # TYPE) and blank lines skipped."""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield _parse_line(line)
        except (ValueError, IndexError) as e:
            raise MetricsTextError(f"line {number}: {e}: {line[:80]!r}") from None


def _parse_line(line: str) -> Sample:
    match = _NAME.match(line)
    if not match:
        raise ValueError("no metric name")
    name, rest, labels = match.group(), line[match.end():], {}
    if rest.startswith("{"):
        labels, rest = _parse_labels(rest)
    fields = rest.split()
    if not 1 <= len(fields) <= 2:  # value and an optional timestamp
        raise ValueError("expected a value")
    return name, labels, float(fields[0])  # float() reads +Inf, -Inf and NaN as Prometheus writes them


def _parse_labels(text: str) -> tuple[dict[str, str], str]:
    """`{a="x",b="y\\"z"}` -> ({a: x, b: y"z}, what follows the closing brace)."""
    labels, i = {}, 1
    while True:
        while text[i] in " ,":
            i += 1
        if text[i] == "}":
            return labels, text[i + 1:]
        match = _NAME.match(text, i)
        if not match or text[match.end()] != "=" or text[match.end() + 1] != '"':
            raise ValueError("bad label")
        i, value = match.end() + 2, []
        while text[i] != '"':
            if text[i] == "\\":
                i += 1
                value.append(_ESCAPES.get(text[i], "\\" + text[i]))
            else:
                value.append(text[i])
            i += 1
        labels[match.group()] = "".join(value)
        i += 1


def _first(samples: list[Sample], name: str) -> float | None:
    values = [v for n, _, v in samples if n == name and not math.isnan(v)]
    return values[0] if values else None


def progress(metrics_text: str, total_steps: int | None) -> dict[str, Any]:
    """Step / total, last loss, tokens/s and ETA from rank 0's exposition; a figure not exported yet is None."""
    samples = list(parse_samples(metrics_text))
    step = _first(samples, "llmlaunch_train_step")
    seconds, count = (_first(samples, f"llmlaunch_step_duration_seconds_{s}") for s in ("sum", "count"))
    step_seconds = seconds / count if seconds is not None and count else None
    eta = None
    if step is not None and total_steps and step_seconds is not None:
        eta = max(total_steps - step, 0) * step_seconds
    return {
        "step": int(step) if step is not None else None,
        "total": total_steps,
        "loss": _first(samples, "llmlaunch_train_loss"),
        "tokens_per_second": _first(samples, "llmlaunch_tokens_per_second"),
        "step_seconds": step_seconds,
        "eta_seconds": eta,
    }


def format_duration(seconds: float | None) -> str:
    """12 s, 4m05s, 3h07m, 2d04h: the two largest units."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def describe(p: dict[str, Any]) -> str:
    """One line: `step 12 / 40 (30%), loss 4.812, 1,930 tokens/s, ETA 1m04s`."""
    if p.get("step") is None:
        return "no step yet (the trainer is starting)"
    if p.get("total"):
        parts = [f"step {p['step']} / {p['total']} ({100 * p['step'] // p['total']}%)"]
    else:
        parts = [f"step {p['step']} (total unknown: the job sets run.epochs, not run.max_steps)"]
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.4g}")
    if p.get("tokens_per_second") is not None:
        parts.append(f"{p['tokens_per_second']:,.0f} tokens/s")
    if p.get("total"):
        parts.append(f"ETA {format_duration(p.get('eta_seconds'))}")
    return ", ".join(parts)
