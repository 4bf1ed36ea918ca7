"""Each example renders to a committed snapshot in tests/golden/, so a change is a reviewable diff.

Regenerate after an intended change:  LLMLAUNCH_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from golden_cases import TEST_IMAGE, cases, load_case
from launcher.render.chart_files import SCENARIOS
from launcher.render.manifests import render, to_yaml_stream

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("LLMLAUNCH_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", sorted(cases()))
def test_manifests_match_the_snapshot(name):
    text = to_yaml_stream(render(load_case(name)))
    path = GOLDEN / f"{name}.yaml"
    if UPDATE:
        path.write_text(text)
    assert path.is_file(), f"no snapshot {path}; create it with LLMLAUNCH_UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), f"{name} renders differently from {path}; if intended, regenerate (see module doc)"


def test_no_stale_snapshots():
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == set(cases())


def test_every_example_is_a_scenario_as_written():
    """A new example gets its snapshot, chart values and parity case by joining chart_files.SCENARIOS."""
    as_written = {s.example for s in SCENARIOS.values() if s.overrides in ([], [f"cluster.image={TEST_IMAGE}"])}
    assert {p.stem for p in (GOLDEN.parent.parent / "examples").glob("*.yaml")} <= as_written
