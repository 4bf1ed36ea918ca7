"""A real Prometheus scrapes two 'nodes' driving TrainMetrics through 300 steps; then, over its HTTP
API: every metric is there with the right labels and values, every dashboard panel query returns
data, and the alert rules evaluate without errors and stay quiet for this healthy run.

The driver simulates the loop (tests/train_metrics_driver.py) and uses a fake NVML (no GPU here);
the exporter, its HTTP server, Prometheus and the queries are all real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.monitoring_checks import (
    ALL_METRICS,
    REPO,
    RULES,
    TRAINING_METRICS,
    assert_dashboard_queries_return_data,
    assert_metrics_present,
    exported_samples,
)

pytestmark = pytest.mark.prometheus

STEPS = 300
TOKENS_PER_STEP = 128 * 8 * 4  # seq_len x micro batch x world size, as the driver trains


def start_driver(node_rank: int) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.train_metrics_driver", "--node-rank", str(node_rank), "--steps", str(STEPS)],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().split()
    assert line[:1] == ["PORT"], f"driver did not start: {line}"
    return proc, int(line[1])


class Drivers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __call__(self, node_rank: int) -> int:
        proc, port = start_driver(node_rank)
        self.procs.append(proc)
        return port

    def go(self) -> None:
        for proc in self.procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()


@pytest.fixture
def drivers():
    started = Drivers()
    yield started
    for proc in started.procs:
        proc.stdin.close()  # the driver stops serving and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prometheus_scrapes_every_metric_and_every_panel_has_data(prometheus_server, drivers):
    start = time.time()
    ports = [drivers(0), drivers(1)]
    prom = prometheus_server([f"127.0.0.1:{p}" for p in ports], rule_files=(RULES,))
    prom.wait_for('count(up{job="llmlaunch"} == 1) == 2', timeout=30)  # scraping before the first step
    drivers.go()
    prom.wait_for(f'count(llmlaunch_train_step{{job="e2e"}} == {STEPS}) == 2', timeout=120)
    prom.wait_for(f'llmlaunch_tokens_total{{job="e2e"}} == {STEPS * TOKENS_PER_STEP}', timeout=10)
    end = time.time()

    assert_metrics_present(prom, ALL_METRICS, job="e2e", at=end)
    listing = exported_samples(prom, job="e2e", at=end)
    print("\n".join(f"{name} {value:g}" for name, value in listing.items()))  # visible with -s

    # global values only from the node of rank 0; per-node values from both
    for name in TRAINING_METRICS:
        series = prom.query(f'{{__name__=~"{name}(_count)?",job="e2e"}}', end)
        assert {s["metric"]["node_rank"] for s in series} == {"0"}, name
    assert prom.value('count(llmlaunch_train_step{job="e2e",namespace="ml-team"})', end) == 2
    ranks = {(s["metric"]["node_rank"], s["metric"]["rank"]) for s in prom.query("llmlaunch_rank_step_seconds", end)}
    assert ranks == {("0", "0"), ("0", "1"), ("1", "2"), ("1", "3")}

    # values the driver produced, end to end through the exporter and Prometheus
    assert prom.value('llmlaunch_samples_total{job="e2e"}', end) == STEPS * 8 * 4
    assert prom.value('llmlaunch_skipped_steps_total{job="e2e"}', end) == 2
    assert prom.value('llmlaunch_loss_scale{job="e2e"}', end) == 16384
    assert prom.value('llmlaunch_checkpoints_total{job="e2e",result="ok"}', end) == 3
    assert prom.value('llmlaunch_step_duration_seconds_count{job="e2e"}', end) == STEPS
    assert 0 < prom.value('llmlaunch_mfu_ratio{job="e2e"}', end) < 1e-3  # tiny model, simulated H100 peak
    straggler = prom.query('topk(1, llmlaunch_rank_step_seconds{job="e2e",node_rank="1"})', end)
    assert straggler[0]["metric"]["rank"] == "3"
    assert prom.value('llmlaunch_gpu_power_watts{job="e2e",node_rank="0",gpu="0"}', end) == 612.5
    assert prom.value('count(llmlaunch_gpu_utilization_ratio{job="e2e"})', end) == 4  # 2 nodes x 2 GPUs

    counts = assert_dashboard_queries_return_data(prom, job="e2e", namespace="ml-team", start=start, end=end)
    assert counts["Step time per node/A"] == 2 and counts["GPU utilization/A"] == 4

    # The rules load, evaluate on real series without errors, and a healthy run raises nothing.
    time.sleep(3)  # a few evaluation rounds (every 1 s) over the full data
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == 6
    for rule in rules:
        assert rule["health"] == "ok" and not rule["lastEvaluation"].startswith("0001"), rule
    assert prom.api("alerts")["alerts"] == []
