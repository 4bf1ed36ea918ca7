"""Checks of the monitoring assets against a real Prometheus, for any run that exports llmlaunch metrics.

The simulated run in test_monitoring_e2e.py uses them, and so can a real training run:

    prom = prometheus_server([f"127.0.0.1:{port}"])
    ... start `llmlaunch train examples/tiny.yaml --nproc-per-node 2 --set train.metrics.port=PORT` ...
    end = prom.wait_for('llmlaunch_train_step{job="tiny"} >= 100')
    assert_metrics_present(prom, set(ALL_METRICS) - CPU_FP32_ABSENT, job="tiny", at=end)
    assert_dashboard_queries_return_data(prom, job="tiny", start=t0, end=end, absent_ok=CPU_FP32_ABSENT)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from trainer.observability.exporter import NODE_METRICS, TRAINING_METRICS
from trainer.observability.gpu_metrics import GPU_METRICS

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "monitoring" / "dashboards" / "llmlaunch.json"
RULES = REPO / "monitoring" / "alerts" / "llmlaunch-rules.yaml"
RULE_TESTS = REPO / "monitoring" / "alerts" / "llmlaunch-rules.test.yaml"

ALL_METRICS = TRAINING_METRICS + NODE_METRICS + GPU_METRICS
HISTOGRAMS = {"llmlaunch_step_duration_seconds", "llmlaunch_checkpoint_duration_seconds"}
# Absent by design on a CPU run in fp32 without train.metrics.peak_tflops: no GPUs, no fp16 loss
# scale, no peak FLOP/s to compute MFU against ("absent, not zero").
CPU_FP32_ABSENT = frozenset(GPU_METRICS) | {"llmlaunch_loss_scale", "llmlaunch_mfu_ratio"}

_METRIC = re.compile(r"\bllmlaunch_[a-z0-9_]+")


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str

    def metrics(self) -> set[str]:
        """Metric families the query reads (histogram series mapped back to their family)."""
        return {family_of(name) for name in _METRIC.findall(self.expr)}


def family_of(series_name: str) -> str:
    """llmlaunch_step_duration_seconds_count -> llmlaunch_step_duration_seconds; others unchanged."""
    base = re.sub(r"_(bucket|sum|count)$", "", series_name)
    return base if base in HISTOGRAMS else series_name


def load_dashboard(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text())


def dashboard_queries(dashboard: dict | None = None) -> list[PanelQuery]:
    """Every target expression of every panel, including panels nested in collapsed rows."""
    dashboard = dashboard or load_dashboard()
    queries = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                queries.append(PanelQuery(panel["title"], target["refId"], target["expr"]))

    walk(dashboard["panels"])
    return queries


def grafana_substitute(expr: str, *, job: str, namespace: str | None, interval_s: float, range_s: float,
                       scrape_interval_s: float) -> str:
    """Expand the variables Grafana expands before a query reaches Prometheus."""
    rate_interval = max(interval_s + scrape_interval_s, 4 * scrape_interval_s)  # Grafana's $__rate_interval rule
    values = {  # longest names first: $__interval is a prefix of $__interval_ms
        "$__rate_interval": f"{int(math.ceil(rate_interval))}s",
        "$__interval_ms": f"{int(interval_s * 1000)}",
        "$__interval": f"{int(math.ceil(interval_s))}s",
        "$__range": f"{int(math.ceil(range_s))}s",
        "$namespace": grafana_regex_escape(namespace) if namespace else ".*",  # the "All" value (allValue)
        "$job": grafana_regex_escape(job),
    }
    for name, value in values.items():
        expr = expr.replace(name, value)
    leftover = re.findall(r"\$\w+", expr)
    assert not leftover, f"variables not substituted in {expr!r}: {leftover}"
    return expr


def grafana_regex_escape(value: str) -> str:
    """As Grafana escapes a multi-value variable inside a PromQL regex string: a doubled backslash
    (one for the string literal, one for the regex) before each regex metacharacter."""
    return re.sub(r"([\\^$*+?.()|\[\]{}])", r"\\\\\1", value)


def _has_finite_sample(result: list[dict]) -> bool:
    return any(math.isfinite(float(v)) for series in result for _, v in series["values"])


def assert_dashboard_queries_return_data(
    prom, *, job: str, start: float, end: float, namespace: str | None = None, scrape_interval_s: float = 1.0,
    absent_ok: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Run every panel query as Grafana would (a range query over [start, end]); each must return a
    finite sample, except queries that read only `absent_ok` metrics (they must still parse).
    Also checks the namespace / job variables list this job. Returns series counts per query."""
    interval = max(scrape_interval_s, (end - start) / 100)  # Grafana: range / max data points, >= scrape
    counts, empty = {}, []
    for q in dashboard_queries():
        expr = grafana_substitute(q.expr, job=job, namespace=namespace, interval_s=interval, range_s=end - start,
                                  scrape_interval_s=scrape_interval_s)
        result = prom.query_range(expr, start, end, interval)
        counts[f"{q.panel}/{q.ref}"] = len(result)
        if not _has_finite_sample(result) and not q.metrics() <= absent_ok:
            empty.append(f"{q.panel}/{q.ref}: {expr}")
    assert not empty, "dashboard queries with no data:\n  " + "\n  ".join(empty)

    jobs = prom.api("label/job/values", **{"match[]": f'llmlaunch_run_info{{namespace=~"{namespace or ".*"}"}}'})
    assert job in jobs, f"the job variable would not list {job!r}: {jobs}"
    if namespace:
        namespaces = prom.api("label/namespace/values", **{"match[]": "llmlaunch_run_info"})
        assert namespace in namespaces, f"the namespace variable would not list {namespace!r}: {namespaces}"
    return counts


def exported_samples(prom, *, job: str, at: float | None = None) -> dict[str, float]:
    """Every llmlaunch series of a job (name{labels} -> value): the listing a run's report shows."""
    result = prom.query(f'{{__name__=~"llmlaunch_.+",job="{job}"}}', at)
    listing = {}
    for series in result:
        labels = {k: v for k, v in series["metric"].items() if k not in ("__name__", "instance")}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        listing[f"{series['metric']['__name__']}{{{text}}}"] = float(series["value"][1])
    return dict(sorted(listing.items()))


def assert_metrics_present(prom, names, *, job: str, at: float | None = None) -> set[str]:
    """Every named metric family has at least one series for `job`; returns the families seen."""
    result = prom.query(f'count by (__name__) ({{__name__=~"llmlaunch_.+",job="{job}"}})', at)
    seen = {r["metric"]["__name__"] for r in result}
    present = seen | {family_of(name) for name in seen}
    missing = sorted(set(names) - present)
    assert not missing, f"metrics missing for job {job!r}: {missing} (seen: {sorted(seen)})"
    return present
