"""A real Prometheus scrapes two 'nodes' driving TrainMetrics through 300 steps; then, over its HTTP
API: every metric is there with the right labels and values, every dashboard panel query returns
data, and the alert rules evaluate without errors and stay quiet for this healthy run (seconds long,
shorter than every rule's window: tests/test_alerts_quiet_on_a_long_healthy_run.py runs them over 150
simulated minutes).

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
    dashboard_queries,
    exported_samples,
    grafana_substitute,
)

pytestmark = pytest.mark.prometheus

STEPS = 300
TOKENS_PER_STEP = 128 * 8 * 4  # seq_len x micro batch x world size, as the driver trains


def start_driver(*args: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.train_metrics_driver", "--steps", str(STEPS), *args],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().split()
    assert line[:1] == ["PORT"], f"driver did not start: {line}"
    return proc, int(line[1])


class Drivers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __call__(self, *args: str) -> int:
        proc, port = start_driver(*args)
        self.procs.append(proc)
        return port

    def go(self) -> None:
        for proc in self.procs:
            if not proc.stdin.closed and proc.poll() is None:
                proc.stdin.write("go\n")
                proc.stdin.flush()

    def wait_done(self) -> None:
        """Until every driver has set its last value (the final checkpoint comes after the last step)."""
        for proc in self.procs:
            assert proc.stdout.readline().strip() == "DONE"


@pytest.fixture
def drivers():
    started = Drivers()
    yield started
    for proc in started.procs:
        if not proc.stdin.closed:
            proc.stdin.close()  # the driver stops serving and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prometheus_scrapes_every_metric_and_every_panel_has_data(prometheus_server, drivers):
    start = time.time()
    # job e2e: two nodes in namespace ml-team; job local: one node that does not know its namespace
    ports = [drivers("--node-rank", "0"), drivers("--node-rank", "1"),
             drivers("--job", "local", "--namespace", "", "--nodes", "1")]
    prom = prometheus_server([f"127.0.0.1:{p}" for p in ports], rule_files=(RULES,))
    prom.wait_for('count(up{job="llmlaunch"} == 1) == 3', timeout=30)  # scraping before the first step
    drivers.go()
    prom.wait_for(f'count(llmlaunch_train_step == {STEPS}) == 3', timeout=120)
    prom.wait_for(f'llmlaunch_tokens_total{{job="e2e"}} == {STEPS * TOKENS_PER_STEP}', timeout=10)
    drivers.wait_done()
    done = time.time()  # then one scrape of every target after it: the values below are the final ones
    prom.wait_for(f'min(timestamp(up{{job="llmlaunch"}})) > {done}', timeout=30)
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
    assert prom.value('llmlaunch_gpu_power_watts{job="e2e",node_rank="0",gpu="GPU-0"}', end) == 612.5
    assert prom.value('count(llmlaunch_gpu_utilization_ratio{job="e2e"})', end) == 4  # 2 nodes x 2 GPUs

    counts = assert_dashboard_queries_return_data(prom, job="e2e", namespace="ml-team", start=start, end=end)
    assert counts["Step time per node/A"] == 2 and counts["GPU utilization/A"] == 4  # job local not mixed in
    assert "namespace" not in prom.query('llmlaunch_train_loss{job="local"}', end)[0]["metric"]
    counts = assert_dashboard_queries_return_data(prom, job="local", start=start, end=end)  # namespace "All"
    assert counts["Step time per node/A"] == 1 and counts["Loss/A"] == 1

    # The rules load, evaluate on real series without errors, and a healthy run raises nothing.
    time.sleep(3)  # a few evaluation rounds (every 1 s) over the full data
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == 6
    for rule in rules:
        assert rule["health"] == "ok" and not rule["lastEvaluation"].startswith("0001"), rule
    assert prom.api("alerts")["alerts"] == []


def test_restarts_panel_counts_a_restarted_trainer(prometheus_server, drivers):
    """The trainer process of a node dies and a new one takes over its port: Restarts shows 1."""
    start = time.time()
    port = drivers("--job", "restart", "--nodes", "1")
    prom = prometheus_server([f"127.0.0.1:{port}"])
    prom.wait_for('up{job="llmlaunch"} == 1', timeout=30)
    first = drivers.procs[0]
    first.stdin.write("go\n")
    first.stdin.close()  # after its steps it stops serving and exits, like a crashed pod
    assert first.stdout.readline().strip() == "DONE"
    first.wait(timeout=30)
    prom.wait_for('up{job="llmlaunch"} == 0', timeout=30)
    drivers("--job", "restart", "--nodes", "1", "--port", str(port))  # the restarted process
    drivers.go()
    prom.wait_for(f'llmlaunch_train_step{{job="restart"}} == {STEPS}', timeout=60)  # the first one's series is stale
    end = time.time()
    [restarts] = [q for q in dashboard_queries() if q.panel == "Restarts"]
    expr = grafana_substitute(restarts.expr, job="restart", namespace=None, interval_s=1, range_s=end - start,
                              scrape_interval_s=1)
    assert prom.value(expr, end) == 1
