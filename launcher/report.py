"""`llmlaunch report RUN_DIR`: a run's metrics.jsonl as one PNG and a short summary table.

The log format is defined where it is written, trainer/observability/metrics_log.py. matplotlib is imported only
when a plot is drawn, so the CLI keeps starting fast.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import ConfigError

LOG_NAME = "metrics.jsonl"  # trainer.observability.metrics_log.FILENAME; not imported: launcher reads, trainer writes


@dataclass
class RunLog:
    path: Path
    train: list[dict] = field(default_factory=list)  # sorted by step, one record per step
    evals: list[dict] = field(default_factory=list)


def find_log(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise ConfigError([f"RUN_DIR: no {LOG_NAME} in {run_dir} (is it a run's output_dir?)"])
    return path


def read_log(path: Path) -> RunLog:
    """Train and eval records; a step logged twice (a resumed run re-logs) keeps its last record."""
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # a run killed mid-write leaves a partial last line
                continue
            raise ConfigError([f"{path}:{number}: not JSON ({e.msg})"]) from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ConfigError([f"{path}:{number}: a record needs an integer step (got {line[:80]!r})"])
        if "eval_loss" in record:
            evals[record["step"]] = record
        if "loss" in record:
            if "lr" not in record:
                raise ConfigError([f"{path}:{number}: a train record needs lr"])
            train[record["step"]] = record
    if not train:
        raise ConfigError([f"{path}: no training steps logged yet"])
    return RunLog(path, [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)])


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _num(value) -> float:
    """A value to plot: missing, null and non-finite become NaN, a gap in the line."""
    return float(value) if _finite([value]) else math.nan


def _duration(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m}m {s}s" if h else f"{m}m {s}s"


def summarize(log: RunLog) -> list[tuple[str, str]]:
    """Rows of the summary table: (what, value)."""
    steps = [r["step"] for r in log.train]
    rows = [("steps", f"{steps[0]} .. {steps[-1]} ({len(steps)} logged, {len(log.evals)} evals)")]
    losses = [(r["step"], r["loss"]) for r in log.train if _finite([r["loss"]])]
    if losses:
        low_step, low = min(losses, key=lambda sl: sl[1])
        rows.append(
            ("train loss", f"first {losses[0][1]:.4f}  last {losses[-1][1]:.4f}  min {low:.4f} (step {low_step})")
        )
    bad = [r["step"] for r in log.train if not _finite([r["loss"]])]
    if bad:
        rows.append(("non-finite loss", f"{len(bad)} records, first at step {bad[0]}"))
    evals = [(r["step"], r["eval_loss"]) for r in log.evals if _finite([r["eval_loss"]])]
    if evals:
        best_step, best = min(evals, key=lambda sl: sl[1])
        rows.append(("eval loss", f"last {evals[-1][1]:.4f} (step {evals[-1][0]})  best {best:.4f} (step {best_step})"))
    lrs = _finite(r["lr"] for r in log.train)
    rows.append(("learning rate", f"last {lrs[-1]:.3g}  peak {max(lrs):.3g}"))
    speeds = _finite(r.get("tokens_per_s") for r in log.train)
    if speeds:
        rows.append(("tokens/s", f"median {statistics.median(speeds):,.0f}  last {speeds[-1]:,.0f}"))
    mfus = _finite(r.get("mfu") for r in log.train)
    if mfus:
        rows.append(("MFU", f"median {100 * statistics.median(mfus):.1f}%"))
    times = _finite(r.get("time") for r in (*log.train, *log.evals))
    if len(times) >= 2:
        rows.append(("logged over", _duration(max(times) - min(times))))
    return rows


def build_figure(log: RunLog):
    """Three panels over steps: loss and eval loss, learning rate, tokens/s."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr, ax_speed) = plt.subplots(3, 1, sharex=True, figsize=(9, 9), constrained_layout=True)
    steps = [r["step"] for r in log.train]
    ax_loss.plot(steps, [_num(r["loss"]) for r in log.train], label="train loss")
    if log.evals:
        ax_loss.plot([r["step"] for r in log.evals], [_num(r["eval_loss"]) for r in log.evals], "o-", label="eval loss")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_lr.plot(steps, [_num(r["lr"]) for r in log.train], color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_speed.plot(steps, [_num(r.get("tokens_per_s")) for r in log.train], color="tab:purple")
    ax_speed.set_ylabel("tokens/s")
    ax_speed.set_xlabel("step")
    for ax in (ax_loss, ax_lr, ax_speed):
        ax.grid(alpha=0.3)
    fig.suptitle(str(log.path.parent.name or log.path.parent))
    return fig


def write_report(run_dir: str | Path, output: str | Path | None = None) -> tuple[Path, list[tuple[str, str]]]:
    """Read RUN_DIR's log, write the PNG (default RUN_DIR/report.png); the PNG's path and the summary."""
    log = read_log(find_log(run_dir))
    png = Path(output) if output else log.path.parent / "report.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig = build_figure(log)
    fig.savefig(png, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png, summarize(log)
