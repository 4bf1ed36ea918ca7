"""A real Prometheus scrapes a real 2-process training run (`llmlaunch train`, DeepSpeed ZeRO-2 on CPU):
every training metric arrives, every dashboard panel query returns data, and `llmlaunch report` draws
the run's log. GPU series are absent on this CPU machine, as they must be (not zero)."""

from __future__ import annotations

import subprocess
import sys
import time

import matplotlib.image
import pytest
from click.testing import CliRunner

from launcher.cli import cli
from tests.fixtures.prometheus import free_port
from tests.monitoring_checks import (
    ALL_METRICS,
    CPU_FP32_ABSENT,
    GPU_METRICS,
    assert_dashboard_queries_return_data,
    assert_metrics_present,
    exported_samples,
)
from trainjobs import REPO, llmlaunch_env, tiny_job

pytestmark = [pytest.mark.prometheus, pytest.mark.distributed]

# The demo's model: slow enough (~0.2 s a step here) for several 1 s scrapes during training.
MODEL = {"model_type": "llama", "vocab_size": 512, "hidden_size": 128, "intermediate_size": 352,
         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256}


def test_prometheus_scrapes_a_real_training_run(tmp_path, prometheus_server):
    port = free_port()
    job = tiny_job(tmp_path, name="promrun", model={"config": MODEL}, data={"seq_len": 128},
                   run={"max_steps": 60, "eval_every": 20, "save_every": 20, "log_every": 1, "micro_batch_size": 8},
                   metrics={"enabled": True, "port": port})
    prom = prometheus_server([f"127.0.0.1:{port}"])
    start = time.time()
    trainer = subprocess.Popen([sys.executable, "-m", "launcher.cli", "train", str(job), "--nproc-per-node", "2"],
                               cwd=REPO, env=llmlaunch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # past the evals and checkpoints of steps 20 and 40, while the run still serves metrics
        prom.wait_for('llmlaunch_train_step{job="promrun"} >= 45', timeout=300)
        end = time.time()
    finally:
        output, _ = trainer.communicate(timeout=300)
    assert trainer.returncode == 0, output[-4000:]

    present = assert_metrics_present(prom, set(ALL_METRICS) - CPU_FP32_ABSENT, job="promrun", at=end)
    assert not present & set(GPU_METRICS)  # no GPU here: the series are absent, not zero
    listing = exported_samples(prom, job="promrun", at=end)
    (tmp_path / "exported.txt").write_text("\n".join(f"{k} {v:g}" for k, v in listing.items()))
    print("\n".join(f"{k} {v:g}" for k, v in listing.items()))  # the closing note's listing (pytest -s)
    assert prom.value('llmlaunch_train_step{job="promrun"}', end) >= 45
    assert 0 < prom.value('llmlaunch_train_loss{job="promrun"}', end) < 7
    assert 0 < prom.value('llmlaunch_eval_loss{job="promrun"}', end) < 7
    assert prom.value('llmlaunch_checkpoints_total{job="promrun",result="ok"}', end) == 2
    ranks = {s["metric"]["rank"] for s in prom.query('llmlaunch_rank_step_seconds{job="promrun"}', end)}
    assert ranks == {"0", "1"}  # each rank's step time, so a straggler shows
    assert_dashboard_queries_return_data(prom, job="promrun", start=start, end=end, absent_ok=CPU_FP32_ABSENT)

    # ... and the same run's log, drawn for people who would rather look than read.
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 .. 60" in result.output
    image = matplotlib.image.imread(tmp_path / "out" / "report.png")
    assert image.std() > 0.05
