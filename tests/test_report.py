"""`llmlaunch report RUN_DIR` over a metrics.jsonl written by the trainer's own writer (MetricsLog)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.report import build_figure, find_log, read_log
from trainer.observability.metrics_log import MetricsLog


def lr_at(step: int) -> float:
    return 3e-3 * min(1.0, step / 20)


def write_run(run_dir, *, steps=100, resume_from=None, nan_at=None) -> None:
    """Log every 10 steps, eval every 50; optionally a second process resuming at `resume_from`."""
    segments = [(10, steps, 0.0)] if resume_from is None else [(10, 70, 0.0), (resume_from + 10, steps, 0.01)]
    for first, last, offset in segments:
        log = MetricsLog(run_dir)
        for step in range(first, last + 1, 10):
            loss = math.nan if step == nan_at else 4.0 - step / 50 + offset
            log.log_train(step=step, loss=loss, lr=lr_at(step), tokens_per_s=1000.0 + step, step_seconds=0.5,
                          tokens=step * 4096, grad_norm=1.0, mfu=0.4, loss_scale=None)
            if step % 50 == 0:
                log.log_eval(step=step, eval_loss=4.1 - step / 50)
        log.close()


def test_report_writes_the_png_and_prints_the_summary(tmp_path):
    run = tmp_path / "run"
    write_run(run, resume_from=50)  # steps 60 and 70 logged twice: the resumed process wins
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 110, "loss": 1.')  # killed mid-write
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "steps" in out and "10 .. 100 (10 logged, 2 evals)" in out
    assert "first 3.8000  last 2.0100  min 2.0100 (step 100)" in out
    assert "last 2.1000 (step 100)  best 2.1000 (step 100)" in out
    assert "last 0.003  peak 0.003" in out
    assert "median 1,055  last 1,100" in out
    assert "MFU" in out and "40.0%" in out
    png = run / "report.png"
    assert re.search(rf"^plot +{re.escape(str(png))}$", out, re.M)
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (900, 900)  # 9 x 9 inches at 100 dpi
    assert image.std() > 0.05  # not a blank canvas


def test_the_figure_plots_the_logged_values(tmp_path):
    write_run(tmp_path, resume_from=50)
    fig = build_figure(read_log(find_log(tmp_path)))
    ax_loss, ax_lr, ax_speed = fig.axes
    train, evals = ax_loss.get_lines()
    assert list(train.get_xdata()) == list(range(10, 101, 10))
    assert train.get_ydata()[5] == pytest.approx(4.0 - 60 / 50 + 0.01)  # step 60 from the resumed process
    assert list(evals.get_xdata()) == [50, 100] and list(evals.get_ydata()) == pytest.approx([3.1, 2.1])
    assert list(ax_lr.get_lines()[0].get_ydata()) == pytest.approx([lr_at(s) for s in range(10, 101, 10)])
    assert ax_speed.get_lines()[0].get_ydata()[-1] == 1100
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "learning rate", "tokens/s"]


def test_a_diverged_run_still_reports(tmp_path):
    write_run(tmp_path, nan_at=40)
    result = CliRunner().invoke(cli, ["report", str(tmp_path), "-o", str(tmp_path / "out" / "r.png")])
    assert result.exit_code == 0, result.output
    assert "non-finite loss  1 records, first at step 40" in result.output
    assert (tmp_path / "out" / "r.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "error: RUN_DIR: no metrics.jsonl in"),
        ('{"step": 1, "loss": 2.0, "lr": 0.1}\n{oops\n{"step": 2, "loss": 2.0, "lr": 0.1}\n',
         "metrics.jsonl:2: not JSON"),
        ('{"step": "one", "loss": 2.0}\n', "metrics.jsonl:1: a record needs an integer step"),
        ('{"step": 1, "loss": 2.0}\n', "metrics.jsonl:1: a train record needs lr"),
        ('{"step": 50, "eval_loss": 2.0}\n', "no training steps logged yet"),
    ],
)
def test_bad_logs_are_one_line_errors_with_exit_2(tmp_path, content, message):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_the_cli_does_not_load_matplotlib_or_torch():
    code = ("import sys, launcher.cli, launcher.report; "
            "print(sorted(m for m in ('matplotlib', 'torch', 'deepspeed', 'transformers') if m in sys.modules))")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo).stdout
    assert out.strip() == "[]"
