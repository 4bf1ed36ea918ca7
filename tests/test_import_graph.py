"""The layout's import rules hold (scripts/import_graph.py: which subpackage may import which, no cycle between
modules or subpackages, type-only imports included), the checker catches each kind of breakage, and the CLI
runs as `python -m launcher` as well as `-m launcher.cli`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from trainjobs import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def import_graph(root=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py"), "--root", str(root)],
                          capture_output=True, text=True)


def test_the_layout_keeps_its_import_rules():
    result = import_graph()
    assert result.returncode == 0, result.stdout
    assert result.stdout.rstrip().endswith(" 0 broken")
    graph = {unit.strip(): set(deps.split(", ")) - {"-"}
             for unit, deps in (line.split(" -> ") for line in result.stdout.splitlines() if " -> " in line)}
    assert {"launcher.spec", "launcher.render", "launcher.cluster", "launcher.local", "launcher.estimate",
            "launcher.commands", "trainer.config", "trainer.storage", "trainer.data", "trainer.training",
            "trainer.checkpoints", "trainer.observability"} <= set(graph)
    assert graph["trainer.training"] >= {"trainer.data", "trainer.checkpoints", "trainer.observability"}
    assert [unit for unit, deps in graph.items() if "launcher.commands" in deps] == ["launcher.cli"]


BREAKAGES = {
    "rendering imports the cluster client": (
        "launcher/render/manifests.py", "from launcher.cluster import client\n",
        "launcher.render.manifests imports launcher.cluster.client: rendering is a pure function"),
    "a type-only import closes a circle": (
        "launcher/spec/names.py", "if TYPE_CHECKING:\n    from launcher.spec.load import load_job\n",
        "module cycle: launcher.spec.names -> launcher.spec.load -> launcher.spec.rules -> launcher.spec.names"),
    "data imports observability, lazily": (
        "trainer/data/splits.py", "def _late():\n    from trainer.observability import mfu\n",
        "trainer.data.splits imports trainer.observability.mfu (lazy): the loop consumes data"),
    "the cluster client imports the CLI's options": (
        "launcher/cluster/jobs.py", "import launcher.commands.options\n",
        "launcher.cluster.jobs imports launcher.commands.options: only launcher.cli may import launcher.commands"),
    "the launcher imports torch": (
        "launcher/render/pod_values.py", "def _tensor():\n    import torch.nn\n",
        "launcher.render.pod_values imports torch (lazy): the launcher renders and submits without a tensor library"),
    "the launcher reaches torch through the trainer": (
        "launcher/spec/rules.py", "from trainer.training import engine\n",
        "launcher.spec.rules reaches torch when it runs: launcher.spec.rules -> trainer.training.engine -> torch"),
    "two subpackages import each other": (
        "trainer/storage/hub_cache.py", "from trainer.config import section\n",
        "package cycle: trainer.config -> trainer.storage -> trainer.config"),
}


@pytest.mark.parametrize("case", BREAKAGES, ids=list(BREAKAGES))
def test_the_checker_names_each_kind_of_breakage(case, tmp_path):
    path, added, expected = BREAKAGES[case]
    for package in ("launcher", "trainer"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / path
    target.write_text(target.read_text() + "\n" + added)
    result = import_graph(tmp_path)
    assert result.returncode == 1, result.stdout
    assert any(line.startswith(f"broken: {expected}") for line in result.stdout.splitlines()), result.stdout


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


JOB_MODULES = {"trainer.config.train_config", "launcher.spec.load", "launcher.spec.job_spec", "jinja2", "torch"}


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
