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


JOB_MODULES = {"trainer.config", "launcher.spec", "jinja2", "torch"}


@pytest.mark.parametrize("args, not_loaded", [
    (["--help"], JOB_MODULES | {"pydantic", "yaml"}),
    (["init", "{tmp}/job.yaml"], JOB_MODULES | {"pydantic", "yaml"}),
    # The kubernetes client imports pydantic and yaml itself; the job models must still stay out.
    (["status", "tiny"], JOB_MODULES), (["list"], JOB_MODULES), (["logs", "tiny"], JOB_MODULES),
    (["delete", "tiny"], JOB_MODULES)], ids=lambda a: a[0].strip("-") if isinstance(a, list) else "")
def test_commands_that_read_no_job_file_start_without_the_job_models(args, not_loaded, tmp_path):
    """--help, init, status, list, logs, delete build no job model and load no template. The cluster
    commands run to their first call of the API (no kubeconfig here: exit 1), their imports all done."""
    args = [a.format(tmp=tmp_path) for a in args]
    code = ("import sys\nfrom launcher.cli import cli\n"
            f"try:\n    cli({args!r}, prog_name='llmlaunch')\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            f"print(sorted(set(sys.modules) & {set(not_loaded)!r}))")
    env = ENV | {"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    exit_line, modules = out.stdout.splitlines()[-2:]
    assert exit_line in ("exit 0", "exit 1"), out.stdout + out.stderr
    assert modules == "[]"
