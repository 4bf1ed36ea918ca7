"""launcher/ has no import cycle, and the CLI runs as `python -m launcher` as well as `-m launcher.cli`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainjobs import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_launcher_has_no_import_cycle():
    result = subprocess.run([sys.executable, "scripts/import_graph.py"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert result.stdout.rstrip().endswith("0 cycle(s)")
    graph = {module.strip(): {dep.split()[0] for dep in deps.split(", ")}
             for module, deps in (line.split(" -> ") for line in result.stdout.splitlines() if " -> " in line)}
    assert graph["cli"] >= {"cli_cluster", "cli_estimate", "cli_options", "errors"}
    # The command modules take the shared options and errors from their own modules, never from cli.py.
    assert [module for module, deps in graph.items() if "cli" in deps] == ["__main__"]


@pytest.mark.parametrize("module", ["launcher", "launcher.cli"])
def test_the_cli_runs_as_a_module(module):
    result = subprocess.run([sys.executable, "-m", module, "validate", "examples/tiny.yaml"], cwd=REPO, env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("examples/tiny.yaml: ok (tiny")


def test_cluster_commands_are_registered_when_imported():
    code = "from launcher.cli import cli; print(' '.join(sorted(cli.commands)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, check=True)
    commands = {"init", "render", "values", "submit", "status", "list", "logs", "delete", "estimate"}
    assert commands <= set(out.stdout.split())


def test_commands_that_read_no_job_file_start_without_the_job_models():
    """--help, init, status, list, logs, delete: no pydantic model is built, no YAML or Jinja loaded."""
    # Top-level names: importing any module of a package loads the package first (launcher.startup
    # registers a stand-in pydantic.plugin._loader, which loads nothing of pydantic).
    code = ("import sys; from launcher.cli import cli\n"
            "print(sorted(set(sys.modules) & {'pydantic', 'yaml', 'jinja2', 'kubernetes'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
