"""The job files every manifest test renders: the scenarios of launcher/render/chart_files.py (one list for the
golden manifests and the chart's cases), as (job file, --set overrides)."""

from __future__ import annotations

from pathlib import Path

from launcher.render.chart_files import SCENARIOS, TEST_IMAGE, job_path, load_scenario
from launcher.spec.job_spec import JobSpec

__all__ = ["TEST_IMAGE", "cases", "load_case"]


def cases() -> dict[str, tuple[Path, list[str]]]:
    return {name: (job_path(name), list(scenario.overrides)) for name, scenario in SCENARIOS.items()}


def load_case(name: str) -> JobSpec:
    return load_scenario(name)
