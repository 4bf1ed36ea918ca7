"""The fast tier (`pytest -m unit`) holds only tests that start no server, tool or training run:
tests/conftest.py refuses a server fixture to a test without its marker and fails a unit test that starts
one of those programs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import heavy_reason
from trainjobs import REPO


@pytest.mark.parametrize("argv,marker", [
    (["/work/.tools/bin/helm", "template", "x"], "helm"),
    (["kubectl", "patch", "--local", "-f", "pod.json"], "tools"),
    (["/root/.cache/llmlaunch/bin/kube-apiserver-v1.20.2", "--etcd-servers=x"], "cluster"),
    (["kubelet-v1.20.2"], "pods"),
    (["promtool", "test", "rules"], "prometheus"),
    ([sys.executable, "-m", "torch.distributed.run", "-m", "trainer"], "distributed"),
    ([sys.executable, "-u", "-m", "trainer", "--config", "t.yaml"], "training"),
    ([sys.executable, "-m", "launcher.cli", "train", "job.yaml"], "training"),
    ([sys.executable, "-m", "launcher", "render", "job.yaml"], None),
    ([sys.executable, "-c", "pass"], None),
    ("git status", None),
])
def test_heavy_command_lines_are_recognised(argv, marker):
    assert heavy_reason(argv) == marker


def run_pytest(tmp_path, test_code: str, *args: str) -> subprocess.CompletedProcess:
    """pytest on one test file that uses this suite's conftest (copied beside it)."""
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text().replace(
        'pytest_plugins = ["tests.fixtures.prometheus", "tests.fixtures.control_plane", "tests.fixtures.node"]',
        'import pytest as _p\n\n@_p.fixture\ndef control_plane():\n    return "started"'))
    (tmp_path / "test_x.py").write_text(textwrap.dedent(test_code))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path), *args],
                          capture_output=True, text=True, cwd=tmp_path)


def test_unit_tests_are_the_unmarked_ones_and_start_no_tool(tmp_path):
    result = run_pytest(tmp_path, """
        import subprocess
        import pytest
        def test_plain():
            pass
        def test_quietly_starts_helm():
            subprocess.run(["helm", "version"])
        @pytest.mark.slow
        def test_long():
            pass
    """, "-m", "unit", "-rA")
    assert "1 failed, 1 passed, 1 deselected" in result.stdout, result.stdout
    assert "PASSED test_x.py::test_plain" in result.stdout
    assert "FAILED test_x.py::test_quietly_starts_helm" in result.stdout
    assert "mark it @pytest.mark.helm" in result.stdout


def test_a_server_fixture_without_its_marker_stops_the_run(tmp_path):
    result = run_pytest(tmp_path, """
        import pytest
        def test_unmarked(control_plane):
            pass
        @pytest.mark.cluster
        def test_marked(control_plane):
            pass
    """, "--collect-only")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "test_unmarked uses the control_plane fixture without a cluster or pods marker" in output
    assert "test_marked uses" not in output
