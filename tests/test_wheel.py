"""The wheel carries the templates, DeepSpeed presets and examples: install it in a fresh venv and use it."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile

import pytest

from trainjobs import REPO

pytestmark = pytest.mark.tools  # pip builds the wheel and installs it into a new venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    (found,) = dist.glob("llmlaunch-*.whl")
    return found


def test_wheel_contains_the_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("llmlaunch_data/ds_configs/zero2.json", "llmlaunch_data/ds_configs/README.md",
                     "llmlaunch_data/examples/tiny.yaml", "llmlaunch_data/examples/data/tokenizer/tokenizer.json",
                     "launcher/cli.py", "trainer/__main__.py"):
        assert required in names, required
    assert any(n.startswith("llmlaunch_data/k8s/") and n.endswith(".j2") for n in names)
    # The chart, with the files its links into monitoring/ point to (not the links).
    chart = "llmlaunch_data/helm/llmlaunch/"
    for required in ("Chart.yaml", ".helmignore", "values.schema.json", "templates/_helpers.tpl",
                     "templates/NOTES.txt"):
        assert chart + required in names, required
    dashboard = zipfile.ZipFile(wheel).read(chart + "dashboards/llmlaunch.json")
    assert dashboard == (REPO / "monitoring" / "dashboards" / "llmlaunch.json").read_bytes()
    assert not any(n.startswith(("llmlaunch_data/tests/", "llmlaunch_data/.venv")) for n in names)


def test_installed_wheel_validates_the_example(wheel, tmp_path):
    # Only the wheel: this checkout on PYTHONPATH would shadow the installed packages (and its egg-info
    # would make pip think llmlaunch is installed already).
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True, timeout=600,
                   env=clean)
    where = "import llmlaunch_data, os; print(os.path.dirname(llmlaunch_data.__spec__.submodule_search_locations[0]))"
    site = subprocess.run([str(py), "-c", where],
                          check=True, capture_output=True, text=True, env=clean, cwd=tmp_path).stdout.strip()
    example = f"{site}/llmlaunch_data/examples/tiny.yaml"
    llmlaunch = str(env_dir / "bin" / "llmlaunch")
    result = subprocess.run([llmlaunch, "validate", example], capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert result.returncode == 0, result.stderr
    assert "ok (tiny" in result.stdout
    # render reads the k8s/ templates and the ds_configs/ presets from the package; init copies an example.
    rendered = subprocess.run([llmlaunch, "render", example, "--image", "registry.example.com/t:1"],
                              capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: PyTorchJob" in rendered.stdout and '"zero_optimization"' in rendered.stdout
    init = subprocess.run([llmlaunch, "init", "job.yaml"], capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert init.returncode == 0, init.stderr
    where = subprocess.run([str(py), "-c", "import launcher; print(launcher.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path, env=clean, check=True).stdout
    assert where.startswith(site), where
    assert (tmp_path / "job.yaml").read_text() == (REPO / "examples" / "tiny.yaml").read_text()
