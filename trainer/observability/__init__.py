"""Observability: the Prometheus exporter, GPU metrics from NVML, MFU, metrics.jsonl, experiment trackers
and the watchdog that names a hung rank.

May import: trainer.config, trainer.storage, trainer.errors. Never trainer.training: the loop reports here.
"""
