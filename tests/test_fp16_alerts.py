"""LlmlaunchLossScaleCollapsing on the series the trainer's own path really exports, for two fp16 runs.

trainer.training.run_log.RunLog (as loop.Trainer drives it, with a real single-process gloo group and a real tiny
model) serves /metrics over HTTP; after every scrape interval's steps the test scrapes that text, and the
samples become promtool `input_series` (one sample per interval) tested against the real alert rules.
The engine stands in for DeepSpeed's fp16 optimizer, which cannot run on CPU: it follows a script of
overflows and keeps DeepSpeed's running total of skipped steps and its dynamic loss scale (halved on an
overflow, down to 1; doubled after `window` clean steps).

A healthy run (a rare overflow, the scale recovering) must stay quiet for longer than the rule's
`for` + range; a collapsing one (overflow on 5 steps of 6, the scale at 1) must fire. Were the
skipped-steps counter fed DeepSpeed's running total again, the healthy run would fire.
"""

from __future__ import annotations

import re
import urllib.request

import pytest
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring_checks import RULES
from tests.test_monitoring_assets import promtool
from tests.test_runlog_metrics import Bar, Fp16Engine, gloo, make_runlog  # noqa: F401 (gloo: a fixture)
from trainer.checkpoints.loop_state import LoopState

ALERT = "LlmlaunchLossScaleCollapsing"
STEPS_PER_SCRAPE, LOG_EVERY, SCRAPES = 6, 3, 30  # one scrape a minute: 30 minutes, 180 steps
LABELS = {"namespace": "ml", "node_rank": "0"}


def alert_rule() -> dict:
    return next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == ALERT)


def minutes(duration: str) -> int:
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1 / 60, "m": 1, "h": 60}[unit]


class ScriptedFp16Engine(Fp16Engine):
    """Fp16Engine whose scale also grows back, as DeepSpeed's does after `window` steps without overflow."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window, self.clean = window, 0

    def step(self, overflow: bool) -> None:
        if overflow:
            self.skipped_steps += 1
            self.optimizer.cur_scale = max(self.optimizer.cur_scale / 2, 1.0)
            self.clean = 0
            return
        self.clean += 1
        if self.clean == self.window:
            self.optimizer.cur_scale, self.clean = min(self.optimizer.cur_scale * 2, 65536.0), 0


def scrape(port: int, wanted: set[str]) -> dict[str, float]:
    """The exporter's /metrics over HTTP: series text (promtool's form) -> value, for the wanted names."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def exported_series(tmp_path, monkeypatch, job: str, overflows, window: int) -> list[dict]:
    """Run SCRAPES intervals of scripted steps through RunLog; promtool input_series of what was served."""
    monkeypatch.setenv("LLMLAUNCH_JOB", job)
    monkeypatch.setenv("LLMLAUNCH_NAMESPACE", LABELS["namespace"])
    monkeypatch.setenv("LLMLAUNCH_LOCAL_RUN", "1")  # serve on loopback only
    wanted = set(re.findall(r"\bllmlaunch_[a-z0-9_]+", alert_rule()["expr"]))
    total = STEPS_PER_SCRAPE * SCRAPES
    runlog = make_runlog(tmp_path, steps=total, log_every=LOG_EVERY)
    engine, state, scrapes = ScriptedFp16Engine(window), LoopState(), []
    try:
        assert runlog.metrics.port, "the exporter is not serving"
        for step in range(1, total + 1):
            state.step = step
            engine.step(overflow=step in overflows)
            runlog.step(state, torch.tensor(2.0), torch.tensor(256), 0.5, 0.001, engine, Bar())
            if step % STEPS_PER_SCRAPE == 0:
                scrapes.append(scrape(runlog.metrics.port, wanted))
    finally:
        runlog.metrics.close()
    names = sorted({name for s in scrapes for name in s})
    assert {n.split("{")[0] for n in names} == wanted, names
    # "_": no sample in that scrape (a gauge not yet set)
    return [{"series": n, "values": " ".join(repr(s[n]) if n in s else "_" for s in scrapes)} for n in names]


def expected_alert(job: str, value: float) -> dict:
    """The alert as the rule renders it: its labels and its annotations' templates filled in."""
    rule, labels = alert_rule(), {**LABELS, "job": job}

    def fill(template: str) -> str:
        template = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
        return template.replace("{{ $value }}", f"{value:g}")

    return {"exp_labels": {**rule["labels"], **labels},
            "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()}}


def promtool_test(tmp_path, series: list[dict], cases: list[dict]) -> str:
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}]}
    path = tmp_path / f"{ALERT}.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.prometheus
def test_a_healthy_fp16_run_stays_quiet_for_longer_than_for_plus_range(tmp_path, monkeypatch, gloo):  # noqa: F811
    rule = alert_rule()
    quiet_needed = minutes(rule["for"]) + max(minutes(r) for r in re.findall(r"\[(\d+[smh])\]", rule["expr"]))
    assert quiet_needed < SCRAPES - 1  # the evaluations below span more than for + range
    # An overflow every 40 steps, the scale halved and doubled back 20 clean steps later: 4 overflows.
    overflows = set(range(40, STEPS_PER_SCRAPE * SCRAPES + 1, 40))
    series = exported_series(tmp_path, monkeypatch, "healthy", overflows, window=20)
    skipped = next(s for s in series if s["series"].startswith("llmlaunch_skipped_steps_total"))
    assert skipped["values"].split()[-1] == repr(float(len(overflows)))  # each overflow counted once
    scale = next(s for s in series if s["series"].startswith("llmlaunch_loss_scale"))
    assert min(float(v) for v in scale["values"].split() if v != "_") == 32768.0  # recovered each time
    cases = [{"eval_time": f"{t}m", "alertname": ALERT, "exp_alerts": []} for t in range(SCRAPES)]
    promtool_test(tmp_path, series, cases)


@pytest.mark.prometheus
def test_a_collapsing_fp16_run_fires(tmp_path, monkeypatch, gloo):  # noqa: F811
    rule = alert_rule()
    start = 31  # healthy for 5 minutes, then overflow on 5 steps of every 6; the scale never grows back
    overflows = {s for s in range(start, STEPS_PER_SCRAPE * SCRAPES + 1) if s % STEPS_PER_SCRAPE}
    series = exported_series(tmp_path, monkeypatch, "collapsing", overflows, window=1000)
    scale = next(s for s in series if s["series"].startswith("llmlaunch_loss_scale"))
    assert scale["values"].split()[-1] == "1.0"
    # Nothing overflowed before minute 5: the expression is false until then, so pending until 5 + for.
    quiet = range(0, (start - 1) // STEPS_PER_SCRAPE + minutes(rule["for"]) + 1)
    cases = [{"eval_time": f"{t}m", "alertname": ALERT, "exp_alerts": []} for t in quiet]
    cases.append({"eval_time": f"{SCRAPES - 1}m", "alertname": ALERT,
                  "exp_alerts": [expected_alert("collapsing", 1.0)]})  # value: the scale, at its floor
    promtool_test(tmp_path, series, cases)
