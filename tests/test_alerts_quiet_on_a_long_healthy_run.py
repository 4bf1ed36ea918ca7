"""Every alert rule stays quiet through a healthy run longer than the rule's whole window.

The e2e Prometheus test (test_monitoring_e2e.py) runs for seconds, shorter than every rule's `for` plus
its range (up to 2 h 5 m for LlmlaunchCheckpointOverdue), so a rule that fires on healthy data would
never get the chance there. Here the real exporter (trainer.observability.exporter.TrainMetrics, its HTTP server, the
fake NVML of tests/fake_nvml.py) is driven through 150 minutes of a steady run on a fake clock: six
steps a minute, a checkpoint every 30 minutes, an eval every 10; /metrics is scraped over HTTP once a
simulated minute and the samples become promtool input_series (one a minute), tested against the real
rule file at every minute.
"""

from __future__ import annotations

import math
import re
import types

import pytest
import yaml

import trainer.observability.exporter
from tests.fake_nvml import two_gpus
from tests.monitoring_checks import RULES
from tests.test_fp16_alerts import minutes, scrape
from tests.test_monitoring_assets import alert_rules, promtool
from trainer.config.train_config import MetricsConfig
from trainer.observability.exporter import TrainMetrics

pytestmark = pytest.mark.prometheus

SCRAPES, STEPS_PER_MINUTE = 150, 6
TOKENS_PER_STEP, WORLD = 4096, 2


def window_minutes(rule: dict) -> float:
    """How long a rule looks back before it can fire: `for` + its longest range (with its offset) or
    age threshold (time() - x > seconds)."""
    expr = rule["expr"]
    ranges = [minutes(r) + (minutes(o) if o else 0)
              for r, o in re.findall(r"\[(\d+[smh])\](?:\s*offset\s+(\d+[smh]))?", expr)]
    ages = [int(s) / 60 for s in re.findall(r"time\(\) - [^\n]*?> (\d+)", expr)]
    return minutes(rule["for"]) + max(ranges + ages + [0])


def healthy_series(monkeypatch) -> list[dict]:
    clock = [0.0]
    monkeypatch.setattr(trainer.observability.exporter, "time", types.SimpleNamespace(time=lambda: clock[0]))
    metrics = TrainMetrics(MetricsConfig(), job="healthy", namespace="ml", node_rank=0, local_rank=0, rank=0,
                           world_size=WORLD, local_world_size=WORLD, flops_per_token=1e6, peak_flops=1e15,
                           device="NVIDIA H100 80GB HBM3", nvml=two_gpus())
    metrics.start(addr="127.0.0.1", port=0)
    wanted = {name for rule in alert_rules() for name in re.findall(r"\bllmlaunch_[a-z0-9_]+", rule["expr"])}
    scrapes, step = [], 0
    try:
        metrics.set_node_gpus({0: "GPU-0", 1: "GPU-1"})
        for minute in range(SCRAPES):
            for j in range(1, STEPS_PER_MINUTE + 1) if minute else ():  # scrape 0: started, no step yet
                step += 1
                clock[0] = (minute - 1) * 60 + j * 60 / STEPS_PER_MINUTE  # the last one at the scrape's minute
                metrics.observe_step_duration(10.0)
                metrics.on_step(step=step, loss=2.0 + 4.0 * math.exp(-step / 200), lr=3e-4, grad_norm=0.8,
                                tokens=TOKENS_PER_STEP, samples=8, step_seconds=10.0, data_wait_seconds=0.1,
                                loss_scale=65536.0, skipped_steps=0)
            if minute and minute % 10 == 0:
                metrics.on_eval(step=step, eval_loss=2.1 + 4.0 * math.exp(-step / 200))
            if minute and minute % 30 == 0:
                metrics.on_checkpoint(seconds=20.0, ok=True)
            clock[0] = minute * 60.0
            scrapes.append(scrape(metrics.port, wanted))
    finally:
        metrics.close()
    names = sorted({name for s in scrapes for name in s})
    return [{"series": n, "values": " ".join(repr(s[n]) if n in s else "_" for s in scrapes)} for n in names]


def test_every_rule_stays_quiet_through_a_healthy_run_longer_than_its_window(tmp_path, monkeypatch):
    rules = alert_rules()
    assert len(rules) == 6
    for rule in rules:  # each rule has seen a full window of healthy data before the end
        assert window_minutes(rule) + 5 < SCRAPES - 1, (rule["alert"], window_minutes(rule))
    series = healthy_series(monkeypatch)
    exported = {s["series"].split("{")[0] for s in series}
    used = {name for rule in rules for name in re.findall(r"\bllmlaunch_[a-z0-9_]+", rule["expr"])}
    assert used <= exported, used - exported  # every series a rule reads is there
    tokens = next(s for s in series if s["series"].startswith("llmlaunch_tokens_total"))["values"].split()
    assert float(tokens[-1]) == (SCRAPES - 1) * STEPS_PER_MINUTE * TOKENS_PER_STEP  # a steady run to the end
    cases = [{"eval_time": f"{t}m", "alertname": rule["alert"], "exp_alerts": []}
             for rule in rules for t in range(SCRAPES)]
    path = tmp_path / "healthy.test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series, "alert_rule_test": cases}]}, sort_keys=False))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
