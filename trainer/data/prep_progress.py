"""Progress of data preparation: log lines (records, tokens, MB/s, ETA) and Prometheus gauges.

Counts are the run's, not one process's: every process reads the done markers (shard.json) of all
units, so rank 0's log and each node's /metrics show the whole preparation, whoever built a unit.
Units already done before this start are reused and are not counted in MB/s.

While preparing, local rank 0 of each node serves these gauges on the metrics port (train.metrics),
labelled like the trainer's (job, namespace, node_rank) plus split; it stops serving before the
trainer's exporter (trainer/observability/exporter.py) takes the port for the training run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

from trainer.data.readers import Unit

log = logging.getLogger(__name__)
LOG_EVERY_S = 10.0
GAUGES = {
    "llmlaunch_data_prepare_bytes": "Bytes of data files tokenized so far (done work units).",
    "llmlaunch_data_prepare_bytes_total": "Bytes of the data files to prepare.",
    "llmlaunch_data_prepare_records": "Records tokenized so far.",
    "llmlaunch_data_prepare_tokens": "Tokens written to shards so far.",
    "llmlaunch_data_prepare_bytes_per_second": "Preparation throughput since this process started.",
    "llmlaunch_data_prepare_eta_seconds": "Estimated seconds until the data is prepared.",
}


class PrepMetrics:
    """The preparation gauges; served only by a node's local rank 0, when train.metrics is enabled."""

    def __init__(self, *, enabled: bool, port: int, job: str, namespace: str | None, node_rank: int):
        from prometheus_client import CollectorRegistry, Gauge

        self.labels = {"job": job, **({"namespace": namespace} if namespace else {}), "node_rank": str(node_rank)}
        self.registry = CollectorRegistry()
        self.gauges = {name: Gauge(name, doc, [*self.labels, "split"], registry=self.registry)
                       for name, doc in GAUGES.items()}
        self.enabled, self.port, self._server = enabled, port, None

    @classmethod
    def from_env(cls, metrics_cfg, job: str) -> PrepMetrics:
        local = os.environ.get("LLMLAUNCH_LOCAL_RUN") == "1"  # several "nodes" on one host: a port each
        node_rank = int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "0")))
        return cls(enabled=metrics_cfg.enabled and os.environ.get("LOCAL_RANK", "0") == "0",
                   port=metrics_cfg.port + (node_rank if local else 0), job=os.environ.get("LLMLAUNCH_JOB", job),
                   namespace=os.environ.get("LLMLAUNCH_NAMESPACE"), node_rank=node_rank)

    def start(self) -> None:
        if not self.enabled or self._server is not None:
            return
        from prometheus_client import start_http_server

        addr = "127.0.0.1" if os.environ.get("LLMLAUNCH_LOCAL_RUN") == "1" else "0.0.0.0"
        try:
            self._server, _ = start_http_server(self.port, addr, registry=self.registry)
        except OSError as e:  # metrics must never stop a run
            log.error("metrics: cannot serve data preparation progress on %s:%s (%s)", addr, self.port, e)

    def set(self, split: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.gauges[name].labels(**self.labels, split=split).set(value)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class PrepProgress:
    """Fed by prepare_units (done markers) and by this process's own batches; reports at most every LOG_EVERY_S."""

    def __init__(self, key: str, split: str, units: list[tuple[str, Unit]], root: Path,
                 metrics: PrepMetrics | None = None, clock=time.monotonic):
        self.key, self.split, self.root, self.metrics, self.clock = key, split, root, metrics, clock
        self.sizes = {uid: unit.size for uid, unit in units}
        self.total_bytes = sum(self.sizes.values())
        self.counted: dict[str, tuple[int, int]] = {}  # done unit -> (records, tokens)
        self.reused: set[str] | None = None  # units done before we started
        self.own = [0, 0]  # records, tokens of this process's unit in progress
        self.started, self.reported = clock(), None

    def done_units(self, done: set[str]) -> None:
        for uid in done - self.counted.keys():
            meta = json.loads((self.root / uid / "shard.json").read_text())
            self.counted[uid] = (meta["records"], meta["tokens"])
        if self.reused is None:
            self.reused = set(done)
        self.own = [0, 0]  # now counted in a marker, or not started yet
        self.report()

    def built(self, records: int, tokens: int) -> None:
        self.own[0] += records
        self.own[1] += tokens
        self.report()

    def tick(self) -> None:
        self.report()

    def figures(self) -> dict[str, float]:
        done_bytes = sum(self.sizes[uid] for uid in self.counted)
        fresh = done_bytes - sum(self.sizes[uid] for uid in self.reused or ())
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = fresh / elapsed
        left = self.total_bytes - done_bytes
        return {
            "llmlaunch_data_prepare_bytes": done_bytes,
            "llmlaunch_data_prepare_bytes_total": self.total_bytes,
            "llmlaunch_data_prepare_records": sum(r for r, _ in self.counted.values()) + self.own[0],
            "llmlaunch_data_prepare_tokens": sum(t for _, t in self.counted.values()) + self.own[1],
            "llmlaunch_data_prepare_bytes_per_second": rate,
            "llmlaunch_data_prepare_eta_seconds": left / rate if rate > 0 else (0.0 if not left else float("nan")),
        }

    def report(self, force: bool = False) -> None:
        now = self.clock()
        if not force and self.reported is not None and now - self.reported < LOG_EVERY_S:
            return
        self.reported = now
        f = self.figures()
        if self.metrics is not None:
            self.metrics.set(self.split, f)
        eta = f["llmlaunch_data_prepare_eta_seconds"]
        log.info("%s: preparing %s data: %d/%d units, %.0f/%.0f MB, %d records, %d tokens, %.1f MB/s, ETA %s",
                 self.key, self.split, len(self.counted), len(self.sizes), f["llmlaunch_data_prepare_bytes"] / 1e6,
                 self.total_bytes / 1e6, f["llmlaunch_data_prepare_records"], f["llmlaunch_data_prepare_tokens"],
                 f["llmlaunch_data_prepare_bytes_per_second"] / 1e6, "?" if math.isnan(eta) else f"{eta:.0f} s")
